"""mcsolve, the quantum-trajectory unravelling: against mesolve, QuTiP and exact
results (within the standard errors it reports), the location of the jumps, the
statistics of the jump record, sparse operators, reproducibility and errors.

Each distinct set of shapes and settings compiles once (about 5 s); the tests share
their systems (module-scoped runs) to keep the compilations few."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qutip as qt
import scipy.stats
from jax.experimental import sparse

import qflow_jax as qf
from qflow_jax.lindblad.mcsolve import (
    MCSolveResult,
    StderrNotReachedWarning,
    _attach_failures,
    _draws,
    mcsolve,
)
from tests.helpers import rand_herm, rand_op


def _within(mean, ref, stderr, k=3.0, slack=1e-9):
    """|mean - ref| <= k stderr (+ slack for the save times where every trajectory
    agrees and the standard error is 0)."""
    mean, ref, stderr = (np.asarray(x) for x in (mean, ref, stderr))
    excess = np.abs(mean - ref) - (k * stderr + slack)
    assert np.all(excess <= 0), f"worst excess {excess.max():.3g} over {k} stderr"


# ----------------------------------------------------------------- a random system


@pytest.fixture(scope="module")
def random_case():
    """n = 4, random H, two random jump operators, three random observables; 1000
    trajectories with their states, and mesolve's solution."""
    rng = np.random.default_rng(7)
    n = 4
    H = rand_herm(rng, n)
    jumps = [rand_op(rng, n, scale=0.6), rand_op(rng, n, scale=0.4)]
    exp_ops = [rand_herm(rng, n) for _ in range(3)]
    x = rng.normal(size=n) + 1j * rng.normal(size=n)
    psi0 = (x / np.linalg.norm(x))[:, None]
    tsave = jnp.linspace(0.0, 3.0, 11)
    key = jax.random.key(11)
    res = mcsolve(
        H, jumps, psi0, tsave, key=key, ntraj=1000, exp_ops=exp_ops, save_states=True
    )
    me = qf.mesolve(H, jumps, psi0, tsave, exp_ops=exp_ops, rtol=1e-9, atol=1e-10)
    return dict(
        H=H,
        jumps=jumps,
        exp_ops=exp_ops,
        psi0=psi0,
        tsave=tsave,
        key=key,
        res=res,
        me=me,
    )


def test_random_system_matches_mesolve(random_case):
    res, me = random_case["res"], random_case["me"]
    assert isinstance(res, MCSolveResult) and res.ntraj == 1000
    assert res.expects.shape == res.expects_stderr.shape == (3, 11)
    assert res.states.shape == (1000, 11, 4, 1)
    assert res.final_state.shape == (1000, 4, 1)
    _within(res.expects.real, me.expects.real, res.expects_stderr)
    # Hermitian observables: the imaginary parts vanish trajectory by trajectory
    np.testing.assert_allclose(res.expects.imag, 0.0, atol=1e-12)
    # the stderr is that of ~1000 samples of O(1) spread, not a degenerate one
    assert 0.005 < float(res.expects_stderr[:, -1].min()) < 0.05
    assert int(res.num_jumps.sum()) > 1000
    assert set(np.unique(res.jump_channels).tolist()) == {-1, 0, 1}


def test_density_matrix_from_saved_states(random_case):
    res, me = random_case["res"], random_case["me"]
    rho = res.dm()
    assert rho.shape == (11, 4, 4)
    np.testing.assert_allclose(np.trace(rho, axis1=1, axis2=2), 1.0, atol=1e-12)
    np.testing.assert_allclose(rho, np.conj(np.swapaxes(rho, 1, 2)), atol=1e-14)
    # the trace with the mean projector is the mean of the expectation values
    ex = np.einsum("kij,tji->kt", np.stack(random_case["exp_ops"]), rho)
    np.testing.assert_allclose(ex, res.expects, atol=1e-12)
    np.testing.assert_allclose(res.final_dm(), rho[-1], atol=1e-12)
    # saved states: normalized; the last one is the final state
    np.testing.assert_allclose(np.linalg.norm(res.states, axis=(2, 3)), 1, atol=1e-12)
    np.testing.assert_allclose(res.states[:, -1], res.final_state, atol=1e-12)
    # each entry of the mean of 1000 projectors is within ~4/sqrt(1000) of mesolve
    assert float(np.abs(rho - me.states).max()) < 4 / np.sqrt(1000)


def test_matches_qutip_mcsolve(random_case):
    c = random_case
    ref = qt.mcsolve(
        qt.Qobj(c["H"]),
        qt.Qobj(c["psi0"]),
        np.asarray(c["tsave"]),
        [qt.Qobj(L) for L in c["jumps"]],
        e_ops=[qt.Qobj(A) for A in c["exp_ops"]],
        ntraj=1000,
        options={"map": "serial", "progress_bar": False},
        seeds=3,
    )
    ref_mean = np.stack(ref.expect).real
    ref_err = np.stack(ref.std_expect) / np.sqrt(ref.num_trajectories)
    res = c["res"]
    combined = np.sqrt(np.asarray(res.expects_stderr) ** 2 + ref_err**2)
    _within(res.expects.real, ref_mean, combined)


def test_sparse_bcoo_operators_match_dense(random_case):
    c = random_case
    H = sparse.BCOO.fromdense(jnp.asarray(c["H"]))
    jumps = [sparse.BCOO.fromdense(jnp.asarray(L)) for L in c["jumps"]]
    exp_ops = [sparse.BCOO.fromdense(jnp.asarray(c["exp_ops"][0])), *c["exp_ops"][1:]]
    res = mcsolve(
        H,
        jumps,
        c["psi0"],
        c["tsave"],
        key=c["key"],
        ntraj=256,
        exp_ops=exp_ops,
        save_states=True,
    )
    dense = c["res"]
    np.testing.assert_array_equal(res.num_jumps, dense.num_jumps[:256])
    np.testing.assert_array_equal(res.jump_channels, dense.jump_channels[:256])
    np.testing.assert_allclose(res.jump_times, dense.jump_times[:256], atol=1e-10)
    np.testing.assert_allclose(res.states, dense.states[:256], atol=1e-10)
    ex = np.einsum("nti,kij,ntj->kt", np.conj(res.states[..., 0]),
                   np.stack(c["exp_ops"]), res.states[..., 0]) / 256  # fmt: skip
    np.testing.assert_allclose(res.expects, ex, atol=1e-10)


def test_same_key_gives_identical_results(random_case):
    c = random_case
    again = mcsolve(
        c["H"],
        c["jumps"],
        c["psi0"],
        c["tsave"],
        key=c["key"],
        ntraj=1000,
        exp_ops=c["exp_ops"],
        save_states=True,
    )
    for name in ("expects", "expects_stderr", "states", "jump_times", "num_jumps"):
        np.testing.assert_array_equal(getattr(again, name), getattr(c["res"], name))


@pytest.mark.parametrize(("batch_size", "batch_mode"), [(100, "map"), (128, "vmap")])
def test_batching_does_not_change_trajectories(random_case, batch_size, batch_mode):
    """Trajectory i depends on fold_in(key, i) only: another batch size gives the
    very same trajectories (bit for bit); vectorized (vmap) rather than one-by-one
    (map, the default on CPU) batches agree to rounding."""
    c = random_case
    res = mcsolve(
        c["H"],
        c["jumps"],
        c["psi0"],
        c["tsave"],
        key=c["key"],
        ntraj=300,
        exp_ops=c["exp_ops"],
        save_states=True,
        batch_size=batch_size,
        batch_mode=batch_mode,
    )
    ref = jax.tree.map(lambda x: x[:300], c["res"])
    assert res.ntraj == 300 and res.states.shape[0] == 300
    for name in ("num_jumps", "jump_channels"):
        np.testing.assert_array_equal(getattr(res, name), getattr(ref, name))
    for k in ("num_steps", "num_segments"):
        np.testing.assert_array_equal(res.stats[k], ref.stats[k])
    tol = 0.0 if batch_mode == "map" else 1e-13
    for name in ("jump_times", "states", "final_state"):
        np.testing.assert_allclose(
            getattr(res, name), getattr(ref, name), rtol=0, atol=tol
        )


# ----------------------------------------------------------------- a damped cavity


def test_coherent_cavity_decay_and_poisson_jump_counts():
    """Pure loss keeps a coherent state coherent, |alpha e^{-kappa t/2}>, whatever
    the jumps: <n>(t) = |alpha|^2 e^{-kappa t} on every trajectory, and the number
    of jumps up to T is Poisson with mean |alpha|^2 (1 - e^{-kappa T})."""
    N, alpha, kappa = 16, 1.5, 1.0
    a = qf.destroy(N)
    tsave = jnp.linspace(0.0, 2.0, 11)
    ntraj = 800
    res = mcsolve(
        qf.number(N),
        [np.sqrt(kappa) * a],
        qf.coherent(N, alpha),
        tsave,
        key=jax.random.key(3),
        ntraj=ntraj,
        exp_ops=[qf.number(N)],
    )
    exact = alpha**2 * np.exp(-kappa * np.asarray(tsave))
    # no spread between trajectories: the error is the solver's, not statistics
    _within(res.expects[0].real, exact, res.expects_stderr[0], slack=1e-6)
    assert float(res.expects_stderr.max()) < 1e-6
    counts = np.asarray(res.num_jumps)
    lam = alpha**2 * (1 - np.exp(-kappa * 2.0))
    _within(counts.mean(), lam, np.sqrt(lam / ntraj))
    # the sample variance of a Poisson variable: variance lam, with standard error
    # sqrt((mu_4 - sigma^4) / ntraj) = sqrt((lam + 2 lam^2) / ntraj)
    _within(counts.var(ddof=1), lam, np.sqrt((lam + 2 * lam**2) / ntraj))
    # jump times: sorted within each trajectory, inside (0, T], padded with inf
    times = np.asarray(res.jump_times)
    finite = np.isfinite(times)
    np.testing.assert_array_equal(finite.sum(1), counts)
    assert np.all(np.diff(np.where(finite, times, 3.0), axis=1) >= 0)
    assert times[finite].min() > 0 and times[finite].max() <= 2.0
    np.testing.assert_array_equal(np.asarray(res.jump_channels) == 0, finite)


# ----------------------------------------------------------------- a decaying atom

GAMMA = 1.0


def _excited(t, psi):
    """e_fn: the excited-state population |<e|psi>|^2 (basis(2, 0) is |e>)."""
    return jnp.abs(psi[0, 0]) ** 2


def _atom(ntraj, key, **kw):
    """A two-level atom decaying from |e> at rate GAMMA; every call shares one
    compilation (same shapes, settings and e_fn)."""
    kw.setdefault("batch_size", 100)
    return mcsolve(
        0.5 * qf.sigmaz(),
        [np.sqrt(GAMMA) * qf.sigmam()],
        qf.basis(2, 0),
        jnp.linspace(0.0, 8.0, 17),
        key=key,
        ntraj=ntraj if "target_stderr" not in kw else None,
        exp_ops=[qf.sigmap() @ qf.sigmam()],
        e_fn=_excited,
        **kw,
    )


@pytest.fixture(scope="module")
def atom():
    key = jax.random.key(5)
    return key, _atom(2000, key)


def test_jump_times_are_exponential_and_located_at_the_drawn_norm(atom):
    key, res = atom
    counts = np.asarray(res.num_jumps)
    # one jump at most: it leaves the atom in |g>, which does not decay
    assert set(np.unique(counts).tolist()) <= {0, 1}
    assert counts.sum() > 1990  # P(no jump before t = 8) = e^-8
    t1 = np.asarray(res.jump_times[:, 0])[counts == 1]
    assert np.all(np.isinf(np.asarray(res.jump_times[:, 1:])))
    _within(t1.mean(), 1 / GAMMA, t1.std(ddof=1) / np.sqrt(t1.size))
    assert scipy.stats.kstest(t1, "expon", args=(0, 1 / GAMMA)).pvalue > 1e-3
    # the norm of the no-jump state is exp(-gamma t): each jump sits where it
    # equals the trajectory's first draw r, to the solver's tolerance
    r = np.array(
        [
            _draws(jax.random.fold_in(key, i), 0, jnp.float64)[0]
            for i in np.flatnonzero(counts == 1)[:200]
        ]
    )
    np.testing.assert_allclose(np.exp(-GAMMA * t1[:200]), r, rtol=1e-6, atol=1e-9)
    # after its jump, a trajectory is |g> (up to a phase)
    final = np.abs(np.asarray(res.final_state)[counts == 1, :, 0])
    np.testing.assert_allclose(final, np.broadcast_to([0, 1], final.shape), atol=1e-12)


def test_excited_population_and_e_fn(atom):
    _, res = atom
    t = np.asarray(res.tsave)
    # late, every trajectory has jumped (stderr 0): then the truth is below 3/ntraj
    _within(
        res.expects[0].real, np.exp(-GAMMA * t), res.expects_stderr[0], slack=3 / 2000
    )
    np.testing.assert_allclose(res.e_fn_values, res.expects[0].real, atol=1e-12)
    np.testing.assert_allclose(res.e_fn_stderr, res.expects_stderr[0], atol=1e-12)


def _error_slope(run, exact, sizes, groups):
    """Log-log slope of the mean |error| against ntraj, and its standard error.

    For each ntraj, `groups` independent runs (keys) give a mean |error| over the
    save times; their mean and its standard error (the spread of the runs) make
    one point of a weighted straight-line fit."""
    logs, log_err = [], []
    for size, count in zip(sizes, groups, strict=True):
        base = jax.random.fold_in(jax.random.key(17), size)  # runs share no traj.
        keys = [jax.random.fold_in(base, g) for g in range(count)]
        err = np.asarray([np.abs(run(size, k) - exact).mean() for k in keys])
        logs.append(np.log(err.mean()))
        log_err.append(err.std(ddof=1) / np.sqrt(count) / err.mean())
    x, y, w = np.log(sizes), np.asarray(logs), 1 / np.asarray(log_err) ** 2
    xm = np.sum(w * x) / w.sum()
    slope = np.sum(w * (x - xm) * y) / np.sum(w * (x - xm) ** 2)
    return slope, 1 / np.sqrt(np.sum(w * (x - xm) ** 2))


@pytest.mark.slow  # a convergence run
def test_error_falls_as_one_over_sqrt_ntraj():
    """The excited population of the atom (save times 0.5 to 4): the slope is -1/2
    within three of its standard errors."""
    t = np.linspace(0.0, 8.0, 17)[1:9]

    def run(size, key):
        return np.asarray(_atom(size, key).expects[0].real)[1:9]

    slope, slope_err = _error_slope(
        run, np.exp(-GAMMA * t), (100, 400, 1600), (32, 16, 8)
    )
    assert abs(slope + 0.5) < 3 * slope_err + 0.02, (slope, slope_err)
    assert slope_err < 0.15


@pytest.mark.slow
def test_cavity_error_falls_as_one_over_sqrt_ntraj():
    """A damped cavity from the Fock state |3> (N = 4 levels hold it exactly):
    <n>(t) = 3 e^{-kappa t}, with binomial spread between trajectories; ntraj from
    100 to 6400."""
    N, kappa = 4, 1.0
    tsave = jnp.linspace(0.0, 3.0, 13)
    exact = 3 * np.exp(-kappa * np.asarray(tsave))[1:]

    def run(size, key):
        res = mcsolve(
            qf.number(N),
            [np.sqrt(kappa) * qf.destroy(N)],
            qf.basis(N, 3),
            tsave,
            key=key,
            ntraj=size,
            exp_ops=[qf.number(N)],
            batch_size=100,
        )
        return np.asarray(res.expects[0].real)[1:]

    sizes, groups = (100, 400, 1600, 6400), (64, 32, 16, 8)
    slope, slope_err = _error_slope(run, exact, sizes, groups)
    assert abs(slope + 0.5) < 3 * slope_err + 0.01, (slope, slope_err)
    assert slope_err < 0.08


def test_target_stderr_runs_until_reached():
    res = _atom(None, jax.random.key(8), target_stderr=0.03)
    assert float(res.expects_stderr.max()) <= 0.03
    assert max(float(np.max(res.e_fn_stderr)), 0) <= 0.03
    # p (1 - p) <= 1/4: about (0.5 / 0.03)^2 = 278 trajectories, in batches of 100
    assert res.ntraj in (200, 300) and res.num_jumps.shape == (res.ntraj,)
    with pytest.warns(StderrNotReachedWarning, match="max_ntraj=150"):
        capped = _atom(None, jax.random.key(8), target_stderr=0.001, max_ntraj=150)
    assert capped.ntraj == 150 and float(capped.expects_stderr.max()) > 0.001


# ----------------------------------------------------------------- time dependence


def _drive(t):
    return 0.8 * jnp.cos(1.3 * t)


def _rate(t):
    return jnp.sqrt(0.3 * (1 + jnp.tanh(t - 1.0)))


def _side_drive(t):
    return 0.3 * jnp.sin(0.7 * t) * qf.sigmay()


def _dephasing(t):
    return 0.2 * (1.0 + 0.5 * jnp.sin(t)) * qf.sigmaz()


def test_time_dependent_forms_match_mesolve():
    """A driven qubit with a modulated decay rate and a callable dephasing: every
    accepted form of a time-dependent operator (constant, pair [A, f], timecallable,
    modulated, plain callable) in one run."""
    H = [
        qf.constant(0.5 * qf.sigmaz()),
        [qf.sigmax(), _drive],
        qf.timecallable(_side_drive),
    ]
    jumps = [qf.modulated(_rate, qf.sigmam()), _dephasing]
    psi0 = qf.basis(2, 1)
    tsave = jnp.linspace(0.0, 4.0, 17)
    ops = [qf.sigmax(), qf.sigmay(), qf.sigmaz()]
    res = mcsolve(H, jumps, psi0, tsave, key=jax.random.key(2), ntraj=1000, exp_ops=ops)
    me = qf.mesolve(H, jumps, psi0, tsave, exp_ops=ops, rtol=1e-9, atol=1e-10)
    _within(res.expects.real, me.expects.real, res.expects_stderr)
    assert int((res.jump_channels == 0).sum()) > 300  # the modulated decay fires
    assert int((res.jump_channels == 1).sum()) > 50  # and the dephasing


# ----------------------------------------------------------------- failures


def _driven_atom(scale, key):
    """A driven, decaying atom (it jumps again and again), with max_jumps=2 and
    max_steps=1000: both failures run one compiled program (scale is traced)."""
    return mcsolve(
        scale * qf.sigmax(),
        [qf.sigmam()],
        qf.basis(2, 0),
        jnp.linspace(0.0, 10.0, 3),
        key=key,
        ntraj=8,
        max_jumps=2,
        method=qf.Tsit5(max_steps=1000),
    ).num_jumps


def test_step_limit_and_jump_limit_raise():
    with pytest.raises(RuntimeError, match="more than max_jumps=2 jumps"):
        _driven_atom(1.0, jax.random.key(0))
    # a drive of 1e4 needs ~1e5 steps before the first jump
    with pytest.raises(RuntimeError, match="step limit max_steps=1000"):
        _driven_atom(1e4, jax.random.key(0))


def test_failures_raise_inside_jit():
    """Traced inputs: the checks are attached to the result and raise when the
    program runs (the whole path end to end: the slow test below)."""
    method = qf.Tsit5(max_steps=7)

    @jax.jit
    def check(status, overflow):
        pooled = dict(status=status, overflow=overflow, value=jnp.ones(3))
        return _attach_failures(pooled, method, 5)["value"]

    ok, over = jnp.zeros(3, jnp.int32), jnp.array([False, True, False])
    np.testing.assert_array_equal(check(ok, ~over & over), 1.0)
    with pytest.raises(Exception, match="step limit max_steps=7"):
        jax.block_until_ready(check(ok.at[1].set(1), ~over & over))
    with pytest.raises(Exception, match="more than max_jumps=5 jumps"):
        jax.block_until_ready(check(ok, over))


def test_jump_limit_raises_under_jit():
    with pytest.raises(Exception, match="more than max_jumps=2 jumps"):
        jax.block_until_ready(
            jax.jit(_driven_atom, static_argnums=())(1.0, jax.random.key(0))
        )


def _args(**change):
    args = dict(
        H=qf.sigmaz(),
        jump_ops=[qf.sigmam()],
        psi0=qf.basis(2, 0),
        tsave=jnp.linspace(0.0, 1.0, 3),
        key=jax.random.key(0),
        ntraj=10,
    )
    args.update(change)
    return args


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(H=jnp.ones((2, 3))), ValueError, r"`H` must be a square matrix"),
        (dict(H=qf.sigmaz() + 1j * qf.sigmax()), ValueError, r"`H` must be Hermitian"),
        (dict(H=qf.eye(3)), ValueError, r"`H` has dimension 3 but `psi0` has"),
        (dict(H=jnp.stack([qf.sigmaz()] * 2)), ValueError, r"no batch axes"),
        (dict(jump_ops=[qf.destroy(3)]), ValueError, r"`jump_ops\[0\]` has dim"),
        (
            dict(jump_ops=[[qf.sigmam(), [qf.sigmaz(), jnp.cos]]]),
            ValueError,
            r"`jump_ops\[0\]` must be one operator",
        ),
        (dict(psi0=2 * qf.basis(2, 0)), ValueError, r"`psi0` must be normalized"),
        (dict(psi0=qf.fock_dm(2, 0)), ValueError, r"`psi0` must be a ket"),
        (dict(psi0=jnp.array([jnp.nan, 1.0])), ValueError, r"`psi0` contains non-f"),
        (dict(ntraj=None), ValueError, r"exactly one of `ntraj`"),
        (dict(target_stderr=0.1), ValueError, r"exactly one of `ntraj`"),
        (dict(ntraj=0), ValueError, r"`ntraj` must be a positive integer"),
        (dict(ntraj=2.5), TypeError, r"`ntraj` must be a positive integer"),
        (dict(key=None), TypeError, r"`key` is required"),
        (dict(key=0), TypeError, r"`key` must be one JAX random key"),
        (dict(tsave=jnp.array([0.0, 1.0, 0.5])), ValueError, r"strictly increasing"),
        (dict(method="lawson-tsit5"), ValueError, r"`method` must be one of"),
        (dict(max_jumps=0), ValueError, r"`max_jumps` must be a positive integer"),
        (dict(batch_size=-1), ValueError, r"`batch_size` must be a positive"),
        (dict(batch_mode="pmap"), ValueError, r"`batch_mode` must be 'auto'"),
        (dict(exp_ops=[qf.eye(3)]), ValueError, r"`exp_ops` must be \(n, n\)"),
        (dict(e_fn=lambda t, psi: psi @ psi), ValueError, r"`e_fn` must be a func"),
        (
            dict(ntraj=None, target_stderr=0.1),
            ValueError,
            r"`target_stderr` needs `exp_ops` or `e_fn`",
        ),
        (
            dict(H=sparse.BCOO.fromdense(qf.sigmax() + 1j * qf.sigmaz())),
            ValueError,
            r"`H` must be Hermitian",
        ),
    ],
)
def test_bad_input_is_rejected_with_its_name(change, error, match):
    with pytest.raises(error, match=match):
        mcsolve(**_args(**change))
