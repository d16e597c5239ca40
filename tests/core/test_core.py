"""The shared core: one failure rule, compile-once time dependence, traced inputs,
method objects and one result shape across engines."""

import contextlib

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qflow_jax as qf
from qflow_jax.core.integrate import integrate
from qflow_jax.core.methods import METHOD_NAMES, method_from
from qflow_jax.husimi import a as A
from qflow_jax.husimi import adag as Ad
from qflow_jax.husimi import coherent_q, compile_qpde


@contextlib.contextmanager
def count_compilations():
    """Counts XLA backend compilations inside the block."""
    count = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            count.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


# ----------------------------------------------------------------- failures


def test_step_limit_raises_under_jit():
    a = qf.destroy(10)

    def expects(x):
        return qf.mesolve(
            a + a.T.conj(),
            [x * a],
            qf.fock_dm(10, 0),
            jnp.linspace(0, 10, 3),
            method="tsit5",
            max_steps=5,
            exp_ops=[qf.number(10)],
        ).expects

    with pytest.raises(RuntimeError, match=r"mesolve: .*step limit max_steps=5"):
        jax.block_until_ready(jax.jit(expects)(1.0))
    # eagerly: a plain RuntimeError with only the cause
    with pytest.raises(RuntimeError) as err:
        expects(1.0)
    assert type(err.value) is RuntimeError
    assert str(err.value).startswith("mesolve: the solver reached its step limit")


def _nan_window(t):
    return jnp.where((t > 0.2) & (t < 0.4), jnp.nan, 1.0)


def test_nan_in_the_vector_field_raises():
    def H(t):
        return _nan_window(t) * qf.sigmaz()

    tsave = jnp.array([0.0, 1.0, 2.0])
    with pytest.raises(RuntimeError, match="mesolve: a step failed"):
        qf.mesolve(H, [qf.sigmam()], qf.fock_dm(2, 0), tsave)
    with pytest.raises(RuntimeError, match="mesolve: a step failed"):
        jax.block_until_ready(
            jax.jit(
                lambda g: qf.mesolve(H, [g * qf.sigmam()], qf.fock_dm(2, 0), tsave)
            )(1.0).final_state
        )

    # fixed steps carry the nan into the state: reported as non-finite
    def fixed_step_solve(throw):
        return integrate(
            lambda t, y, args: -y * _nan_window(t),
            qf.RK4(0.1).solver(),
            jnp.ones(3),
            tsave,
            method=qf.RK4(0.1),
            engine="test",
            throw=throw,
        )

    assert int(fixed_step_solve(False).status) == 2
    with pytest.raises(RuntimeError, match="test: the state became non-finite"):
        fixed_step_solve(True)


def test_network_step_limit_raises_under_jit():
    net = qf.QubitNetwork(3, "path", k=2.0, H=[qf.sigmax()] * 3)
    rho0 = jnp.eye(8) / 8

    def final(r):
        return qf.network_mesolve(net, r, [0.0, 5.0], max_steps=3).final_state

    with pytest.raises(RuntimeError, match="network_mesolve: .*max_steps=3"):
        jax.block_until_ready(jax.jit(final)(rho0))
    with pytest.raises(RuntimeError, match="network_mesolve: .*max_steps=3"):
        final(rho0)


# ----------------------------------------------------------------- compile once


def _three_calls(fn):
    jax.block_until_ready(fn())  # compiles
    with count_compilations() as count:
        for _ in range(2):
            jax.block_until_ready(fn())
    return len(count)


def test_time_dependent_problems_compile_once():
    f = jnp.cos  # one function object, as in a training loop

    def drive(t):
        return 0.3 * jnp.sin(t) * qf.sigmax()

    tsave = jnp.linspace(0, 1, 3)
    rho0 = qf.fock_dm(2, 0)
    H_ops = [qf.constant(qf.sigmaz()), qf.modulated(f, qf.sigmax())]
    L_ops = [qf.timecallable(lambda t: jnp.exp(-t) * qf.sigmam())]
    cases = {
        "modulated jump": lambda: (
            qf.mesolve(qf.sigmaz(), [[qf.sigmam(), f]], rho0, tsave).final_state
        ),
        "callable H": lambda: qf.mesolve(drive, [qf.sigmam()], rho0, tsave).final_state,
        "modulated H": lambda: (
            qf.mesolve(
                [qf.sigmaz(), [qf.sigmax(), f]], [qf.sigmam()], rho0, tsave
            ).final_state
        ),
        "timeops objects": lambda: qf.mesolve(H_ops, L_ops, rho0, tsave).final_state,
    }
    for name, fn in cases.items():
        assert _three_calls(fn) == 0, name


def test_network_and_grid_solves_compile_once():
    net = qf.QubitNetwork(3, "ring", k=1.0, jump_ops=[[qf.sigmam()]] * 3)
    assert (
        _three_calls(
            lambda: qf.network_mesolve(net, [qf.fock_dm(2, 1)] * 3, [0.0, 0.5]).reduced
        )
        == 0
    )
    pde = compile_qpde(Ad(0) @ A(0), [0.5 * A(0)])
    grid, Q0 = qf.Grid(2, 16, 5.0), coherent_q(1.0)
    tsave = jnp.array([0.0, 0.5])
    assert _three_calls(lambda: qf.solve_grid(pde, Q0, tsave, grid=grid).states) == 0


# ----------------------------------------------------------------- traced inputs


def _mix(s):
    return (1 - s) * qf.fock_dm(3, 0) + s * qf.thermal_dm(3, 0.5)


def test_mesolve_under_vmap_and_grad_of_rho0():
    a = qf.destroy(3)
    tsave = jnp.linspace(0, 1, 3)

    def n_final(s):
        res = qf.mesolve(
            a.T @ a + 0.3 * (a + a.T),
            [0.5 * a],
            _mix(s),
            tsave,
            exp_ops=[qf.number(3)],
            rtol=1e-10,
            atol=1e-12,
        )
        return res.expects[0, -1].real

    s = jnp.array([0.1, 0.5, 0.9])
    batched = jax.vmap(n_final)(s)
    np.testing.assert_allclose(batched, [n_final(x) for x in s], atol=1e-12)
    eps = 1e-5
    fd = (n_final(0.5 + eps) - n_final(0.5 - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.grad(n_final)(0.5), fd, rtol=1e-6)


def test_traced_bad_rho0_raises_inside_jit():
    def final(r):
        return qf.mesolve(qf.sigmaz(), [qf.sigmam()], r, jnp.linspace(0, 1, 3))

    with pytest.raises(RuntimeError, match="`rho0` must have trace 1"):
        jax.block_until_ready(
            jax.jit(lambda r: final(r).final_state)(2 * qf.fock_dm(2, 0))
        )
    with pytest.raises(RuntimeError, match="`rho0` must be Hermitian"):
        jax.block_until_ready(
            jax.jit(lambda r: final(r).final_state)(jnp.array([[1.0, 1.0], [0.0, 0.0]]))
        )


def test_network_mesolve_under_jit_vmap_and_grad():
    psi = jnp.zeros(8, complex).at[0].set(1.0)
    pure, mixed = qf.ket2dm(psi), jnp.eye(8) / 8
    Z0 = qf.tensor(qf.sigmaz(), qf.eye(2), qf.eye(2))
    tsave = jnp.linspace(0, 1, 3)

    def z_final(p):
        # swap gain, field, decay amplitude, ZZ strength and the rho0 mixture
        k, h, g, J, s = p
        net = qf.QubitNetwork(
            3,
            "path",
            k=k,
            H=[h * qf.sigmax()] * 3,
            jump_ops=[[g * qf.sigmam()]] * 3,
            couplings=[(0, 1, "ZZ", J)],
        )
        rho0 = (1 - s) * pure + s * mixed
        res = qf.network_mesolve(net, rho0, tsave, exp_ops=[Z0], rtol=1e-10, atol=1e-12)
        return res.expects[0, -1].real

    p = jnp.array([2.0, 0.7, 0.5, 0.3, 0.3])
    ps = jnp.stack([p, p.at[4].set(0.7)])
    # jit, vmap and grad in one compilation, against the plain solve (compiled once
    # for the four calls below: the network's parameters are traced)
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(z_final)))(ps)
    plain = jax.jit(z_final)
    np.testing.assert_allclose(values, [plain(x) for x in ps], atol=1e-10)
    # along one direction that moves every parameter: central differences of a
    # solve at rtol 1e-10 are good to ~1e-9
    v, eps = jnp.array([0.3, -0.5, 0.4, 0.6, -0.2]), 1e-5
    fd = (plain(p + eps * v) - plain(p - eps * v)) / (2 * eps)
    np.testing.assert_allclose(grads[0] @ v, fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------- methods, results


def test_method_objects_and_names_agree():
    H, L, rho0 = qf.sigmax(), [0.5 * qf.sigmam()], qf.fock_dm(2, 0)
    t = jnp.linspace(0, 1, 3)
    by_name = qf.mesolve(H, L, rho0, t, method="dopri5", rtol=1e-9)
    by_object = qf.mesolve(H, L, rho0, t, method=qf.Dopri5(rtol=1e-9))
    np.testing.assert_array_equal(by_name.states, by_object.states)
    assert by_name.method == by_object.method == "dopri5"
    # the keyword overrides the object's setting
    assert method_from(qf.Tsit5(rtol=1e-3), rtol=1e-9).rtol == 1e-9
    assert (
        qf.mesolve(H, L, rho0, t, method=qf.Lawson("dopri8")).method == "lawson-dopri8"
    )
    assert qf.mesolve(H, L, rho0, t, method=dfx.Kvaerno5()).method == "kvaerno5"
    assert METHOD_NAMES[0] == "auto" and "kencarp4" in METHOD_NAMES


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(method="kencarp4"), ValueError, r"`method` must be one of auto"),
        (dict(method=qf.KenCarp4()), ValueError, r"'kencarp4' is not available"),
        (dict(method=3), TypeError, r"`method` must be a name"),
        (dict(rtol=-1e-6), ValueError, r"`rtol` must be finite and > 0"),
        (dict(atol=float("nan")), ValueError, r"`atol` must be finite and > 0"),
        (dict(max_steps=0), ValueError, r"`max_steps` must be a positive integer"),
        (dict(max_steps=2.5), TypeError, r"`max_steps` must be a positive integer"),
        (dict(method=qf.RK4(0.1), rtol=1e-3), ValueError, r"do not apply"),
    ],
)
def test_bad_method_settings_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        qf.mesolve(qf.sigmaz(), [], qf.fock_dm(2, 0), [0.0, 1.0], **kwargs)


def test_fixed_step_method_and_bad_dt():
    res = qf.mesolve(
        qf.sigmaz(), [qf.sigmam()], qf.fock_dm(2, 0), [0.0, 1.0], method=qf.RK4(0.01)
    )
    np.testing.assert_allclose(res.final_state[0, 0].real, np.exp(-1.0), atol=1e-8)
    assert int(res.stats["num_steps"]) == 100
    with pytest.raises(ValueError, match="`dt` must be a number > 0"):
        qf.RK4(-0.1)


@pytest.mark.parametrize(
    "H",
    [
        [qf.sigmaz(), [qf.sigmam(), lambda t: 1.0]],
        lambda t: qf.sigmam(),
        [qf.sigmaz(), [qf.sigmax(), lambda t: 1j]],
    ],
    ids=["modulated non-Hermitian", "callable non-Hermitian", "complex coefficient"],
)
def test_time_dependent_h_must_be_hermitian(H):
    with pytest.raises(ValueError, match=r"`H` must be Hermitian at t = tsave\[0\]"):
        qf.mesolve(H, [], qf.fock_dm(2, 0), jnp.linspace(0, 1, 3))


def test_hermitian_sum_of_non_hermitian_terms_is_accepted():
    # a rotating-frame drive written as [a, f] + [a^dag, conj f]
    def f(t):
        return 0.2 * jnp.exp(-1j * t)

    def fc(t):
        return jnp.conj(f(t))

    a = qf.destroy(4)
    res = qf.mesolve(
        [qf.number(4), [a, fc], [a.T, f]], [a], qf.fock_dm(4, 0), jnp.linspace(0, 1, 3)
    )
    np.testing.assert_allclose(np.trace(res.final_state).real, 1.0, atol=1e-10)


def test_every_engine_returns_the_core_fields():
    net = qf.QubitNetwork(2, "path", k=1.0, jump_ops=[[qf.sigmam()]] * 2)
    pde = compile_qpde(Ad(0) @ A(0), [0.5 * A(0)])
    results = [
        qf.mesolve(qf.sigmaz(), [qf.sigmam()], qf.fock_dm(2, 0), [0.0, 1.0]),
        qf.network_mesolve(net, [qf.fock_dm(2, 1)] * 2, [0.0, 1.0]),
        qf.solve_reduced(net, [qf.fock_dm(2, 1)] * 2, [0.0, 1.0]),
        qf.solve_grid(pde, coherent_q(1.0), [0.0, 0.5], grid=qf.Grid(2, 16, 5.0)),
    ]
    for res in results:
        assert isinstance(res, qf.SolveResult)
        assert res.tsave.shape == (2,) and res.method.endswith("tsit5")
        # the save at tsave[-1] may come from the dense output: equal to roundoff
        np.testing.assert_allclose(res.states[-1], res.final_state, atol=1e-12)
        assert {
            "num_steps",
            "num_accepted_steps",
            "num_rejected_steps",
            "num_rhs",
        } <= set(res.stats)
        # Tsit5 is FSAL: 6 evaluations per step, + the first, + 2 choosing dt0
        assert int(res.stats["num_rhs"]) == 6 * int(res.stats["num_steps"]) + 3


def test_set_precision():
    qf.set_precision("double")
    assert jnp.zeros(1).dtype == jnp.float64
    with pytest.raises(ValueError, match="`precision` must be 'single' or 'double'"):
        qf.set_precision("half")
