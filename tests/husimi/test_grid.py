import functools

import jax.numpy as jnp
import numpy as np
import pytest

import qflow_jax  # noqa: F401  (enables float64)
from qflow_jax import coherent_dm, destroy, mesolve
from qflow_jax.husimi import (
    Grid,
    a,
    adag,
    coherent_q,
    compile_qpde,
    estimate_grid_memory,
    q_from_rho,
    solve_fd,
    solve_grid,
)
from qflow_jax.husimi.grid import added_diffusion
from qflow_jax.husimi.models import DampedChain, damped_alpha

W, G_DAMP, ALPHA0, T = 1.0, 0.5, 1.0 + 0.5j, 1.0
DAMPED = compile_qpde(W * adag(0) @ a(0), [np.sqrt(G_DAMP) * a(0)])


def _damped_errors(scheme, points, half_width=6.0):
    exact = coherent_q(DampedChain(1, W, G_DAMP).alpha(T, [ALPHA0]))
    errs, integrals = [], []
    for G in points:
        grid = Grid(2, G, half_width)
        sol = solve_grid(
            DAMPED,
            coherent_q(ALPHA0),
            jnp.array([0.0, 0.5, T]),
            grid=grid,
            scheme=scheme,
            rtol=1e-10,
            atol=1e-12,
        )
        errs.append(float(jnp.max(jnp.abs(sol.Q[-1] - grid.evaluate(exact)))))
        integrals.append(np.asarray(sol.integral))
    return np.asarray(errs), integrals


@pytest.mark.slow  # a convergence run
def test_fd_converges_at_second_order_and_conserves_integral():
    points = [32, 48, 64]
    errs, integrals = _damped_errors("fd", points)
    h = 12.0 / np.asarray(points)
    slope = np.polyfit(np.log(h), np.log(errs), 1)[0]
    assert 1.85 < slope < 2.15, (slope, errs)
    # Central differences conserve sum(Q) exactly for linear coefficients (summation
    # by parts); what is left is the time-integration error.
    for integral in integrals:
        np.testing.assert_allclose(integral, 1.0, atol=1e-8)


@pytest.mark.slow  # a convergence run
def test_spectral_converges_exponentially_and_conserves_integral():
    points = [16, 24, 32]
    errs, integrals = _damped_errors("spectral", points)
    # Aliasing error of a variance-1/2 Gaussian ~ exp(-k_N^2 / 4), k_N = pi / h.
    kn2 = (np.pi * np.asarray(points) / 12.0) ** 2
    slope = np.polyfit(kn2, np.log(errs), 1)[0]
    assert -0.3 < slope < -0.2, (slope, errs)
    assert errs[-1] < 1e-7
    # Not conservative term by term on the grid: the integral is exact up to the
    # pointwise error times the box area.
    np.testing.assert_allclose(integrals[-1], 1.0, atol=errs[-1] * 12.0**2)


@pytest.mark.slow
def test_four_dimensional_hopping_against_exact_coherent_product():
    M = np.array([[1.0, 0.5], [0.5, 0.2]])
    gam = np.array([0.4, 0.8])
    H = sum(M[i, j] * adag(i) @ a(j) for i in range(2) for j in range(2))
    pde = compile_qpde(H, [np.sqrt(g) * a(j) for j, g in enumerate(gam)])
    alpha0 = np.array([0.8 + 0.3j, -0.5j])
    exact = coherent_q(damped_alpha(M, gam, T, alpha0))
    qmax = 1 / np.pi**2
    # spectral, h = 10/24: aliasing exp(-k_N^2/4) ~ 7e-7 relative (x a small constant)
    grid = Grid(4, 24, 5.0)
    sp = solve_grid(
        pde,
        coherent_q(alpha0),
        jnp.array([0.0, T]),
        grid=grid,
        scheme="spectral",
        rtol=1e-9,
    )
    err = float(jnp.max(jnp.abs(sp.Q[-1] - grid.evaluate(exact))))
    assert err < 1e-5 * qmax
    np.testing.assert_allclose(sp.integral, 1.0, atol=err * 10.0**4)
    assert sp.memory_bytes == estimate_grid_memory(grid, "spectral", 2)
    # fd, h = 0.5: the 2-D study has 9% of max Q at h = 0.375, so ~16% at h = 0.5;
    # the integral is conserved exactly for linear coefficients, up to the flux
    # through the box edge at 4.5 (the grid excludes +L), where Q ~ 1e-7
    grid = Grid(4, 20, 5.0)
    fd = solve_grid(pde, coherent_q(alpha0), jnp.array([0.0, T]), grid=grid, rtol=1e-9)
    assert float(jnp.max(jnp.abs(fd.Q[-1] - grid.evaluate(exact)))) < 0.3 * qmax
    np.testing.assert_allclose(fd.integral, 1.0, atol=2e-5)


def _kerr_pde(U, g):
    return compile_qpde(U / 2 * adag(0) ** 2 @ a(0) ** 2, [np.sqrt(g) * a(0)])


@functools.cache
def _kerr_reference(U, g, a0, N=30):
    """Q at t = T of Kerr + damping from a Fock-space solve (mesolve + q_from_rho)."""
    A = destroy(N)
    Ad = A.conj().T
    res = mesolve(
        U / 2 * Ad @ Ad @ A @ A,
        [np.sqrt(g) * A],
        coherent_dm(N, a0),
        jnp.array([0.0, T]),
        rtol=1e-10,
        atol=1e-12,
    )
    return q_from_rho(res.final_state)


def test_spectral_matches_fock_space_kerr_solve():
    # Kerr + damping. The Kerr diffusion is indefinite (backward-parabolic where
    # U |alpha|^2 > g), so only a coarse grid whose top wavenumbers the damping
    # still controls over t = 1 is stable: spectral, G = 24.
    U, g, a0 = 0.1, 1.0, 1.0
    pde = _kerr_pde(U, g)
    grid = Grid(2, 24, 4.5)
    ref = grid.evaluate(_kerr_reference(U, g, a0))
    sol = solve_grid(
        pde,
        coherent_q(a0),
        jnp.array([0.0, T]),
        grid=grid,
        scheme="spectral",
        rtol=1e-8,
    )
    assert float(jnp.max(jnp.abs(sol.Q[-1] - ref))) < 1e-3
    # the Kerr term matters at this tolerance: pure damping differs by > 1e-2
    damped = grid.evaluate(coherent_q(a0 * np.exp(-g * T / 2)))
    assert float(jnp.max(jnp.abs(damped - ref))) > 1e-2


# Kerr + damping where the Kerr term is clearly visible (pure damping differs from the
# Fock reference by ~3.5e-2 at t = T) and the Fock solve needs no more than 30 levels.
# D(x) has eigenvalues g/4 -+ U |alpha|^2 / 4: backward-parabolic for |alpha| >
# sqrt(g / U) = 5, where Q <= exp(-(5 - a0)^2) / pi ~ 4e-5 at all times.
KERR_U, KERR_G, KERR_A0, KERR_L = 0.04, 1.0, 2.0, 6.0
# fd: h = 0.05, second-order error ~ 0.18 h^2 = 4.5e-4 (1.0e-3 at h = 0.075);
# spectral: h = 0.125, half the spacing of the stable unstabilised G = 48 (without
# `stabilize` the error is already 2e-5 at G = 64 and G = 96 blows up), error ~ 6e-7.
KERR_POINTS = {"fd": 240, "spectral": 96}


@pytest.mark.parametrize("scheme", ["fd", "spectral"])
def test_stabilized_solvers_match_fock_space_kerr_solve(scheme):
    U, g, a0, L = KERR_U, KERR_G, KERR_A0, KERR_L
    grid = Grid(2, KERR_POINTS[scheme], L)
    ref = grid.evaluate(_kerr_reference(U, g, a0))
    sol = solve_grid(
        _kerr_pde(U, g),
        coherent_q(a0),
        jnp.array([0.0, 0.5, T]),
        grid=grid,
        scheme=scheme,
        rtol=1e-8,
        stabilize=True,
    )
    assert float(jnp.max(jnp.abs(sol.Q[-1] - ref))) < 1e-3
    # the Kerr term matters at this tolerance: pure damping differs by > 1e-2
    damped = grid.evaluate(coherent_q(a0 * np.exp(-g * T / 2)))
    assert float(jnp.max(jnp.abs(damped - ref))) > 1e-2
    # what was modified is reported: nu = U |alpha|^2 / 4 - g / 4 peaks at the corner
    # (-L, -L), and Q is negligible wherever nu > 0
    np.testing.assert_allclose(sol.max_added_diffusion, U * 2 * L**2 / 4 - g / 4)
    assert sol.q_mass_stabilized.shape == sol.q_max_stabilized.shape == (3,)
    assert float(jnp.max(sol.q_max_stabilized)) < 1e-4
    assert float(jnp.max(jnp.abs(sol.q_mass_stabilized))) < 1e-4


# fd blows up only after ~4000 steps (50 s): with -m slow
@pytest.mark.parametrize(
    "scheme", [pytest.param("fd", marks=pytest.mark.slow), "spectral"]
)
def test_grid_solvers_refuse_to_return_a_blown_up_kerr_solution(scheme):
    # the fine grids above, without `stabilize`
    grid = Grid(2, KERR_POINTS[scheme], KERR_L)
    with pytest.raises(RuntimeError, match=r"blew up.*`stabilize=True`"):
        solve_grid(
            _kerr_pde(KERR_U, KERR_G),
            coherent_q(KERR_A0),
            jnp.array([0.0, T]),
            grid=grid,
            scheme=scheme,
            rtol=1e-8,
            max_steps=4000,
        )


def test_stabilize_leaves_a_fokker_planck_pde_unchanged():
    grid = Grid(2, 32, 6.0)
    tsave = jnp.array([0.0, 0.5, T])
    for scheme in ("fd", "spectral"):
        kw = dict(grid=grid, scheme=scheme)
        plain = solve_grid(DAMPED, coherent_q(ALPHA0), tsave, **kw)
        stab = solve_grid(DAMPED, coherent_q(ALPHA0), tsave, stabilize=True, **kw)
        assert plain.max_added_diffusion is None and plain.q_mass_stabilized is None
        assert float(stab.max_added_diffusion) == 0.0
        np.testing.assert_array_equal(stab.q_mass_stabilized, 0.0)
        np.testing.assert_array_equal(stab.q_max_stabilized, 0.0)
        np.testing.assert_array_equal(stab.Q, plain.Q)
    # D = 0 (Hamiltonian only) is semidefinite too
    hamiltonian = compile_qpde(W * adag(0) @ a(0))
    np.testing.assert_array_equal(added_diffusion(hamiltonian, grid), 0.0)


def test_stabilize_refuses_pdes_above_second_order():
    pde = compile_qpde(W * adag(0) @ a(0), [np.sqrt(0.5) * a(0) @ a(0)])
    assert pde.max_order == 4
    grid = Grid(2, 16, 5.0)
    for scheme in ("fd", "spectral"):
        with pytest.raises(ValueError, match=r"`stabilize=True`.*order 4"):
            solve_grid(
                pde,
                coherent_q(1.0),
                jnp.array([0.0, T]),
                grid=grid,
                scheme=scheme,
                stabilize=True,
            )
    with pytest.raises(ValueError, match="`stabilize=True`"):
        added_diffusion(pde, grid)


def test_grid_too_large_is_refused_before_allocation():
    pde = compile_qpde(sum(adag(j) @ a(j) for j in range(3)), [a(j) for j in range(3)])
    grid = Grid(6, 64, 5.0)
    with pytest.raises(MemoryError, match=r"64x64x64x64x64x64.*`max_memory`"):
        solve_grid(pde, coherent_q([0.0, 0.0, 0.0]), jnp.array([0.0, 1.0]), grid=grid)
    with pytest.raises(MemoryError, match="`max_memory`"):
        solve_grid(
            pde,
            coherent_q([0.0] * 3),
            jnp.array([0.0, 1.0]),
            grid=Grid(6, 8, 5.0),
            scheme="spectral",
            max_memory=1e6,
        )
    with pytest.raises(ValueError, match="`grid` has dimension 2"):
        solve_grid(pde, coherent_q(0.0), jnp.array([0.0, 1.0]), grid=Grid(2, 8, 5.0))


def test_deprecated_per_scheme_names_warn_and_agree():
    grid, tsave = Grid(2, 24, 6.0), jnp.array([0.0, 0.5])
    new = solve_grid(DAMPED, coherent_q(ALPHA0), tsave, grid=grid, scheme="fd")
    with pytest.warns(DeprecationWarning, match="solve_grid"):
        old = solve_fd(DAMPED, coherent_q(ALPHA0), grid, tsave)
    np.testing.assert_array_equal(old.Q, new.states)
    assert old.scheme == "fd" and old.method == "tsit5"
