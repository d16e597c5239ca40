"""mesolve against QuTiP on random systems, time-dependent problems, batching."""

import jax.numpy as jnp
import numpy as np
import pytest
import qutip as qt

import qflow_jax as qf
from tests.helpers import rand_dm, rand_herm, rand_op

QT_OPTS = {"rtol": 1e-11, "atol": 1e-12, "nsteps": 100_000}


def qutip_states(H, jumps, rho0, t):
    res = qt.mesolve(
        qt.Qobj(H) if not isinstance(H, list) else H,
        qt.Qobj(rho0),
        np.asarray(t),
        [qt.Qobj(L) if not isinstance(L, list) else L for L in jumps],
        options=QT_OPTS,
    )
    return np.stack([s.full() for s in res.states])


@pytest.mark.parametrize(
    ("n", "k", "method"),
    [
        (2, 2, "auto"),
        (3, 3, "tsit5"),
        (5, 2, "auto"),
        (8, 3, "dopri5"),
        (12, 2, "auto"),
        (12, 3, "lawson-dopri8"),
        (4, 2, "kvaerno5"),
    ],
)
def test_random_systems_match_qutip(n, k, method):
    rng = np.random.default_rng(100 * n + k)
    H = rand_herm(rng, n, 2.0)
    jumps = [rand_op(rng, n) for _ in range(k)]
    rho0 = rand_dm(rng, n)
    t = jnp.linspace(0.0, 2.0, 11)
    res = qf.mesolve(H, jumps, rho0, t, method=method, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(res.states, qutip_states(H, jumps, rho0, t), atol=1e-6)
    np.testing.assert_allclose(res.final_state, res.states[-1], atol=1e-14)


def test_time_dependent_hamiltonian_and_rates_match_qutip(rng):
    n = 4
    H0, H1 = rand_herm(rng, n), rand_herm(rng, n)
    L0, L1 = rand_op(rng, n), rand_op(rng, n)
    rho0 = rand_dm(rng, n)
    t = jnp.linspace(0.0, 3.0, 13)
    ref = qutip_states(
        [qt.Qobj(H0), [qt.Qobj(H1), lambda t: np.cos(2.0 * t)]],
        [qt.Qobj(L0), [qt.Qobj(L1), lambda t: np.exp(-0.3 * t)]],
        rho0,
        t,
    )
    kw = dict(rtol=1e-9, atol=1e-10)
    # QuTiP-style lists of [operator, coefficient(t)] pairs
    res = qf.mesolve(
        [H0, [H1, lambda t: jnp.cos(2.0 * t)]],
        [L0, [L1, lambda t: jnp.exp(-0.3 * t)]],
        rho0,
        t,
        **kw,
    )
    np.testing.assert_allclose(res.states, ref, atol=1e-6)
    # the same as plain callables of t
    res = qf.mesolve(
        lambda t: H0 + jnp.cos(2.0 * t) * H1,
        [L0, lambda t: jnp.exp(-0.3 * t) * L1],
        rho0,
        t,
        **kw,
    )
    np.testing.assert_allclose(res.states, ref, atol=1e-6)


@pytest.mark.parametrize("batch_mode", ["map", "vmap"])
def test_batching_equals_loop(rng, batch_mode):
    n = 3
    Hs = np.stack([rand_herm(rng, n) for _ in range(2)])  # H batch (2,)
    Ls = np.stack([rand_op(rng, n) for _ in range(3)])  # jump batch (3,)
    L_fixed = rand_op(rng, n)
    rhos = np.stack([rand_dm(rng, n) for _ in range(4)])  # rho0 batch (4,)
    t = jnp.linspace(0.0, 1.0, 5)
    O = rand_herm(rng, n)
    res = qf.mesolve(Hs, [Ls, L_fixed], rhos, t, exp_ops=[O], batch_mode=batch_mode)
    assert res.states.shape == (2, 3, 4, 5, n, n)
    assert res.expects.shape == (2, 3, 4, 1, 5)
    assert res.final_state.shape == (2, 3, 4, n, n)
    for i in range(2):
        for j in range(3):
            for k in range(4):
                one = qf.mesolve(Hs[i], [Ls[j], L_fixed], rhos[k], t, exp_ops=[O])
                np.testing.assert_allclose(res.states[i, j, k], one.states, atol=1e-7)
                np.testing.assert_allclose(res.expects[i, j, k], one.expects, atol=1e-7)


def test_expects_only_and_qobj_inputs():
    N = 10
    a = qt.destroy(N)
    res = qf.mesolve(
        a.dag() * a,
        [np.sqrt(0.2) * a],
        qt.coherent(N, 1.0),
        np.linspace(0, 1, 3),
        exp_ops=[a.dag() * a],
        save_states=False,
    )
    assert res.states is None
    assert res.final_state.shape == (N, N)
    np.testing.assert_allclose(
        res.expects[0].real,
        qt.expect(a.dag() * a, qt.coherent(N, 1.0))
        * np.exp(-0.2 * np.linspace(0, 1, 3)),
        atol=1e-6,
    )


def test_single_precision_follows_inputs(rng):
    n = 4
    H, L, rho0 = rand_herm(rng, n), rand_op(rng, n), rand_dm(rng, n)
    t = np.linspace(0.0, 1.0, 5)
    r64 = qf.mesolve(H, [L], rho0, t)
    r32 = qf.mesolve(H, [L], rho0.astype(np.complex64), t)
    assert r64.states.dtype == jnp.complex128
    assert r32.states.dtype == jnp.complex64
    np.testing.assert_allclose(r32.states, r64.states, atol=1e-4)
    r32b = qf.mesolve(H, [L], rho0, t, dtype=jnp.complex64)
    assert r32b.states.dtype == jnp.complex64
