"""The one translation to diffrax, used by every engine of qflow_jax.

`integrate` combines a vector field (or diffrax terms), a solver, the method's
step-size controller and step limit, the save points and the adjoint into one
`diffrax.diffeqsolve`, and applies one failure rule: a solve that reaches its step
limit, fails a step or ends with non-finite values raises (through
`equinox.error_if`, so also inside `jax.jit`, `jax.vmap` and `jax.grad`) with a
message that names the engine and the cause. It never returns numbers that look
like a result.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.core.methods import AbstractMethod

__all__ = [
    "Integration",
    "error_if_failed",
    "integrate",
    "raise_if_failed",
    "rhs_per_step",
]

# failure codes of `Integration.status`
OK, STEP_LIMIT, NON_FINITE, STEP_FAILED = 0, 1, 2, 3
DEFAULT_REMEDY = "use an implicit method (e.g. method='kvaerno5') for stiff problems"


class Integration(eqx.Module):
    """What `integrate` returns.

    Attributes:
        saved: `save(t, y)` at every time of tsave (y itself without `save`).
        final: the state at tsave[-1].
        stats: num_steps, num_accepted_steps, num_rejected_steps and num_rhs (the
            right-hand-side evaluations of an explicit Runge-Kutta method, from its
            tableau; absent for implicit methods).
        status: 0 success (an event counts as success), 1 step limit, 2 non-finite
            state, 3 failed step (or an event whose root find failed).
        t_final: the time the solve ended: tsave[-1], or the located event time.
        event_occurred: whether the `event` stopped the solve (False without one).
    """

    saved: Any
    final: Any
    stats: dict[str, jax.Array]
    status: jax.Array
    t_final: jax.Array | None = None
    event_occurred: jax.Array | None = None


def rhs_per_step(solver: dfx.AbstractSolver) -> int | None:
    """Right-hand-side evaluations per attempted step of an explicit Runge-Kutta
    solver (stages, less one when the last is reused: FSAL); None otherwise."""
    inner = getattr(solver, "solver", None)  # Lawson wraps an explicit method
    if isinstance(inner, dfx.AbstractSolver):
        return rhs_per_step(inner)
    per_step = getattr(solver, "rhs_per_step", None)
    if per_step is not None:
        return per_step
    tableau = getattr(solver, "tableau", None)
    if not isinstance(solver, dfx.AbstractERK) or tableau is None:
        return None
    return len(tableau.b_sol) - int(tableau.fsal)


def raise_if_failed(
    status: Any, engine: str, max_steps: int, remedy: str = DEFAULT_REMEDY
) -> None:
    """Raises RuntimeError with the cause of the first failed solve in the concrete
    `status` (any shape: batched solves); nothing when all succeeded."""
    codes = np.asarray(status).ravel()
    bad = codes[codes != OK]
    if bad.size:
        raise RuntimeError(_messages(engine, max_steps, remedy)[int(bad[0])])


def error_if_failed(
    x: Any,
    status: Any,
    engine: str,
    max_steps: int,
    remedy: str = DEFAULT_REMEDY,
) -> Any:
    """`x`, carrying the failure rule of `status` (any shape; `equinox` raises when
    the program runs, also inside `jax.jit`): the traced counterpart of
    `raise_if_failed`."""
    status = jnp.asarray(status).ravel()
    first = status[jnp.argmax(status != OK)] if status.size else OK
    return eqx.branched_error_if(
        x, first != OK, first, _messages(engine, max_steps, remedy)
    )


def _messages(engine: str, max_steps: int, remedy: str) -> list[str]:
    return [
        "",
        f"{engine}: the solver reached its step limit max_steps={max_steps} before "
        f"the last save time. Raise `max_steps`, loosen rtol/atol, or {remedy}.",
        f"{engine}: the state became non-finite (nan or inf) during the solve: the "
        "problem or its inputs produce nan/inf, or the step size is unstable.",
        f"{engine}: a step failed: the step size fell below 1e-12 of the time span "
        "(the vector field is non-finite or singular there) or an implicit solve did "
        f"not converge; check the inputs, or {remedy}.",
    ]


def integrate(
    terms: dfx.AbstractTerm | Callable[..., Any],
    solver: dfx.AbstractSolver,
    y0: Any,
    tsave: jax.Array,
    *,
    method: AbstractMethod,
    engine: str,
    save: Callable[[jax.Array, Any], Any] | None = None,
    adjoint: dfx.AbstractAdjoint | None = None,
    progress: bool = False,
    throw: bool = True,
    remedy: str = DEFAULT_REMEDY,
    event: dfx.Event | None = None,
) -> Integration:
    """Integrates from tsave[0] to tsave[-1] and saves at every time of tsave.

    Args:
        terms: diffrax terms, or a vector field f(t, y, args) (wrapped in ODETerm).
        solver: the diffrax solver (engines map `method` to it).
        y0: initial state (any pytree of arrays).
        tsave: (nt,) strictly increasing save times; or a pair of Python floats
            (t0, t1): then every time the solver sees is a constant, the compiled
            solve holds no run-time checks of traced times (host callbacks) and
            JAX's persistent compilation cache can store it.
        method: its controller, first step and `max_steps` are used.
        engine: the name in failure messages ("mesolve", "network_mesolve", ...).
        save: f(t, y) -> pytree saved at tsave (default: y).
        adjoint: diffrax adjoint (default `RecursiveCheckpointAdjoint()`).
        progress: a tqdm progress bar.
        throw: raise on failure through `equinox.error_if` (default; works inside
            jit). With False the caller reads `status`: eager public functions
            pass it to `raise_if_failed` (a plain RuntimeError), TDVP rolls back
            and retries; the values must not be used when it is non-zero.
        remedy: what to try, for the failure messages.
        event: a `diffrax.Event` that stops the solve early (with a root finder:
            at the located time). Saves after the event time are then inf (diffrax
            fills them so); `final`, `t_final` and `event_occurred` describe the
            stop. `tsave` may then repeat its first time (a solve restarted at a
            later time with `jnp.maximum(tsave, t)`: the repeated saves hold y0).
    """
    if not isinstance(terms, dfx.AbstractTerm):
        terms = dfx.ODETerm(terms)
    fn = (lambda t, y, args: y) if save is None else (lambda t, y, args: save(t, y))
    if isinstance(tsave, tuple):  # (t0, t1) constants: no time array to check
        saved_at = dfx.SubSaveAt(t0=True, t1=True, fn=fn)
    else:
        saved_at = dfx.SubSaveAt(ts=tsave, fn=fn)
    saveat = dfx.SaveAt(subs=[saved_at, dfx.SubSaveAt(t1=True)])
    with warnings.catch_warnings():
        # complex states are checked against exact solutions and QuTiP in the tests
        warnings.filterwarnings("ignore", message="Complex dtype support")
        warnings.filterwarnings("ignore", message="Complex support in Optimistix")
        sol = dfx.diffeqsolve(
            terms,
            solver,
            tsave[0],
            tsave[-1],
            method.dt0,
            y0,
            saveat=saveat,
            stepsize_controller=method.controller(tsave[-1] - tsave[0]),
            max_steps=method.max_steps,
            adjoint=dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
            progress_meter=dfx.TqdmProgressMeter()
            if progress
            else dfx.NoProgressMeter(),
            throw=False,
            event=event,
        )
    saved, final = sol.ys
    final = jax.tree.map(lambda x: x[0], final)
    finite = jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(final)])
    )
    status = jnp.where(
        ~finite,
        NON_FINITE,
        jnp.where(
            (sol.result == dfx.RESULTS.successful)
            | (sol.result == dfx.RESULTS.event_occurred),
            OK,
            jnp.where(
                sol.result == dfx.RESULTS.max_steps_reached, STEP_LIMIT, STEP_FAILED
            ),
        ),
    )
    stats = {
        k: sol.stats[k]
        for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")
    }
    per_step = rhs_per_step(solver)
    if per_step is not None:
        # + the first stage (FSAL) and diffrax's two evaluations choosing dt0
        stats["num_rhs"] = (
            sol.stats["num_steps"] * per_step + 1 + 2 * (method.dt0 is None)
        )
    if throw:
        saved, final = error_if_failed(
            (saved, final), status, engine, method.max_steps, remedy
        )
    event_occurred = (
        jnp.asarray(False)
        if event is None
        else sol.result == dfx.RESULTS.event_occurred
    )
    return Integration(saved, final, stats, status, sol.ts[1][0], event_occurred)
