"""Reduced-state solver, blended dynamics, quantum Laplacian and diagnostics."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import qflow_jax as qf
from qflow_jax.network import (
    QubitNetwork,
    blended_lindbladian,
    blended_network_mesolve,
    blended_trajectory,
    bloch_vectors,
    detect_clusters,
    k_sweep,
    laplacian_spectrum,
    network_mesolve,
    orbit_sweep,
    solve_reduced,
    swap_matrix,
    symmetrize,
    trace_distances,
)


def dissipative_path3(k=10.0):
    # distinct local generators, each with decay: B is dissipative (unique fixed point)
    return QubitNetwork(
        3,
        "path",
        k=k,
        H=[(j + 1) / 2 * qf.sigmaz() + 0.3 * qf.sigmax() for j in range(3)],
        jump_ops=[[math.sqrt(0.5) * qf.sigmam()]] * 3,
    )


PSI3 = np.stack([np.asarray(qf.fock_dm(2, j % 2)) for j in range(3)])


def test_reduced_solver_equals_partial_traces_of_full_solve():
    net = QubitNetwork(
        4,
        [(0, 1, 0.5), (1, 2, 1.0), (2, 3, 2.0), (3, 0, 1.5)],
        k=3.0,
        H=[0.2 * (j + 1) * qf.sigmaz() + 0.4 * qf.sigmay() for j in range(4)],
        jump_ops=[
            [0.5 * qf.sigmam(), 0.2 * qf.sigmaz()],
            [],
            [0.3 * qf.sigmap()],
            [0.6 * qf.sigmam()],
        ],
    )
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16)) + 1j * rng.normal(size=(16, 16))
    rho0 = a @ a.conj().T / np.trace(a @ a.conj().T)  # entangled start
    tsave = np.linspace(0, 2, 6)
    full = network_mesolve(net, rho0, tsave, rtol=1e-11, atol=1e-13)
    red = solve_reduced(net, rho0, tsave, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(
        np.asarray(red.states), np.asarray(full.reduced), atol=1e-9
    )


def test_reduced_solver_thousands_of_qubits():
    # identical local generators: the mean state obeys d/dt mean = B mean exactly
    n, t1 = 3000, 1.0
    H = 0.7 * np.asarray(qf.sigmax()) + 0.2 * np.asarray(qf.sigmaz())
    net = QubitNetwork(n, "ring", k=20.0, H=[H] * n, jump_ops=[[0.4 * qf.sigmam()]] * n)
    rho0 = np.stack([np.asarray(qf.fock_dm(2, (j * 7 // 5) % 2)) for j in range(n)])
    res = solve_reduced(net, rho0, [0.0, t1])
    B = net.local_superoperators()[0].reshape(4, 4)
    ref = (scipy.linalg.expm(B * t1) @ rho0.mean(0).reshape(4)).reshape(2, 2)
    np.testing.assert_allclose(np.asarray(res.states[-1]).mean(0), ref, atol=1e-8)
    with pytest.raises(ValueError, match="local"):
        solve_reduced(
            QubitNetwork(2, "path", k=1.0, couplings=[(0, 1, "ZZ", 1.0)]),
            rho0[:2],
            [0, 1],
        )


def test_blended_lindbladian_is_average_generator():
    net = dissipative_path3()
    Hbar, jumps = blended_lindbladian(net)
    np.testing.assert_allclose(Hbar, np.mean([net.H[j] for j in range(3)], axis=0))
    tsave = np.linspace(0, 3, 7)
    rbar = blended_trajectory(net, PSI3, tsave)
    ref = qf.mesolve(
        jnp.asarray(Hbar),
        [jnp.asarray(L) for L in jumps],
        jnp.asarray(PSI3.mean(0)),
        jnp.asarray(tsave),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(rbar, np.asarray(ref.states), atol=1e-8)


def test_k_times_error_levels_off_on_dissipative_path():
    out = k_sweep(
        dissipative_path3(), PSI3, np.linspace(0, 10, 201), [10, 30, 100, 300]
    )
    assert abs(out["slope"] + 1) < 0.1
    kerr = out["k_times_error"]
    assert kerr.max() / kerr.min() < 1.2
    # the first-order correction explains the deviation up to O(1/k)
    res = out["correction_residual"]
    assert np.all(np.diff(res) < 0) and res[-1] < 0.02


@pytest.mark.parametrize(
    ("n", "edges"),
    [
        (3, "path"),
        (4, "ring"),
        (4, "star"),
        (5, "complete"),
        (4, [(0, 1, 0.5), (1, 2, 2.0), (2, 3, 1.0), (0, 3, 0.3)]),
    ],
)
def test_quantum_laplacian_kernel_and_gap(n, edges):
    net = QubitNetwork(n, edges, k=1.0)
    spec = laplacian_spectrum(net)
    assert spec["kernel_dim"] == math.comb(n + 3, 3) == spec["kernel_dim_expected"]
    assert spec["gap"] == pytest.approx(net.algebraic_connectivity(), rel=1e-9)


def test_quantum_laplacian_disconnected():
    with pytest.warns(UserWarning):
        net = QubitNetwork(4, [(0, 1), (2, 3)], k=1.0)
    spec = laplacian_spectrum(net)
    assert spec["kernel_dim"] == 10 * 10 == spec["kernel_dim_expected"]


def test_symmetrize_is_the_projector_on_swap_invariant_states():
    n = 3
    rng = np.random.default_rng(2)
    rho = jnp.asarray(rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8)))
    P = symmetrize(rho, n)
    np.testing.assert_allclose(symmetrize(P, n), P, atol=1e-14)
    for j, q in [(0, 1), (1, 2), (0, 2)]:
        U = swap_matrix(n, j, q)
        np.testing.assert_allclose(U @ np.asarray(P) @ U, P, atol=1e-14)


def test_orbit_attraction_of_network_state():
    tsave = np.linspace(0, 4, 5)
    errs = []
    for k in (20.0, 80.0):
        net = dissipative_path3(k)
        full = network_mesolve(net, PSI3, tsave, rtol=1e-10, atol=1e-12)
        blend = blended_network_mesolve(net, PSI3, tsave, rtol=1e-10, atol=1e-12)
        errs.append(
            max(
                float(qf.trace_distance(a, b))
                for a, b in zip(full.states[1:], blend.states[1:], strict=True)
            )
        )
    # O(1/k): a 4x larger gain brings the state ~4x closer to the blended orbit
    assert 3.0 < errs[0] / errs[1] < 5.0


def test_orbit_sweep_with_pair_couplings_matches_the_dense_orbit():
    """orbit_sweep (invariant orbit, Pauli-coefficient distances) against the
    enumerating `blended_network_mesolve` and dense Frobenius norms; with an XX pair
    coupling the reduced states are not closed, the whole state still approaches
    the orbit as 1/k."""
    net = QubitNetwork(
        3,
        "path",
        k=1.0,
        H=[0.3 * qf.sigmax() + hz * qf.sigmaz() for hz in (0.5, 1.0, 1.5)],
        jump_ops=[[np.sqrt(0.5) * qf.sigmam()]] * 3,
        couplings=[(0, 1, "XX", 0.4), (1, 2, "ZZ", 0.2)],
    )
    tsave = np.linspace(0.0, 4.0, 5)
    opts = dict(rtol=1e-10, atol=1e-12)
    out = orbit_sweep(net, list(PSI3), tsave, [20.0, 80.0], **opts)
    blend = blended_network_mesolve(net, PSI3, tsave, **opts)
    for k, dist in zip((20.0, 80.0), out["distances"], strict=True):
        full = network_mesolve(net.with_k(k), PSI3, tsave, **opts)
        dense = np.linalg.norm(np.asarray(full.states - blend.states), axis=(1, 2))
        np.testing.assert_allclose(dist, dense, rtol=1e-7, atol=1e-10)
    assert out["distances"][:, 0].max() > 0.1  # P rho0 != rho0: the layer is skipped
    assert abs(out["slope"] + 1.0) < 0.1
    np.testing.assert_allclose(out["k_times_distance"], out["ks"] * out["max_distance"])


def test_clusters_form_per_component():
    with pytest.warns(UserWarning):
        net = QubitNetwork(
            4,
            [(0, 1), (2, 3)],
            k=200.0,
            H=[qf.sigmax(), 2 * qf.sigmax(), qf.sigmaz(), qf.sigmaz()],
            jump_ops=[[qf.sigmam()], [qf.sigmam()], [qf.sigmap()], [qf.sigmap()]],
        )
    rho0 = np.stack([np.asarray(qf.fock_dm(2, j % 2)) for j in range(4)])
    red = solve_reduced(net, rho0, np.linspace(0, 5, 9)).states
    assert detect_clusters(red[2:], tol=0.02) == [[0, 1], [2, 3]]
    # 0 and 1 differ by O(1/k); 2 and 3 share a generator, so they merge exactly
    assert detect_clusters(red[2:], tol=1e-6) == [[0], [1], [2, 3]]


def test_bloch_vectors_and_distances():
    plus = np.full((2, 2), 0.5)
    np.testing.assert_allclose(bloch_vectors(plus), [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(bloch_vectors(qf.fock_dm(2, 1)), [0, 0, -1])
    assert trace_distances(qf.fock_dm(2, 0), qf.fock_dm(2, 1)) == pytest.approx(1.0)
    assert trace_distances(plus, qf.fock_dm(2, 0)) == pytest.approx(np.sqrt(0.5))
