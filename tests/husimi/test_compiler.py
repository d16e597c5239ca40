import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import (
    GaussPolyQ,
    coherent_vec,
    lindbladian,
    max_power,
    model_params,
    random_rho,
)

import qflow_jax as qf  # enables float64
from qflow_jax.husimi import (
    BosonOp,
    a,
    adag,
    alpha_to_real,
    coherent_q,
    compile_qpde,
    q_from_rho,
)


def test_damped_pde_term_by_term():
    w, g = 1.7, 0.3
    pde = compile_qpde(w * adag(0) @ a(0), [np.sqrt(g) * a(0)])
    # docs/physics.md: (g/2)[d_x(xQ) + d_p(pQ)] + w (x d_p - p d_x) Q + (g/4) Lap Q
    expected = {
        (0, 0): {(0, 0): g},
        (1, 0): {(1, 0): g / 2, (0, 1): -w},
        (0, 1): {(0, 1): g / 2, (1, 0): w},
        (2, 0): {(0, 0): g / 4},
        (0, 2): {(0, 0): g / 4},
    }
    got = pde.as_dict()
    assert got.keys() == expected.keys()
    for deriv, poly in expected.items():
        assert got[deriv].keys() == poly.keys()
        for expo, c in poly.items():
            assert got[deriv][expo] == pytest.approx(c, rel=1e-14, abs=1e-14)
    assert pde.max_order == 2 and pde.is_fokker_planck()
    assert "d_x0^2" in str(pde) and r"\partial_{p_{0}}^{2}" in pde.to_latex()


def test_inspection_of_kerr_and_two_photon_loss():
    kerr = compile_qpde(0.5 * adag(0) @ adag(0) @ a(0) @ a(0))
    assert kerr.max_order == 2 and not kerr.is_fokker_planck()
    x = jnp.array([[0.7, -1.2], [2.0, 0.3]])
    eig = jnp.linalg.eigvalsh(kerr.diffusion_matrix(x))
    r2 = jnp.sum(x**2, axis=-1)
    # docs/physics.md: eigenvalues +-(U/4)(x^2 + p^2), U = 1
    np.testing.assert_allclose(eig, jnp.stack([-r2 / 4, r2 / 4], -1), atol=1e-14)
    tpl = compile_qpde(0.0, [a(0) @ a(0)])
    assert tpl.max_order == 4 and not tpl.is_fokker_planck()
    # leading term kappa d_alpha^2 d_alpha*^2 = (1/16)(d_x^2 + d_p^2)^2
    d = tpl.as_dict()
    assert d[(4, 0)] == {(0, 0): 1 / 16} and d[(2, 2)] == {(0, 0): 2 / 16}


def test_coherent_gaussian_solves_damped_multimode_pde():
    # Linear multimode: alpha(t) = expm(-(iM + G/2) t) alpha0 (docs/physics.md, 1).
    M = np.array([[1.0, 0.4], [0.4, -0.6]])
    gam = np.array([0.5, 0.2])
    H = sum(M[i, j] * adag(i) @ a(j) for i in range(2) for j in range(2))
    pde = compile_qpde(H, [np.sqrt(gam[j]) * a(j) for j in range(2)])
    alpha0 = jnp.array([1.0 + 0.5j, -0.3 + 0.8j])
    gen = jnp.asarray(-(1j * M + np.diag(gam) / 2))

    def Q(x, t):
        return coherent_q(jax.scipy.linalg.expm(gen * t) @ alpha0)(x)

    key = jax.random.PRNGKey(0)
    xs = jax.random.normal(key, (6, 4)) + alpha_to_real(alpha0)
    for t in (0.0, 0.37, 1.9):
        lhs = jax.vmap(jax.grad(Q, argnums=1), (0, None))(xs, t)
        rhs = pde.apply(jax.tree_util.Partial(Q, t=t), xs)
        np.testing.assert_allclose(
            rhs, lhs, rtol=0, atol=1e-10 * float(jnp.max(jnp.abs(lhs)))
        )


@pytest.mark.parametrize("name,H,jumps,n_modes", model_params())
def test_apply_equals_fock_lindbladian(name, H, jumps, n_modes):
    """(L Q)(alpha) from the PDE equals pi^-N <alpha| L(rho) |alpha> (Fock basis)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    cutoffs, support = [12] * n_modes, 4
    # The truncated Fock matrices are exact: L^dag L rho only reaches levels
    # < support + 2 * (largest ladder power per mode), and H rho fewer.
    assert support + 2 * max_power(H) <= cutoffs[0]
    assert all(support + 2 * max_power(L) <= cutoffs[0] for L in jumps)
    rho = random_rho(rng, cutoffs, support=support)
    Hm = H.to_matrix(cutoffs)
    Lm = [L.to_matrix(cutoffs) for L in jumps]
    drho = lindbladian(Hm, Lm, rho)
    alphas = rng.normal(size=(5, n_modes)) + 1j * rng.normal(size=(5, n_modes))
    ref = []
    for al in alphas:
        v = coherent_vec(al, cutoffs)
        ref.append((v.conj() @ drho @ v).real / np.pi**n_modes)
    ref = np.asarray(ref)
    pde = compile_qpde(H, jumps, n_modes=n_modes)
    x = alpha_to_real(jnp.asarray(alphas))
    Q = q_from_rho(rho, cutoffs)
    if pde.max_order > 4:
        # Same Q as a Gaussian times a polynomial: q_from_rho does not compile under
        # 8 nested forward passes in reasonable time (see GaussPolyQ).
        poly_q = GaussPolyQ(rho, cutoffs, support)
        np.testing.assert_allclose(jax.vmap(poly_q)(x), Q(x), rtol=1e-12)
        Q = poly_q
    got = pde.apply(Q, x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-8 * np.abs(ref).max())


def test_compile_rejects_bad_input():
    with pytest.raises(ValueError, match="`H` must be Hermitian"):
        compile_qpde(a(0), [])
    with pytest.raises(TypeError, match=r"`jump_ops\[1\]`"):
        compile_qpde(adag(0) @ a(0), [a(0), np.eye(2)])
    with pytest.raises(ValueError, match="`n_modes`"):
        compile_qpde(adag(1) @ a(1), n_modes=1)


def test_algebra_normal_ordering():
    assert (a(0) @ adag(0) - adag(0) @ a(0)).terms == {(): 1.0}
    assert (a(0) @ adag(1) - adag(1) @ a(0)).terms == {}
    # a^2 a^dag^2 = a^dag^2 a^2 + 4 a^dag a + 2
    assert (a(0) ** 2 @ adag(0) ** 2).terms == {
        ((0, 2, 2),): 1.0,
        ((0, 1, 1),): 4.0,
        (): 2.0,
    }
    X = (1 + 2j) * adag(0) @ a(1) @ a(1) + 0.5
    assert X.dag().terms == {((0, 0, 1), (1, 2, 0)): 1 - 2j, (): 0.5}
    assert isinstance(np.float64(2.0) * a(0), BosonOp)
    assert str(a(0) @ adag(0)) == "1 + a0^dag a0"
    with pytest.raises(ValueError, match="`j`"):
        a(-1)


def test_to_matrix_matches_tensor_products_of_ladder_operators():
    a0 = np.kron(np.asarray(qf.destroy(3)), np.eye(4))
    a1 = np.kron(np.eye(3), np.asarray(qf.destroy(4)))
    op = 0.5 * adag(0) @ a(1) + (1 - 2j) * adag(1) @ adag(1) @ a(1) + 3.0
    expected = 0.5 * a0.conj().T @ a1 + (1 - 2j) * a1.conj().T @ a1.conj().T @ a1
    np.testing.assert_allclose(
        op.to_matrix([3, 4]), expected + 3.0 * np.eye(12), atol=1e-12
    )
    with pytest.raises(ValueError, match="`cutoffs`"):
        op.to_matrix([3])
