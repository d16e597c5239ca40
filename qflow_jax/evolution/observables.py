"""Observables of a bosonic state from samples of its Husimi Q function.

Q gives anti-normally ordered moments: <a_j> = E_Q[alpha_j], <a_j^dag a_j> =
E_Q|alpha_j|^2 - 1, and for the quadrature X_j = (a_j + a_j^dag)/2 (and P_j)
Var(X_j) = Var_Q(x_j) - 1/4 (docs/physics.md, section 3).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from qflow_jax.core.training import gaussian_proposal

__all__ = ["normalization", "sample_observables"]


def sample_observables(x: jax.Array) -> dict[str, jax.Array]:
    """Means and standard errors from samples x (B, 2N) of Q.

    Returns:
        dict with "a" (N,) complex, "n" (N,), "var_x" (N,), "var_p" (N,) and their
        standard errors "a_err", "n_err" (N,).
    """
    B = x.shape[0]
    xs, ps = x[:, 0::2], x[:, 1::2]
    alpha = xs + 1j * ps
    n_samples = jnp.abs(alpha) ** 2 - 1.0
    return {
        "a": alpha.mean(0),
        "a_err": jnp.sqrt((jnp.var(xs, 0) + jnp.var(ps, 0)) / B),
        "n": n_samples.mean(0),
        "n_err": n_samples.std(0) / jnp.sqrt(B),
        "var_x": jnp.var(xs, 0) - 0.25,
        "var_p": jnp.var(ps, 0) - 0.25,
    }


def normalization(
    logq: Callable[[jax.Array], jax.Array],
    key: jax.Array,
    dim: int,
    center: jax.Array,
    width: float,
    n: int = 100_000,
) -> tuple[jax.Array, jax.Array]:
    """Importance-sampling estimate of the integral of q, with its standard error.

    Samples come from N(center, width^2 I) (`qflow_jax.core.training.gaussian_proposal`,
    also the proposal of the PINN's normalization), which must cover the support of
    q.

    Args:
        logq: y (dim,) -> log q(y).
        key: random key of the samples.
        dim: dimension of y.
        center, width: mean (dim,) and standard deviation of the proposal.
        n: number of samples.

    Returns:
        (estimate, standard error).

    Examples:
        >>> logq = lambda y: -jnp.sum(y**2) - jnp.log(jnp.pi)  # the vacuum's Q
        >>> z, err = normalization(logq, jax.random.key(0), 2, jnp.zeros(2), 1.0)
        >>> bool(abs(z - 1.0) < 4 * err < 0.01)
        True
    """
    y, logp = gaussian_proposal(key, n, dim, center, width)
    w = jnp.exp(jax.vmap(logq)(y) - logp)
    return w.mean(), w.std() / jnp.sqrt(n)
