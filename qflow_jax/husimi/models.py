"""Bosonic models with closed-form solutions, shared by the Q-Flow and PINN drivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla

from qflow_jax.husimi.algebra import BosonOp, a, adag
from qflow_jax.husimi.compiler import QPDE, compile_qpde

__all__ = ["DampedChain", "damped_alpha"]


def damped_alpha(matrix: Any, gamma: Any, t: float, alpha0: Any) -> np.ndarray:
    """Exact coherent amplitudes alpha(t) = expm(-(i M + Gamma/2) t) alpha0 of a
    linear model H = sum_jk M_jk a_j^dag a_k with jumps sqrt(gamma_j) a_j.

    A coherent product stays one under such a model (docs/physics.md, section 1);
    `DampedChain.alpha` is this function for the chain.

    Args:
        matrix: (N, N) Hermitian single-particle matrix M.
        gamma: damping rate, one for all modes or (N,) one per mode
            (Gamma = diag(gamma)).
        t: time.
        alpha0: (N,) amplitudes at t = 0.

    Returns:
        (N,) complex amplitudes at time t.

    Examples:
        >>> print(np.round(damped_alpha([[1.0]], 0.5, 2.0, [1.0]), 4))  # e^(-2i - 1/2)
        [-0.2524-0.5515j]
    """
    M = np.asarray(matrix)
    gen = 1j * M + 0.5 * np.diag(np.broadcast_to(gamma, M.shape[:1]))
    return sla.expm(-gen * t) @ np.asarray(alpha0)


@dataclass(frozen=True)
class DampedChain:
    """N damped modes on a chain with nearest-neighbour hopping J:

        H = sum_j omega a_j^dag a_j + J sum_j (a_j^dag a_{j+1} + h.c.),
        L_j = sqrt(gamma) a_j.

    The model is linear: a coherent product stays one, with amplitudes
    alpha(t) = expm(-(i M + gamma/2) t) alpha0 (M the single-particle matrix), so Q
    stays N(alpha(t), I/2) in real coordinates and <n_j> = |alpha_j(t)|^2.

    Examples:
        >>> chain = DampedChain(2, omega=1.0, gamma=0.5, hopping=0.3)
        >>> np.round(chain.alpha(1.0, np.array([1.0, 0.5j])), 4)
        array([0.4642-0.7229j, 0.1194+0.0766j])
    """

    n_modes: int
    omega: float
    gamma: float
    hopping: float = 0.0

    @property
    def matrix(self) -> np.ndarray:
        """The single-particle matrix M of H."""
        N = self.n_modes
        return self.omega * np.eye(N) + self.hopping * (
            np.eye(N, k=1) + np.eye(N, k=-1)
        )

    def operators(self) -> tuple[BosonOp, list[BosonOp]]:
        """(H, jump operators) in the boson algebra."""
        N, J = self.n_modes, self.hopping
        H = sum((self.omega * adag(j) @ a(j) for j in range(N)), start=0.0 * a(0))
        H = H + sum(
            (J * (adag(j) @ a(j + 1) + adag(j + 1) @ a(j)) for j in range(N - 1)),
            start=0.0 * a(0),
        )
        return H, [np.sqrt(self.gamma) * a(j) for j in range(N)]

    def pde(self) -> QPDE:
        """The compiled Husimi PDE."""
        H, jumps = self.operators()
        return compile_qpde(H, jumps, n_modes=self.n_modes)

    def alpha(self, t: float, alpha0: np.ndarray) -> np.ndarray:
        """Exact coherent amplitudes at time t from alpha0 (`damped_alpha`)."""
        return damped_alpha(self.matrix, self.gamma, t, alpha0)
