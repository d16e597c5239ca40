"""Gradients through mesolve, and the errors of bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qflow_jax as qf
from tests.helpers import rand_dm, rand_herm, rand_op


def test_gradient_matches_central_differences(rng):
    n = 4
    H0, H1 = rand_herm(rng, n), rand_herm(rng, n)
    L = rand_op(rng, n)
    rho_a, rho_b = rand_dm(rng, n), rand_dm(rng, n)
    O = rand_herm(rng, n)
    t = jnp.linspace(0.0, 1.5, 4)

    def loss(p):
        w, g, s = p
        rho0 = (1 - s) * rho_a + s * rho_b
        res = qf.mesolve(
            H0 + w * H1, [jnp.sqrt(g) * L], rho0, t, exp_ops=[O], rtol=1e-10, atol=1e-12
        )
        return jnp.sum(res.expects[0].real * jnp.arange(1, 5))

    p = jnp.array([0.7, 0.3, 0.4])
    grad = jax.grad(loss)(p)
    eps, value = 1e-5, jax.jit(loss)  # one compilation for the six evaluations
    fd = [
        (value(p.at[i].add(eps)) - value(p.at[i].add(-eps))) / (2 * eps)
        for i in range(3)
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_jit_of_a_function_calling_mesolve(rng):
    n = 3
    H, L, rho0 = rand_herm(rng, n), rand_op(rng, n), rand_dm(rng, n)
    t = jnp.linspace(0.0, 1.0, 3)

    @jax.jit
    def final_population(g):
        return qf.mesolve(H, [g * L], rho0, t).final_state[0, 0].real

    eager = qf.mesolve(H, [0.5 * L], rho0, t).final_state[0, 0].real
    np.testing.assert_allclose(final_population(0.5), eager, atol=1e-12)


def _good():
    return qf.sigmaz(), [qf.sigmam()], qf.fock_dm(2, 0), jnp.linspace(0, 1, 3)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(H=jnp.ones((2, 3))), r"`H` must be a square matrix"),
        (dict(H=qf.sigmaz() + 1j * qf.sigmax()), r"`H` must be Hermitian"),
        (dict(H=qf.eye(3)), r"`H` has dimension 3 but `rho0` has dimension 2"),
        (dict(jump_ops=[qf.destroy(3)]), r"`jump_ops\[0\]` has dimension 3"),
        (dict(jump_ops=[jnp.ones((2, 3))]), r"`jump_ops\[0\]` must be a square"),
        (dict(rho0=jnp.ones((2, 3))), r"`rho0` must be a square"),
        (dict(rho0=jnp.array([[0.5, 0.5], [0.0, 0.5]])), r"`rho0` must be Hermitian"),
        (dict(rho0=qf.eye(2)), r"`rho0` must have trace 1"),
        (dict(rho0=jnp.diag(jnp.array([1.5, -0.5]))), r"positive semidefinite"),
        (dict(rho0=jnp.full((2, 2), jnp.nan)), r"`rho0` contains non-finite"),
        (dict(H=qf.sigmaz() * jnp.inf), r"`H` contains non-finite"),
        (
            dict(tsave=jnp.array([0.0, 1.0, 0.5])),
            r"`tsave` must be strictly increasing",
        ),
        (dict(tsave=jnp.array([0.0, jnp.nan])), r"`tsave` contains non-finite"),
        (dict(tsave=jnp.array([1.0])), r"`tsave` must be a 1-D array of at least 2"),
        (dict(exp_ops=[qf.eye(3)]), r"`exp_ops` must be \(n, n\) operators"),
        (dict(method="rk5"), r"`method` must be one of"),
        (dict(method="rk4"), r"`method` 'rk4' has a fixed step: pass qf.RK4\(dt"),
        (dict(H=lambda t: jnp.eye(3)), r"returns shape \(3, 3\), expected \(2, 2\)"),
    ],
)
def test_bad_input_is_named(change, match):
    H, jumps, rho0, tsave = _good()
    kw = dict(H=H, jump_ops=jumps, rho0=rho0, tsave=tsave)
    extra = {k: change.pop(k) for k in list(change) if k in ("exp_ops", "method")}
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        qf.mesolve(kw["H"], kw["jump_ops"], kw["rho0"], kw["tsave"], **extra)


def test_step_limit_is_reported():
    N = 20
    a = qf.destroy(N)
    with pytest.raises(RuntimeError, match="max_steps=5"):
        qf.mesolve(
            a + qf.create(N),
            [a],
            qf.fock_dm(N, 0),
            jnp.linspace(0, 10, 3),
            method="tsit5",
            max_steps=5,
        )
