"""Dicke-type model: qubits coupled collectively to one bosonic mode, with swaps.

    H = omega a^dag a + sum_j H_j + (g / sqrt(n)) (a + a^dag) sum_j sigma_x^j
    jump operators: sqrt(kappa) a, the qubits' local ones, sqrt(k a_jl) U_jl

on the space mode (x) qubit 0 (x) ... (x) qubit n-1, solved by the dense `mesolve`.
"""

from __future__ import annotations

import math

import numpy as np

from qflow_jax.network.model import QubitNetwork, _embed
from qflow_jax.operators import PAULI

__all__ = ["dicke_operators"]


def dicke_operators(
    network: QubitNetwork, n_levels: int, omega: float, g: float, kappa: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(H, jump_ops) of the Dicke-type model as dense matrices, mode first.

    Args:
        network: the qubits (local terms, pair couplings, swap graph and gain k).
        n_levels: Fock truncation of the mode.
        omega, g, kappa: mode frequency, collective coupling, mode decay rate.

    Examples:
        >>> net = qf.QubitNetwork(2, "path", k=1.0)
        >>> H, Ls = dicke_operators(net, 6, 1.0, 0.5, 0.2)
        >>> H.shape, len(Ls)  # mode x 2 qubits; swap jump and mode decay
        ((24, 24), 2)
    """
    if not isinstance(n_levels, int) or n_levels < 1:
        raise ValueError(f"`n_levels` must be a positive integer, got {n_levels!r}")
    if kappa < 0:
        raise ValueError(f"`kappa` must be >= 0, got {kappa}")
    n = network.n
    a = np.diag(np.sqrt(np.arange(1, n_levels)), 1).astype(complex)
    Hq, jumps_q = network.dense_operators()
    eye_m, eye_q = np.eye(n_levels), np.eye(2**n)
    Jx = sum((_embed(n, {j: PAULI["X"]}) for j in range(n)), np.zeros_like(eye_q))
    H = (
        omega * np.kron(a.conj().T @ a, eye_q)
        + np.kron(eye_m, Hq)
        + g / math.sqrt(n) * np.kron(a + a.conj().T, Jx)
    )
    # the swaps of `network.dense_operators` act on the qubits only
    jumps = [np.kron(eye_m, L) for L in jumps_q]
    if kappa > 0:
        jumps.append(math.sqrt(kappa) * np.kron(a, eye_q))
    return H, jumps
