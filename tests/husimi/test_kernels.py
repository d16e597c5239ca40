import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import model_params

import qflow_jax  # noqa: F401  (enables float64)
from qflow_jax.husimi import a, adag, compile_qpde


class SmoothLogDensity(eqx.Module):
    """A small tanh MLP plus a Gaussian envelope: a generic smooth log Q."""

    w1: jax.Array
    w2: jax.Array

    def __init__(self, dim, key):
        k1, k2 = jax.random.split(key)
        self.w1 = 0.5 * jax.random.normal(k1, (8, dim + 1))
        self.w2 = 0.5 * jax.random.normal(k2, (8,))

    def __call__(self, x):
        h = jnp.tanh(self.w1[:, :-1] @ x + self.w1[:, -1])
        return self.w2 @ h - 0.5 * jnp.sum(x**2)


@pytest.mark.parametrize("name,H,jumps,n_modes", model_params())
def test_dlogq_dt_equals_apply_over_q(name, H, jumps, n_modes):
    pde = compile_qpde(H, jumps, n_modes=n_modes)
    logq = SmoothLogDensity(pde.dim, jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (7, pde.dim))
    ref = pde.apply(lambda y: jnp.exp(logq(y)), x) / jnp.exp(jax.vmap(logq)(x))
    got = pde.dlogq_dt(logq, x)
    np.testing.assert_allclose(
        got, ref, rtol=1e-10, atol=1e-10 * float(jnp.abs(ref).max())
    )


def _chain(n_modes):
    H = sum(0.3 * j * adag(j) @ a(j) for j in range(n_modes))
    H = H + sum(
        0.2 * (adag(j) @ a(j + 1) + adag(j + 1) @ a(j)) for j in range(n_modes - 1)
    )
    return compile_qpde(H, [0.5 * a(j) for j in range(n_modes)])


def test_hutchinson_is_exact_for_diagonal_hessian_and_unbiased_otherwise():
    pde = _chain(3)
    x = jax.random.normal(jax.random.PRNGKey(3), (5, pde.dim))
    key = jax.random.PRNGKey(4)

    def separable(y):  # diagonal Hessian: v^T diag(H) v = trace for every v
        return -jnp.sum(y**2 + 0.1 * y**4)

    exact = pde.dlogq_dt(separable, x)
    est = pde.dlogq_dt(separable, x, trace_estimator="hutchinson", key=key)
    np.testing.assert_allclose(est, exact, rtol=1e-12)

    logq = SmoothLogDensity(pde.dim, jax.random.PRNGKey(5))
    exact = pde.dlogq_dt(logq, x[:1])
    n = 20000
    samples = pde.dlogq_dt(
        logq, jnp.repeat(x[:1], n, 0), trace_estimator="hutchinson", key=key
    )
    assert float(jnp.std(samples)) > 1e-3  # off-diagonal Hessian: a real estimate
    err = abs(float(jnp.mean(samples) - exact[0]))
    assert err < 5 * float(jnp.std(samples)) / np.sqrt(n)


def test_kernel_input_validation():
    pde = _chain(2)
    with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., 4\)"):
        pde.dlogq_dt(lambda y: -jnp.sum(y**2), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="`key`"):
        pde.dlogq_dt(
            lambda y: -jnp.sum(y**2), jnp.zeros((3, 4)), trace_estimator="hutchinson"
        )
    with pytest.raises(ValueError, match="`trace_estimator`"):
        pde.dlogq_dt(lambda y: -jnp.sum(y**2), jnp.zeros((3, 4)), trace_estimator="x")
    tpl = compile_qpde(0.0, [a(0) @ a(0)])
    with pytest.raises(ValueError, match="order <= 2"):
        tpl.dlogq_dt(
            lambda y: -jnp.sum(y**2),
            jnp.zeros((1, 2)),
            trace_estimator="hutchinson",
            key=jax.random.PRNGKey(0),
        )
