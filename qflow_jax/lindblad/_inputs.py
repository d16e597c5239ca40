"""Input parsing shared by `mesolve` and `mcsolve`: H and jump operators in every
accepted form (arrays, QuTiP `Qobj`, QuTiP-style lists, pairs [A, f], callables of
t, `qf.constant/modulated/timecallable`, and for `mcsolve` sparse
`jax.experimental.sparse.BCOO` matrices) become checked (coefficient, operator)
terms and callable terms; `exp_ops` become a checked list of operators."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from jax.experimental import sparse as jsparse

from qflow_jax.core.checks import (
    check_finite,
    check_hermitian,
    check_square,
    is_concrete,
    to_array,
)
from qflow_jax.core.timeops import (
    AbstractTimeOperator,
    CallableOperator,
    ConstantOperator,
    ModulatedOperator,
)

Term = tuple[Callable[[jax.Array], jax.Array] | None, Any]


def is_sparse(x: Any) -> bool:
    """Whether `x` is a `jax.experimental.sparse.BCOO` matrix."""
    return isinstance(x, jsparse.BCOO)


def sparse_dag(x: jsparse.BCOO) -> jsparse.BCOO:
    """The conjugate transpose of a 2-D BCOO matrix."""
    return jsparse.BCOO((jnp.conj(x.data), x.indices[:, ::-1]), shape=x.shape[::-1])


def _operator(x: Any, name: str, dtype: Any, sparse: bool) -> Any:
    """`x` as a dense array, or (with `sparse`) a 2-D BCOO matrix of `dtype`."""
    if not is_sparse(x):
        return to_array(x, name, dtype)
    if not sparse:
        raise TypeError(
            f"`{name}` is a sparse BCOO matrix; this solver takes dense operators "
            f"(pass `{name}.todense()`)"
        )
    if x.ndim != 2 or x.n_batch or x.n_dense:
        raise ValueError(
            f"`{name}` must be a 2-D BCOO matrix (no batch or dense dimensions), got "
            f"shape {tuple(x.shape)} with n_batch={x.n_batch}, n_dense={x.n_dense}"
        )
    return jsparse.BCOO((x.data.astype(dtype), x.indices), shape=x.shape)


def time_operators(
    x: Any, name: str, dtype: Any, sparse: bool = False
) -> list[tuple[str, Any]]:
    """H (or one jump operator) as (name, time operator) terms: QuTiP-style lists,
    pairs [A, f], callables and arrays become `timeops` objects (with `sparse`,
    BCOO matrices are kept as they are)."""
    if isinstance(x, AbstractTimeOperator):
        return [(name, x)]
    if is_sparse(x):
        return [(name, ConstantOperator(_operator(x, name, dtype, sparse)))]
    if callable(x) and not hasattr(x, "shape") and type(x).__name__ != "Qobj":
        return [(name, CallableOperator(x, dtype))]
    if is_pair(x):
        mat = _operator(x[0], f"{name}[0]", dtype, sparse)
        return [(name, ModulatedOperator(mat, x[1]))]
    if isinstance(x, list | tuple):
        return [
            term
            for i, item in enumerate(x)
            for term in time_operators(item, f"{name}[{i}]", dtype, sparse)
        ]
    return [(name, ConstantOperator(to_array(x, name, dtype)))]


def split_terms(
    x: Any,
    name: str,
    dtype: Any,
    t0: jax.Array,
    n: int,
    state: str = "rho0",
    sparse: bool = False,
) -> tuple[list[Term], list[Callable[[jax.Array], jax.Array]]]:
    """Checked (coefficient or None, array) terms and callable terms of H or of one
    jump operator; `state` names the initial state in dimension errors, `sparse`
    admits BCOO matrices."""
    terms, fns = [], []
    for label, op in time_operators(x, name, dtype, sparse):
        if isinstance(op, CallableOperator):
            op = CallableOperator(op.f, dtype)
            value = op(t0)
            if tuple(value.shape) != (n, n):
                raise ValueError(
                    f"`{label}` is a callable of t that returns shape "
                    f"{tuple(value.shape)}, expected ({n}, {n}) at t = tsave[0]"
                )
            check_finite(value, label)
            fns.append(op)
            continue
        mat = _operator(op.mat, label, dtype, sparse)
        check_square(mat, label)
        if mat.shape[-1] != n:
            raise ValueError(
                f"`{label}` has dimension {mat.shape[-1]} but `{state}` has "
                f"dimension {n}"
            )
        if is_sparse(mat):
            data = check_finite(mat.data, label)
            mat = jsparse.BCOO((data, mat.indices), shape=mat.shape)
        else:
            mat = check_finite(mat, label)
        if isinstance(op, ModulatedOperator):
            c0 = jnp.asarray(op.f(t0))
            if c0.ndim != 0:
                raise ValueError(
                    f"the coefficient of `{label}` must return a scalar, got shape "
                    f"{tuple(c0.shape)}"
                )
            terms.append((op.f, mat))
        else:
            terms.append((None, mat))
    return terms, fns


def check_hermitian_h(
    terms: list[Term],
    fns: list[Callable[[jax.Array], jax.Array]],
    tsave: jax.Array,
    state: Any,
) -> Any:
    """Checks H(t) Hermitian: its static part as given, the whole H(t) (modulated
    and callable terms included) at the first, middle and last save times; returns
    `state` (the initial state) carrying the checks of traced values."""
    static = [a for c, a in terms if c is None]
    if static:
        state = _check_hermitian_sum(static, state)
    if len(static) == len(terms) and not fns:
        return state
    for k in (0, tsave.shape[0] // 2, tsave.shape[0] - 1):
        t = tsave[k]
        parts = [a if c is None else c(t) * a for c, a in terms] + [f(t) for f in fns]
        where = f" at t = tsave[{k}] (H(t) with its time-dependent terms)"
        state = _check_hermitian_sum(parts, state, where)
    return state


def _check_hermitian_sum(parts: list[Any], state: Any, where: str = "") -> Any:
    """Checks the sum of `parts` (dense arrays or BCOO) Hermitian, and finite when
    `where` is given (a probe time). A sum of concrete BCOO matrices is checked
    sparse on the host (scipy); traced BCOO matrices are densified for the check."""
    if all(is_sparse(p) for p in parts) and is_concrete(parts):
        S = functools.reduce(operator.add, [to_scipy(p) for p in parts]).tocsr()
        if where and not np.all(np.isfinite(S.data)):
            raise ValueError(f"`H` contains non-finite values (nan or inf){where}")
        dev = abs(S - S.conj().T).max() if S.nnz else 0.0
        scale = abs(S).max() if S.nnz else 0.0
        if dev > 1e-8 * max(1.0, float(scale)):
            raise ValueError(
                f"`H` must be Hermitian{where}, got max |H - H^dag| = {dev:.3g}"
            )
        return state
    dense = [p.todense() if is_sparse(p) else p for p in parts]
    add = np.add if is_concrete(dense) else jnp.add  # no eager JAX op on NumPy
    H = functools.reduce(add, dense)
    if where:
        state = check_finite(H, "H", attach_to=state, where=where)
    return check_hermitian(H, "H", attach_to=state, where=where)


def to_scipy(x: jsparse.BCOO) -> scipy.sparse.csr_matrix:
    """A concrete 2-D BCOO matrix as a SciPy CSR matrix (duplicates summed)."""
    idx = np.asarray(x.indices)
    return scipy.sparse.coo_matrix(
        (np.asarray(x.data), (idx[:, 0], idx[:, 1])), shape=x.shape
    ).tocsr()


def from_scipy(x: Any) -> jsparse.BCOO:
    """A SciPy sparse matrix as a 2-D BCOO matrix (its stored entries)."""
    coo = scipy.sparse.coo_matrix(x)
    indices = np.stack([coo.row, coo.col], axis=1).astype(np.int32)
    return jsparse.BCOO((jnp.asarray(coo.data), jnp.asarray(indices)), shape=x.shape)


def is_pair(x: Any) -> bool:
    """Whether `x` is a QuTiP-style pair [A, f] (f a coefficient function of t)."""
    return (
        isinstance(x, list | tuple)
        and len(x) == 2
        and not isinstance(x[0], AbstractTimeOperator)
        and callable(x[1])
        and not isinstance(x[1], AbstractTimeOperator)
        and not hasattr(x[1], "shape")
    )


def jump_list(jump_ops: Any) -> list[Any]:
    """`jump_ops` as a list of jump operators (each in any accepted form)."""
    if jump_ops is None:
        return []
    if is_sparse(jump_ops):
        return [jump_ops]
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
    if callable(jump_ops) or isinstance(jump_ops, AbstractTimeOperator):
        return [jump_ops]
    return list(jump_ops)


def exp_operators(exp_ops: Any, n: int, dtype: Any, sparse: bool = False) -> list[Any]:
    """`exp_ops` (a list of operators, one operator, or a (k, n, n) array) as a
    list of checked (n, n) operators (dense arrays, or BCOO with `sparse`)."""
    if is_sparse(exp_ops):
        ops = [exp_ops]
    elif hasattr(exp_ops, "shape") or type(exp_ops).__name__ == "Qobj":
        arr = to_array(exp_ops, "exp_ops")
        ops = list(arr) if arr.ndim == 3 else [arr]
    else:
        ops = list(exp_ops)
    out = [_operator(o, f"exp_ops[{i}]", dtype, sparse) for i, o in enumerate(ops)]
    for o in out:
        if tuple(o.shape) != (n, n):
            raise ValueError(
                f"`exp_ops` must be (n, n) operators with n = {n}, got shape "
                f"{tuple(o.shape)}"
            )
    return out


def is_sequential(batch_mode: str) -> bool:
    """Whether batch elements run one after the other (`lax.map`) for `batch_mode`
    "map", "vmap" or "auto" ("map" on CPU, "vmap" on accelerators)."""
    if batch_mode == "auto":
        return jax.default_backend() == "cpu"
    if batch_mode not in ("map", "vmap"):
        raise ValueError(
            f"`batch_mode` must be 'auto', 'map' or 'vmap', got {batch_mode!r}"
        )
    return batch_mode == "map"
