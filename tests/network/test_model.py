"""QubitNetwork: graphs, named couplings, validation of bad inputs."""

import numpy as np
import pytest

import qflow_jax as qf
from qflow_jax.network import (
    QubitNetwork,
    collective_couplings,
    coupling_matrix,
    graph_edges,
    swap_matrix,
)
from qflow_jax.operators import PAULI

X, Y, Z = (PAULI[a] for a in "XYZ")


def test_named_graphs():
    assert [e[:2] for e in graph_edges("path", 4)] == [(0, 1), (1, 2), (2, 3)]
    assert len(graph_edges("ring", 5)) == 5
    assert len(graph_edges("complete", 5)) == 10
    assert [e[:2] for e in graph_edges("star", 4)] == [(0, 1), (0, 2), (0, 3)]
    a = graph_edges("random", 8, p=0.4, seed=3)
    assert a == graph_edges("random", 8, p=0.4, seed=3)
    assert len(QubitNetwork(8, a, k=1.0).components) == 1


def test_laplacian_and_connectivity():
    net = QubitNetwork(4, "ring", k=1.0)
    # ring of 4: Laplacian eigenvalues 0, 2, 2, 4
    np.testing.assert_allclose(
        np.linalg.eigvalsh(net.graph_laplacian()), [0, 2, 2, 4], atol=1e-12
    )
    assert net.algebraic_connectivity() == pytest.approx(2.0)


def test_named_couplings_match_pauli_products():
    np.testing.assert_allclose(coupling_matrix("XX", 0.7), 0.7 * np.kron(X, X))
    np.testing.assert_allclose(
        coupling_matrix("exchange"), 0.5 * (np.kron(X, X) + np.kron(Y, Y))
    )
    np.testing.assert_allclose(
        coupling_matrix("heisenberg"), np.kron(X, X) + np.kron(Y, Y) + np.kron(Z, Z)
    )


def test_collective_coupling_is_collective_spin_square():
    n, chi = 4, 0.3
    net = QubitNetwork(
        n, "path", k=0.0, couplings=collective_couplings(n, "ZZ", chi / 2)
    )
    H, _ = net.dense_operators()
    Sz = (
        sum(
            np.asarray(
                qf.tensor(*[qf.sigmaz() if i == j else qf.eye(2) for i in range(n)])
            )
            for j in range(n)
        )
        / 2
    )
    expected = chi * Sz @ Sz - chi * n / 4 * np.eye(2**n)
    np.testing.assert_allclose(H, expected, atol=1e-12)


def test_swap_matrix_exchanges_qubits():
    a, b, c = (np.asarray(qf.basis(2, i)) for i in (0, 1, 1))
    psi = np.kron(np.kron(a, b), np.kron(a, c))
    out = swap_matrix(4, 0, 3) @ psi
    np.testing.assert_allclose(out, np.kron(np.kron(c, b), np.kron(a, a)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"edges": [(0, 3)]}, "outside"),
        ({"edges": [(1, 1)]}, "self-loop"),
        ({"edges": [(0, 1, -1.0)]}, "weights must be >= 0"),
        ({"edges": [(0, 1), (1, 0)]}, "repeats"),
        ({"k": -1.0}, "swap gain"),
        ({"H": [np.array([[0, 1], [0, 0]])] * 3}, "Hermitian"),
        ({"H": [np.eye(3)] * 3}, "shape"),
        ({"H": [np.eye(2)] * 2}, "n=3"),
        ({"jump_ops": [[np.eye(4)], [], []]}, r"jump_ops\[0\]\[0\]"),
        ({"jump_ops": [[]]}, "one per qubit"),
        ({"couplings": [(0, 1, np.triu(np.ones((4, 4))))]}, "Hermitian"),
        ({"couplings": [(0, 1, np.eye(2))]}, "shape"),
        ({"couplings": [(0, 5, "XX", 1.0)]}, "distinct"),
        ({"couplings": [(0, 1, "XZ", 1.0)]}, "unknown coupling"),
        ({"edges": "lattice"}, "unknown graph"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = {"n": 3, "edges": "path", "k": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        QubitNetwork(**args)


def test_disconnected_graph_warns_and_reports_components():
    with pytest.warns(UserWarning, match="disconnected"):
        net = QubitNetwork(4, [(0, 1), (2, 3)], k=1.0)
    assert net.components == [[0, 1], [2, 3]]
    assert net.algebraic_connectivity() == pytest.approx(0.0, abs=1e-12)
