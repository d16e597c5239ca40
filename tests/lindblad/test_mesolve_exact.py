"""mesolve against closed-form solutions (docs/physics.md, section 1)."""

import jax.numpy as jnp
import numpy as np
import pytest

import qflow_jax as qf
from qflow_jax.husimi.models import DampedChain, damped_alpha

# the controller's RMS norm over the 2 N^2 real entries lets one entry's local error
# reach sqrt(2 N^2) ~ 40 times the tolerance, hence 1e-10 for the 1e-7 bounds below
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["auto", "tsit5", "lawson-dopri8"])
def test_damped_coherent_cavity(method):
    N, w, g, a0 = 30, 1.3, 0.4, 1.5 - 0.5j
    a = qf.destroy(N)
    t = jnp.linspace(0.0, 3.0, 7)
    res = qf.mesolve(
        w * qf.number(N),
        [np.sqrt(g) * a],
        qf.coherent_dm(N, a0, "analytic"),
        t,
        exp_ops=[qf.number(N), a],
        method=method,
        **TOL,
    )
    at = np.array([DampedChain(1, w, g).alpha(tk, [a0])[0] for tk in np.asarray(t)])
    # rtol = 1e-10 in the RMS norm bounds each entry's local error by ~4e-9; <n>
    # sums N^2 entries weighted by n <= 29 over a few (Lawson: 7 to 25) steps, so
    # 1e-7 is the honest bound.
    np.testing.assert_allclose(
        res.expects[0].real, abs(a0) ** 2 * np.exp(-g * t), atol=1e-7
    )
    np.testing.assert_allclose(res.expects[1], at, atol=1e-7)
    exact = np.stack([qf.coherent_dm(N, x, "analytic") for x in at])
    # truncation at N = 30 leaves ~1e-13 of the Poisson weight outside the basis
    np.testing.assert_allclose(res.states, exact, atol=1e-8)


def test_qubit_decay():
    g = 0.7
    t = jnp.linspace(0.0, 4.0, 9)
    res = qf.mesolve(
        0.5 * qf.sigmaz(),
        [np.sqrt(g) * qf.sigmam()],
        qf.fock_dm(2, 0),
        t,
        exp_ops=[qf.fock_dm(2, 0)],
        **TOL,
    )
    np.testing.assert_allclose(res.expects[0].real, np.exp(-g * t), atol=1e-9)
    np.testing.assert_allclose(res.states[:, 0, 1], 0.0, atol=1e-12)


def test_linear_multimode_coherent_product():
    # H = a^dag M a with hopping, jumps sqrt(g_j) a_j: the state stays a coherent
    # product with amplitudes expm(-(iM + G/2) t) a0.
    N = 14
    M = np.array([[0.4, 0.3], [0.3, -0.2]])
    gamma = np.array([0.3, 0.1])
    a0 = np.array([0.8, -0.5j])
    a = [qf.tensor(qf.destroy(N), qf.eye(N)), qf.tensor(qf.eye(N), qf.destroy(N))]
    H = sum(M[i, j] * a[i].conj().T @ a[j] for i in range(2) for j in range(2))
    jumps = [np.sqrt(gamma[j]) * a[j] for j in range(2)]
    rho0 = qf.tensor(
        qf.coherent_dm(N, a0[0], "analytic"), qf.coherent_dm(N, a0[1], "analytic")
    )
    t = jnp.linspace(0.0, 2.0, 5)
    res = qf.mesolve(H, jumps, rho0, t, **TOL)
    for k, tk in enumerate(np.asarray(t)):
        at = damped_alpha(M, gamma, tk, a0)
        exact = qf.tensor(
            qf.coherent_dm(N, at[0], "analytic"), qf.coherent_dm(N, at[1], "analytic")
        )
        # N = 14 truncates amplitudes |alpha|^n / sqrt(n!) (|alpha| <= 0.8) at ~1e-7
        np.testing.assert_allclose(res.states[k], exact, atol=1e-7)


def test_invariants_along_trajectory(rng):
    from tests.helpers import rand_dm, rand_herm, rand_op

    n = 6
    res = qf.mesolve(
        rand_herm(rng, n, 2.0),
        [rand_op(rng, n), rand_op(rng, n)],
        rand_dm(rng, n),
        jnp.linspace(0, 3, 31),
    )
    rho = np.asarray(res.states)
    np.testing.assert_allclose(np.trace(rho, axis1=1, axis2=2), 1.0, atol=1e-7)
    np.testing.assert_allclose(rho, np.conj(np.swapaxes(rho, 1, 2)), atol=1e-12)
    assert np.linalg.eigvalsh(rho).min() > -1e-7


def test_top_population_of_decaying_fock_states():
    # |2> x |3> under L_j = sqrt(g_j) a_j: no level above the initial one is ever
    # populated, so the truncation is exact and the top levels decay as
    # exp(-2 g_0 t) and exp(-3 g_1 t)
    import jax

    g = (0.3, 0.5)
    a = [qf.tensor(qf.destroy(3), qf.eye(4)), qf.tensor(qf.eye(3), qf.destroy(4))]
    rho0 = qf.tensor(qf.fock_dm(3, 2), qf.fock_dm(4, 3))
    t = jnp.linspace(0.0, 2.0, 5)
    jumps = [np.sqrt(g[j]) * a[j] for j in range(2)]

    def solve(rho0, **kw):
        return qf.mesolve(0 * qf.eye(12), jumps, rho0, t, fock_dims=(3, 4), **TOL, **kw)

    res = solve(rho0, max_top_population=1.0, exp_ops=[a[0].conj().T @ a[0]])
    exact = np.stack([np.exp(-2 * g[0] * t), np.exp(-3 * g[1] * t)])
    np.testing.assert_allclose(res.top_population, exact, atol=1e-9)
    # the expectation values asked for are unchanged by the projectors added
    assert res.expects.shape == (1, 5)
    with pytest.raises(
        qf.TruncationError, match=r"\(n = 3\) of mode 1 holds 1 at t = 0"
    ):
        solve(rho0, fock_modes=(1,))
    # traced: the program raises
    with pytest.raises(Exception, match="the Fock truncation is too small"):
        jax.jit(lambda r: solve(r).top_population)(rho0).block_until_ready()
