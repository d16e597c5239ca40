"""Diagnostics of clustering on the blended trajectory, and the k-sweep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from qflow_jax.network.blended import (
    blended_superoperator,
    blended_trajectories,
)
from qflow_jax.network.model import QubitNetwork, _components
from qflow_jax.network.permutation import blended_invariant_mesolve, frobenius_distance
from qflow_jax.network.solve import network_mesolve, product_state, sweep_reduced_states
from qflow_jax.operators import PAULI

__all__ = [
    "bloch_vectors",
    "detect_clusters",
    "first_order_correction",
    "frobenius_distances",
    "k_sweep",
    "network_trajectories",
    "orbit_sweep",
    "trace_distances",
]

_PAULIS = np.stack([PAULI[a] for a in "XYZ"])


def bloch_vectors(rhos: Any) -> np.ndarray:
    """(..., 2, 2) -> (..., 3): (<X>, <Y>, <Z>) of each single-qubit state.

    Examples:
        >>> bloch_vectors(qf.fock_dm(2, 0))
        array([0., 0., 1.])
    """
    r = np.asarray(rhos)
    if r.shape[-2:] != (2, 2):
        raise ValueError(f"`rhos` must have shape (..., 2, 2), got {r.shape}")
    return np.einsum("kij,...ji->...k", _PAULIS, r).real


def trace_distances(rhos: Any, reference: Any) -> np.ndarray:
    """0.5 ||rho - ref||_1 elementwise over broadcast batch axes of (..., 2, 2)."""
    diff = np.asarray(rhos) - np.asarray(reference)
    herm = 0.5 * (diff + np.conj(np.swapaxes(diff, -1, -2)))
    return 0.5 * np.abs(np.linalg.eigvalsh(herm)).sum(axis=-1)


def frobenius_distances(rhos: Any, reference: Any) -> np.ndarray:
    """||rho - ref||_F elementwise over broadcast batch axes of (..., d, d)."""
    diff = np.asarray(rhos) - np.asarray(reference)
    return np.sqrt((np.abs(diff) ** 2).sum(axis=(-2, -1)))


def detect_clusters(reduced: Any, tol: float) -> list[list[int]]:
    """Groups qubits whose reduced states stay within trace distance `tol`.

    Qubits j and l are linked when max_t 0.5||rho_j(t) - rho_l(t)||_1 <= tol; the
    clusters are the connected groups of that relation (single linkage).

    Args:
        reduced: (nt, n, 2, 2) trajectories or (n, 2, 2) states (an equilibrium).
        tol: trace-distance tolerance.

    Examples:
        >>> detect_clusters(np.stack([qf.fock_dm(2, 0)] * 2 + [qf.fock_dm(2, 1)]), 1e-6)
        [[0, 1], [2]]
    """
    r = np.asarray(reduced)
    if r.ndim == 3:
        r = r[None]
    if r.ndim != 4 or r.shape[-2:] != (2, 2):
        raise ValueError(f"`reduced` must be (nt, n, 2, 2) or (n, 2, 2), got {r.shape}")
    if not tol > 0:
        raise ValueError(f"`tol` must be > 0, got {tol}")
    n = r.shape[1]
    d = trace_distances(r[:, :, None], r[:, None, :]).max(axis=0)
    pairs = [(j, q) for j in range(n) for q in range(j + 1, n) if d[j, q] <= tol]
    return _components(n, pairs)


def first_order_correction(network: QubitNetwork, rho_avg: Any) -> np.ndarray:
    r"""Predicted deviations delta_j = rho_j - rho_avg to first order in 1/k:

        delta = (1/k) L_G^+ [ (L_. - B) rho_avg ]

    with L_G^+ the pseudoinverse of the graph Laplacian, L_j the local generators
    and B their average (per connected component). The remainder is O(1/k^2)
    once the initial layer has decayed (docs/physics.md, section 2, a reconstruction).

    Args:
        network: the network (k > 0).
        rho_avg: (nt, n, 2, 2) average reduced state of each qubit's component
            (or (nt, 2, 2) for a connected graph).

    Returns:
        (nt, n, 2, 2) predicted deviations.
    """
    if network.k <= 0:
        raise ValueError("the 1/k correction needs a swap gain k > 0")
    avg = np.asarray(rho_avg, dtype=complex)
    if avg.ndim == 3:
        avg = np.broadcast_to(avg[:, None], (avg.shape[0], network.n, 2, 2))
    S = network.local_superoperators().reshape(network.n, 4, 4)
    src = np.zeros(avg.shape[:2] + (4,), dtype=complex)
    for comp in network.components:
        B = blended_superoperator(network, comp)
        for j in comp:
            src[:, j] = avg[:, j].reshape(-1, 4) @ (S[j] - B).T
    lap_pinv = np.linalg.pinv(network.graph_laplacian())
    return (np.einsum("jl,tlp->tjp", lap_pinv, src) / network.k).reshape(avg.shape)


def component_averages(network: QubitNetwork, reduced: Any) -> np.ndarray:
    """(nt, n, 2, 2): each qubit gets the mean reduced state of its component."""
    r = np.asarray(reduced)
    out = np.empty_like(r)
    for comp in network.components:
        out[:, comp] = r[:, comp].mean(axis=1, keepdims=True)
    return out


def network_trajectories(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    *,
    method: str = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 1_000_000,
) -> np.ndarray:
    """(nt, n, 2, 2) reduced states: `solve_reduced` when all terms are local (exact
    closure), else the partial traces of `network_mesolve` (`sweep_reduced_states`
    of one network)."""
    return np.asarray(
        sweep_reduced_states(
            [network],
            rho0,
            tsave,
            method=method,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
        )[0]
    )


def k_sweep(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    ks: Sequence[float],
    *,
    t_skip: float | None = None,
    method: str = "tsit5",
    rtol: float = 1e-9,
    atol: float = 1e-11,
) -> dict[str, Any]:
    r"""Clustering error vs swap gain, with a power-law fit.

    For each k: err(k) = max_j max_{t >= t_skip} 0.5||rho_j(t) - rhobar(t)||_1, with
    rhobar the blended trajectory of qubit j's component. The fitted slope of
    log err vs log k is -1 when B is dissipative (k err levels off). Also the
    relative residual of the first-order correction,
    max ||delta_j - delta_j^pred||_F / max ||delta_j||_F (O(1/k) when it holds).

    Args:
        network, rho0, tsave: the problem (the network's own k is ignored).
        ks: gains, increasing, > 0.
        t_skip: errors are measured for t >= t_skip (after the initial layer);
            default 10 / (min(ks) lambda_2), at most half the horizon.
        method, rtol, atol: solver options (see `network_trajectories`).

    Returns:
        dict with ks, max_error, k_times_error, correction_residual, slope,
        intercept (log err = intercept + slope log k) and t_skip.

    Examples:
        >>> net = qf.QubitNetwork(3, "path", k=10.0,
        ...     H=[0.3 * qf.sigmax() + hz * qf.sigmaz() for hz in (0.5, 1.0, 1.5)],
        ...     jump_ops=[[np.sqrt(0.5) * qf.sigmam()]] * 3)
        >>> rho0 = [qf.fock_dm(2, 0), qf.fock_dm(2, 1), qf.fock_dm(2, 0)]
        >>> out = k_sweep(net, rho0, np.linspace(0, 10, 101), [30, 100, 300])
        >>> print(round(out["slope"], 1))  # error ~ 1/k
        -1.0
    """
    ks, t, t_skip, mask = _sweep_times(network, ks, tsave, t_skip)
    bar = blended_trajectories(network, rho0, t)
    nets = [network.with_k(float(k)) for k in ks]
    reds = np.asarray(
        sweep_reduced_states(nets, rho0, t, method=method, rtol=rtol, atol=atol)
    )
    errors, residuals = [], []
    for net, red in zip(nets, reds, strict=True):
        errors.append(trace_distances(red[mask], bar[mask]).max())
        avg = component_averages(net, red)
        dev = (red - avg)[mask]
        pred = first_order_correction(net, avg)[mask]
        scale = frobenius_distances(dev, 0.0).max()
        resid = frobenius_distances(dev, pred).max()
        residuals.append(resid / scale if scale > 0 else 0.0)
    errors = np.asarray(errors)
    slope, intercept = np.polyfit(np.log(ks), np.log(errors), 1)
    return {
        "ks": ks,
        "max_error": errors,
        "k_times_error": ks * errors,
        "correction_residual": np.asarray(residuals),
        "slope": float(slope),
        "intercept": float(intercept),
        "t_skip": float(t_skip),
    }


def _sweep_times(
    network: QubitNetwork, ks: Any, tsave: Any, t_skip: float | None
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """(ks, times, t_skip, mask of the times >= t_skip) of a k-sweep, checked; the
    default t_skip is 10 / (min(ks) lambda_2), at most half the horizon (after the
    initial layer of the slowest gain)."""
    ks = np.asarray(ks, dtype=float)
    if ks.ndim != 1 or ks.size < 2 or np.any(ks <= 0):
        raise ValueError(f"`ks` must hold at least 2 gains > 0, got {ks}")
    t = np.asarray(tsave, dtype=float)
    if t_skip is None:
        lap = network.graph_laplacian()
        lam = min(
            (
                np.linalg.eigvalsh(lap[np.ix_(c, c)])[1]
                for c in network.components
                if len(c) > 1
            ),
            default=np.inf,
        )
        t_skip = min(10.0 / (ks.min() * lam), 0.5 * t[-1])
    mask = t >= t_skip
    if not np.any(mask):
        raise ValueError(f"`t_skip`={t_skip} leaves no save time (t_end={t[-1]})")
    return ks, t, float(t_skip), mask


def orbit_sweep(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    ks: Sequence[float],
    *,
    t_skip: float | None = None,
    method: str = "tsit5",
    rtol: float = 1e-9,
    atol: float = 1e-11,
    progress: bool = False,
) -> dict[str, Any]:
    r"""Attraction of the whole network state to the blended orbit, vs swap gain.

    For each k: d(k) = max_{t >= t_skip} ||rho_k(t) - rhobar(t)||_F, rho_k the full
    state (`network_mesolve`, structured engine) and rhobar the network-level
    blended trajectory d rhobar/dt = P L0 P rhobar from P rho0
    (`blended_invariant_mesolve`, in the permutation-invariant operators). The
    distance is read from the Pauli coefficients (`frobenius_distance`), one save
    time at a time; the fitted slope of log d vs log k is -1 for O(1/k)
    attraction. Pair couplings (Hamiltonian, not closed on the reduced states)
    are allowed; the graph must be connected. Full states of n qubits are kept at
    every save time (16 4^n bytes each): pass a few times.

    Args:
        network, rho0, tsave: the problem (the network's own k is ignored); rho0 a
            list of n single-qubit states (a product) or a full state.
        ks: gains, increasing, > 0.
        t_skip: distances are measured for t >= t_skip; default as in `k_sweep`.
        method, rtol, atol: options of both solves.
        progress: a tqdm progress bar over the gains (each full solve of 12
            qubits takes many minutes on a CPU).

    Returns:
        dict with ks, max_distance, k_times_distance, distances (len(ks), nt),
        slope, intercept (log d = intercept + slope log k), t_skip, and the
        blended single-qubit state `blended_reduced` (nt, 2, 2).

    Examples:
        >>> net = qf.QubitNetwork(3, "path", k=1.0,
        ...     H=[hz * qf.sigmaz() for hz in (0.5, 1.0, 1.5)],
        ...     jump_ops=[[0.5 * qf.sigmam()]] * 3,
        ...     couplings=[(0, 1, "XX", 0.3)])
        >>> rho0 = [qf.fock_dm(2, 0), qf.fock_dm(2, 1), qf.fock_dm(2, 0)]
        >>> out = orbit_sweep(net, rho0, np.linspace(0, 4, 9), [20, 80])
        >>> print(round(out["slope"], 1))  # distance ~ 1/k
        -1.0
    """
    ks, t, t_skip, mask = _sweep_times(network, ks, tsave, t_skip)
    opts = dict(method=method, rtol=rtol, atol=atol)
    bar = blended_invariant_mesolve(network, rho0, t, **opts)
    start = product_state(rho0) if isinstance(rho0, list | tuple) else rho0
    distances, worst = [], []
    bar_k = tqdm(ks, disable=not progress, desc="orbit_sweep", unit="gain")
    for k in bar_k:
        full = network_mesolve(network.with_k(float(k)), start, t, **opts)
        row = np.array(
            [
                float(frobenius_distance(full.states[i], bar.states[i]))
                for i in range(t.size)
            ]
        )
        del full
        distances.append(row)
        worst.append(row[mask].max())
        bar_k.set_postfix(k=float(k), distance=worst[-1])
    distances, worst = np.asarray(distances), np.asarray(worst)
    slope, intercept = np.polyfit(np.log(ks), np.log(worst), 1)
    return {
        "ks": ks,
        "max_distance": worst,
        "k_times_distance": ks * worst,
        "distances": distances,
        "slope": float(slope),
        "intercept": float(intercept),
        "t_skip": t_skip,
        "blended_reduced": np.asarray(bar.reduced),
    }
