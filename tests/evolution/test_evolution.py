"""Euler-KL and TDVP on the damped oscillator, whose Q stays an exact Gaussian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from qflow_jax.evolution import (
    CG,
    SNR,
    TDVP,
    Cholesky,
    EulerKL,
    EulerKLSettings,
    EvolutionMethod,
    PInv,
    TDVPSettings,
    euler_kl_step,
    evolve,
    evolve_tdvp,
    sample_observables,
    tdvp_residual,
    tdvp_theta_dot,
)
from qflow_jax.flows import NormalizingFlow
from qflow_jax.husimi import a, adag, compile_qpde
from qflow_jax.husimi.models import DampedChain

W, G, A0 = 1.0, 1.0, 2.0


def damped():
    pde = compile_qpde(W * adag(0) @ a(0), [np.sqrt(G) * a(0)])
    # Q(0) of |A0> is N((A0, 0), I/2): a new flow starts exactly there
    flow = NormalizingFlow(
        dim=2,
        n_layers=2,
        hidden=(8,),
        init_mean=(A0, 0.0),
        init_scale=float(np.sqrt(0.5)),
    )
    return pde, flow, flow.init(jax.random.key(0), jnp.zeros((1, 2)))


def exact_alpha(t):
    return DampedChain(1, W, G).alpha(t, [A0])[0]


def sample_mean(flow, params, n=200_000):
    x, _ = flow.apply(params, jax.random.key(123), n, method=flow.sample_and_log_prob)
    return sample_observables(x)


def test_tdvp_follows_the_exact_damped_solution():
    # (the other linear solvers give the same motion:
    # test_theta_dot_motion_is_the_same_for_every_solver)
    pde, flow, params = damped()
    st = TDVPSettings(batch_size=512, linear_solver="pinv", ode_solver="rk4", dt=0.05)
    tsave = np.array([0.0, 0.5, 1.0])
    res = evolve_tdvp(pde, flow, params, tsave, key=jax.random.key(1), settings=st)
    infos = res.infos
    assert res.method == "tdvp" and res.stats["residual"].shape == (2,)
    for i, t in enumerate(tsave):
        p = res.params_at(i)
        obs = sample_mean(flow, p)
        # 200k samples: standard error of <a> ~ 0.0016, of <n> ~ 0.004
        np.testing.assert_allclose(obs["a"][0], exact_alpha(t), atol=0.01)
        np.testing.assert_allclose(obs["n"][0], A0**2 * np.exp(-G * t), atol=0.03)
        # coherent states: Var(X) = Var(P) = 1/4 for X = (a + a^dag)/2
        np.testing.assert_allclose([obs["var_x"][0], obs["var_p"][0]], 0.25, atol=0.01)
    # the Gaussian family holds the exact solution: the TDVP residual vanishes
    assert max(i["residual"] for i in infos) < 1e-6
    assert all(i["retries"] == 0 for i in infos)


def test_theta_dot_motion_is_the_same_for_every_solver():
    pde, flow, params = damped()
    # move away from the symmetric start so that every parameter matters
    params = jax.tree_util.tree_map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params
    )
    theta, unravel = ravel_pytree(params)
    z = jax.random.normal(jax.random.key(3), (1024, 2))
    x = flow.apply(params, z, method=NormalizingFlow.forward_and_log_det)[0]
    G = jax.vmap(jax.grad(lambda th, xi: flow.apply(unravel(th), xi)), (None, 0))(
        theta, x
    )
    Gc = G - G.mean(0)

    def motion(td):  # d log q / dt at the samples: what the solvers must agree on
        return Gc @ td

    ref, ref_diag = tdvp_theta_dot(
        flow, pde, theta, unravel, z, TDVPSettings(linear_solver="pinv", rcond=1e-12)
    )
    # (CG on the matrix-free S: test_matrix_free_cg_equals_the_dense_solve)
    for kw, tol in ((dict(linear_solver="cholesky", diag_shift=1e-10), 1e-3),):
        td, diag = tdvp_theta_dot(flow, pde, theta, unravel, z, TDVPSettings(**kw))
        # S is ill-conditioned, so theta_dot itself differs along near-null
        # directions; the motion of log q and the residual do not.
        err = jnp.linalg.norm(motion(td) - motion(ref)) / jnp.linalg.norm(motion(ref))
        assert err < tol, (kw, err)
        np.testing.assert_allclose(diag["residual"], ref_diag["residual"], atol=1e-4)


def test_euler_kl_step_reaches_the_euler_target():
    pde, flow, params = damped()
    dt = 0.05
    st = EulerKLSettings(
        dt=dt,
        batch_size=1024,
        learning_rate=3e-3,
        schedule="constant",
        max_inner_steps=300,
        min_inner_steps=20,
        loss_tol=1e-7,
        objective="forward",
        scheme="euler",
    )
    new, info = euler_kl_step(flow, pde, params, jax.random.key(4), st)
    assert info["finite"] and info["min_weight"] > 0
    # Euler moves the mean by exactly dt * d<a>/dt = -(iW + G/2) A0 dt
    target = A0 * (1 - (1j * W + G / 2) * dt)
    np.testing.assert_allclose(sample_mean(flow, new)["a"][0], target, atol=0.02)
    assert info["loss"] < 5e-3


@pytest.mark.slow  # a convergence run
def test_midpoint_step_is_second_order():
    # One step of dt = 0.1: the Euler target's mean misses the exact one by
    # |A0 z^2 / 2| = 0.0125 (z = (iW + G/2) dt), the midpoint rule's by ~|A0 z^3/6|.
    pde, flow, params = damped()
    dt = 0.1
    st = EulerKLSettings(
        dt=dt,
        batch_size=512,
        learning_rate=3e-3,
        schedule="cosine",
        max_inner_steps=100,
        min_inner_steps=100,
        objective="reverse",
        scheme="midpoint",
    )
    new, info = euler_kl_step(flow, pde, params, jax.random.key(6), st)
    assert info["finite"] and info["inner_steps"] == 200
    mean = sample_mean(flow, new, n=400_000)["a"][0]
    assert abs(mean - exact_alpha(dt)) < 0.004


@pytest.mark.parametrize("objective", ["forward", "reverse"])
def test_euler_kl_step_of_zero_length(objective):
    # At dt = 0 the target is the flow itself. The forward objective re-fits it
    # from samples and moves by sampling noise; the reverse (sticking-the-landing)
    # gradient vanishes sample by sample, so the parameters do not move at all.
    pde, flow, params = damped()
    st = EulerKLSettings(
        batch_size=256, max_inner_steps=50, min_inner_steps=50, objective=objective
    )
    new, _ = euler_kl_step(flow, pde, params, jax.random.key(5), st, dt=0.0)
    moved = float(jnp.max(jnp.abs(ravel_pytree(new)[0] - ravel_pytree(params)[0])))
    if objective == "reverse":
        assert moved < 1e-12
    else:
        assert moved > 1e-3


def test_observables_of_exact_coherent_samples():
    alpha = 1.5 - 0.5j
    x = jax.random.normal(jax.random.key(5), (400_000, 2)) * np.sqrt(0.5)
    x = x + jnp.array([alpha.real, alpha.imag])
    obs = sample_observables(x)
    np.testing.assert_allclose(obs["a"][0], alpha, atol=4 * obs["a_err"][0])
    np.testing.assert_allclose(obs["n"][0], abs(alpha) ** 2, atol=4 * obs["n_err"][0])
    np.testing.assert_allclose(obs["var_x"][0], 0.25, atol=0.005)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(linear_solver="lu"), "`linear_solver` must be one of"),
        (dict(ode_solver="euler"), "`ode_solver` must be one of"),
        (dict(s_builder="matrix_free", linear_solver="pinv"), "needs the dense S"),
    ],
)
def test_bad_tdvp_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        TDVPSettings(**kw)


def test_bad_euler_settings():
    with pytest.raises(ValueError, match="`schedule`"):
        EulerKLSettings(schedule="linear").optimizer()
    with pytest.raises(ValueError, match="`objective`"):
        EulerKLSettings(objective="symmetric")
    with pytest.raises(ValueError, match="`scheme`"):
        EulerKLSettings(scheme="rk4")


def test_pretrain_reaches_a_thermal_q_by_maximum_likelihood():
    from qflow_jax.evolution.pretrain import PretrainSettings, pretrain

    nth = 1.5  # thermal Q: N(0, (1 + nth)/2 I)
    var = (1 + nth) / 2
    flow = NormalizingFlow(dim=2, n_layers=2, hidden=(8,), init_scale=0.7)
    params = flow.init(jax.random.key(0), jnp.zeros((1, 2)))

    def logq0(y):
        return -jnp.sum(y**2) / (2 * var) - jnp.log(2 * jnp.pi * var)

    def sampler(key, n):
        return jnp.sqrt(var) * jax.random.normal(key, (n, 2))

    st = PretrainSettings(
        max_steps=2000,
        batch_size=512,
        learning_rate=1e-2,
        kl_tol=2e-3,
        check_every=100,
        check_samples=50_000,
    )
    new, info = pretrain(flow, params, jax.random.key(1), logq0, sampler, st)
    assert info["kl"] < 2e-3 and info["steps"] > 0
    obs = sample_mean(flow, new)
    # Q = N(0, var): <n> = E|alpha|^2 - 1 = 2 var - 1 = nth
    np.testing.assert_allclose(obs["n"][0], nth, atol=0.05)


def test_deprecated_evolution_names_warn_and_agree():
    from qflow_jax.evolution import tdvp_evolve

    pde, flow, params = damped()
    st = TDVPSettings(batch_size=64, ode_solver="heun", dt=0.05)
    tsave = np.array([0.0, 0.05])
    new = evolve_tdvp(pde, flow, params, tsave, key=jax.random.key(1), settings=st)
    with pytest.warns(DeprecationWarning, match="evolve_tdvp"):
        out, infos = tdvp_evolve(flow, pde, params, tsave, jax.random.key(1), st)
    for i in range(2):
        jax.tree.map(np.testing.assert_array_equal, out[i], new.params_at(i))
    assert infos == new.infos and infos[0]["t"] == 0.05


# ------------------------------------------------------ evolution method objects


def moved_params(flow, params):
    """Parameters away from the symmetric start, so that every one of them matters."""
    return jax.tree_util.tree_map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params
    )


# fewer and more samples than the 128 (512: with -m slow)
@pytest.mark.parametrize("batch", [64, pytest.param(512, marks=pytest.mark.slow)])
def test_sample_space_solve_equals_the_dense_one(batch):
    # minSR: (S + eps)^-1 F = Gc^T (T + eps)^-1 sc / B and S^+ F = Gc^T T^+ sc / B
    pde, flow, params = damped()
    params = moved_params(flow, params)
    theta, unravel = ravel_pytree(params)
    assert theta.shape == (128,)
    z = jax.random.normal(jax.random.key(3), (batch, 2))
    for solver in (Cholesky(1e-3), Cholesky(1e-6), PInv(1e-8)):
        dense = tdvp_theta_dot(
            flow, pde, theta, unravel, z, TDVP(qgt="dense", solver=solver)
        )
        sample = tdvp_theta_dot(
            flow, pde, theta, unravel, z, TDVP(qgt="sample", solver=solver)
        )
        err = jnp.linalg.norm(sample[0] - dense[0]) / jnp.linalg.norm(dense[0])
        assert err < 1e-8, (solver, batch, err)
        np.testing.assert_allclose(
            sample[1]["residual"], dense[1]["residual"], rtol=1e-8, atol=1e-12
        )
    # "auto" is the sample-space solve with fewer samples than parameters
    auto = tdvp_theta_dot(flow, pde, theta, unravel, z, TDVP(solver=PInv(1e-8)))[0]
    kind = "sample" if batch < 128 else "dense"
    ref = tdvp_theta_dot(
        flow, pde, theta, unravel, z, TDVP(qgt=kind, solver=PInv(1e-8))
    )[0]
    np.testing.assert_array_equal(auto, ref)


def test_out_of_sample_residual_shows_what_min_sr_misses():
    # Kerr: d log Q/dt leaves the Gaussian family. With fewer samples (64) than
    # parameters (128) the sample-space solve fits every sample exactly; on new
    # samples it misses part of the motion, which tdvp_residual reports
    pde = compile_qpde(0.5 * adag(0) @ adag(0) @ a(0) @ a(0), [0.3 * a(0)])
    flow = damped()[1]
    params = moved_params(flow, damped()[2])
    z = jax.random.normal(jax.random.key(3), (2, 64, 2))
    r = tdvp_residual(flow, pde, params, z[0], z[1], TDVP(qgt="sample"))
    assert abs(float(r["residual"])) < 1e-4  # PInv's smooth cut-off leaves ~1e-5
    assert float(r["residual_test"]) > 100 * abs(float(r["residual"]))


def test_matrix_free_cg_equals_the_dense_solve():
    pde, flow, params = damped()
    theta, unravel = ravel_pytree(moved_params(flow, params))
    z = jax.random.normal(jax.random.key(3), (256, 2))
    dense = tdvp_theta_dot(
        flow, pde, theta, unravel, z, TDVP(qgt="dense", solver=Cholesky(1e-2))
    )[0]
    free = tdvp_theta_dot(
        flow,
        pde,
        theta,
        unravel,
        z,
        TDVP(qgt="matrix_free", solver=CG(1e-2, maxiter=1000, tol=1e-12)),
    )[0]
    assert jnp.linalg.norm(free - dense) / jnp.linalg.norm(dense) < 1e-8


def test_evolve_takes_any_linear_solver_and_diffrax_solver():
    import diffrax as dfx

    pde, flow, params = damped()
    tsave = np.array([0.0, 0.25])

    def lstsq(S, F):  # a user's solver: any callable (Fisher, F) -> theta_dot
        return jnp.linalg.lstsq(S.to_dense(), F, rcond=1e-8)[0]

    res = {}
    for name, method in {
        "lstsq": TDVP(qgt="dense", solver=lstsq, batch_size=256, dt=0.05),
        "bosh3": TDVP(
            qgt="sample",
            solver=PInv(1e-8),
            ode_solver=dfx.Bosh3(),
            rtol=1e-6,
            atol=1e-8,
            batch_size=256,
        ),
    }.items():
        res[name] = evolve(
            pde, flow, params, tsave, method=method, key=jax.random.key(1)
        )
        assert res[name].method == "tdvp"
    # the Gaussian family holds the exact solution: all follow it (200k samples:
    # standard error of <a> ~ 0.0016)
    for name in res:
        mean = sample_mean(flow, res[name].final_state)["a"][0]
        assert abs(mean - exact_alpha(0.25)) < 0.01, name
    assert res["bosh3"].stats["ode_steps"][0] > 1  # adaptive steps in [0, 1]


def test_euler_kl_object_takes_an_optax_optimizer():
    import optax

    pde, flow, params = damped()
    method = EulerKL(
        optimizer=optax.adam(1e-2),
        dt=0.05,
        batch_size=256,
        max_inner_steps=30,
        min_inner_steps=30,
    )
    res = evolve(pde, flow, params, [0.0, 0.1], method=method, key=jax.random.key(2))
    assert res.method == "euler-kl"
    assert res.infos[0]["steps"] == 2 and res.infos[0]["inner_steps"] == 2 * 2 * 30
    assert abs(sample_mean(flow, res.final_state)["a"][0] - exact_alpha(0.1)) < 0.02


class Flaky(EvolutionMethod):
    """Fails every interval while its step is above `ok_below`."""

    name = "flaky"
    dt: float = 0.1
    ok_below: float = 0.0
    max_retries: int = 2

    def advance(self, flow, pde, params, t0, t1, key):
        if self.dt > self.ok_below:
            bad = jax.tree.map(lambda p: p * jnp.nan, params)
            return bad, {"dt": self.dt}, None  # non-finite: caught by evolve
        return params, {"dt": self.dt}, None


def test_evolve_rolls_back_and_retries_with_halved_steps():
    pde, flow, params = damped()
    seen = []
    res = evolve(
        pde,
        flow,
        params,
        [0.0, 0.1, 0.2],
        method=Flaky(dt=0.1, ok_below=0.03),
        key=jax.random.key(0),
        callback=lambda i, p, info: seen.append((i, info)),
    )
    assert [info["retries"] for info in res.infos] == [2, 2]
    assert res.infos[0]["dt"] == 0.025 and [i for i, _ in seen] == [1, 2]
    with pytest.raises(FloatingPointError, match=r"flaky failed on \[0, 0.1\] after 2"):
        evolve(
            pde,
            flow,
            params,
            [0.0, 0.1],
            method=Flaky(dt=0.1, ok_below=0.01),
            key=jax.random.key(0),
        )
    with pytest.raises(TypeError, match="`method` must be an EvolutionMethod"):
        evolve(
            pde, flow, params, [0.0, 0.1], method=TDVPSettings(), key=jax.random.key(0)
        )


def test_bad_method_objects():
    with pytest.raises(ValueError, match="`qgt` must be one of"):
        TDVP(qgt="full")
    with pytest.raises(ValueError, match="PInv needs the dense matrix"):
        TDVP(qgt="matrix_free", solver=PInv())
    with pytest.raises(ValueError, match="SNR needs qgt='dense'"):
        TDVP(qgt="sample", solver=SNR())
    with pytest.raises(TypeError, match="`solver` must be a callable"):
        TDVP(solver="pinv")
    with pytest.raises(ValueError, match="`dt` must be finite and > 0"):
        TDVP(dt=0.0)
    with pytest.raises(TypeError, match="`optimizer` must be an optax"):
        EulerKL(optimizer="adam")


def test_flow_parameters_have_one_dtype():
    _, _, params = damped()
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype("float64")}
