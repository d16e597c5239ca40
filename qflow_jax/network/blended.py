"""Blended dynamics of a qubit network and the quantum Laplacian of its swap part."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
import scipy.linalg

from qflow_jax.network.model import QubitNetwork
from qflow_jax.network.solve import (
    NetworkResult,
    _method,
    _network_inputs,
    _network_state,
    _run_network,
    _solver,
)
from qflow_jax.network.vector_field import NetworkVectorField, partial_traces

__all__ = [
    "BlendedNetworkVectorField",
    "blended_lindbladian",
    "blended_network_mesolve",
    "blended_trajectory",
    "laplacian_spectrum",
    "quantum_laplacian",
    "symmetrize",
]

_MAX_SYMMETRIZE = 7
_MAX_LAPLACIAN = 5


def _group(network: QubitNetwork, qubits: Sequence[int] | None) -> list[int]:
    if qubits is None:
        return list(range(network.n))
    qubits = sorted({int(q) for q in qubits})
    if not qubits or not all(0 <= q < network.n for q in qubits):
        raise ValueError(
            f"`qubits` must be indices in 0..{network.n - 1}, got {qubits}"
        )
    return qubits


def blended_lindbladian(
    network: QubitNetwork, qubits: Sequence[int] | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    r"""The blended single-qubit Lindbladian B = (1/m) sum_j L_j over `qubits`.

        B(rho) = -i[Hbar, rho] + sum_j sum_m D[sqrt(1/m) L_jm] rho,
        Hbar = (1/m) sum_j H_j

    (m qubits; all of them by default, one connected component for a
    disconnected graph). Pair couplings are not local and do not enter B.

    Returns:
        (Hbar, jump_ops): a 2 x 2 Hamiltonian and a list of 2 x 2 jump operators,
        ready for `mesolve`.

    Examples:
        >>> net = qf.QubitNetwork(3, "path", k=10.0,
        ...     H=[0.5 * (j + 1) * qf.sigmaz() for j in range(3)],
        ...     jump_ops=[[0.3 * qf.sigmam()]] * 3)
        >>> Hbar, Ls = blended_lindbladian(net)
        >>> print(np.real(np.diag(Hbar)))  # the mean field (0.5 + 1 + 1.5) / 3 Z
        [ 1. -1.]
        >>> res = qf.mesolve(Hbar, Ls, qf.fock_dm(2, 0), [0.0, 1.0])
    """
    qs = _group(network, qubits)
    m = len(qs)
    H = sum((network.H[j] for j in qs), np.zeros((2, 2), dtype=complex)) / m
    jumps = [L / math.sqrt(m) for j in qs for L in network.jump_ops[j]]
    return H, jumps


def blended_superoperator(
    network: QubitNetwork, qubits: Sequence[int] | None = None
) -> np.ndarray:
    """B as a 4 x 4 matrix on the row-major vec of a 2 x 2 rho."""
    qs = _group(network, qubits)
    return network.local_superoperators()[qs].mean(axis=0).reshape(4, 4)


def blended_trajectory(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    qubits: Sequence[int] | None = None,
) -> np.ndarray:
    r"""rhobar(t) = exp(B t) rhobar(0), rhobar(0) = (1/m) sum_j rho_j(0).

    The exact solution of the blended equation d rhobar/dt = B(rhobar) (a
    4 x 4 linear system, so the matrix exponential is exact).

    Args:
        network: the network.
        rho0: (n, 2, 2) initial reduced states or a (2^n, 2^n) network state.
        tsave: (nt,) times.
        qubits: the qubits blended (all by default).

    Returns:
        (nt, 2, 2) blended trajectory.

    Examples:
        >>> net = qf.QubitNetwork(3, "path", k=10.0,
        ...     H=[0.5 * (j + 1) * qf.sigmaz() for j in range(3)],
        ...     jump_ops=[[0.3 * qf.sigmam()]] * 3)
        >>> blended_trajectory(net, [qf.fock_dm(2, 0)] * 3, [0.0, 1.0]).shape
        (2, 2, 2)
    """
    qs = _group(network, qubits)
    reduced = _reduced_initial(network, rho0)
    rbar0 = reduced[qs].mean(axis=0).reshape(4)
    B = blended_superoperator(network, qs)
    t = np.asarray(tsave, dtype=float)
    return np.stack([scipy.linalg.expm(B * ti) @ rbar0 for ti in t]).reshape(-1, 2, 2)


def blended_trajectories(network: QubitNetwork, rho0: Any, tsave: Any) -> np.ndarray:
    """(nt, n, 2, 2): for each qubit, the blended trajectory of its component."""
    t = np.asarray(tsave, dtype=float)
    out = np.zeros((t.shape[0], network.n, 2, 2), dtype=complex)
    for comp in network.components:
        out[:, comp] = blended_trajectory(network, rho0, t, comp)[:, None]
    return out


def _reduced_initial(network: QubitNetwork, rho0: Any) -> np.ndarray:
    arr = np.asarray(rho0, dtype=complex)
    if arr.shape == (network.n, 2, 2):
        return arr
    full = _network_state(arr, network.n)
    return np.asarray(partial_traces(full, network.n))


def symmetrize(rho: jax.Array, n: int) -> jax.Array:
    r"""P rho = (1/n!) sum_pi U_pi rho U_pi^dag over all qubit permutations pi.

    P projects onto the permutation-invariant operators, the kernel of the quantum
    Laplacian of a connected graph. Cost n! x 4^n: n <= 7.
    """
    if n > _MAX_SYMMETRIZE:
        raise ValueError(f"`symmetrize` enumerates n! permutations; n <= 7, got {n}")
    t = rho.reshape((2,) * (2 * n))
    total = None
    for perm in itertools.permutations(range(n)):
        term = t.transpose((*perm, *(n + p for p in perm)))
        total = term if total is None else total + term
    return (total / math.factorial(n)).reshape(rho.shape)


class BlendedNetworkVectorField(eqx.Module):
    """Network-level blended dynamics d rho/dt = P L0 P rho, L0 without the swaps."""

    local: NetworkVectorField

    @property
    def kernel(self) -> str:
        """The kernel of L0 (`NetworkVectorField.kernel`)."""
        return self.local.kernel

    def __call__(self, t: jax.Array, rho: jax.Array, args: object) -> jax.Array:
        n = self.local.n
        return symmetrize(self.local(t, symmetrize(rho, n), args), n)


def blended_network_mesolve(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    *,
    method: Any = "tsit5",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    save_states: bool = True,
) -> NetworkResult:
    r"""Solves the network-level blended dynamics from P rho0:

        d rho/dt = P L0 P rho

    with P the permutation average (`symmetrize`) and L0 the network generator
    without the swap term. As k grows the network state is attracted to this
    orbit (docs/physics.md, section 2, a reconstruction). Options as in
    `network_mesolve` (an implicit `method` is applied to the whole field).
    Connected graphs, n <= 7.

    Examples:
        >>> net = qf.QubitNetwork(3, "path", k=10.0,
        ...     H=[0.5 * (j + 1) * qf.sigmaz() for j in range(3)],
        ...     jump_ops=[[0.3 * qf.sigmam()]] * 3)
        >>> rho0 = [qf.fock_dm(2, 0)] * 3
        >>> blended_network_mesolve(net, rho0, jnp.linspace(0, 1, 11)).states.shape
        (11, 8, 8)
    """
    if len(network.components) > 1:
        raise ValueError(
            "the network-level blended dynamics needs a connected graph; this one has "
            f"components {network.components}"
        )
    n = network.n
    method = _method(method, rtol, atol, max_steps)
    if method.imex:
        raise ValueError(
            "`method` must not be IMEX (kencarp) here: the blended field has no "
            f"swap part to treat implicitly, got {method.name!r}"
        )
    y0, tsave, _ = _network_inputs(n, rho0, tsave, None)
    vf = BlendedNetworkVectorField(NetworkVectorField.build(network, "local"))
    return _run_network(
        (vf,),
        n,
        symmetrize(y0, n),
        tsave,
        None,
        _solver(method),
        method,
        save_states,
        "blended_network_mesolve",
    )


def quantum_laplacian(network: QubitNetwork) -> np.ndarray:
    r"""L_Q = sum_{(j,l)} a_jl (I - U_jl (x) U_jl) on vec(rho), a real symmetric
    4^n x 4^n matrix (dense, n <= 5).

    Examples:
        >>> quantum_laplacian(QubitNetwork(2, [(0, 1)], k=1.0)).shape
        (16, 16)
    """
    n = network.n
    if n > _MAX_LAPLACIAN:
        raise ValueError(f"the dense quantum Laplacian is limited to n <= 5, got {n}")
    dim = 4**n
    lap = np.zeros((dim, dim))
    base = np.arange(dim).reshape((4,) * n)
    for (j, q), w in zip(network.edges, network.weights, strict=True):
        perm = list(range(n))
        perm[j], perm[q] = perm[q], perm[j]
        idx = base.transpose(perm).reshape(-1)
        lap[np.arange(dim), np.arange(dim)] += w
        lap[np.arange(dim), idx] -= w
    return lap


def laplacian_spectrum(network: QubitNetwork, tol: float = 1e-9) -> dict[str, Any]:
    r"""Spectrum of the quantum Laplacian, its kernel and its gap, with predictions.

    On each connected component of c qubits the kernel is the permutation-invariant
    operators, of dimension C(c+3, 3); the smallest nonzero eigenvalue equals
    lambda_2 of the graph Laplacian (for a connected graph).

    Returns:
        dict with eigenvalues (ascending), kernel_dim, kernel_dim_expected
        (product of C(c+3, 3) over components), gap, lambda2_graph.
    """
    eig = np.linalg.eigvalsh(quantum_laplacian(network))
    scale = max(1.0, float(np.max(np.abs(eig))))
    zero = np.abs(eig) <= tol * scale
    expected = math.prod(math.comb(len(c) + 3, 3) for c in network.components)
    gap = float(eig[~zero].min()) if np.any(~zero) else 0.0
    return {
        "eigenvalues": eig,
        "kernel_dim": int(zero.sum()),
        "kernel_dim_expected": int(expected),
        "gap": gap,
        "lambda2_graph": network.algebraic_connectivity(),
    }
