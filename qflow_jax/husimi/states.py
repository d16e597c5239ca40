"""Husimi Q functions: from a Fock-basis density matrix, and closed-form initial states.

Every initial-condition constructor returns an `equinox.Partial` mapping real points
x = (x_0, p_0, x_1, p_1, ...), shape (..., 2N), to Q(x), shape (...): a pytree, so it
can be passed to jitted code without recompiling for new parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.core.checks import check_density, check_square, to_array

__all__ = [
    "cat_q",
    "coherent_q",
    "fock_q",
    "husimi_q",
    "q_from_rho",
    "real_to_alpha",
    "alpha_to_real",
    "sample_cat_q",
    "thermal_q",
]


def real_to_alpha(x: jax.Array) -> jax.Array:
    """(..., 2N) real points (x_0, p_0, ...) -> (..., N) alpha_j = x_j + i p_j."""
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] % 2:
        raise ValueError(f"`x` must have an even last axis (..., 2N), got {x.shape}")
    return x[..., 0::2] + 1j * x[..., 1::2]


def alpha_to_real(alpha: jax.Array) -> jax.Array:
    """(..., N) complex alpha -> (..., 2N) real points (x_0, p_0, x_1, p_1, ...)."""
    alpha = jnp.asarray(alpha)
    if alpha.ndim == 0:
        raise ValueError("`alpha` must have shape (..., N), got a scalar")
    return jnp.stack([alpha.real, alpha.imag], axis=-1).reshape(
        *alpha.shape[:-1], 2 * alpha.shape[-1]
    )


def _coherent_amplitudes(alpha: jax.Array, n_levels: int) -> jax.Array:
    """<n|alpha> = exp(-|alpha|^2/2) alpha^n / sqrt(n!), n < n_levels, in log space."""
    n = jnp.arange(n_levels, dtype=float)
    r = jnp.abs(alpha)
    safe_r = jnp.where(r > 0, r, 1.0)
    log_mag = -0.5 * r[..., None] ** 2 - 0.5 * jax.scipy.special.gammaln(n + 1)
    log_mag = log_mag + n * jnp.log(safe_r)[..., None]
    mag = jnp.where((r[..., None] > 0) | (n == 0), jnp.exp(log_mag), 0.0)
    return mag * jnp.exp(1j * n * jnp.angle(alpha)[..., None])


def _check_dims(dims: Any, n: int) -> tuple[int, ...]:
    dims = (n,) if dims is None else tuple(int(d) for d in np.atleast_1d(dims))
    if not dims or any(d < 1 for d in dims) or int(np.prod(dims)) != n:
        raise ValueError(
            f"`dims` must be positive Fock cut-offs multiplying to the dimension "
            f"{n} of `rho`, got {dims}"
        )
    return dims


def husimi_q(rho: Any, alphas: Any, dims: Sequence[int] | None = None) -> jax.Array:
    """Husimi Q function Q(alpha) = pi^-N <alpha|rho|alpha> of a Fock-basis state.

    The coherent-state amplitudes <n|alpha_j> are built in log space, so cut-offs of
    hundreds of levels are stable; the multimode state |alpha> is their Kronecker
    product (first mode most significant, as `tensor`).

    Args:
        rho: (n, n) density matrix (array or QuTiP Qobj), or an (n, 1) ket.
        alphas: (..., N) complex points, N = len(dims).
        dims: Fock cut-offs per mode (default: one mode, (n,)).

    Returns:
        (...,) real Q values.

    Examples:
        >>> rho = qf.coherent_dm(30, 1.0 + 0.5j)
        >>> print(round(float(husimi_q(rho, jnp.array([1.0 + 0.5j])) * np.pi), 6))
        1.0
    """
    rho = to_array(rho, "rho")
    if rho.ndim == 2 and rho.shape[-1] == 1 and rho.shape[0] != 1:
        rho = rho @ jnp.conj(rho.T)
    if rho.ndim != 2:
        raise ValueError(f"`rho` must be an (n, n) matrix, got shape {rho.shape}")
    check_square(rho, "rho")
    rho = check_density(rho, "rho")
    dims = _check_dims(dims, rho.shape[0])
    alphas = jnp.asarray(alphas)
    if alphas.ndim == 0 or alphas.shape[-1] != len(dims):
        raise ValueError(
            f"`alphas` must have shape (..., {len(dims)}) for dims={dims}, got "
            f"{tuple(alphas.shape)}"
        )
    return _husimi_q(rho.astype(jnp.complex128), alphas.astype(jnp.complex128), dims)


@eqx.filter_jit
def _husimi_q(rho: jax.Array, alphas: jax.Array, dims: tuple[int, ...]) -> jax.Array:
    vec = _coherent_amplitudes(alphas[..., 0], dims[0])
    for j, d in enumerate(dims[1:], start=1):
        amp = _coherent_amplitudes(alphas[..., j], d)
        vec = (vec[..., :, None] * amp[..., None, :]).reshape(*alphas.shape[:-1], -1)
    val = jnp.einsum("...i,ij,...j->...", jnp.conj(vec), rho, vec)
    return val.real / jnp.pi ** len(dims)


def _q_from_rho(rho: jax.Array, dims: tuple[int, ...], x: jax.Array) -> jax.Array:
    return _husimi_q(rho, real_to_alpha(x), dims)


def q_from_rho(rho: Any, dims: Sequence[int] | None = None) -> eqx.Partial:
    """Q(x) of a Fock-basis state, as a function of real points (..., 2N)."""
    rho = to_array(rho, "rho")
    if rho.ndim == 2 and rho.shape[-1] == 1 and rho.shape[0] != 1:
        rho = rho @ jnp.conj(rho.T)
    check_square(rho, "rho")
    dims = _check_dims(dims, rho.shape[-1])
    return eqx.Partial(_q_from_rho, rho.astype(jnp.complex128), dims)


def _modes(alpha: Any, name: str) -> jax.Array:
    alpha = jnp.atleast_1d(jnp.asarray(alpha, dtype=jnp.complex128))
    if alpha.ndim != 1:
        raise ValueError(
            f"`{name}` must be a scalar or an (N,) vector, got {alpha.shape}"
        )
    return alpha


def _coherent_q(alpha0: jax.Array, x: jax.Array) -> jax.Array:
    d = jnp.abs(real_to_alpha(x) - alpha0) ** 2
    return jnp.exp(-jnp.sum(d, axis=-1)) / jnp.pi ** alpha0.shape[-1]


def coherent_q(alpha0: Any) -> eqx.Partial:
    """Coherent product state: Q = pi^-N exp(-|alpha - alpha0|^2).

    Args:
        alpha0: complex scalar or (N,) vector of amplitudes.

    Examples:
        >>> print(round(float(coherent_q([1.0, 0.5j])(jnp.zeros(4))), 6))
        0.029029
    """
    return eqx.Partial(_coherent_q, _modes(alpha0, "alpha0"))


def _fock_q(n: jax.Array, x: jax.Array) -> jax.Array:
    r2 = jnp.abs(real_to_alpha(x)) ** 2
    safe = jnp.where(r2 > 0, r2, 1.0)
    log_q = (
        -r2 + n * jnp.log(safe) - jax.scipy.special.gammaln(n + 1.0) - jnp.log(jnp.pi)
    )
    q = jnp.where((r2 > 0) | (n == 0), jnp.exp(log_q), 0.0)
    return jnp.prod(q, axis=-1)


def fock_q(n: Any) -> eqx.Partial:
    """Fock product state |n_0, n_1, ...>:
    Q = prod_j exp(-|alpha_j|^2) |alpha_j|^(2 n_j)
    / (pi n_j!)."""
    n = jnp.atleast_1d(jnp.asarray(n))
    if n.ndim != 1 or not jnp.issubdtype(n.dtype, jnp.integer) or bool(jnp.any(n < 0)):
        raise ValueError(f"`n` must be non-negative integer(s), got {n}")
    return eqx.Partial(_fock_q, n.astype(float))


def _thermal_q(nth: jax.Array, x: jax.Array) -> jax.Array:
    r2 = jnp.abs(real_to_alpha(x)) ** 2
    return jnp.prod(jnp.exp(-r2 / (1 + nth)) / (jnp.pi * (1 + nth)), axis=-1)


def thermal_q(nth: Any) -> eqx.Partial:
    """Thermal product state: Q = prod_j exp(-|alpha_j|^2/(1+n_j)) / (pi (1+n_j))."""
    nth = jnp.atleast_1d(jnp.asarray(nth, dtype=float))
    if nth.ndim != 1 or bool(jnp.any(nth < 0)):
        raise ValueError(f"`nth` must be non-negative occupation(s), got {nth}")
    return eqx.Partial(_thermal_q, nth)


def _cat_q(alpha0: jax.Array, sign: float, x: jax.Array) -> jax.Array:
    alpha = real_to_alpha(x)

    def overlap(beta):  # <alpha|beta> of multimode coherent states
        e = (
            -0.5 * jnp.abs(alpha) ** 2
            - 0.5 * jnp.abs(beta) ** 2
            + jnp.conj(alpha) * beta
        )
        return jnp.exp(jnp.sum(e, axis=-1))

    norm2 = 2.0 * (1.0 + sign * jnp.exp(-2.0 * jnp.sum(jnp.abs(alpha0) ** 2)))
    amp = overlap(alpha0) + sign * overlap(-alpha0)
    return jnp.abs(amp) ** 2 / (norm2 * jnp.pi ** alpha0.shape[-1])


def cat_q(alpha0: Any, sign: float = 1.0) -> eqx.Partial:
    """Cat state (|alpha0> + sign |-alpha0>)/norm (alpha0 may be an (N,) vector):
    Q = |<alpha|alpha0> + sign <alpha|-alpha0>|^2 / (pi^N norm^2)."""
    if sign not in (1, -1, 1.0, -1.0):
        raise ValueError(f"`sign` must be +1 or -1, got {sign!r}")
    alpha0 = _modes(alpha0, "alpha0")
    if sign < 0 and not bool(jnp.any(alpha0 != 0)):
        raise ValueError("`alpha0` must be nonzero for an odd cat state")
    return eqx.Partial(_cat_q, alpha0, float(sign))


@eqx.filter_jit
def _sample_cat(key: jax.Array, alpha0: jax.Array, sign: float, n: int) -> jax.Array:
    k_side, k_noise, k_accept = jax.random.split(key, 3)
    m = 4 * n + 64  # acceptance ~1/2: fewer than n accepted is ~e^-n unlikely
    side = jnp.where(jax.random.bernoulli(k_side, 0.5, (m, 1)), 1.0, -1.0)
    noise = jax.random.normal(k_noise, (m, alpha0.shape[-1], 2)) * jnp.sqrt(0.5)
    alpha = side * alpha0 + noise[..., 0] + 1j * noise[..., 1]
    # Q / (M m) = |e^z + sign e^-z|^2 / (2 (|e^z|^2 + |e^-z|^2)), z = alpha^* . alpha0
    z = jnp.sum(jnp.conj(alpha) * alpha0, axis=-1)
    c = jnp.abs(z.real)
    num = jnp.abs(jnp.exp(z - c) + sign * jnp.exp(-z - c)) ** 2
    den = 2.0 * (jnp.exp(2 * z.real - 2 * c) + jnp.exp(-2 * z.real - 2 * c))
    accept = jax.random.uniform(k_accept, (m,)) < num / den
    first = jnp.argsort(~accept, stable=True)[:n]
    return alpha_to_real(alpha[first])


def sample_cat_q(key: jax.Array, alpha0: Any, sign: float, n: int) -> jax.Array:
    """Exact samples (n, 2N) of the cat state's Q (see `cat_q`), by rejection from
    the mixture of the two coherent Gaussians: since |u + v|^2 <= 2 (|u|^2 + |v|^2),
    Q <= M (G(alpha - alpha0) + G(alpha + alpha0)) / 2 with M = 2 / (1 + sign
    exp(-2 |alpha0|^2)), so about half of the proposals are kept.

    Examples:
        >>> x = sample_cat_q(jax.random.key(0), 2.0, 1.0, 1000)  # (1000, 2)
    """
    if sign not in (1, -1, 1.0, -1.0):
        raise ValueError(f"`sign` must be +1 or -1, got {sign!r}")
    alpha0 = _modes(alpha0, "alpha0")
    if sign < 0 and not bool(jnp.any(alpha0 != 0)):
        raise ValueError("`alpha0` must be nonzero for an odd cat state")
    return _sample_cat(key, alpha0, float(sign), int(n))
