"""`mesolve`: the Lindblad master equation integrated by diffrax."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.core.checks import (
    check_density,
    check_square,
    check_tsave,
    dag,
    is_concrete,
    to_array,
)
from qflow_jax.core.integrate import integrate, raise_if_failed
from qflow_jax.core.methods import (
    METHOD_NAMES,
    AbstractMethod,
    Lawson,
    Tsit5,
    method_from,
)
from qflow_jax.core.result import SolveResult
from qflow_jax.core.timeops import AbsSquared, JumpDecay
from qflow_jax.lindblad._inputs import (
    check_hermitian_h,
    exp_operators,
    is_sequential,
    jump_list,
    split_terms,
)
from qflow_jax.lindblad._ops import make_op
from qflow_jax.lindblad.lawson import LawsonSolver
from qflow_jax.lindblad.vector_field import LindbladVectorField, to_complex, to_real
from qflow_jax.parallel import map_batch

__all__ = ["MESOLVE_METHODS", "MESolveResult", "TruncationError", "mesolve"]

# every method name but the IMEX ones (the dense generator has no stiff part apart)
MESOLVE_METHODS = tuple(m for m in METHOD_NAMES if not m.startswith("kencarp"))


class TruncationError(ValueError):
    """A solve refused because the Fock truncation lost too much weight
    (`mesolve(..., fock_dims=...)`): the highest level of `mode` held `population`
    at time `t`, more than `limit`."""

    def __init__(self, mode: int, level: int, population: float, t: float, limit):
        self.mode, self.population, self.t, self.limit = mode, population, t, limit
        super().__init__(
            f"mesolve: the Fock truncation is too small: the highest level "
            f"(n = {level}) of mode {mode} holds {population:.3g} at t = {t:.4g} "
            f"(allowed: max_top_population = {limit:g}); raise the dimension of that "
            "mode (`fock_dims`, with the operators)"
        )


class MESolveResult(SolveResult):
    """What `mesolve` returns (`SolveResult`); states are (n, n) density matrices.

    Attributes:
        top_population: with `fock_dims`, (..., len(fock_modes), nt) population
            of the highest Fock level of each bosonic mode at every save time (the
            weight the truncation is about to lose); else None.
    """

    top_population: jax.Array | None = None


# ----------------------------------------------------------------- input parsing


def _broadcast_batch(
    xp, arrays: Sequence[Any], name: str
) -> tuple[tuple[int, ...], list]:
    if not arrays:
        return (), []
    try:
        batch = np.broadcast_shapes(*(a.shape[:-2] for a in arrays))
    except ValueError as err:
        shapes = [tuple(a.shape) for a in arrays]
        raise ValueError(
            f"batch shapes of `{name}` do not broadcast: {shapes}"
        ) from err
    return batch, [xp.broadcast_to(a, (*batch, *a.shape[-2:])) for a in arrays]


def _flat(a: Any, batch: tuple[int, ...]) -> Any:
    return a.reshape(math.prod(batch), *a.shape[len(batch) :])


# ----------------------------------------------------------------- solve


class _Settings(eqx.Module):
    solver: dfx.AbstractSolver
    method: AbstractMethod
    save_states: bool
    adjoint: dfx.AbstractAdjoint | None
    progress: bool
    sequential_batch: bool
    throw: bool
    h_coeffs: tuple[Any, ...]
    l_coeffs: tuple[Any, ...]
    heff_fns: tuple[Any, ...]
    jump_fns: tuple[Any, ...]
    batch: tuple[int, ...]


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

        def save(t, y):
            rho = to_complex(y)
            ex = None if exp_ops is None else jnp.einsum("kij,ji->k", exp_ops, rho)
            return (rho if settings.save_states else None), ex

        out = integrate(
            vf,
            settings.solver,
            to_real(rho0),
            tsave,
            method=settings.method,
            engine="mesolve",
            save=save,
            adjoint=settings.adjoint,
            progress=settings.progress,
            throw=settings.throw,
        )
        states, expects = out.saved
        expects = None if expects is None else expects.T
        return states, expects, to_complex(out.final), out.stats, out.status

    out = _vmap_groups(one, (h_group, l_group, rho0), settings.sequential_batch)
    # (H batch, jump batch, rho0 batch) flattened to three axes -> the input shapes
    return jax.tree.map(lambda x: x.reshape(*settings.batch, *x.shape[3:]), out[:4]) + (
        out[4],
    )


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


def _pop_diag(xp, mat: Any) -> tuple[Any, Any]:
    """Splits a static (..., n, n) operator into its diagonal and the rest."""
    if mat is None:
        return None, None
    d = xp.diagonal(mat, axis1=-2, axis2=-1)
    return d, mat - d[..., :, None] * xp.eye(mat.shape[-1], dtype=mat.dtype)


def _resolve(method: AbstractMethod, stiff: bool) -> tuple[AbstractMethod, Any]:
    """(method, diffrax solver): "auto" becomes "lawson-tsit5" when the static
    diagonal of Heff dominates (`_diagonal_dominates`), else "tsit5"; Lawson methods
    wrap their explicit inner method."""
    if method.name == "auto":
        kw = dict(rtol=method.rtol, atol=method.atol, max_steps=method.max_steps)
        method = Lawson("tsit5", **kw) if stiff else Tsit5(**kw)
    if isinstance(method, Lawson):
        return method, LawsonSolver(method_from(method.inner).solver())
    return method, method.solver()


def mesolve(
    H: Any,
    jump_ops: Any,
    rho0: Any,
    tsave: Any,
    *,
    method: str | AbstractMethod | dfx.AbstractSolver = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    exp_ops: Sequence[Any] | None = None,
    save_states: bool = True,
    progress: bool = False,
    adjoint: dfx.AbstractAdjoint | None = None,
    dtype: Any = None,
    sparse: bool | None = None,
    batch_mode: str = "auto",
    fock_dims: Sequence[int] | None = None,
    fock_modes: Sequence[int] | None = None,
    max_top_population: float = 1e-4,
) -> MESolveResult:
    r"""Solves the Lindblad master equation

        d rho/dt = -i[H(t), rho] + sum_k ( L_k rho L_k^dag - 1/2 {L_k^dag L_k, rho} )

    with diffrax: adaptive explicit (Tsit5 by default) or implicit (Kvaerno5) steps.

    Args:
        H: (..., n, n) Hamiltonian; or a callable t -> (n, n); or a QuTiP-style
            list of terms, each an array or a pair [A, f] meaning f(t) A; or
            `qf.constant`, `qf.modulated`, `qf.timecallable` operators. H(t) must
            be Hermitian (checked as given and at the first, middle and last save
            times).
        jump_ops: list of jump operators, each (..., n, n), a pair [L, f] meaning
            f(t) L (rate |f(t)|^2), or a callable t -> (n, n). May be empty.
        rho0: (..., n, n) initial density matrix or (..., n, 1) ket.
        tsave: (nt,) strictly increasing save times; integration runs from
            tsave[0] to tsave[-1].
        method: a method object (`qf.Tsit5(rtol=...)`, `qf.Lawson("tsit5")`,
            `qf.Kvaerno5()`, ...), its name, or any `diffrax.AbstractSolver`.
            "auto" (default): "lawson-tsit5" when the static diagonal of Heff
            dominates (the spread of its real part plus its largest decay rate
            at least 8 times the largest off-diagonal row sum: detuned, Kerr or
            strongly damped levels; always for traced operators with a
            diagonal), else "tsit5". "tsit5", "dopri5", "dopri8": explicit Runge-Kutta;
            "lawson-tsit5", "lawson-dopri5", "lawson-dopri8": the same in
            integrating-factor form (the diagonal of the static Heff, i.e.
            detunings, Kerr energies and decay rates in the given basis, is
            integrated exactly, so it no longer limits the step); "kvaerno3",
            "kvaerno5": implicit, for stiff problems with small n.
        rtol, atol, max_steps: override the method's tolerances (RMS norm, see
            `qflow_jax.core.methods`; defaults 1e-6, 1e-8) and step limit
            (default 100000).
        exp_ops: operators (n, n) whose expectation values are saved.
        save_states: keep the states at every save time (else only expects and
            the final state).
        progress: show a tqdm progress bar over time.
        adjoint: diffrax adjoint for gradients; default
            `RecursiveCheckpointAdjoint()` (memory bounded by checkpointing).
        dtype: complex64 or complex128; by default that of `rho0`.
        sparse: store constant operators by diagonals (DIA); None decides from the
            sparsity of concrete inputs (traced inputs, e.g. under `jax.grad`,
            stay dense).
        batch_mode: how batch elements run: "vmap" (one vectorized solve, each
            element with its own steps), "map" (one after the other, `lax.map`),
            or "auto": "map" on CPU, where a vmapped adaptive solve masks every
            element until the slowest finishes and gains little from SIMD, and
            "vmap" on accelerators.
        fock_dims: the dimensions of the subsystems (product n, first slowest, as
            `qf.tensor`): checks the Fock truncation of the bosonic modes among
            them. The population of every mode's highest level is saved as
            `top_population`; above `max_top_population` (default 1e-4) at any
            save time the solve is refused with a `TruncationError` (a ValueError)
            naming the mode, the time and the population (inside jit: an error
            raised by the program).
        fock_modes: the indices in `fock_dims` of the bosonic modes (default:
            all; e.g. (0,) for a mode coupled to qubits).

    Batching: leading axes of H, of the jump operators and of rho0 are mapped
    independently (all combinations); the result's arrays carry the H batch axes,
    then the jump batch axes, then the rho0 batch axes.

    Works under `jax.jit`, `jax.vmap` and `jax.grad` (with respect to operators and
    rho0). A solve that reaches `max_steps` or goes non-finite raises (inside jit
    too); bad input raises ValueError naming the argument.

    Returns:
        A `MESolveResult`.

    Examples:
        >>> import qflow_jax as qf, jax.numpy as jnp
        >>> a = qf.destroy(20)
        >>> rho0 = qf.coherent_dm(20, 2.0)
        >>> res = qf.mesolve(a.T.conj() @ a, [jnp.sqrt(0.5) * a], rho0,
        ...                  jnp.linspace(0, 2, 11), exp_ops=[qf.number(20)])
        >>> round(float(res.expects[0, -1].real), 5)  # 4 exp(-0.5 * 2)
        1.47152
    """
    rho0 = to_array(rho0, "rho0", dtype)
    dtype = rho0.dtype
    if rho0.ndim >= 2 and rho0.shape[-1] == 1 and rho0.shape[-2] != 1:
        rho0 = rho0 @ dag(rho0)
    check_square(rho0, "rho0")
    n = rho0.shape[-1]
    real_dtype = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    tsave = check_tsave(tsave, real_dtype)
    method = method_from(
        method, rtol=rtol, atol=atol, max_steps=max_steps, allowed=MESOLVE_METHODS
    )
    sequential = is_sequential(batch_mode)
    rho0 = check_density(rho0, "rho0")

    h_terms, h_fns = split_terms(H, "H", dtype, tsave[0], n)
    jumps = jump_list(jump_ops)
    l_terms, l_fns = [], []
    for k, L in enumerate(jumps):
        t_k, f_k = split_terms(L, f"jump_ops[{k}]", dtype, tsave[0], n)
        l_terms += t_k
        l_fns += f_k
    rho0 = check_hermitian_h(h_terms, h_fns, tsave, rho0)

    exp_arr = None
    if exp_ops is not None:
        exp_arr = jnp.stack(exp_operators(exp_ops, n, dtype))

    n_exp = 0 if exp_arr is None else exp_arr.shape[0]
    if fock_dims is not None:
        fock_dims, fock_modes, top = _top_level_projectors(
            fock_dims, fock_modes, n, max_top_population
        )
        top = top.astype(dtype)
        exp_arr = top if exp_arr is None else jnp.concatenate([exp_arr, top])

    # Concrete inputs are prepared with NumPy on the host (eager JAX operations on
    # small arrays cost more than the solve of a small problem); traced ones with
    # jax.numpy, inside the caller's trace.
    concrete = is_concrete((h_terms, l_terms, rho0, exp_arr))
    xp = np if concrete else jnp
    if concrete:
        h_terms = [(c, np.asarray(a)) for c, a in h_terms]
        l_terms = [(c, np.asarray(a)) for c, a in l_terms]
        rho0 = np.asarray(rho0)
        exp_arr = None if exp_arr is None else np.asarray(exp_arr)
    h_group, l_group, h_coeffs, l_coeffs, batches, stiff = _groups(
        xp, h_terms, l_terms, n, sparse
    )
    r_batch = rho0.shape[:-2]
    method, solver = _resolve(method, stiff)
    settings = _Settings(
        solver=solver,
        method=method,
        save_states=bool(save_states),
        adjoint=adjoint,
        progress=bool(progress),
        sequential_batch=sequential,
        # under a trace failures raise inside the program; eagerly they are checked
        # here, for a plain RuntimeError
        throw=not concrete,
        h_coeffs=h_coeffs,
        l_coeffs=l_coeffs,
        heff_fns=(*h_fns, *(JumpDecay(f) for f in l_fns)),
        jump_fns=tuple(l_fns),
        batch=(*batches, *r_batch),
    )
    states, expects, final, stats, status = _solve_batched(
        settings, h_group, l_group, _flat(rho0, r_batch), tsave, exp_arr
    )
    if not settings.throw:
        raise_if_failed(status, "mesolve", method.max_steps)
    top = None
    if fock_dims is not None:
        top = expects[..., n_exp:, :].real
        expects = expects[..., :n_exp, :] if n_exp else None
        top = _check_truncation(top, tsave, fock_dims, fock_modes, max_top_population)
    return MESolveResult(
        tsave=tsave,
        states=states,
        expects=expects,
        final_state=final,
        stats=stats,
        method=method.name,
        top_population=top,
    )


def _top_level_projectors(
    fock_dims: Any, fock_modes: Any, n: int, max_top_population: float
) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """Checked `fock_dims` and `fock_modes`, and the (modes, n, n) projectors on
    each bosonic mode's highest Fock level."""
    dims = tuple(np.atleast_1d(np.asarray(fock_dims)).tolist())
    if not dims or not all(isinstance(d, int) and d >= 2 for d in dims):
        raise ValueError(f"`fock_dims` must be integers >= 2, got {fock_dims!r}")
    if math.prod(dims) != n:
        raise ValueError(
            f"`fock_dims` {dims} must multiply to the dimension n = {n} of rho0"
        )
    modes = tuple(range(len(dims))) if fock_modes is None else tuple(fock_modes)
    if not modes or not all(isinstance(j, int) and 0 <= j < len(dims) for j in modes):
        raise ValueError(
            f"`fock_modes` must be indices into `fock_dims` (0 to {len(dims) - 1}), "
            f"got {fock_modes!r}"
        )
    if not (isinstance(max_top_population, int | float) and 0 < max_top_population):
        raise ValueError(
            f"`max_top_population` must be a number > 0, got {max_top_population!r}"
        )
    levels = np.indices(dims).reshape(len(dims), n)
    top = [levels[j] == dims[j] - 1 for j in modes]
    return dims, modes, np.stack([np.diag(t.astype(float)) for t in top])


def _check_truncation(
    top: jax.Array,
    tsave: jax.Array,
    dims: tuple[int, ...],
    modes: tuple[int, ...],
    limit: float,
) -> jax.Array:
    """Refuses a solve whose highest Fock level of some mode held more than
    `limit`: ValueError for concrete values, a program error under a trace."""
    if not is_concrete(top):
        return eqx.error_if(
            top,
            jnp.max(top) > limit,
            f"mesolve: the Fock truncation is too small: the highest level of a mode "
            f"holds more than max_top_population = {limit:g}; raise the dimension of "
            "that mode (`fock_dims`, with the operators)",
        )
    values = np.asarray(top)
    if values.max() > limit:
        *_, m, i = np.unravel_index(np.argmax(values), values.shape)
        j = modes[m]
        raise TruncationError(
            j, dims[j] - 1, float(values.max()), float(tsave[i]), limit
        )
    return top


def _groups(xp, h_terms, l_terms, n, sparse):
    """The operator groups of the solve, with the arrays of namespace `xp`.

    H terms share one batch shape, jump operators another. The static part of
    -i/2 sum L^dag L joins the H group unless the jump operators carry their own
    batch axes; the diagonal of each group's static part is split off (integrated
    exactly by Lawson methods)."""
    h_batch, h_arrays = _broadcast_batch(xp, [a for _, a in h_terms], "H")
    l_batch, l_arrays = _broadcast_batch(xp, [a for _, a in l_terms], "jump_ops")
    h_coeffs = [c for c, _ in h_terms]
    l_coeffs = [c for c, _ in l_terms]
    if l_batch and any(c is not None for c in l_coeffs):
        raise ValueError(
            "time-modulated jump operators cannot carry batch axes; batch H or rho0"
        )
    h_static = [a for c, a in zip(h_coeffs, h_arrays, strict=True) if c is None]
    l_static = [a for c, a in zip(l_coeffs, l_arrays, strict=True) if c is None]
    Hc = functools.reduce(xp.add, h_static) if h_static else None
    K = (
        -0.5j * functools.reduce(xp.add, [_dag(xp, a) @ a for a in l_static])
        if l_static
        else None
    )
    if K is not None and not l_batch:
        Hc = K if Hc is None else Hc + K
        K = None
    h_diag, Hc = _pop_diag(xp, Hc)
    l_diag, K = _pop_diag(xp, K)
    h_list = (
        ([] if Hc is None else [(None, Hc)])
        + [(c, a) for c, a in zip(h_coeffs, h_arrays, strict=True) if c is not None]
        + [
            (AbsSquared(c), -0.5j * _dag(xp, a) @ a)
            for c, a in zip(l_coeffs, l_arrays, strict=True)
            if c is not None
        ]
    )
    h_group = {
        "size": xp.zeros(math.prod(h_batch)),
        "ops": [
            make_op(_flat(xp.broadcast_to(a, (*h_batch, n, n)), h_batch), sparse)
            for _, a in h_list
        ],
        "diag": None
        if h_diag is None
        else _flat(xp.broadcast_to(h_diag, (*h_batch, n)), h_batch),
    }
    l_group = {
        "size": xp.zeros(math.prod(l_batch)),
        "jumps": [make_op(_flat(a, l_batch), sparse) for a in l_arrays],
        "heff": None if K is None else make_op(_flat(K, l_batch), sparse),
        "diag": None if l_diag is None else _flat(l_diag, l_batch),
    }
    coeffs = (tuple(c for c, _ in h_list), tuple(l_coeffs))
    stiff = _diagonal_dominates(xp, h_diag, l_diag, [Hc, K])
    return h_group, l_group, *coeffs, (*h_batch, *l_batch), stiff


def _diagonal_dominates(xp, h_diag, l_diag, offdiag) -> bool:
    """Whether the static diagonal of Heff sets the time scale: the spread of its
    real part plus its largest decay rate at least 8 times the largest off-diagonal
    row sum (measured crossover of Lawson and plain Tsit5 on driven Kerr
    oscillators). Traced operators: whenever there is a diagonal."""
    if h_diag is None and l_diag is None:
        return False
    if xp is not np:
        return True
    # the H and jump groups carry batch axes of their own: the spread of their sum
    # is bounded by the sum of their spreads
    spread = sum(
        np.ptp(d.real, axis=-1).max() + np.abs(d.imag).max()
        for d in (h_diag, l_diag)
        if d is not None
    )
    off = max((np.abs(a).sum(-1).max() for a in offdiag if a is not None), default=0.0)
    return bool(spread >= 8 * off)


def _dag(xp, x):
    return xp.conj(xp.swapaxes(x, -1, -2))
