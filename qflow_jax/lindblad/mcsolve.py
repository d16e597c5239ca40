"""`mcsolve`: the quantum-trajectory (jump Monte Carlo) unravelling of the Lindblad
equation: diffrax's solver steps and step-size controller, jumps located by a root
find on each step's dense interpolation."""

from __future__ import annotations

import functools
import operator
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from qflow_jax.core.checks import (
    check_finite,
    check_positive_number,
    check_tsave,
    dag,
    is_concrete,
    state_tol,
    to_array,
)
from qflow_jax.core.integrate import (
    NON_FINITE,
    OK,
    STEP_FAILED,
    STEP_LIMIT,
    error_if_failed,
    raise_if_failed,
    rhs_per_step,
)
from qflow_jax.core.methods import AbstractMethod, method_from
from qflow_jax.core.result import SolveResult
from qflow_jax.core.timeops import AbsSquared, JumpDecay
from qflow_jax.lindblad._inputs import (
    check_hermitian_h,
    exp_operators,
    from_scipy,
    is_sequential,
    is_sparse,
    jump_list,
    sparse_dag,
    split_terms,
    to_scipy,
)

__all__ = [
    "DEFAULT_MAX_JUMPS",
    "MCSOLVE_METHODS",
    "MCSolveResult",
    "StderrNotReachedWarning",
    "mcsolve",
]

# the methods whose steps a ket state can take (Lawson needs mesolve's generator)
MCSOLVE_METHODS = (
    "tsit5",
    "dopri5",
    "dopri8",
    "kvaerno3",
    "kvaerno5",
    "euler",
    "heun",
    "rk4",
)
DEFAULT_MAX_JUMPS = 1000
DEFAULT_BATCH_SIZE = 256
_REMEDY = (
    "use an implicit method (e.g. method='kvaerno5') for stiff problems; the step "
    "limit holds between two jumps"
)


class StderrNotReachedWarning(RuntimeWarning):
    """`mcsolve(..., target_stderr=...)` ran `max_ntraj` trajectories without
    reaching the target; the result carries the standard errors it reached."""


class MCSolveResult(SolveResult):
    """What `mcsolve` returns (`SolveResult`): means over trajectories, with their
    standard errors, and the per-trajectory record of the jumps.

    Attributes:
        tsave: (nt,) save times.
        states: (ntraj, nt, n, 1) normalized kets of every trajectory at tsave, or
            None (the default, `save_states=False`).
        expects: (len(exp_ops), nt) complex means over trajectories of
            <psi|A|psi> (psi normalized), or None.
        final_state: (ntraj, n, 1) normalized ket of every trajectory at tsave[-1].
        stats: per trajectory (ntraj,) counts: num_steps, num_accepted_steps,
            num_rejected_steps, num_rhs (explicit methods), and num_segments (the
            stretches between jumps: jumps + 1).
        method: name of the method that ran.
        expects_stderr: (len(exp_ops), nt) standard errors of `expects`:
            sqrt((var(Re) + var(Im)) / ntraj), sample variances (ddof=1); nan when
            ntraj == 1.
        jump_times: (ntraj, max_jumps) times of the jumps of every trajectory in
            order, padded with inf.
        jump_channels: (ntraj, max_jumps) index in `jump_ops` of each jump, padded
            with -1.
        num_jumps: (ntraj,) number of jumps of every trajectory.
        ntraj: number of trajectories averaged.
        e_fn_values: the mean over trajectories of `e_fn(t, psi)` at every save time
            (its output with a leading nt axis; a pytree as `e_fn` returns), or
            None.
        e_fn_stderr: standard errors of `e_fn_values` (real, same structure).
    """

    expects_stderr: jax.Array | None
    jump_times: jax.Array
    jump_channels: jax.Array
    num_jumps: jax.Array
    ntraj: int = eqx.field(static=True)
    e_fn_values: Any = None
    e_fn_stderr: Any = None

    def dm(self) -> jax.Array:
        """(nt, n, n) density matrices at tsave: the mean over trajectories of
        |psi><psi| (needs `save_states=True`). Its statistical error per entry is
        about 1/sqrt(ntraj)."""
        if self.states is None:
            raise ValueError(
                "`dm()` needs the states of the trajectories: run mcsolve with "
                "save_states=True (or use `final_dm()` for tsave[-1])"
            )
        return _mean_projector(self.states)

    def final_dm(self) -> jax.Array:
        """(n, n) density matrix at tsave[-1], the mean of |psi><psi| over
        trajectories."""
        return _mean_projector(self.final_state)


def _mean_projector(kets: jax.Array) -> jax.Array:
    """Mean over the leading axis of |psi><psi| for (ntraj, ..., n, 1) kets."""
    return jnp.mean(kets @ dag(kets), axis=0)


# ----------------------------------------------------------------- the generator


class _Channel(eqx.Module):
    """One jump operator L(t): c(t) L for a matrix L (dense or BCOO; c None for 1),
    or a callable t -> (n, n)."""

    mat: Any
    coeff: Callable[[jax.Array], jax.Array] | None
    fn: Callable[[jax.Array], jax.Array] | None

    def apply(self, t: jax.Array, psi: jax.Array) -> jax.Array:
        """L(t) psi for a ket psi (n,)."""
        if self.fn is not None:
            return self.fn(t) @ psi
        out = self.mat @ psi
        return out if self.coeff is None else self.coeff(t) * out


class _Heff(eqx.Module):
    r"""d psi/dt = -i Heff(t) psi on the real view (2, n) of psi.

    Heff(t) = H(t) - i/2 sum_k L_k(t)^dag L_k(t) is held as its static part (one
    dense or BCOO matrix, or None), terms c(t) A (A dense or BCOO) and callables
    t -> (n, n)."""

    static: Any
    terms: tuple[tuple[Callable[[jax.Array], jax.Array], Any], ...]
    fns: tuple[Callable[[jax.Array], jax.Array], ...]

    def __call__(self, t: jax.Array, y: jax.Array, args: object) -> jax.Array:
        psi = y[0] + 1j * y[1]
        out = jnp.zeros_like(psi) if self.static is None else self.static @ psi
        for coeff, op in self.terms:
            out = out + coeff(t) * (op @ psi)
        for fn in self.fns:
            out = out + fn(t) @ psi
        out = -1j * out
        return jnp.stack([out.real, out.imag])


class _Settings(eqx.Module):
    solver: dfx.AbstractSolver
    method: AbstractMethod
    root_finder: optx.AbstractRootFinder
    save_states: bool = eqx.field(static=True)
    e_fn: Callable[..., Any] | None = eqx.field(static=True)
    max_jumps: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    sequential: bool = eqx.field(static=True)


# ----------------------------------------------------------------- trajectories


def _draws(key: jax.Array, j: jax.Array, dtype: Any) -> jax.Array:
    """The two uniform numbers in (0, 1) of segment j of a trajectory with key
    `key`: r (the jump ending segment j happens when ||psi||^2 = r) and u (it picks
    the channel)."""
    tiny = jnp.finfo(dtype).tiny
    return jax.random.uniform(
        jax.random.fold_in(key, j), (2,), dtype=dtype, minval=tiny, maxval=1.0
    )


def _jump(
    channels: tuple[_Channel, ...], t: jax.Array, psi: jax.Array, u: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(k, L_k psi / ||L_k psi||) with k drawn by u with probability
    ||L_k(t) psi||^2 / sum_j ||L_j(t) psi||^2."""
    out = jnp.stack([ch.apply(t, psi) for ch in channels])
    p = jnp.sum(jnp.abs(out) ** 2, axis=-1)
    cum = jnp.cumsum(p)
    k = jnp.minimum(jnp.searchsorted(cum, u * cum[-1], side="right"), len(p) - 1)
    pk = p[k]
    safe = jnp.where(pk > 0, pk, 1.0)
    phi = jnp.where(pk > 0, out[k] / jnp.sqrt(safe), psi / jnp.linalg.norm(psi))
    return k.astype(jnp.int32), phi


def _saver(
    settings: _Settings, exp_ops: Any
) -> Callable[[jax.Array, jax.Array], dict[str, Any]]:
    def save(t: jax.Array, y: jax.Array) -> dict[str, Any]:
        psi = y[0] + 1j * y[1]
        psi = psi / jnp.linalg.norm(psi)
        out: dict[str, Any] = {}
        if isinstance(exp_ops, tuple):
            out["expects"] = jnp.stack([jnp.vdot(psi, A @ psi) for A in exp_ops])
        elif exp_ops is not None:
            out["expects"] = jnp.sum(jnp.conj(psi) * (exp_ops @ psi), axis=-1)
        if settings.e_fn is not None:
            out["e_fn"] = settings.e_fn(t, psi[:, None])
        if settings.save_states:
            out["states"] = psi
        return out

    return save


def _trajectory(
    settings: _Settings,
    heff: _Heff,
    channels: tuple[_Channel, ...],
    psi0: jax.Array,
    tsave: jax.Array,
    exp_ops: Any,
    key: jax.Array,
) -> dict[str, Any]:
    """One trajectory, step by step: a `lax.while_loop` whose body makes one step
    of the diffrax solver (`solver.step`, the step size adapted by the method's
    diffrax controller). An accepted step whose end has ||psi||^2 < r holds a
    jump: its time t* is the root of ||psi(t)||^2 - r on the step's dense
    interpolation (Newton, kept in the step), the saves in (t, t*] are read from
    the interpolation, the jump is applied at t* and a new r drawn; the next step
    starts at t* with the step size the controller proposed.

    Every trajectory of a vmapped batch takes its own steps in the same loop (the
    loop runs as many iterations as the batch's longest trajectory has steps), so
    the batch's matrix-vector products are batched. `max_steps` counts the steps
    between two jumps."""
    real = tsave.dtype
    t0, T = tsave[0], tsave[-1]
    nt = tsave.shape[0]
    term = dfx.ODETerm(heff)
    solver = settings.solver
    method = settings.method
    controller = method.controller(T - t0)
    fixed = isinstance(controller, dfx.ConstantStepSize)
    order = solver.error_order(term)
    save = _saver(settings, exp_ops)
    y0 = jnp.stack([psi0.real, psi0.imag])
    first = save(t0, y0)
    buf = jax.tree.map(lambda x: jnp.broadcast_to(x, (nt, *x.shape)), first)
    t1, cstate = controller.init(term, t0, T, y0, method.dt0, None, solver.func, order)
    per_step = rhs_per_step(solver)
    init = dict(
        t=t0,
        dt=(t1 - t0).astype(real),
        y=y0,
        sstate=solver.init(term, t0, t1, y0, None),
        cstate=cstate,
        made_jump=jnp.asarray(False),
        si=jnp.asarray(1, jnp.int32),
        buf=buf,
        j=jnp.asarray(0, jnp.int32),
        r=_draws(key, 0, real)[0],
        times=jnp.full(settings.max_jumps, jnp.inf, real),
        chans=jnp.full(settings.max_jumps, -1, jnp.int32),
        seg_steps=jnp.asarray(0, jnp.int32),
        stats={
            k: jnp.asarray(0, jnp.int32)
            for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")
        },
        status=jnp.asarray(OK, jnp.int32),
        overflow=jnp.asarray(False),
    )

    def cond(c: dict[str, Any]) -> jax.Array:
        return (c["t"] < T) & (c["status"] == OK) & ~c["overflow"]

    def body(c: dict[str, Any]) -> dict[str, Any]:
        t = c["t"]
        t1 = jnp.minimum(t + c["dt"], T)
        y1, y_err, dense, sstate, sres = solver.step(
            term, t, t1, c["y"], None, c["sstate"], c["made_jump"]
        )
        if fixed:
            keep, cstate, cres = jnp.asarray(True), c["cstate"], dfx.RESULTS.successful
            dt = c["dt"]
        else:
            y_err = jnp.where(jnp.isnan(y_err), jnp.inf, y_err)
            keep, nt0, nt1, _, cstate, cres = controller.adapt_step_size(
                t, t1, c["y"], y1, None, y_err, order, c["cstate"]
            )
            dt = (nt1 - nt0).astype(real)
        finite = jnp.all(jnp.isfinite(y1))
        keep = keep & finite
        interp = solver.interpolation_cls(t0=t, t1=t1, **dense)

        # ---- a jump in this step: t* where ||psi||^2 = r, else the step's end
        y_new = jnp.where(keep, y1, c["y"])
        j = c["j"]
        crossed = keep & (jnp.sum(y1 * y1) < c["r"]) if channels else False
        t_end, k = t1, jnp.asarray(-1, jnp.int32)
        if channels:

            def jump(y_new: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
                t_star = _crossing(interp, t, t1, c["r"], crossed, settings.root_finder)
                y_star = interp.evaluate(t_star)
                psi = y_star[0] + 1j * y_star[1]
                k, phi = _jump(channels, t_star, psi, _draws(key, j, real)[1])
                return t_star, k, jnp.stack([phi.real, phi.imag])

            # (a select of both branches when vmapped: every trajectory of a
            # batch then pays for the root find and the jump)
            t_end, k, y_new = jax.lax.cond(
                crossed, jump, lambda y_new: (t1, k, y_new), y_new
            )

        # ---- saves in (t, t_end]
        def save_more(s: tuple[jax.Array, Any]) -> jax.Array:
            i, _ = s
            return keep & (i < nt) & (tsave[jnp.minimum(i, nt - 1)] <= t_end)

        def save_one(s: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
            i, b = s
            ts = tsave[i]
            out = save(ts, interp.evaluate(ts))
            return i + 1, jax.tree.map(lambda bb, v: bb.at[i].set(v), b, out)

        si, buf = jax.lax.while_loop(save_more, save_one, (c["si"], c["buf"]))

        overflow = crossed & (j >= settings.max_jumps)
        record = crossed & ~overflow
        slot = jnp.minimum(j, settings.max_jumps - 1)
        times = c["times"].at[slot].set(jnp.where(record, t_end, c["times"][slot]))
        chans = c["chans"].at[slot].set(jnp.where(record, k, c["chans"][slot]))
        j = j + record.astype(jnp.int32)
        t_new = jnp.where(keep, t_end, t)
        seg_steps = jnp.where(crossed, 0, c["seg_steps"] + 1)
        status = jnp.where(
            ~finite,
            NON_FINITE,
            jnp.where(
                (cres != dfx.RESULTS.successful)
                | (keep & (sres != dfx.RESULTS.successful)),
                STEP_FAILED,
                jnp.where(
                    (seg_steps >= method.max_steps) & (t_new < T), STEP_LIMIT, OK
                ),
            ),
        )
        keep_tree = lambda a, b: jnp.where(keep, a, b)  # noqa: E731
        stats = c["stats"]
        return dict(
            t=t_new,
            dt=dt,
            y=y_new,
            sstate=jax.tree.map(keep_tree, sstate, c["sstate"]),
            cstate=cstate,
            # a rejected step after a jump retries with the state of the jump
            made_jump=jnp.where(keep, crossed, c["made_jump"]),
            si=si,
            buf=buf,
            j=j,
            r=_draws(key, j, real)[0],
            times=times,
            chans=chans,
            seg_steps=seg_steps,
            stats=dict(
                num_steps=stats["num_steps"] + 1,
                num_accepted_steps=stats["num_accepted_steps"] + keep,
                num_rejected_steps=stats["num_rejected_steps"] + ~keep,
            ),
            status=status.astype(jnp.int32),
            overflow=overflow,
        )

    c = jax.lax.while_loop(cond, body, init)
    final = c["y"][0] + 1j * c["y"][1]
    stats = dict(c["stats"], num_segments=c["j"] + 1)
    if per_step is not None:
        # + the first stage and the controller's two evaluations choosing dt0,
        # and the first stage again after every jump (FSAL)
        stats["num_rhs"] = (
            c["stats"]["num_steps"] * per_step + 1 + 2 * (method.dt0 is None) + c["j"]
        )
    return dict(
        saved=c["buf"],
        final=final / jnp.linalg.norm(final),
        jump_times=c["times"],
        jump_channels=c["chans"],
        num_jumps=c["j"],
        stats=stats,
        status=c["status"],
        overflow=c["overflow"],
    )


def _crossing(
    interp: Any,
    t0: jax.Array,
    t1: jax.Array,
    r: jax.Array,
    crossed: jax.Array,
    root_finder: optx.AbstractRootFinder,
) -> jax.Array:
    """The time in (t0, t1] where ||psi(t)||^2 = r on the step's interpolation:
    Newton, bounded to the step, from the secant guess of the norms at its ends.
    Where `crossed` is False (a vmapped batch computes both branches of the jump's
    `lax.cond`) the function is zero and the root find stops at once: t1."""
    y0, y1 = interp.evaluate(t0), interp.evaluate(t1)
    g0, g1 = jnp.sum(y0 * y0) - r, jnp.sum(y1 * y1) - r
    guess = t0 + (t1 - t0) * g0 / jnp.where(crossed, g0 - g1, 1.0)

    def fn(tau: jax.Array, args: object) -> jax.Array:
        y = interp.evaluate(tau)
        return jnp.where(crossed, jnp.sum(y * y) - r, 0.0)

    sol = optx.root_find(
        fn,
        root_finder,
        jnp.where(crossed, guess, t1),
        options=dict(lower=t0, upper=t1),
        throw=False,
    )
    return jnp.where(crossed, jnp.clip(sol.value, t0, t1), t1)


@eqx.filter_jit
def _run_batch(
    settings: _Settings,
    heff: _Heff,
    channels: tuple[_Channel, ...],
    psi0: jax.Array,
    tsave: jax.Array,
    exp_ops: Any,
    key: jax.Array,
    first: jax.Array,
) -> dict[str, Any]:
    """Trajectories first, ..., first + batch_size - 1 (trajectory i uses the key
    fold_in(key, i)), vmapped or mapped on the device that holds `first`."""

    def one(i: jax.Array) -> dict[str, Any]:
        return _trajectory(
            settings, heff, channels, psi0, tsave, exp_ops, jax.random.fold_in(key, i)
        )

    idx = first + jnp.arange(settings.batch_size, dtype=jnp.int32)
    return jax.lax.map(one, idx) if settings.sequential else jax.vmap(one)(idx)


def _run_on_devices(
    settings: _Settings, args: tuple[Any, ...], first: int, devices: list[Any]
) -> list[dict[str, Any]]:
    """One batch, its trajectories split into equal parts, part d computed on
    devices[d]: the calls are dispatched asynchronously, so the devices run at
    once. (Not `shard_map`: the jump root find's closure conversion rejects the
    values of its manual axes.)"""
    starts = range(
        first, first + settings.batch_size * len(devices), settings.batch_size
    )
    parts = [
        _run_batch(settings, *args, jax.device_put(jnp.int32(start), device))
        for start, device in zip(starts, devices, strict=True)
    ]
    return [jax.device_put(part, devices[0]) for part in parts]


# ----------------------------------------------------------------- public function


def mcsolve(
    H: Any,
    jump_ops: Any,
    psi0: Any,
    tsave: Any,
    *,
    key: jax.Array,
    ntraj: int | None = None,
    target_stderr: float | None = None,
    max_ntraj: int = 10_000,
    exp_ops: Sequence[Any] | None = None,
    e_fn: Callable[[jax.Array, jax.Array], Any] | None = None,
    save_states: bool = False,
    method: str | AbstractMethod | dfx.AbstractSolver = "tsit5",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    max_jumps: int = DEFAULT_MAX_JUMPS,
    batch_size: int | None = None,
    batch_mode: str = "auto",
    progress: bool = False,
) -> MCSolveResult:
    r"""Solves the Lindblad master equation

        d rho/dt = -i[H(t), rho] + sum_k ( L_k rho L_k^dag - 1/2 {L_k^dag L_k, rho} )

    by its unravelling into quantum trajectories (jump Monte Carlo): rho(t) is the
    mean of |psi(t)><psi(t)| over trajectories of kets. Between jumps a trajectory
    follows

        d psi/dt = -i H_eff(t) psi,   H_eff = H - i/2 sum_k L_k^dag L_k,

    whose norm decays, d ||psi||^2/dt = -sum_k ||L_k psi||^2. A uniform r in (0, 1)
    is drawn; the jump happens when ||psi(t)||^2 = r, a time located by a Newton
    root find (optimistix) on the dense interpolation of the step that crossed r,
    not at a step boundary. A trajectory is one loop of steps of the diffrax solver
    (`solver.step`, the step size from the method's diffrax controller), jumps
    included, so a vmapped batch steps all its trajectories at once. Channel k is
    drawn with probability ||L_k(t) psi||^2 / sum_j ||L_j(t) psi||^2
    (time-dependent rates included), psi <- L_k psi / ||L_k psi||, a new r is
    drawn and the solve goes on. Saved
    states and expectation values use psi / ||psi||.

    Args:
        H: (n, n) Hamiltonian: an array, QuTiP Qobj or
            `jax.experimental.sparse.BCOO` matrix; a callable t -> (n, n); a
            QuTiP-style list of terms, each a matrix or a pair [A, f] meaning
            f(t) A; or `qf.constant`, `qf.modulated`, `qf.timecallable`
            operators. H(t) must be Hermitian (checked as given and at the first,
            middle and last save times). No batch axes (run one mcsolve per
            Hamiltonian).
        jump_ops: list of jump operators, each one (n, n) matrix (dense or BCOO),
            a pair [L, f] meaning f(t) L (rate |f(t)|^2), a callable t -> (n, n)
            or a qf time operator; `jump_channels` index this list. May be empty
            (then every trajectory is the same pure evolution).
        psi0: (n, 1) or (n,) initial ket, normalized (to 1e-6 in double, 1e-4 in
            single precision); its dtype sets the precision.
        tsave: (nt,) strictly increasing save times; integration runs from
            tsave[0] to tsave[-1].
        key: a JAX random key (`jax.random.key(seed)`), required: trajectory i
            draws from `jax.random.fold_in(key, i)`, so results do not depend on
            batch_size or the number of devices, and the same key gives the same
            result.
        ntraj: the number of trajectories; or
        target_stderr: run batches of `batch_size` trajectories until the largest
            standard error of `expects` and of `e_fn_values` (over every operator
            and save time) is at most this. At `max_ntraj` trajectories without
            reaching it, a `StderrNotReachedWarning` is issued and the result of
            those trajectories returned (its `expects_stderr` says how far it
            got). Exactly one of `ntraj` and `target_stderr` must be given;
            `target_stderr` needs `exp_ops` or `e_fn`, and concrete inputs (it
            decides on the host, so not inside `jax.jit`).
        max_ntraj: the cap of trajectories with `target_stderr` (default 10000).
        exp_ops: operators (n, n), dense or BCOO, whose expectation values are
            averaged over trajectories.
        e_fn: a function f(t, psi) of the time and the normalized ket psi (n, 1)
            returning an array (or a pytree of arrays), averaged over trajectories
            like `exp_ops` (`e_fn_values`, `e_fn_stderr`): e.g. higher moments or
            fidelities.
        save_states: keep the kets of every trajectory at every save time
            (ntraj x nt x n values; `MCSolveResult.dm()` averages them).
        method: "tsit5" (default), "dopri5", "dopri8", "kvaerno3", "kvaerno5", a
            method object (`qf.Tsit5(rtol=...)`, `qf.RK4(dt)`, ...) or a diffrax
            solver. Integrating-factor (Lawson) methods are for mesolve only.
        rtol, atol, max_steps: override the method's tolerances (RMS norm over
            the real components of the unnormalized psi; defaults 1e-6, 1e-8) and
            its step limit (default 100000), which holds for each segment between
            two jumps.
        max_jumps: the most jumps one trajectory may make (default 1000); more
            raises. It sizes `jump_times` and `jump_channels`.
        batch_size: trajectories per batch, split into equal parts over the
            local devices when a multiple of their number (each part one compiled
            call on its device, all dispatched at once; with traced inputs, inside
            `jax.jit`, one program on the default device); default min(ntraj, 256)
            rounded up to a multiple of the device count. The last batch is padded
            (the padding trajectories are computed and dropped). Its value is part
            of the compiled program.
        batch_mode: how the trajectories of a batch run: "vmap" (vectorized: the
            batch's loop runs as many steps as its longest trajectory takes, each
            step one batched matrix product), "map" (one after the other,
            `lax.map`), or "auto" (default): "map" on CPU, where it was faster (5x
            at n = 462 with 1000 trajectories: XLA's batched sparse products cost
            more per ket than single ones there), "vmap" on accelerators.
        progress: a tqdm progress bar over trajectories.

    Works under `jax.jit` with `ntraj` given. A solve that reaches `max_steps`,
    fails a step or goes non-finite raises, and so does a trajectory with more
    than `max_jumps` jumps (RuntimeError; inside jit an error raised by the
    program); bad input raises ValueError or TypeError naming the argument.

    Returns:
        An `MCSolveResult`.

    Examples:
        A two-level atom decaying from |e> at rate 1: each trajectory jumps once,
        at an exponentially distributed time.

        >>> import jax, jax.numpy as jnp, qflow_jax as qf
        >>> from qflow_jax.lindblad.mcsolve import mcsolve
        >>> tsave = jnp.linspace(0.0, 2.0, 5)
        >>> res = mcsolve(qf.sigmaz(), [qf.sigmam()], qf.basis(2, 0), tsave,
        ...               key=jax.random.key(0), ntraj=500,
        ...               exp_ops=[qf.sigmap() @ qf.sigmam()])
        >>> res.expects.shape, res.jump_times.shape, int(res.num_jumps.max())
        ((1, 5), (500, 1000), 1)
        >>> exact = jnp.exp(-tsave)  # the excited population
        >>> err = jnp.abs(res.expects[0].real - exact)
        >>> bool(jnp.all(err <= 3 * res.expects_stderr[0]))
        True
    """
    # ---- what to run
    _check_key(key)
    if (ntraj is None) == (target_stderr is None):
        raise ValueError(
            "give exactly one of `ntraj` (a number of trajectories) and "
            f"`target_stderr` (run until the standard errors reach it); got "
            f"ntraj={ntraj!r}, target_stderr={target_stderr!r}"
        )
    if ntraj is not None:
        check_positive_number(ntraj, "ntraj", integer=True)
        ntraj = int(ntraj)
    else:
        check_positive_number(target_stderr, "target_stderr")
        check_positive_number(max_ntraj, "max_ntraj", integer=True)
        if max_ntraj < 2:
            raise ValueError(
                f"`max_ntraj` must be at least 2 to estimate errors, got {max_ntraj}"
            )
        if exp_ops is None and e_fn is None:
            raise ValueError(
                "`target_stderr` needs `exp_ops` or `e_fn`: the standard errors of "
                "their means decide when to stop"
            )
    check_positive_number(max_jumps, "max_jumps", integer=True)
    if batch_size is not None:
        check_positive_number(batch_size, "batch_size", integer=True)
    sequential = is_sequential(batch_mode)

    # ---- state, times, method
    psi0 = to_array(psi0, "psi0")
    dtype = psi0.dtype
    if not (psi0.ndim == 1 or (psi0.ndim == 2 and psi0.shape[1] == 1)):
        raise ValueError(
            "`psi0` must be a ket of shape (n, 1) or (n,) (mcsolve takes no batch "
            f"axes), got shape {tuple(psi0.shape)}"
        )
    psi0 = psi0.reshape(-1)
    n = psi0.shape[0]
    real_dtype = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    tsave = check_tsave(tsave, real_dtype)
    method = method_from(
        method, rtol=rtol, atol=atol, max_steps=max_steps, allowed=MCSOLVE_METHODS
    )
    psi0 = _check_normalized(psi0, state_tol(dtype))

    # ---- operators
    h_terms, h_fns = split_terms(H, "H", dtype, tsave[0], n, "psi0", sparse=True)
    jumps = []
    for k, L in enumerate(jump_list(jump_ops)):
        name = f"jump_ops[{k}]"
        terms, fns = split_terms(L, name, dtype, tsave[0], n, "psi0", sparse=True)
        if len(terms) + len(fns) != 1:
            raise ValueError(
                f"`{name}` must be one operator (a matrix, a pair [L, f], a callable "
                f"of t or a qf time operator), got a sum of {len(terms) + len(fns)} "
                "terms; write a sum as one callable t -> L(t)"
            )
        jumps.append(terms[0] if terms else (None, fns[0]))
    for label, (_, mat) in [("H", t) for t in h_terms] + [
        (f"jump_ops[{k}]", t) for k, t in enumerate(jumps)
    ]:
        if hasattr(mat, "ndim") and mat.ndim != 2:
            raise ValueError(
                f"`{label}` must be one (n, n) operator (mcsolve takes no batch "
                f"axes), got shape {tuple(mat.shape)}"
            )
    psi0 = check_hermitian_h(h_terms, h_fns, tsave, psi0)
    exp_arr = None
    if exp_ops is not None:
        ops = exp_operators(exp_ops, n, dtype, sparse=True)
        if any(is_sparse(o) for o in ops):
            exp_arr = tuple(ops)
        else:
            exp_arr = jnp.stack(ops)
    if e_fn is not None:
        _check_e_fn(e_fn, tsave[0], psi0)

    concrete = is_concrete((h_terms, jumps, psi0, exp_arr, tsave, key))
    heff, channels = _generator(h_terms, h_fns, jumps, concrete)
    if concrete:
        psi0 = np.asarray(psi0)
        if isinstance(exp_arr, jax.Array):
            exp_arr = np.asarray(exp_arr)
    xp = np if concrete else jnp
    psi0 = psi0 / xp.linalg.norm(psi0)
    if not concrete and target_stderr is not None:
        raise ValueError(
            "`target_stderr` decides on the host how many trajectories to run, so "
            "its inputs must be concrete (not traced inside jax.jit); pass `ntraj`"
        )

    # ---- batches, each split over the local devices (traced inputs: one program
    # on the default device)
    devices = jax.local_devices() if concrete else jax.local_devices()[:1]
    total = ntraj if ntraj is not None else max_ntraj
    if batch_size is None:
        batch_size = min(total, DEFAULT_BATCH_SIZE)
        batch_size = -(-batch_size // len(devices)) * len(devices)
    if batch_size % len(devices):
        devices = devices[:1]
    settings = _Settings(
        solver=method.solver(),
        method=method,
        root_finder=_root_finder(method, real_dtype),
        save_states=bool(save_states),
        e_fn=e_fn,
        max_jumps=int(max_jumps),
        batch_size=int(batch_size) // len(devices),
        sequential=sequential,
    )
    outs: list[dict[str, Any]] = []
    done = 0
    bar = _progress_bar(total) if progress else None
    reached = None
    try:
        while done < total:
            args = (heff, channels, psi0, tsave, exp_arr, key)
            if len(devices) > 1:
                parts = _run_on_devices(settings, args, done, devices)
            else:
                parts = [_run_batch(settings, *args, jnp.asarray(done, jnp.int32))]
            for d, out in enumerate(parts):
                if concrete:
                    first = done + d * settings.batch_size
                    _raise_if_failed(out, method, settings.max_jumps, first)
                outs.append(out)
            done += batch_size
            if bar is not None:
                bar.update(min(done, total) - bar.n)
            if target_stderr is not None:
                count = min(done, total)
                pooled = _pool(outs, count)
                reached = _largest_stderr(pooled["saved"])
                if reached <= target_stderr:
                    break
    finally:
        if bar is not None:
            bar.close()
    count = min(done, total)
    pooled = _pool(outs, count)
    if not concrete:
        pooled = _attach_failures(pooled, method, settings.max_jumps)
    if target_stderr is not None and reached > target_stderr:
        warnings.warn(
            f"mcsolve: max_ntraj={max_ntraj} trajectories reached a largest standard "
            f"error of {reached:.3g}, above target_stderr={target_stderr:g}; the "
            "result of those trajectories is returned (raise `max_ntraj`, or loosen "
            "`target_stderr`)",
            StderrNotReachedWarning,
            stacklevel=2,
        )
    return _result(pooled, tsave, method, count)


# ----------------------------------------------------------------- helpers


def _check_key(key: Any) -> None:
    if key is None:
        raise TypeError(
            "`key` is required: a JAX random key, e.g. key=jax.random.key(0)"
        )
    typed = isinstance(key, jax.Array) and jnp.issubdtype(
        key.dtype, jax.dtypes.prng_key
    )
    raw = (
        not typed
        and isinstance(key, jax.Array | np.ndarray)
        and key.dtype == np.uint32
        and tuple(key.shape) == (2,)
    )
    if not ((typed and key.shape == ()) or raw):
        what = getattr(key, "shape", type(key).__name__)
        raise TypeError(
            "`key` must be one JAX random key, e.g. jax.random.key(0) (or a legacy "
            f"uint32 PRNGKey of shape (2,)), got {what!r}"
        )


def _check_normalized(psi0: jax.Array, tol: float) -> jax.Array:
    psi0 = check_finite(psi0, "psi0")
    if is_concrete(psi0):
        norm2 = float(np.vdot(np.asarray(psi0), np.asarray(psi0)).real)
        if abs(norm2 - 1.0) > tol:
            raise ValueError(
                f"`psi0` must be normalized, got <psi0|psi0> = {norm2:.6g}"
            )
        return psi0
    norm2 = jnp.vdot(psi0, psi0).real
    return eqx.error_if(psi0, jnp.abs(norm2 - 1) > tol, "`psi0` must be normalized")


def _check_e_fn(e_fn: Any, t0: jax.Array, psi0: jax.Array) -> None:
    if not callable(e_fn):
        raise TypeError(f"`e_fn` must be a function f(t, psi), got {type(e_fn)}")
    try:
        shapes = jax.eval_shape(e_fn, t0, psi0[:, None])
    except Exception as err:
        raise ValueError(
            "`e_fn` must be a function f(t, psi) of the time and the normalized "
            f"ket psi (n, 1) returning arrays; calling it failed: {err}"
        ) from err
    for leaf in jax.tree.leaves(shapes):
        if not jnp.issubdtype(leaf.dtype, jnp.number):
            raise ValueError(
                f"`e_fn` must return numeric arrays, got dtype {leaf.dtype}"
            )


def _generator(
    h_terms: list[Any],
    h_fns: list[Any],
    jumps: list[tuple[Any, Any]],
    concrete: bool,
) -> tuple[_Heff, tuple[_Channel, ...]]:
    """H_eff = H - i/2 sum L^dag L as its static part (dense when any static part
    is dense, BCOO when all are sparse), modulated terms and callables; and the
    jump channels. Concrete operators are combined on the host (NumPy, SciPy for
    BCOO: no eager JAX operations), traced ones with jax.numpy and BCOO algebra."""
    xp = np if concrete else jnp

    def host(a: Any) -> Any:
        return a if is_sparse(a) or not concrete else np.asarray(a)

    def gram(L: Any) -> Any:
        if not is_sparse(L):
            return xp.conj(xp.swapaxes(L, -1, -2)) @ L
        if concrete:
            S = to_scipy(L)
            return from_scipy(S.conj().T @ S)
        return sparse_dag(L) @ L

    static = [host(a) for c, a in h_terms if c is None]
    terms = [(c, host(a)) for c, a in h_terms if c is not None]
    fns = list(h_fns)
    channels = []
    for coeff, op in jumps:
        if coeff is None and callable(op) and not hasattr(op, "shape"):
            channels.append(_Channel(None, None, op))
            fns.append(JumpDecay(op))
            continue
        op = host(op)
        channels.append(_Channel(op, coeff, None))
        if coeff is None:
            static.append((-0.5j, gram(op)))
        else:
            terms.append((AbsSquared(coeff), _scaled(-0.5j, gram(op))))
    static = [a if isinstance(a, tuple) else (1.0, a) for a in static]
    heff = None
    if static and all(is_sparse(a) for _, a in static):
        if concrete:
            heff = from_scipy(sum(c * to_scipy(a) for c, a in static))
        else:
            heff = functools.reduce(operator.add, [c * a for c, a in static])
    elif static:
        dense = [c * (a.todense() if is_sparse(a) else a) for c, a in static]
        heff = functools.reduce(xp.add, dense)
    return _Heff(heff, tuple(terms), tuple(fns)), tuple(channels)


def _scaled(c: complex, a: Any) -> Any:
    """c a for a dense or (concrete or traced) BCOO matrix."""
    if is_sparse(a) and is_concrete(a):
        return from_scipy(c * to_scipy(a))
    return c * a


def _root_finder(method: AbstractMethod, dtype: Any) -> optx.AbstractRootFinder:
    """Newton on the event function ||psi(t)||^2 - r of the dense interpolation:
    converged when both the time step and the residual are below 1e-3 of the
    solver's atol (at least 100 machine epsilons)."""
    atol = getattr(method, "atol", 1e-8)
    tol = max(1e-3 * atol, 100 * float(jnp.finfo(dtype).eps))
    return optx.Newton(rtol=tol, atol=tol)


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="mcsolve", unit="traj")


def _raise_if_failed(
    out: dict[str, Any], method: AbstractMethod, max_jumps: int, first: int
) -> None:
    """Plain RuntimeErrors for a batch of concrete results."""
    raise_if_failed(out["status"], "mcsolve", method.max_steps, _REMEDY)
    over = np.asarray(out["overflow"])
    if over.any():
        i = first + int(np.argmax(over))
        raise RuntimeError(_jump_limit_message(max_jumps, i))


def _jump_limit_message(max_jumps: int, i: int | None = None) -> str:
    who = "a trajectory" if i is None else f"trajectory {i}"
    return (
        f"mcsolve: {who} made more than max_jumps={max_jumps} jumps before "
        "tsave[-1]; raise `max_jumps` (a trajectory makes about "
        "integral sum_k <L_k^dag L_k> dt jumps)"
    )


def _attach_failures(
    pooled: dict[str, Any], method: AbstractMethod, max_jumps: int
) -> dict[str, Any]:
    """The traced counterpart of `_raise_if_failed`: errors raised by the
    program."""
    pooled = error_if_failed(
        pooled, pooled["status"], "mcsolve", method.max_steps, _REMEDY
    )
    return eqx.error_if(
        pooled, jnp.any(pooled["overflow"]), _jump_limit_message(max_jumps)
    )


def _pool(outs: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """The batches' per-trajectory outputs, concatenated and cut to `count`."""
    if len(outs) == 1:
        return jax.tree.map(lambda x: x[:count], outs[0])
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:count], *outs)


def _mean_stderr(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean over the leading (trajectory) axis and its standard error
    sqrt(sum |x - mean|^2 / (N - 1) / N) (nan for N = 1)."""
    count = x.shape[0]
    mean = jnp.mean(x, axis=0)
    if count < 2:
        return mean, jnp.full(mean.shape, jnp.nan, jnp.abs(mean).dtype)
    var = jnp.sum(jnp.abs(x - mean) ** 2, axis=0) / (count - 1)
    return mean, jnp.sqrt(var / count)


def _largest_stderr(saved: dict[str, Any]) -> float:
    parts = [saved[k] for k in ("expects", "e_fn") if k in saved]
    errs = [_mean_stderr(x)[1] for x in jax.tree.leaves(parts)]
    return max(float(jnp.max(e)) if e.size else 0.0 for e in errs)


def _result(
    pooled: dict[str, Any], tsave: jax.Array, method: AbstractMethod, count: int
) -> MCSolveResult:
    saved = pooled["saved"]
    expects = stderr = e_values = e_stderr = None
    if "expects" in saved:
        expects, stderr = (x.T for x in _mean_stderr(saved["expects"]))
    if "e_fn" in saved:
        pairs = jax.tree.map(_mean_stderr, saved["e_fn"])
        is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
        e_values = jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair)
        e_stderr = jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair)
    states = saved["states"][..., None] if "states" in saved else None
    return MCSolveResult(
        tsave=tsave,
        states=states,
        expects=expects,
        final_state=pooled["final"][..., None],
        stats=pooled["stats"],
        method=method.name,
        expects_stderr=stderr,
        jump_times=pooled["jump_times"],
        jump_channels=pooled["jump_channels"],
        num_jumps=pooled["num_jumps"],
        ntraj=count,
        e_fn_values=e_values,
        e_fn_stderr=e_stderr,
    )
