"""The excitation-number-restricted basis: its states, its operators against the
full tensor product and QuTiP, the projected coherent state, the argument checks."""

import itertools
import pickle
from math import comb, factorial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax.experimental import sparse as jsparse

from qflow_jax.husimi.algebra import BosonOp, a, adag
from qflow_jax.lindblad.enr import ENRBasis


def brute_states(k: int, cutoffs: list[int]) -> np.ndarray:
    """All occupations within the cut-offs with at most k quanta, lexicographic."""
    rows = [s for s in itertools.product(*map(range, cutoffs)) if sum(s) <= k]
    return np.array(rows, dtype=np.int64).reshape(-1, len(cutoffs))


def restriction(A_full: np.ndarray, basis: ENRBasis, dims: list[int]) -> np.ndarray:
    idx = basis.full_indices(dims)
    assert np.all(idx >= 0)
    return A_full[np.ix_(idx, idx)]


def random_polynomial(rng: np.random.Generator, n_modes: int, n_terms: int):
    op = BosonOp()
    for _ in range(n_terms):
        term = complex(rng.normal(), rng.normal())
        for j in range(n_modes):
            m, n = rng.integers(0, 3, size=2)
            term = term * (adag(j) ** int(m)) @ (a(j) ** int(n))
        op = op + term
    return op


# --- the states ---------------------------------------------------------------


@pytest.mark.parametrize(
    "n_modes, k, expected",
    [(1, 0, 1), (1, 5, 6), (3, 2, 10), (5, 6, 462), (10, 6, 8008)],
)
def test_dimension_is_n_plus_k_choose_k(n_modes, k, expected):
    basis = ENRBasis(n_modes, k)
    assert basis.dim == comb(n_modes + k, k) == expected
    assert basis.states.shape == (expected, n_modes)
    assert basis.cutoffs == (k + 1,) * n_modes


@pytest.mark.parametrize(
    "k, cutoffs", [(4, [2, 3, 5]), (3, [1, 4, 2, 2]), (6, [3, 3, 3]), (0, [2, 2])]
)
def test_cutoffs_give_the_brute_force_states_in_order(k, cutoffs):
    basis = ENRBasis(len(cutoffs), k, cutoffs=cutoffs)
    expected = brute_states(k, cutoffs)
    assert basis.dim == len(expected)
    np.testing.assert_array_equal(basis.states, expected)


@pytest.mark.parametrize("n_modes, k", [(3, 4), (6, 3), (10, 6)])
def test_states_unique_lexicographic_and_index_inverts_them(n_modes, k):
    basis = ENRBasis(n_modes, k)
    s = basis.states
    assert np.all(s.sum(axis=1) <= k) and np.all(s >= 0)
    # strictly increasing as base-(k+1) numbers: sorted, mode 0 most significant,
    # and unique
    assert np.all(np.diff(s @ (k + 1) ** np.arange(n_modes)[::-1]) > 0)
    np.testing.assert_array_equal(basis.index(s), np.arange(basis.dim))
    perm = np.random.default_rng(0).permutation(basis.dim)
    np.testing.assert_array_equal(basis.index(s[perm]), perm)
    two_d = basis.index(s[perm[:12]].reshape(3, 4, n_modes))
    np.testing.assert_array_equal(two_d, perm[:12].reshape(3, 4))
    assert int(basis.index(s[-1])) == basis.dim - 1


def test_basis_is_immutable_hashable_and_picklable():
    basis = ENRBasis(3, 2, cutoffs=[2, 5, 9])
    with pytest.raises(AttributeError):
        basis.dim = 3
    with pytest.raises(ValueError):
        basis.states[0, 0] = 1
    assert basis == ENRBasis(3, 2, cutoffs=[2, 3, 3])  # cut-offs above K + 1 = K + 1
    assert basis != ENRBasis(3, 2)
    assert hash(basis) == hash(ENRBasis(3, 2, cutoffs=[2, 3, 3]))
    assert pickle.loads(pickle.dumps(basis)) == basis
    assert "ENRBasis(3, 2" in repr(basis)


def test_fock_state():
    basis = ENRBasis(3, 3)
    psi = basis.fock_state([1, 0, 2])
    assert psi.shape == (basis.dim, 1) and psi.dtype == jnp.complex128
    assert float(jnp.abs(psi).sum()) == 1.0
    assert float(psi[basis.index([1, 0, 2]), 0].real) == 1.0


# --- operators ----------------------------------------------------------------

OPS = {
    "a0": a(0),
    "a2": a(2),
    "adag1": adag(1),
    "n1": adag(1) @ a(1),
    "hop01": adag(0) @ a(1) + adag(1) @ a(0),
    "kerr": adag(0) @ adag(0) @ a(0) @ a(0),
    "drive": 0.3 * (a(1) + adag(1)) + 2.0,
    "mixed": (1 - 0.5j) * adag(0) @ adag(2) ** 2 @ a(1) + 0.25 * a(0) @ a(2),
    "random": random_polynomial(np.random.default_rng(7), 3, 6),
}


@pytest.mark.parametrize("cutoffs", [None, [2, 3, 5]], ids=["plain", "cutoffs"])
@pytest.mark.parametrize("name", OPS)
def test_operator_equals_projected_full_operator(name, cutoffs):
    k = 4
    basis = ENRBasis(3, k, cutoffs=cutoffs)
    dims = [k + 1] * 3 if cutoffs is None else cutoffs
    op = OPS[name]
    A_full = op.to_matrix(dims)
    expected = restriction(A_full, basis, dims)  # P A_full P
    got = np.asarray(basis.operator(op, format="dense"))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    for fmt in ("bcoo", "bcsr"):
        np.testing.assert_allclose(
            np.asarray(basis.operator(op, format=fmt).todense()), got, rtol=0, atol=0
        )
    np.testing.assert_array_equal(basis.operator(op, format="scipy").toarray(), got)


@pytest.mark.parametrize("name", ["n1", "hop01", "kerr"])
def test_number_conserving_operators_restrict_exactly(name):
    # such operators leave the basis invariant: the columns of the full operator at
    # basis states have no weight outside the basis, so P A P = A P
    k, dims = 4, [5, 5, 5]
    basis = ENRBasis(3, k)
    idx = basis.full_indices(dims)
    A_full = OPS[name].to_matrix(dims)
    outside = np.setdiff1d(np.arange(A_full.shape[0]), idx)
    assert np.all(A_full[np.ix_(outside, idx)] == 0)
    got = np.asarray(basis.operator(OPS[name], format="dense"))
    np.testing.assert_allclose(got, A_full[np.ix_(idx, idx)], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got, got.conj().T)  # Hermitian, bit for bit


def test_hermitian_operators_stay_hermitian():
    H = OPS["random"] + OPS["random"].dag()
    for cutoffs in (None, [2, 4, 3]):
        M = np.asarray(ENRBasis(3, 4, cutoffs=cutoffs).operator(H, format="dense"))
        np.testing.assert_allclose(M, M.conj().T, rtol=0, atol=1e-14)


def test_ladder_helpers():
    basis = ENRBasis(3, 3)
    d = np.asarray(basis.destroy(1, format="dense"))
    c = np.asarray(basis.create(1, format="dense"))
    n = np.asarray(basis.number(1, format="dense"))
    np.testing.assert_array_equal(c, d.conj().T)
    np.testing.assert_allclose(n, c @ d, atol=1e-14)  # a P maps into the basis
    np.testing.assert_array_equal(np.diag(n).real, basis.states[:, 1])
    eye = basis.identity()
    assert isinstance(eye, jsparse.BCOO)  # the default format
    np.testing.assert_array_equal(np.asarray(eye.todense()), np.eye(basis.dim))
    # near the boundary P a a^dag P differs from (P a P)(P a^dag P)
    aad = np.asarray(basis.operator(a(1) @ adag(1), format="dense"))
    assert not np.allclose(aad, d @ c)
    np.testing.assert_allclose(aad, n + np.eye(basis.dim), atol=1e-14)


def test_sparse_matvec_under_jit_matches_dense():
    basis = ENRBasis(4, 3)
    H = OPS["hop01"] + OPS["kerr"] - 0.05j * adag(3) @ a(3) + 0.2 * (a(2) + adag(2))
    dense = basis.operator(H, format="dense")
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(basis.dim, 5)) + 1j * rng.normal(size=(5,)))
    matvec = jax.jit(lambda A, v: A @ v)
    for fmt in ("bcoo", "bcsr"):
        np.testing.assert_allclose(
            matvec(basis.operator(H, format=fmt), x), dense @ x, atol=1e-13
        )
    assert basis.operator(H, dtype=jnp.complex64).dtype == jnp.complex64


def test_operators_never_build_the_tensor_product():
    # 20 modes, K = 4: D = C(24, 4) = 10626, against 5^20 ~ 1e14 full states
    basis = ENRBasis(20, 4)
    assert basis.dim == comb(24, 4)
    hop = sum((adag(j) @ a(j + 1) + adag(j + 1) @ a(j) for j in range(19)), BosonOp())
    H = basis.operator(hop, format="scipy")
    assert abs(H - H.T.conj()).max() == 0
    # sum over bonds of the number of states a hop can move: n_{j+1} > 0 (n_j > 0)
    expected = sum(
        int(np.sum(basis.states[:, j + 1] > 0) + np.sum(basis.states[:, j] > 0))
        for j in range(19)
    )
    assert H.nnz == expected


# --- QuTiP --------------------------------------------------------------------


@pytest.mark.parametrize("dims, k", [([5, 5, 5], 4), ([3, 4, 2], 4), ([4, 4, 4, 4], 3)])
def test_states_and_destroy_match_qutip(dims, k):
    qutip = pytest.importorskip("qutip")
    basis = ENRBasis(len(dims), k, cutoffs=dims)
    n, state2idx, idx2state = qutip.enr_state_dictionaries(dims, k)
    assert n == basis.dim
    np.testing.assert_array_equal(
        basis.states, np.array([idx2state[i] for i in range(n)])
    )
    for s in basis.states[::7]:
        assert state2idx[tuple(int(v) for v in s)] == int(basis.index(s))
    s = basis.states[n // 2]
    np.testing.assert_array_equal(
        np.asarray(basis.fock_state(s)), qutip.enr_fock(dims, k, s.tolist()).full()
    )
    for j, a_q in enumerate(qutip.enr_destroy(dims, k)):
        np.testing.assert_allclose(
            np.asarray(basis.destroy(j).todense()), a_q.full(), rtol=0, atol=1e-15
        )


# --- the coherent state --------------------------------------------------------


def poisson_outside(alpha: np.ndarray, basis: ENRBasis, box: int = 60) -> float:
    """Sum of the Poisson weights of all states in a big box outside the basis."""
    lam = np.abs(alpha) ** 2
    v = np.arange(box)
    logp = v * np.log(np.where(lam > 0, lam, 1.0))[:, None] - lam[:, None]
    logp -= scipy.special.gammaln(v + 1)
    logp[lam == 0, 1:] = -np.inf
    total = 0.0
    for s in itertools.product(range(box), repeat=len(alpha)):
        s = np.array(s)
        inside = s.sum() <= basis.max_excitations and np.all(s < basis.cutoffs)
        if not inside:
            total += np.exp(logp[np.arange(len(alpha)), s].sum())
    return total


@pytest.mark.parametrize(
    "alpha, k, cutoffs",
    [
        ([0.7, 0.4j], 3, None),
        ([1.2 - 0.3j, 0.0], 5, [3, 6]),
        ([0.05, 0.1j], 6, None),  # truncated weight 9e-18: no 1 - x cancellation
    ],
)
def test_coherent_product(alpha, k, cutoffs):
    alpha = np.asarray(alpha, complex)
    basis = ENRBasis(len(alpha), k, cutoffs=cutoffs)
    ket, lost = basis.coherent_product(alpha)
    assert ket.shape == (basis.dim, 1)
    assert abs(float(jnp.linalg.norm(ket)) - 1) < 1e-14
    expected = poisson_outside(alpha, basis)
    assert lost == pytest.approx(expected, rel=1e-10, abs=1e-300)
    # the ket is the normalized projection of the analytic product state
    amp = np.ones(basis.dim, complex)
    for j, al in enumerate(alpha):
        n = basis.states[:, j]
        fact = np.array([factorial(int(x)) for x in n], float)
        amp *= np.exp(-(abs(al) ** 2) / 2) * al**n / np.sqrt(fact)
    np.testing.assert_allclose(np.abs(amp) ** 2 @ np.ones(basis.dim), 1 - lost)
    np.testing.assert_allclose(ket[:, 0], amp / np.linalg.norm(amp), atol=1e-14)


def test_coherent_product_tiny_tail():
    ket, lost = ENRBasis(1, 40).coherent_product([2.0])
    tail = sum(
        np.exp(n * np.log(4.0) - 4.0 - scipy.special.gammaln(n + 1))
        for n in range(41, 200)
    )
    assert lost == pytest.approx(tail, rel=1e-10)
    assert 0 < lost < 1e-15


# --- the full tensor product ---------------------------------------------------


def test_project_and_embed():
    basis = ENRBasis(3, 2)
    dims = [3, 3, 3]
    idx = basis.full_indices(dims)
    assert np.all(np.diff(idx) > 0)
    rng = np.random.default_rng(5)
    psi = jnp.asarray(rng.normal(size=(basis.dim, 2)) + 0j)
    full = basis.embed(psi, dims)
    assert full.shape == (27, 2)
    np.testing.assert_array_equal(basis.project(full, dims), psi)
    np.testing.assert_array_equal(basis.project(full[:, 0], dims), psi[:, 0])
    # operators commute with the embedding for number-conserving polynomials
    H = OPS["hop01"] + OPS["kerr"]
    np.testing.assert_allclose(
        basis.embed(basis.operator(H) @ psi, dims),
        H.to_matrix(dims) @ full,
        atol=1e-13,
    )
    # smaller dims: states with n_j >= dims[j] project to 0 and cannot be embedded
    small = [2, 3, 3]
    np.testing.assert_array_equal(
        np.asarray(basis.full_indices(small) < 0), basis.states[:, 0] >= 2
    )
    proj = basis.project(jnp.ones(18), small)
    np.testing.assert_array_equal(np.asarray(proj), basis.states[:, 0] < 2)
    with pytest.raises(ValueError, match="`psi`"):
        basis.embed(basis.fock_state([2, 0, 0]), small)
    ok = basis.embed(basis.fock_state([1, 1, 0]), small)
    assert float(ok[9 + 3, 0].real) == 1.0


# --- argument checks ------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, error, name",
    [
        ((0, 2), {}, ValueError, "n_modes"),
        ((1.5, 2), {}, TypeError, "n_modes"),
        ((True, 2), {}, TypeError, "n_modes"),
        ((2, -1), {}, ValueError, "max_excitations"),
        ((2, 1.0), {}, TypeError, "max_excitations"),
        ((2, 3), {"cutoffs": [2]}, ValueError, "cutoffs"),
        ((2, 3), {"cutoffs": [2, 0]}, ValueError, r"cutoffs\[1\]"),
        ((2, 3), {"cutoffs": [2, 2.5]}, TypeError, r"cutoffs\[1\]"),
        ((2, 3), {"cutoffs": 3}, TypeError, "cutoffs"),
    ],
)
def test_bad_constructor_arguments(args, kwargs, error, name):
    with pytest.raises(error, match=name):
        ENRBasis(*args, **kwargs)


def test_bad_method_arguments():
    basis = ENRBasis(3, 2)
    with pytest.raises(ValueError, match="occupations.*outside the basis"):
        basis.index([1, 1, 1])
    with pytest.raises(ValueError, match="occupations"):
        basis.index([-1, 0, 0])
    with pytest.raises(ValueError, match="occupations"):
        basis.index([0, 0])
    with pytest.raises(ValueError, match="occupations"):
        basis.index([0.5, 0, 0])
    with pytest.raises(ValueError, match="occupations"):
        basis.fock_state([0, 0, 3])
    with pytest.raises(ValueError, match="alpha"):
        basis.coherent_product([0.1, 0.2])
    with pytest.raises(ValueError, match="alpha"):
        basis.coherent_product([0.1, np.nan, 0.0])
    with pytest.raises(ValueError, match="op"):
        basis.operator(a(3))
    with pytest.raises(TypeError, match="op"):
        basis.operator("a0")
    with pytest.raises(ValueError, match="format"):
        basis.operator(a(0), format="csr")
    with pytest.raises(ValueError, match="dims"):
        basis.full_indices([3, 3])
    with pytest.raises(ValueError, match="psi_full"):
        basis.project(jnp.ones(26), [3, 3, 3])


# ------------------------------------------------------------- Husimi Q of kets


def test_husimi_q_of_an_ensemble_equals_q_of_its_density_matrix():
    # Q of the mixture (1/n) sum |psi_i><psi_i| on the full tensor product
    # (qflow_jax.husimi.husimi_q), its standard error from the per-ket values
    from qflow_jax.husimi import husimi_q

    basis, dims = ENRBasis(3, 4), [5, 5, 5]
    rng = np.random.default_rng(3)
    kets = rng.normal(size=(6, basis.dim)) + 1j * rng.normal(size=(6, basis.dim))
    kets /= np.linalg.norm(kets, axis=1, keepdims=True)
    full = np.asarray(basis.embed(jnp.asarray(kets.T), dims))  # (125, 6)
    rho = full @ full.conj().T / 6
    alpha = rng.normal(size=(7, 3)) + 1j * rng.normal(size=(7, 3))
    q, err = basis.husimi_q(kets, alpha, batch_size=3)
    np.testing.assert_allclose(q, husimi_q(rho, alpha, dims), rtol=1e-12, atol=1e-16)
    per_ket = np.stack(
        [husimi_q(np.outer(f, f.conj()), alpha, dims) for f in full.T], axis=1
    )
    np.testing.assert_allclose(
        err, per_ket.std(1, ddof=1) / np.sqrt(6), rtol=1e-10, atol=1e-16
    )


def test_husimi_q_of_a_coherent_product_is_the_gaussian():
    basis = ENRBasis(3, 30)
    beta = np.array([1.0 + 0.5j, -0.3j, 0.7])
    ket, lost = basis.coherent_product(beta)
    assert lost < 1e-14
    alpha = beta + np.array([[0, 0, 0], [0.3, -0.2j, 0.1], [1.0, 1.0, 1.0j]])
    q, err = basis.husimi_q(ket[None, :, 0], alpha)
    exact = np.exp(-np.sum(np.abs(alpha - beta) ** 2, axis=1)) / np.pi**3
    np.testing.assert_allclose(q, exact, rtol=1e-10)
    assert np.all(np.asarray(err) == 0)  # one ket: no spread


def test_husimi_q_checks_its_arguments():
    basis = ENRBasis(2, 3)
    kets = jnp.ones((2, basis.dim)) / np.sqrt(basis.dim)
    with pytest.raises(ValueError, match="`kets` must have shape"):
        basis.husimi_q(jnp.ones((2, 5)), [0.0, 0.0])
    with pytest.raises(ValueError, match="`alpha` must have shape"):
        basis.husimi_q(kets, [0.0, 0.0, 0.0])


def test_reduced_density_matrix_is_the_partial_trace():
    from qflow_jax.operators import ptrace

    basis, dims = ENRBasis(3, 4, cutoffs=[5, 3, 5]), [5, 3, 5]
    rng = np.random.default_rng(5)
    ket = rng.normal(size=basis.dim) + 1j * rng.normal(size=basis.dim)
    ket /= np.linalg.norm(ket)
    full = np.asarray(basis.embed(jnp.asarray(ket[:, None]), dims))
    for mode in range(3):
        np.testing.assert_allclose(
            basis.reduced_density_matrix(ket, mode),
            ptrace(full @ full.conj().T, mode, dims),
            atol=1e-13,
        )
    with pytest.raises(ValueError, match="`mode` must be below 3"):
        basis.reduced_density_matrix(ket, 3)
    with pytest.raises(ValueError, match="`psi` must have shape"):
        basis.reduced_density_matrix(ket[:-1], 0)
