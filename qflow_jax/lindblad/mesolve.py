"""`mesolve`: the Lindblad master equation integrated by diffrax."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from qflow_jax._convert import (
    check_finite,
    check_square,
    dag,
    is_concrete,
    to_array,
)
from qflow_jax.lindblad._ops import make_op
from qflow_jax.lindblad.lawson import Lawson
from qflow_jax.lindblad.vector_field import LindbladVectorField, to_complex, to_real
from qflow_jax.parallel import map_batch

__all__ = ["MESolveResult", "mesolve", "SOLVERS"]

SOLVERS: dict[str, Callable[[], dfx.AbstractSolver]] = {
    "tsit5": dfx.Tsit5,
    "dopri5": dfx.Dopri5,
    "dopri8": dfx.Dopri8,
    "kvaerno3": dfx.Kvaerno3,
    "kvaerno5": dfx.Kvaerno5,
}


class MESolveResult(eqx.Module):
    """What `mesolve` returns; batch axes of the inputs lead every array.

    Attributes:
        tsave: (nt,) save times.
        states: (..., nt, n, n) density matrices, or None with `save_states=False`.
        expects: (..., len(exp_ops), nt) complex expectation values, or None.
        final_state: (..., n, n) state at tsave[-1].
        stats: diffrax step counts: num_steps, num_accepted_steps, num_rejected_steps.
        method: name of the diffrax solver used.
    """

    tsave: jax.Array
    states: jax.Array | None
    expects: jax.Array | None
    final_state: jax.Array
    stats: dict[str, jax.Array]
    method: str = eqx.field(static=True)


# ----------------------------------------------------------------- input parsing

Term = tuple[Callable[[jax.Array], jax.Array] | None, jax.Array]


def _split_terms(
    x: Any, name: str, dtype: Any, t0: float, n: int
) -> tuple[list[Term], list[Callable[[jax.Array], jax.Array]]]:
    """Splits H (or one jump operator) into constant/modulated arrays and callables."""
    if callable(x) and not hasattr(x, "shape") and type(x).__name__ != "Qobj":
        shape = tuple(jnp.shape(x(jnp.asarray(t0))))
        if shape != (n, n):
            raise ValueError(
                f"`{name}` is a callable of t that returns shape {shape}, expected "
                f"({n}, {n}) at t={t0}"
            )
        return [], [lambda t, f=x: jnp.asarray(f(t), dtype=dtype)]
    if isinstance(x, list | tuple) and not _is_pair(x):
        terms, fns = [], []
        for i, item in enumerate(x):
            t_i, f_i = _split_terms(item, f"{name}[{i}]", dtype, t0, n)
            terms += t_i
            fns += f_i
        return terms, fns
    if _is_pair(x):
        arr = to_array(x[0], f"{name}[0]", dtype)
        coeff = x[1]
        c0 = jnp.asarray(coeff(jnp.asarray(t0)))
        if c0.ndim != 0:
            raise ValueError(
                f"the coefficient of `{name}` must return a scalar, got shape "
                f"{tuple(c0.shape)}"
            )
        return [(coeff, _checked_matrix(arr, f"{name}[0]"))], []
    return [(None, _checked_matrix(to_array(x, name, dtype), name))], []


def _is_pair(x: Any) -> bool:
    return (
        isinstance(x, list | tuple)
        and len(x) == 2
        and callable(x[1])
        and not hasattr(x[1], "shape")
    )


def _checked_matrix(arr: jax.Array, name: str) -> jax.Array:
    check_square(arr, name)
    check_finite(arr, name)
    return arr


def _jump_list(jump_ops: Any) -> list[Any]:
    if jump_ops is None:
        return []
    if hasattr(jump_ops, "shape") or type(jump_ops).__name__ == "Qobj":
        arr = to_array(jump_ops, "jump_ops")
        if arr.ndim == 2:
            return [arr]
        if arr.ndim == 3:
            return list(arr)
        raise ValueError(
            "`jump_ops` must be a list of (..., n, n) operators (or an (k, n, n) "
            f"array), got an array of shape {tuple(arr.shape)}"
        )
    if callable(jump_ops):
        return [jump_ops]
    return list(jump_ops)


def _check_tsave(tsave: Any, dtype: Any) -> jax.Array:
    t = jnp.asarray(tsave, dtype=dtype)
    if t.ndim != 1 or t.shape[0] < 2:
        raise ValueError(
            "`tsave` must be a 1-D array of at least 2 times, got shape "
            f"{tuple(t.shape)}"
        )
    if is_concrete(t):
        tn = np.asarray(t)
        if not np.all(np.isfinite(tn)):
            raise ValueError("`tsave` contains non-finite values")
        if not np.all(np.diff(tn) > 0):
            raise ValueError("`tsave` must be strictly increasing")
    return t


def _check_state(rho0: jax.Array, tol: float) -> None:
    if not is_concrete(rho0):
        return
    r = np.asarray(rho0)
    herm = np.abs(r - np.conj(np.swapaxes(r, -1, -2))).max()
    if herm > tol:
        raise ValueError(
            f"`rho0` must be Hermitian, got max |rho0 - rho0^dag| = {herm:.3g}"
        )
    tr = np.trace(r, axis1=-2, axis2=-1)
    if np.abs(tr - 1).max() > tol:
        worst = tr.reshape(-1)[np.argmax(np.abs(tr - 1))]
        raise ValueError(f"`rho0` must have trace 1, got trace {worst:.6g}")
    emin = np.linalg.eigvalsh(0.5 * (r + np.conj(np.swapaxes(r, -1, -2)))).min()
    if emin < -tol:
        raise ValueError(
            f"`rho0` must be positive semidefinite, got smallest eigenvalue {emin:.3g}"
        )


def _broadcast_batch(
    arrays: Sequence[jax.Array], name: str
) -> tuple[tuple[int, ...], list[jax.Array]]:
    if not arrays:
        return (), []
    try:
        batch = jnp.broadcast_shapes(*(a.shape[:-2] for a in arrays))
    except ValueError as err:
        shapes = [tuple(a.shape) for a in arrays]
        raise ValueError(
            f"batch shapes of `{name}` do not broadcast: {shapes}"
        ) from err
    return batch, [jnp.broadcast_to(a, (*batch, *a.shape[-2:])) for a in arrays]


def _flat(a: jax.Array, batch: tuple[int, ...]) -> jax.Array:
    return a.reshape(math.prod(batch), *a.shape[len(batch) :])


# ----------------------------------------------------------------- solve


class _Settings(eqx.Module):
    solver: dfx.AbstractSolver
    rtol: float
    atol: float
    max_steps: int
    save_states: bool
    adjoint: dfx.AbstractAdjoint
    progress_meter: dfx.AbstractProgressMeter
    sequential_batch: bool
    h_coeffs: tuple[Any, ...]
    l_coeffs: tuple[Any, ...]
    heff_fns: tuple[Any, ...]
    jump_fns: tuple[Any, ...]


@eqx.filter_jit
def _solve_batched(settings, h_group, l_group, rho0, tsave, exp_ops):
    """vmap over (H batch, jump batch, rho0 batch) of one diffrax solve."""

    def one(h_group, l_group, rho0):
        diags = [d for d in (h_group["diag"], l_group["diag"]) if d is not None]
        heff = list(zip(settings.h_coeffs, h_group["ops"], strict=True))
        if l_group["heff"] is not None:
            heff.append((None, l_group["heff"]))
        vf = LindbladVectorField(
            heff_terms=heff,
            jump_terms=list(zip(settings.l_coeffs, l_group["jumps"], strict=True)),
            heff_fns=settings.heff_fns,
            jump_fns=settings.jump_fns,
            diag=sum(diags[1:], diags[0]) if diags else None,
        )

        def save(t, y, args):
            rho = to_complex(y)
            ex = None if exp_ops is None else jnp.einsum("kij,ji->k", exp_ops, rho)
            return (rho if settings.save_states else None), ex

        saveat = dfx.SaveAt(
            subs=[
                dfx.SubSaveAt(ts=tsave, fn=save),
                dfx.SubSaveAt(t1=True, fn=lambda t, y, args: to_complex(y)),
            ]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sol = dfx.diffeqsolve(
                dfx.ODETerm(vf),
                settings.solver,
                tsave[0],
                tsave[-1],
                None,
                to_real(rho0),
                saveat=saveat,
                stepsize_controller=dfx.PIDController(
                    rtol=settings.rtol, atol=settings.atol, norm=optx.max_norm
                ),
                max_steps=settings.max_steps,
                adjoint=settings.adjoint,
                progress_meter=settings.progress_meter,
                throw=False,
            )
        (states, expects), final = sol.ys
        stats = {
            k: sol.stats[k]
            for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")
        }
        ok = sol.result == dfx.RESULTS.successful
        return states, None if expects is None else expects.T, final[0], stats, ok

    return _vmap_groups(one, (h_group, l_group, rho0), settings.sequential_batch)


def _vmap_groups(
    fn: Callable[..., Any], groups: tuple[Any, ...], sequential: bool
) -> Any:
    """fn mapped over the leading axis of every group (all combinations, first group
    outermost), by `lax.map` if `sequential` else `vmap`; groups of size 1 are
    squeezed rather than mapped."""
    sizes = [jax.tree_util.tree_leaves(g)[0].shape[0] for g in groups]
    args = [
        g if size > 1 else jax.tree_util.tree_map(lambda x: x[0], g)
        for g, size in zip(groups, sizes, strict=True)
    ]
    f = fn
    mapped = [i for i, size in enumerate(sizes) if size > 1]
    for i in reversed(mapped):
        # the outermost batch axis is split over devices when there are several
        f = _map_arg(f, i, sequential, shard=i == mapped[0])
    out = f(*args)
    for i, size in enumerate(sizes):
        if size == 1:
            out = jax.tree_util.tree_map(lambda x, i=i: jnp.expand_dims(x, i), out)
    return out


def _map_arg(
    f: Callable[..., Any], i: int, sequential: bool, shard: bool
) -> Callable[..., Any]:
    """f mapped over the leading axis of its i-th argument (over devices too if
    `shard`, see `qflow_jax.parallel.map_batch`)."""

    def mapped(*args):
        def one(x):
            return f(*args[:i], x, *args[i + 1 :])

        if shard:
            return map_batch(one, args[i], sequential)
        return jax.lax.map(one, args[i]) if sequential else jax.vmap(one)(args[i])

    return mapped


def _pop_diag(mat: jax.Array | None) -> tuple[jax.Array | None, jax.Array | None]:
    """Splits a static (..., n, n) operator into its diagonal and the rest."""
    if mat is None:
        return None, None
    d = jnp.diagonal(mat, axis1=-2, axis2=-1)
    return d, mat - d[..., :, None] * jnp.eye(mat.shape[-1], dtype=mat.dtype)


def _solver(method: str | dfx.AbstractSolver, has_static: bool) -> dfx.AbstractSolver:
    if isinstance(method, dfx.AbstractSolver):
        return method
    if method == "auto":
        method = "lawson-tsit5" if has_static else "tsit5"
    if isinstance(method, str) and method.startswith("lawson-"):
        inner = SOLVERS.get(method.removeprefix("lawson-"))
        if inner is not None and issubclass(inner, dfx.AbstractERK):
            return Lawson(inner())
    elif isinstance(method, str) and method in SOLVERS:
        return SOLVERS[method]()
    names = ["auto", *SOLVERS, "lawson-tsit5", "lawson-dopri5", "lawson-dopri8"]
    raise ValueError(
        f"`method` must be one of {', '.join(names)} or a diffrax solver, got "
        f"{method!r}"
    )


def mesolve(
    H: Any,
    jump_ops: Any,
    rho0: Any,
    tsave: Any,
    *,
    exp_ops: Sequence[Any] | None = None,
    method: str | dfx.AbstractSolver = "auto",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    save_states: bool = True,
    max_steps: int = 100_000,
    dtype: Any = None,
    sparse: bool | None = None,
    adjoint: dfx.AbstractAdjoint | None = None,
    progress: bool = False,
    batch_mode: str = "auto",
) -> MESolveResult:
    r"""Solves the Lindblad master equation

        d rho/dt = -i[H(t), rho] + sum_k ( L_k rho L_k^dag - 1/2 {L_k^dag L_k, rho} )

    with diffrax: adaptive explicit (Tsit5 by default) or implicit (Kvaerno5) steps.

    Args:
        H: (..., n, n) Hamiltonian; or a callable t -> (n, n); or a QuTiP-style
            list of terms, each an array or a pair [A, f] meaning f(t) A.
        jump_ops: list of jump operators, each (..., n, n), a pair [L, f] meaning
            f(t) L (rate |f(t)|^2), or a callable t -> (n, n). May be empty.
        rho0: (..., n, n) initial density matrix or (..., n, 1) ket.
        tsave: (nt,) strictly increasing save times; integration runs from
            tsave[0] to tsave[-1].
        exp_ops: operators (n, n) whose expectation values are saved.
        method: "auto" (default: "lawson-tsit5" when Heff has a static part,
            else "tsit5"); "tsit5", "dopri5", "dopri8" (explicit Runge-Kutta);
            "lawson-tsit5", "lawson-dopri5", "lawson-dopri8" (the same in
            integrating-factor form: the diagonal of the static Heff, i.e.
            detunings, Kerr energies and decay rates in the given basis, is
            integrated exactly, so it no longer limits the step);
            "kvaerno3", "kvaerno5" (implicit, for stiff problems with small n);
            or any `diffrax.AbstractSolver`.
        rtol, atol: tolerances of the PID step-size controller.
        save_states: keep the states at every save time (else only expects and
            the final state).
        max_steps: step limit; reaching it raises a RuntimeError.
        dtype: complex64 or complex128; by default that of `rho0`.
        sparse: store constant operators by diagonals (DIA); None decides from the
            sparsity of concrete inputs (traced inputs, e.g. under `jax.grad`,
            stay dense).
        adjoint: diffrax adjoint for gradients; default
            `RecursiveCheckpointAdjoint()` (memory bounded by checkpointing).
        progress: show a tqdm progress bar over time.
        batch_mode: how batch elements run: "vmap" (one vectorized solve, each
            element with its own steps), "map" (one after the other, `lax.map`),
            or "auto": "map" on CPU, where a vmapped adaptive solve masks every
            element until the slowest finishes and gains little from SIMD, and
            "vmap" on accelerators.

    Batching: leading axes of H, of the jump operators and of rho0 are mapped
    independently (all combinations); the result's arrays carry the H batch axes,
    then the jump batch axes, then the rho0 batch axes.

    Returns:
        A `MESolveResult`.

    Example:
        >>> import qflow_jax as qf, jax.numpy as jnp
        >>> a = qf.destroy(20)
        >>> rho0 = qf.coherent_dm(20, 2.0)
        >>> res = qf.mesolve(a.T.conj() @ a, [jnp.sqrt(0.5) * a], rho0,
        ...                  jnp.linspace(0, 2, 11), exp_ops=[qf.number(20)])
        >>> res.expects[0, -1].real  # 4 exp(-0.5 * 2)
    """
    rho0 = to_array(rho0, "rho0", dtype)
    dtype = rho0.dtype
    if rho0.ndim >= 2 and rho0.shape[-1] == 1 and rho0.shape[-2] != 1:
        rho0 = rho0 @ dag(rho0)
    check_square(rho0, "rho0")
    check_finite(rho0, "rho0")
    n = rho0.shape[-1]
    real_dtype = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    tsave = _check_tsave(tsave, real_dtype)
    t0 = float(np.asarray(tsave)[0]) if is_concrete(tsave) else 0.0
    _check_state(rho0, 1e-6 if dtype == jnp.complex128 else 1e-4)

    h_terms, h_fns = _split_terms(H, "H", dtype, t0, n)
    jumps = _jump_list(jump_ops)
    l_terms, l_fns = [], []
    for k, L in enumerate(jumps):
        t_k, f_k = _split_terms(L, f"jump_ops[{k}]", dtype, t0, n)
        l_terms += t_k
        l_fns += f_k
    for name, arr in [("H", a) for _, a in h_terms] + [
        (f"jump_ops[{k}]", a) for k, (_, a) in enumerate(l_terms)
    ]:
        if arr.shape[-1] != n:
            raise ValueError(
                f"`{name}` has dimension {arr.shape[-1]} but `rho0` has dimension {n}"
            )
    for c, a in h_terms:
        if c is None and is_concrete(a):
            an = np.asarray(a)
            if np.abs(an - np.conj(np.swapaxes(an, -1, -2))).max() > 1e-8 * max(
                1.0, float(np.abs(an).max())
            ):
                raise ValueError("`H` must be Hermitian")

    exp_arr = None
    if exp_ops is not None:
        ops = list(exp_ops) if not hasattr(exp_ops, "shape") else [exp_ops]
        if hasattr(exp_ops, "shape") and to_array(exp_ops, "exp_ops").ndim == 3:
            ops = list(to_array(exp_ops, "exp_ops"))
        exp_arr = jnp.stack(
            [to_array(o, f"exp_ops[{i}]", dtype) for i, o in enumerate(ops)]
        )
        if exp_arr.shape[1:] != (n, n):
            raise ValueError(
                f"`exp_ops` must be (n, n) operators with n = {n}, got shape "
                f"{tuple(exp_arr.shape[1:])}"
            )

    # Batch shapes: H terms share one, jump operators another, rho0 a third.
    h_batch, h_arrays = _broadcast_batch([a for _, a in h_terms], "H")
    l_batch, l_arrays = _broadcast_batch([a for _, a in l_terms], "jump_ops")
    r_batch = rho0.shape[:-2]
    h_coeffs = [c for c, _ in h_terms]
    l_coeffs = [c for c, _ in l_terms]

    if l_batch and any(c is not None for c in l_coeffs):
        raise ValueError(
            "time-modulated jump operators cannot carry batch axes; batch H or rho0"
        )
    h_static = [a for c, a in zip(h_coeffs, h_arrays, strict=True) if c is None]
    l_static = [a for c, a in zip(l_coeffs, l_arrays, strict=True) if c is None]
    Hc = functools.reduce(jnp.add, h_static) if h_static else None
    # The static part of -i/2 sum L^dag L joins the H group unless the jump
    # operators carry their own batch axes.
    K = (
        -0.5j * functools.reduce(jnp.add, [dag(a) @ a for a in l_static])
        if l_static
        else None
    )
    if K is not None and not l_batch:
        Hc = K if Hc is None else Hc + K
        K = None
    h_diag, Hc = _pop_diag(Hc)
    l_diag, K = _pop_diag(K)
    h_list = (
        ([] if Hc is None else [(None, Hc)])
        + [(c, a) for c, a in zip(h_coeffs, h_arrays, strict=True) if c is not None]
        + [
            (lambda t, c=c: jnp.abs(c(t)) ** 2, -0.5j * dag(a) @ a)
            for c, a in zip(l_coeffs, l_arrays, strict=True)
            if c is not None
        ]
    )
    heff_fns = [*h_fns] + [(lambda t, f=f: -0.5j * dag(f(t)) @ f(t)) for f in l_fns]

    h_group = {
        "size": jnp.zeros(math.prod(h_batch)),
        "ops": [
            make_op(_flat(jnp.broadcast_to(a, (*h_batch, n, n)), h_batch), sparse)
            for _, a in h_list
        ],
        "diag": None
        if h_diag is None
        else _flat(jnp.broadcast_to(h_diag, (*h_batch, n)), h_batch),
    }
    l_group = {
        "size": jnp.zeros(math.prod(l_batch)),
        "jumps": [make_op(_flat(a, l_batch), sparse) for a in l_arrays],
        "heff": None if K is None else make_op(_flat(K, l_batch), sparse),
        "diag": None if l_diag is None else _flat(l_diag, l_batch),
    }
    solver = _solver(method, h_diag is not None or l_diag is not None)
    settings = _Settings(
        solver=solver,
        rtol=float(rtol),
        atol=float(atol),
        max_steps=int(max_steps),
        save_states=bool(save_states),
        adjoint=adjoint if adjoint is not None else dfx.RecursiveCheckpointAdjoint(),
        progress_meter=dfx.TqdmProgressMeter() if progress else dfx.NoProgressMeter(),
        sequential_batch=_sequential(batch_mode),
        h_coeffs=tuple(c for c, _ in h_list),
        l_coeffs=tuple(l_coeffs),
        heff_fns=tuple(heff_fns),
        jump_fns=tuple(l_fns),
    )
    states, expects, final, stats, ok = _solve_batched(
        settings, h_group, l_group, _flat(rho0, r_batch), tsave, exp_arr
    )
    batch = (*h_batch, *l_batch, *r_batch)

    def unflat(x):
        return None if x is None else x.reshape(*batch, *x.shape[3:])

    if is_concrete(ok) and not bool(np.all(np.asarray(ok))):
        raise RuntimeError(
            "mesolve: the solver stopped before t = "
            f"{float(np.asarray(tsave)[-1])}: the step "
            f"limit max_steps={max_steps} was reached or a step failed (non-finite "
            "values). Raise `max_steps`, loosen rtol/atol, or use an implicit "
            "method such as method='kvaerno5' for stiff problems."
        )
    return MESolveResult(
        tsave=tsave,
        states=unflat(states),
        expects=unflat(expects),
        final_state=unflat(final),
        stats={k: unflat(v) for k, v in stats.items()},
        method=_method_name(solver),
    )


def _sequential(batch_mode: str) -> bool:
    if batch_mode == "auto":
        return jax.default_backend() == "cpu"
    if batch_mode not in ("map", "vmap"):
        raise ValueError(
            f"`batch_mode` must be 'auto', 'map' or 'vmap', got {batch_mode!r}"
        )
    return batch_mode == "map"


def _method_name(solver: dfx.AbstractSolver) -> str:
    if isinstance(solver, Lawson):
        return f"lawson-{type(solver.solver).__name__.lower()}"
    return type(solver).__name__.lower()
