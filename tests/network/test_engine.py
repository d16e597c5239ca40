"""Structured network engine vs dense references, invariants, the stiff regime."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import qflow_jax as qf
from qflow_jax.network import (
    NetworkVectorField,
    QubitNetwork,
    network_mesolve,
    partial_traces,
    product_state,
    solve_reduced,
    swap_matrix,
    sweep_reduced_states,
)
from tests.helpers import liouvillian, random_network, random_state, vec


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_rhs_equals_dense_liouvillian(n):
    net = random_network(n, seed=n)
    rho = random_state(n, n)
    # QuTiP's Liouvillian acts on column-stacked vec(rho): an independent reference
    ref = (liouvillian(net) @ vec(rho)).reshape(rho.shape, order="F")
    out = np.asarray(NetworkVectorField.build(net)(0.0, jnp.asarray(rho), None))
    np.testing.assert_allclose(out, ref, atol=1e-12 * np.abs(ref).max())
    split = sum(
        np.asarray(NetworkVectorField.build(net, p)(0.0, jnp.asarray(rho), None))
        for p in ("local", "swap")
    )
    np.testing.assert_allclose(split, ref, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("n", [2, 4])
def test_solution_equals_matrix_exponential(n):
    net = random_network(n, seed=10 + n)
    rho0 = random_state(n, 10 + n)
    tsave = np.linspace(0.0, 1.0, 5)
    res = network_mesolve(net, rho0, tsave, rtol=1e-12, atol=1e-14)
    L = liouvillian(net)
    for t, rho in zip(tsave, np.asarray(res.states), strict=True):
        ref = (scipy.linalg.expm(L * t) @ vec(rho0)).reshape(rho0.shape, order="F")
        # tolerance: Tsit5 global error at rtol=1e-12 over t <= 1
        np.testing.assert_allclose(rho, ref, atol=1e-10)


def test_solution_equals_dense_mesolve_n5():
    net = random_network(5, seed=7, k=1.5)
    rho0 = product_state([qf.fock_dm(2, j % 2) for j in range(5)])
    tsave = jnp.linspace(0.0, 0.5, 3)
    H, jumps = net.dense_operators()
    dense = qf.mesolve(
        jnp.asarray(H),
        [jnp.asarray(L) for L in jumps],
        rho0,
        tsave,
        rtol=1e-12,
        atol=1e-14,
    )
    res = network_mesolve(net, rho0, tsave, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        np.asarray(res.states), np.asarray(dense.states), atol=1e-10
    )


def test_swap_partial_trace_identity():
    n = 4
    rho = random_state(n, 3)
    U = swap_matrix(n, 1, 3)
    red = np.asarray(partial_traces(jnp.asarray(rho), n))
    red_swapped = np.asarray(partial_traces(jnp.asarray(U @ rho @ U), n))
    np.testing.assert_allclose(red_swapped[[0, 3, 2, 1]], red, atol=1e-14)
    for j in range(n):
        np.testing.assert_allclose(
            red[j], np.asarray(qf.ptrace(rho, j, [2] * n)), atol=1e-14
        )


def test_trace_hermiticity_positivity_along_trajectory():
    net = random_network(4, seed=21, k=3.0)
    res = network_mesolve(
        net, random_state(4, 21), np.linspace(0, 2, 9), rtol=1e-9, atol=1e-11
    )
    states = np.asarray(res.states)
    np.testing.assert_allclose(np.trace(states, axis1=1, axis2=2), 1.0, atol=1e-9)
    np.testing.assert_allclose(states, np.conj(np.swapaxes(states, 1, 2)), atol=1e-12)
    assert np.linalg.eigvalsh(states).min() > -1e-9


def test_exp_ops_and_reduced_states():
    net = random_network(3, seed=5)
    Z0 = np.asarray(qf.tensor(qf.sigmaz(), qf.eye(2), qf.eye(2)))
    res = network_mesolve(net, random_state(3, 5), np.linspace(0, 1, 4), exp_ops=[Z0])
    np.testing.assert_allclose(
        res.expects[0].real, np.einsum("ij,tji->t", Z0, res.states).real, atol=1e-12
    )
    np.testing.assert_allclose(
        res.reduced[:, 0, 0, 0] - res.reduced[:, 0, 1, 1],
        res.expects[0].real,
        atol=1e-12,
    )


def test_stiff_large_gain_with_implicit_method():
    n, k = 3, 1000.0
    net = QubitNetwork(
        n,
        "path",
        k=k,
        H=[(j + 1) / 2 * qf.sigmaz() + 0.3 * qf.sigmax() for j in range(n)],
        jump_ops=[[0.3 * qf.sigmam()]] * n,
    )
    psi = [qf.fock_dm(2, j % 2) for j in range(n)]
    tsave = np.linspace(0.0, 2.0, 5)
    res = network_mesolve(net, psi, tsave, method="kvaerno5", rtol=1e-8, atol=1e-10)
    # an explicit method needs ~3000 steps here (step ~ 3.5 / (2 k lambda_max))
    assert int(res.stats["num_steps"]) < 300
    ref = solve_reduced(net, psi, tsave, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        np.asarray(res.reduced), np.asarray(ref.states), atol=1e-6
    )


def test_bad_solver_inputs():
    net = random_network(2, seed=1)
    with pytest.raises(ValueError, match="method"):
        network_mesolve(net, random_state(2, 1), [0.0, 1.0], method="euler")
    with pytest.raises(ValueError, match="rho0"):
        network_mesolve(net, np.eye(4), [0.0, 1.0])
    with pytest.raises(ValueError, match="tsave"):
        network_mesolve(net, random_state(2, 1), [1.0, 0.0])


@pytest.mark.parametrize("couplings", [False, True])
def test_sweep_equals_one_solve_per_network(couplings):
    nets = [random_network(3, 11, k=k, couplings=couplings) for k in (0.5, 5.0, 50.0)]
    start = [qf.fock_dm(2, 0), qf.fock_dm(2, 1), qf.fock_dm(2, 0)]
    t = jnp.linspace(0.0, 1.0, 4)
    opts = {"rtol": 1e-10, "atol": 1e-12}
    swept = np.asarray(sweep_reduced_states(nets, start, t, **opts))
    for net, red in zip(nets, swept, strict=True):
        if couplings:
            one = network_mesolve(net, start, t, save_states=False, **opts).reduced
        else:
            one = solve_reduced(net, start, t, **opts).states
        np.testing.assert_allclose(red, np.asarray(one), atol=1e-12)
    assert swept.shape == (3, 4, 3, 2, 2)


def test_sweep_refuses_networks_of_different_shapes():
    a = QubitNetwork(3, "path", k=1.0, jump_ops=[[qf.sigmam()]] * 3)
    b = QubitNetwork(3, "ring", k=1.0, jump_ops=[[qf.sigmam()]] * 3)
    with pytest.raises(ValueError, match="share their graph"):
        sweep_reduced_states([a, b], [qf.fock_dm(2, 0)] * 3, [0.0, 1.0])
