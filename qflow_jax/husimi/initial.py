"""Initial states of a Q-Flow run as objects: the Husimi Q(0) as a log density on
R^{2N} (coordinates x_0, p_0, x_1, p_1, ... with alpha_j = x_j + i p_j), exact
samples of it, and its Fock-basis density matrix for the reference solvers.

Every state has `n_modes`, `log_q(y)`, `sample(key, n)`, `density_matrix(cutoff)`,
and the mean and width (`mean()`, `scale()`) of the Gaussian a new flow starts from.
A coherent product is that Gaussian exactly (`exact_gaussian`): its flow needs no
pre-training.

Examples:
    >>> state = FockState([1])
    >>> y = state.sample(jax.random.key(0), 200_000)
    >>> round(float(jnp.mean(jnp.sum(y**2, -1)) - 1), 2)  # <n> = E_Q|alpha|^2 - 1
    1.0
    >>> rho = state.density_matrix(4)
    >>> np.round(np.diag(np.asarray(rho)).real, 6).tolist()
    [0.0, 1.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.husimi.states import alpha_to_real, cat_q, sample_cat_q
from qflow_jax.operators import coherent, fock_dm, ket2dm, thermal_dm

__all__ = ["CatState", "CoherentState", "FockState", "InitialState", "ThermalState"]


def _per_mode(values: Any, name: str, dtype: Any, minimum: float | None) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=dtype))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"`{name}` must be a non-empty list of finite numbers, one per mode, "
            f"got {values!r}"
        )
    if minimum is not None and np.any(arr.real < minimum):
        raise ValueError(
            f"`{name}` must be >= {minimum:g} for every mode, got {values!r}"
        )
    return arr


class InitialState:
    """Q(0) of an initial state; subclasses fill in the physics."""

    exact_gaussian = False

    @property
    def n_modes(self) -> int:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Real dimension 2N of the phase space."""
        return 2 * self.n_modes

    def mean(self) -> np.ndarray:
        """(2N,) mean of Q(0): alpha_to_real(<a_j>)."""
        return np.zeros(self.dim)

    def scale(self) -> float:
        """Standard deviation per real coordinate of Q(0), the widest mode's."""
        raise NotImplementedError

    def log_q(self, y: jax.Array) -> jax.Array:
        """log Q(0) at points y (..., 2N)."""
        raise NotImplementedError

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """(n, 2N) exact samples of Q(0)."""
        raise NotImplementedError

    def density_matrix(self, cutoff: int) -> jax.Array:
        """Fock-basis density matrix (D, D), D = cutoff^N, renormalized to trace 1
        (the caller checks what the truncation lost)."""
        rho = reduce(jnp.kron, [self._mode_dm(j, cutoff) for j in range(self.n_modes)])
        return rho / jnp.trace(rho).real

    def _mode_dm(self, j: int, cutoff: int) -> jax.Array:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class CoherentState(InitialState):
    """Product of coherent states |alpha_0> x ... : Q(0) = prod_j exp(-|a_j -
    alpha_j|^2) / pi, the Gaussian N(alpha, I/2) in real coordinates."""

    alpha: Any  # (N,) complex amplitudes

    exact_gaussian = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _per_mode(self.alpha, "alpha", complex, None))

    @property
    def n_modes(self) -> int:
        return len(self.alpha)

    def mean(self) -> np.ndarray:
        # NumPy (not alpha_to_real): log_q and sample run inside traced functions
        return np.stack([self.alpha.real, self.alpha.imag], -1).reshape(-1)

    def scale(self) -> float:
        return math.sqrt(0.5)

    def log_q(self, y: jax.Array) -> jax.Array:
        mean = jnp.asarray(self.mean())
        return -jnp.sum((y - mean) ** 2, -1) - self.n_modes * jnp.log(jnp.pi)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        mean = jnp.asarray(self.mean())
        return mean + jnp.sqrt(0.5) * jax.random.normal(key, (n, self.dim))

    def _mode_dm(self, j: int, cutoff: int) -> jax.Array:
        return ket2dm(coherent(cutoff, self.alpha[j], method="analytic"))


@dataclass(frozen=True, eq=False)
class FockState(InitialState):
    """Product of Fock states |n_0> x ... : Q(0) = prod_j |a_j|^(2 n_j)
    exp(-|a_j|^2) / (pi n_j!); |a_j|^2 is Gamma(n_j + 1) distributed, the phase
    uniform."""

    n: Any  # (N,) occupation numbers

    def __post_init__(self) -> None:
        n = _per_mode(self.n, "n", float, 0.0)
        if np.any(n != np.round(n)):
            raise ValueError(f"`n` must hold integers, got {self.n!r}")
        object.__setattr__(self, "n", n.astype(int))

    @property
    def n_modes(self) -> int:
        return len(self.n)

    def scale(self) -> float:
        return math.sqrt((self.n.max() + 1) / 2)

    def log_q(self, y: jax.Array) -> jax.Array:
        n = jnp.asarray(self.n, float)
        r2 = y[..., 0::2] ** 2 + y[..., 1::2] ** 2
        terms = -r2 + n * jnp.log(r2) - jax.scipy.special.gammaln(n + 1)
        return jnp.sum(terms - jnp.log(jnp.pi), -1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        k1, k2 = jax.random.split(key)
        shape = jnp.asarray(self.n + 1.0)
        r = jnp.sqrt(jax.random.gamma(k1, shape, (n, self.n_modes)))
        phi = jax.random.uniform(k2, (n, self.n_modes), maxval=2 * jnp.pi)
        return alpha_to_real(r * jnp.exp(1j * phi))

    def _mode_dm(self, j: int, cutoff: int) -> jax.Array:
        return fock_dm(cutoff, int(self.n[j]))


@dataclass(frozen=True, eq=False)
class ThermalState(InitialState):
    """Product of thermal states with occupations nth_j: Q(0) is the Gaussian
    N(0, (1 + nth_j)/2) per real coordinate."""

    nth: Any  # (N,) mean occupations

    def __post_init__(self) -> None:
        object.__setattr__(self, "nth", _per_mode(self.nth, "nth", float, 0.0))

    @property
    def n_modes(self) -> int:
        return len(self.nth)

    def scale(self) -> float:
        return math.sqrt((self.nth.max() + 1) / 2)

    def log_q(self, y: jax.Array) -> jax.Array:
        s = jnp.asarray(np.repeat(1.0 + self.nth, 2))
        return -jnp.sum(y**2 / s + jnp.log(jnp.pi * s) / 2, -1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        s = jnp.asarray(np.repeat(np.sqrt((1.0 + self.nth) / 2), 2))
        return s * jax.random.normal(key, (n, self.dim))

    def _mode_dm(self, j: int, cutoff: int) -> jax.Array:
        return thermal_dm(cutoff, float(self.nth[j]))


@dataclass(frozen=True, eq=False)
class CatState(InitialState):
    """One-mode cat state |alpha> + sign |-alpha> (normalized); samples by
    rejection from its two coherent Gaussians (`sample_cat_q`)."""

    alpha: Any  # complex amplitude (one mode)
    sign: int = 1  # +1 even, -1 odd

    def __post_init__(self) -> None:
        alpha = _per_mode(self.alpha, "alpha", complex, None)
        if len(alpha) != 1:
            raise ValueError(
                f"`alpha` of a cat state must hold one mode, got {self.alpha!r}"
            )
        if self.sign not in (1, -1):
            raise ValueError(
                f"`sign` must be 1 (even cat) or -1 (odd), got {self.sign!r}"
            )
        if self.sign < 0 and alpha[0] == 0:
            raise ValueError("`alpha` must be nonzero for an odd cat state")
        object.__setattr__(self, "alpha", alpha)

    @property
    def n_modes(self) -> int:
        return 1

    def scale(self) -> float:
        r2 = float(np.abs(self.alpha[0]) ** 2)
        n = r2 * (np.tanh(r2) if self.sign > 0 else 1 / np.tanh(r2))
        return math.sqrt((n + 1) / 2)

    def log_q(self, y: jax.Array) -> jax.Array:
        return jnp.log(cat_q(self.alpha, float(self.sign))(y))

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        return sample_cat_q(key, jnp.asarray(self.alpha), float(self.sign), n)

    def density_matrix(self, cutoff: int) -> jax.Array:
        alpha = self.alpha[0]
        psi = coherent(cutoff, alpha, method="analytic") + self.sign * coherent(
            cutoff, -alpha, method="analytic"
        )
        rho = ket2dm(psi)
        return rho / jnp.trace(rho).real
