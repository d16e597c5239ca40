"""Operators and state functions against QuTiP."""

import numpy as np
import pytest
import qutip as qt

import qflow_jax as qf
from tests.helpers import rand_dm


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=0)


@pytest.mark.parametrize("N", [2, 7])
def test_ladder_operators_match_qutip(N):
    close(qf.destroy(N), qt.destroy(N).full())
    close(qf.create(N), qt.create(N).full())
    close(qf.number(N), qt.num(N).full())
    close(qf.eye(N), qt.qeye(N).full())


def test_pauli_conventions_match_qutip():
    close(qf.sigmax(), qt.sigmax().full())
    close(qf.sigmay(), qt.sigmay().full())
    close(qf.sigmaz(), qt.sigmaz().full())
    close(qf.sigmam(), qt.sigmam().full())
    close(qf.sigmap(), qt.sigmap().full())
    # sigmam lowers basis(2, 0) (the sigmaz = +1 state) to basis(2, 1)
    close(qf.sigmam() @ qf.basis(2, 0), qf.basis(2, 1))


def test_tensor_order_matches_qutip(rng):
    A, B = rng.normal(size=(2, 2)), rng.normal(size=(3, 3))
    close(qf.tensor(A, B), qt.tensor(qt.Qobj(A), qt.Qobj(B)).full())
    close(qf.tensor([A, B, A]), np.kron(np.kron(A, B), A))
    close(qf.eye(2, 3), np.eye(6))


@pytest.mark.parametrize("alpha", [0.3, 1.2 - 0.7j])
def test_states_match_qutip(alpha):
    close(qf.fock_dm(6, 2), qt.fock_dm(6, 2).full())
    close(qf.coherent_dm(15, alpha), qt.coherent_dm(15, alpha).full(), 1e-12)
    close(
        qf.coherent_dm(30, alpha, method="analytic"),
        qt.coherent_dm(30, alpha, method="analytic").full(),
        1e-12,
    )
    close(qf.thermal_dm(10, 0.7), qt.thermal_dm(10, 0.7).full(), 1e-12)
    close(qf.ket2dm(qf.basis(3, 1)), qt.ket2dm(qt.basis(3, 1)).full())


def test_expect_and_distances_match_qutip(rng):
    A, B = rand_dm(rng, 5), rand_dm(rng, 5, rank=2)
    O = rng.normal(size=(5, 5)) + 1j * rng.normal(size=(5, 5))
    O = O + O.conj().T
    close(qf.expect(O, A), qt.expect(qt.Qobj(O), qt.Qobj(A)), 1e-12)
    close(qf.trace_distance(A, B), qt.tracedist(qt.Qobj(A), qt.Qobj(B)), 1e-10)
    close(qf.fidelity(A, B), qt.fidelity(qt.Qobj(A), qt.Qobj(B)), 1e-7)
    close(qf.fidelity(A, A), 1.0, 1e-7)
    # batched expect: one value per state
    batch = np.stack([A, B])
    close(
        qf.expect(O, batch), [qt.expect(qt.Qobj(O), qt.Qobj(x)) for x in batch], 1e-12
    )
    # kets are accepted
    psi = qf.coherent(8, 0.5)
    close(qf.expect(qf.number(8), psi), qf.expect(qf.number(8), qf.ket2dm(psi)))


def test_ptrace_matches_qutip(rng):
    dims = [2, 3, 2]
    rho = rand_dm(rng, 12)
    q = qt.Qobj(rho, dims=[dims, dims])
    for keep in [0, 1, 2, [0, 2], [1, 2]]:
        close(qf.ptrace(rho, keep, dims), q.ptrace(keep).full(), 1e-12)


def test_operators_accept_qobj():
    close(qf.expect(qt.num(4), qt.fock_dm(4, 3)), 3.0)
    close(qf.tensor(qt.sigmaz(), qt.qeye(2)), np.diag([1, 1, -1, -1]))


def test_bad_operator_inputs():
    with pytest.raises(ValueError, match="`N` must be a positive integer"):
        qf.destroy(0)
    with pytest.raises(ValueError, match="`n` must lie in"):
        qf.basis(3, 3)
    with pytest.raises(ValueError, match="`dims`"):
        qf.ptrace(qf.eye(4) / 4, 0, [2, 3])
    with pytest.raises(ValueError, match="`keep`"):
        qf.ptrace(qf.eye(4) / 4, 2, [2, 2])
    with pytest.raises(ValueError, match="`method`"):
        qf.coherent(5, 1.0, method="bogus")
