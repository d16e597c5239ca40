"""The permutation-invariant representation: basis, maps, generator and solver,
checked against the n!-permutation construction (`symmetrize`,
`blended_network_mesolve`), QuTiP's PIQS and closed forms."""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest
import qutip
import scipy.linalg
from qutip import piqs

import qflow_jax as qf
from qflow_jax.network import (
    NetworkVectorField,
    QubitNetwork,
    blended_network_mesolve,
    blended_superoperator,
    collective_couplings,
    product_state,
    symmetrize,
)
from qflow_jax.network.permutation import (
    PermutationInvariantBasis,
    blended_invariant_mesolve,
    frobenius_distance,
    from_product,
    invariant_generator,
    project,
    reduced_state,
    to_dense,
)
from qflow_jax.operators import PAULI

SIGMA = [PAULI[a] for a in "IXYZ"]


def random_hermitian(rng, d):
    a = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
    return a + a.conj().T


def random_density(rng, d):
    a = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
    rho = a @ a.conj().T
    return rho / np.trace(rho)


def random_network(rng, n, edges):
    """Heterogeneous qubits: own H_j and jumps, random and named pair couplings on
    pairs that need not be edges."""
    couplings = [(0, 1, 0.5 * random_hermitian(rng, 4)), (n - 1, 0, "XY", 0.7)]
    if n > 3:
        couplings.append((2, 0, 0.3 * random_hermitian(rng, 4)))
    return QubitNetwork(
        n,
        edges,
        k=3.0,
        H=[random_hermitian(rng, 2) for _ in range(n)],
        jump_ops=[
            [0.6 * rng.normal(size=(2, 2)) + 0.3j * rng.normal(size=(2, 2))]
            + ([0.4 * np.asarray(qf.sigmaz())] if j % 2 else [])
            for j in range(n)
        ],
        couplings=couplings,
    )


def brute_force_element(n, m):
    """2^-n S_m: the sum of every Pauli string of type m, built string by string."""
    out = np.zeros((2**n, 2**n), dtype=complex)
    for s in itertools.product(range(4), repeat=n):
        if tuple(s.count(a) for a in range(4)) == tuple(m):
            term = np.ones((1, 1))
            for a in s:
                term = np.kron(term, SIGMA[a])
            out += term
    return out / 2**n


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 100])
def test_dimension_types_and_index(n):
    basis = PermutationInvariantBasis(n)
    assert basis.dim == math.comb(n + 3, 3)
    T = basis.types
    assert np.all(T.sum(axis=1) == n) and np.all(T >= 0)
    assert len({tuple(t) for t in T}) == basis.dim
    np.testing.assert_array_equal(basis.lookup(T), np.arange(basis.dim))
    assert basis.index((n, 0, 0, 0)) == 0
    assert [basis.label(i) for i in range(4)] == ["", "X", "Y", "Z"]
    for i in range(min(basis.dim, 200)):
        assert basis.index(basis.label(i)) == i
    assert basis.lookup(np.array([n + 1, -1, 0, 0])) == -1
    np.testing.assert_allclose(
        basis.multiplicities.sum(), 4.0**n, rtol=1e-12
    )  # every string has one type


def test_basis_elements_are_invariant_orthogonal_and_the_type_sums():
    for n in range(1, 6):
        basis = PermutationInvariantBasis(n)
        elements = np.asarray(to_dense(np.eye(basis.dim)))
        for E in elements:
            np.testing.assert_allclose(symmetrize(E, n), E, atol=1e-14)
        # Tr(E_m E_m') = 2^-n N_m delta: orthogonal, so linearly independent
        gram = np.einsum("aij,bji->ab", elements, elements)
        np.testing.assert_allclose(
            gram, np.diag(basis.multiplicities) / 2**n, atol=1e-13
        )
        assert np.linalg.matrix_rank(elements.reshape(basis.dim, -1)) == basis.dim
    basis = PermutationInvariantBasis(3)
    for i in (0, 3, 5, 9, 19):
        np.testing.assert_allclose(
            to_dense(np.eye(basis.dim)[i]),
            brute_force_element(3, basis.types[i]),
            atol=1e-15,
        )


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_project_is_symmetrize(n):
    rng = np.random.default_rng(n)
    rhos = np.stack([random_density(rng, 2**n) for _ in range(2)])
    c = np.asarray(project(rhos))
    assert c.shape == (2, math.comb(n + 3, 3))
    for rho, cj in zip(rhos, c, strict=True):
        np.testing.assert_allclose(to_dense(cj), symmetrize(rho, n), atol=1e-10)
        assert cj[0] == pytest.approx(1.0, abs=1e-14)  # Tr rho
    # the coefficients are Pauli expectation values of P rho
    basis = PermutationInvariantBasis(n)
    Z0 = np.kron(SIGMA[3], np.eye(2 ** (n - 1)))
    sym = symmetrize(rhos[0], n)
    assert c[0, basis.index("Z")] == pytest.approx(np.trace(Z0 @ sym).real, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_from_product_is_project_of_the_product(n):
    rng = np.random.default_rng(10 + n)
    states = np.stack([random_density(rng, 2) for _ in range(n)])
    np.testing.assert_allclose(
        from_product(states), project(product_state(states)), atol=1e-12
    )


def test_from_product_of_identical_states_at_n100():
    # P(rho^(x)n) = rho^(x)n: every string of type m has prod_a r_a^m_a
    rng = np.random.default_rng(3)
    rho = random_density(rng, 2)
    r = np.array([np.trace(s @ rho).real for s in SIGMA])
    c = from_product([rho] * 100)
    T = PermutationInvariantBasis(100).types
    np.testing.assert_allclose(c, np.prod(r[None, :] ** T, axis=1), atol=1e-13)


def test_reduced_states_and_frobenius_distance():
    n = 4
    rng = np.random.default_rng(4)
    rho = random_density(rng, 2**n)
    c = np.asarray(project(rho))
    sym = np.asarray(symmetrize(rho, n)).reshape(2, 8, 2, 8)
    np.testing.assert_allclose(reduced_state(c), np.einsum("aibi->ab", sym), atol=1e-13)
    sym2 = sym.reshape(4, 4, 4, 4)
    np.testing.assert_allclose(
        reduced_state(c, 2), np.einsum("aibi->ab", sym2), atol=1e-13
    )
    # distance to another invariant operator, batched over two states
    other = np.asarray(project(random_density(rng, 2**n)))
    rhos = np.stack([rho, random_density(rng, 2**n)])
    dense = np.linalg.norm(rhos - np.asarray(to_dense(other)), axis=(1, 2))
    np.testing.assert_allclose(frobenius_distance(rhos, other), dense, rtol=1e-12)
    np.testing.assert_allclose(
        frobenius_distance(rho, c), np.linalg.norm(rho - to_dense(c)), rtol=1e-12
    )
    assert float(frobenius_distance(to_dense(c), c)) < 1e-14


@pytest.mark.parametrize(
    ("n", "edges"), [(2, "path"), (3, "path"), (4, "star"), (5, "ring")]
)
def test_generator_is_the_dense_blended_generator(n, edges):
    # G c  ==  P L0 P rho  for random invariant rho = to_dense(c), L0 the network
    # generator without swaps (local terms and pair couplings), P = `symmetrize`
    rng = np.random.default_rng(20 + n)
    net = random_network(rng, n, edges)
    G = invariant_generator(net)
    assert G.shape == (math.comb(n + 3, 3),) * 2
    L0 = NetworkVectorField.build(net, "local", kernel="xla")
    for _ in range(2):
        c = rng.normal(size=G.shape[0])
        # NumPy arrays: `symmetrize` then sums the n! transposes on the host
        rho = symmetrize(np.asarray(to_dense(c)), n)
        ref = symmetrize(np.asarray(L0(0.0, jnp.asarray(rho), None)), n)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(to_dense(G @ c), ref, atol=1e-12 * scale)
    assert G.getrow(0).nnz == 0  # the trace is conserved
    assert G.getnnz(axis=1).max() <= 55


def test_generator_without_couplings_is_the_blended_qubit_generator():
    # local terms only: row X of G (m_X = 1) is the X row of Mbar = B on Pauli
    # coefficients; Tr(sigma_a B(sigma_b)) / 2 computed here from the 4 x 4 B
    rng = np.random.default_rng(5)
    net = QubitNetwork(
        1,
        [],
        k=0.0,
        H=[random_hermitian(rng, 2)],
        jump_ops=[[rng.normal(size=(2, 2))]],
    )
    B = blended_superoperator(net)
    M = np.array(
        [
            [
                0.5 * np.trace(sa @ (B @ sb.reshape(4)).reshape(2, 2)).real
                for sb in SIGMA
            ]
            for sa in SIGMA
        ]
    )
    np.testing.assert_allclose(invariant_generator(net).toarray(), M, atol=1e-14)


@pytest.mark.parametrize(("n", "edges"), [(3, "path")])
def test_solver_matches_blended_network_mesolve(n, edges):
    rng = np.random.default_rng(30 + n)
    net = random_network(rng, n, edges)
    rho0 = random_density(rng, 2**n)  # entangled start
    tsave = np.linspace(0.0, 2.0, 5)
    opts = dict(rtol=1e-11, atol=1e-13)
    ref = blended_network_mesolve(net, rho0, tsave, **opts)
    res = blended_invariant_mesolve(net, rho0, tsave, **opts)
    np.testing.assert_allclose(to_dense(res.states), ref.states, atol=1e-8)
    np.testing.assert_allclose(res.reduced, ref.reduced[:, 0], atol=1e-8)
    np.testing.assert_allclose(res.final_state, res.states[-1], atol=0)
    # and from the coefficients themselves
    again = blended_invariant_mesolve(net, project(rho0), tsave, **opts)
    np.testing.assert_allclose(again.states, res.states, atol=1e-12)


def test_dicke_model_against_piqs():
    # PIQS (QuTiP 5.3): H = w J_z + chi J_x^2, J_a = sum_j sigma_a^j / 2, and
    # local terms (gE/2) sum_j L_{sigma_-^j} + (gD/2) sum_j L_{J_z,j}, with
    # L_A rho = 2 A rho A^dag - {A^dag A, rho} and J_z,j = sigma_z^j / 2. As a
    # QubitNetwork: H_j = (w/2) Z, all pairs (chi/2) X X (chi J_x^2 up to the
    # constant chi n/4), jumps sqrt(gE) sigma_- and sqrt(gD/4) Z; a homogeneous
    # all-to-all model, so P L0 P is the model itself. PIQS's emission carries a
    # relative error ~1e-8 (against a full QuTiP mesolve at N=4: PIQS off by 2e-8,
    # this solver by 4e-14), which sets the tolerance.
    N, w, chi, gE, gD = 16, 1.0, 0.3, 0.4, 0.25
    jx, jy, jz = piqs.jspin(N)
    L = piqs.Dicke(
        N, hamiltonian=w * jz + chi * jx * jx, emission=gE, dephasing=gD
    ).liouvillian()
    rho0 = piqs.css(N, x=1 / np.sqrt(2), y=1 / np.sqrt(2), coordinates="cartesian")
    tsave = np.linspace(0.0, 3.0, 7)
    ref = qutip.mesolve(
        L,
        rho0,
        tsave,
        e_ops=[jx, jz, jx * jx],
        options={"method": "dop853", "rtol": 1e-12, "atol": 1e-13},
    ).expect
    # the coherent spin state is the product of the single-qubit state of Bloch
    # vector 2 <J> / N
    r = [2 * qutip.expect(op, rho0) / N for op in (jx, jy, jz)]
    rho1 = 0.5 * (SIGMA[0] + sum(ra * s for ra, s in zip(r, SIGMA[1:], strict=True)))
    net = QubitNetwork(
        N,
        "path",
        k=1.0,
        H=[0.5 * w * SIGMA[3]] * N,
        jump_ops=[
            [math.sqrt(gE) * np.asarray(qf.sigmam()), 0.5 * math.sqrt(gD) * SIGMA[3]]
        ]
        * N,
        couplings=collective_couplings(N, "XX", chi / 2),
    )
    res = blended_invariant_mesolve(net, [rho1] * N, tsave, rtol=1e-11, atol=1e-13)
    basis = PermutationInvariantBasis(N)
    c = np.asarray(res.states)
    Jx = N / 2 * c[:, basis.index("X")]
    Jz = N / 2 * c[:, basis.index("Z")]
    Jx2 = N / 4 + N * (N - 1) / 4 * c[:, basis.index("XX")]
    assert abs(Jz[-1] - Jz[0]) > 1.0  # the dynamics is not trivial
    # measured: 2.4e-7, 3.1e-7, 7.6e-7
    np.testing.assert_allclose(Jx, ref[0], atol=1e-7 * N)
    np.testing.assert_allclose(Jz, ref[1], atol=1e-7 * N)
    np.testing.assert_allclose(Jx2, ref[2], atol=1e-7 * N**2)


@pytest.mark.slow  # ~30 s each (n = 100, dim 176851)
def test_n100_local_terms_keep_the_product_closed_form():
    # without couplings P L0 P maps rho^(x)n to the product of rho(t) = exp(B t) rho
    # with B the blended qubit generator: the solution is known at any n
    n = 100
    rng = np.random.default_rng(6)
    net = QubitNetwork(
        n,
        "ring",
        k=1.0,
        H=[0.3 * random_hermitian(rng, 2) for _ in range(n)],
        jump_ops=[
            [0.4 * qf.sigmam()] if j % 3 else [0.3 * qf.sigmaz()] for j in range(n)
        ],
    )
    rho = random_density(rng, 2)
    tsave = np.linspace(0.0, 5.0, 3)
    res = blended_invariant_mesolve(net, [rho] * n, tsave, rtol=1e-8, atol=1e-10)
    assert res.states.shape == (3, 176851)
    B = blended_superoperator(net)
    for t, c in zip(tsave, res.states, strict=True):
        rho_t = (scipy.linalg.expm(B * t) @ rho.reshape(4)).reshape(2, 2)
        np.testing.assert_allclose(c, from_product([rho_t] * n), atol=1e-7)


@pytest.mark.slow  # ~30 s each (n = 100, dim 176851)
def test_n100_with_couplings_conserves_trace_and_stays_a_state():
    n = 100
    net = QubitNetwork(
        n,
        "path",
        k=1.0,
        H=[
            (0.5 + 0.3 * np.sin(j)) * SIGMA[1] + 0.2 * j / n * SIGMA[3]
            for j in range(n)
        ],
        jump_ops=[[0.3 * qf.sigmam(), 0.2 * qf.sigmaz()]] * n,
        couplings=[(j, j + 1, "XX", 0.5) for j in range(n - 1)] + [(0, 99, "ZZ", 0.3)],
    )
    res = blended_invariant_mesolve(net, [qf.fock_dm(2, 0)] * n, [0.0, 1.0, 2.0])
    c = np.asarray(res.states)
    np.testing.assert_allclose(c[:, 0], 1.0, atol=1e-12)
    assert np.all(np.abs(c) <= 1 + 1e-6)  # Pauli expectation values
    for k in (1, 2):
        rho_k = np.asarray(reduced_state(c, k))
        np.testing.assert_allclose(np.trace(rho_k, axis1=1, axis2=2), 1.0, atol=1e-12)
        np.testing.assert_allclose(rho_k, np.conj(rho_k.transpose(0, 2, 1)), atol=0)
        assert np.linalg.eigvalsh(rho_k).min() > -1e-6
    np.testing.assert_allclose(res.reduced, reduced_state(c), atol=1e-15)
    assert abs(res.reduced[-1, 0, 0] - 1.0) > 0.1  # the state moved


def test_bad_inputs_raise_with_the_argument_named():
    for n in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="`n`"):
            PermutationInvariantBasis(n)
    with pytest.warns(UserWarning):
        split = QubitNetwork(4, [(0, 1), (2, 3)], k=1.0)
    with pytest.raises(ValueError, match="`network` must have a connected graph"):
        invariant_generator(split)
    with pytest.raises(ValueError, match="connected"):
        blended_invariant_mesolve(split, [qf.fock_dm(2, 0)] * 4, [0.0, 1.0])
    with pytest.raises(TypeError, match="`network`"):
        invariant_generator("path")
    with pytest.raises(ValueError, match=r"`rho` must be \(\.\.\., 2\^n, 2\^n\)"):
        project(np.eye(3))
    with pytest.raises(ValueError, match="`rho` must be Hermitian"):
        project(np.triu(np.ones((4, 4))))
    with pytest.raises(ValueError, match="`coeffs` must have C"):
        to_dense(np.ones(7))
    with pytest.raises(ValueError, match="`k`"):
        reduced_state(np.ones(10), 3)
    with pytest.raises(ValueError, match="`coeffs` are for n=2"):
        frobenius_distance(np.eye(8) / 8, np.ones(10))
    with pytest.raises(ValueError, match=r"`states` must be \(n, 2, 2\)"):
        from_product(np.eye(4))
    with pytest.raises(ValueError, match="`m`"):
        PermutationInvariantBasis(2).index("XXX")
    net = QubitNetwork(3, "path", k=1.0)
    with pytest.raises(ValueError, match=r"`rho0` must be \(n=3, 2, 2\)"):
        blended_invariant_mesolve(net, np.eye(4) / 4, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"c\[0\] = Tr rho = 1"):
        blended_invariant_mesolve(net, np.zeros(20), [0.0, 1.0])
    with pytest.raises(ValueError, match="IMEX"):
        blended_invariant_mesolve(
            net, [qf.fock_dm(2, 0)] * 3, [0, 1], method="kencarp4"
        )
    with pytest.raises(ValueError, match="`tsave`"):
        blended_invariant_mesolve(net, [qf.fock_dm(2, 0)] * 3, [1.0, 0.0])
