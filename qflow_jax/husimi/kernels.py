"""Pointwise kernels of a compiled Q-PDE: (L Q)(x) and (L Q)/Q from log Q.

For f = log Q, each derivative of Q divided by Q is a complete Bell polynomial in the
derivatives of f (multivariate Faa di Bruno): for the multi-index (i_1, ..., i_k),

    (d_{i_1...i_k} Q) / Q = sum over set partitions P of {1..k} of
                            prod_{B in P} d_{i_B} f,

e.g. (d_ij Q)/Q = d_ij f + d_i f d_j f. Only the derivatives of f that the PDE needs
are computed: the gradient by reverse mode, and each higher one as a component of a
forward-over-reverse product (nested `jax.jvp` of `jax.grad(f)` along basis vectors).
A diagonal diffusion therefore costs 2N Hessian-vector products and no full Hessian.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from qflow_jax.husimi.compiler import QPDE

__all__ = ["apply", "dlogq_dt"]


def _set_partitions(items: tuple[int, ...]) -> list[list[tuple[int, ...]]]:
    """All set partitions of the positions of `items`, blocks as sorted index tuples."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for part in _set_partitions(rest):
        out.append([(first,), *part])
        for b in range(len(part)):
            out.append([*part[:b], tuple(sorted((first, *part[b]))), *part[b + 1 :]])
    return out


def _indices(deriv: tuple[int, ...]) -> tuple[int, ...]:
    """Derivative counts per coordinate -> sorted indices: (0, 2) -> (1, 1)."""
    return tuple(i for i, m in enumerate(deriv) for _ in range(m))


class _Coefficients(eqx.Module):
    """Evaluates all c_m(x) at one point from a sparse monomial table."""

    mono_index: np.ndarray  # (n_mono, max_degree) indices into (x, 1)
    entry_term: np.ndarray
    entry_mono: np.ndarray
    entry_coeff: np.ndarray
    n_terms: int

    def __call__(self, x: jax.Array) -> jax.Array:
        x_ext = jnp.concatenate([x, jnp.ones((1,), x.dtype)])
        mono = jnp.prod(x_ext[self.mono_index], axis=-1)
        vals = self.entry_coeff * mono[self.entry_mono]
        return jax.ops.segment_sum(vals, self.entry_term, num_segments=self.n_terms)


@functools.cache
def _coefficients(terms: tuple, dim: int) -> _Coefficients:
    monos: dict[tuple[int, ...], int] = {}
    ent_t, ent_m, ent_c = [], [], []
    for t, (_, poly) in enumerate(terms):
        for expo, c in poly:
            ent_t.append(t)
            ent_m.append(monos.setdefault(expo, len(monos)))
            ent_c.append(c)
    degree = max((sum(e) for e in monos), default=0)
    table = np.full((max(len(monos), 1), max(degree, 1)), dim, dtype=np.int32)
    for expo, row in monos.items():
        idx = _indices(expo)
        table[row, : len(idx)] = idx
    return _Coefficients(
        table,
        np.asarray(ent_t, np.int32),
        np.asarray(ent_m, np.int32),
        np.asarray(ent_c, np.float64),
        len(terms),
    )


def _nested_jvp(fn: Callable, x: jax.Array, dirs: jax.Array) -> jax.Array:
    """d^k fn(x) along the rows of dirs (k, dim), by k nested forward passes."""
    g = fn
    for v in dirs:
        g = functools.partial(lambda h, v, y: jax.jvp(h, (y,), (v,))[1], g, v)
    return g(x)


def _check_points(x: Any, dim: int, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"`{name}` must have shape (..., {dim}) (real coordinates x_0, p_0, ...), "
            f"got shape {tuple(x.shape)}"
        )
    if jnp.iscomplexobj(x):
        raise ValueError(f"`{name}` must be real, got dtype {x.dtype}")
    return x.astype(jnp.result_type(float))


def apply(pde: QPDE, Q_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """Evaluates the right-hand side (L Q)(x) = sum_m c_m(x) d^m Q(x) pointwise.

    Each derivative d^m Q is one nested forward-mode product along basis vectors.

    Args:
        pde: compiled PDE.
        Q_fn: maps one point, shape (2N,), to the scalar Q there. Pass an
            `equinox.Module` or `equinox.Partial` to avoid recompiling for new
            parameters.
        x: (..., 2N) points.

    Returns:
        (...,) values of (L Q)(x).

    Examples:
        >>> from qflow_jax.husimi import a, adag, coherent_q, compile_qpde
        >>> pde = compile_qpde(adag(0) @ a(0), [a(0)])
        >>> Q = coherent_q(jnp.array([1.0 + 0.5j]))
        >>> pde.apply(Q, jnp.zeros((3, 2))).shape
        (3,)
    """
    x = _check_points(x, pde.dim)
    flat = x.reshape(-1, pde.dim)
    return _apply(pde, Q_fn, flat).reshape(x.shape[:-1])


@eqx.filter_jit
def _apply(pde: QPDE, Q_fn: Callable, x: jax.Array) -> jax.Array:
    coeffs = _coefficients(pde.terms, pde.dim)
    idx = [_indices(d) for d, _ in pde.terms]
    eye = jnp.eye(pde.dim, dtype=x.dtype)

    def one(y):
        derivs = jnp.zeros(len(idx), y.dtype)
        for k in sorted({len(i) for i in idx}):
            rows = [t for t, i in enumerate(idx) if len(i) == k]
            dirs = eye[np.asarray([idx[t] for t in rows], dtype=np.int32)]
            vals = jax.vmap(lambda d: _nested_jvp(Q_fn, y, d))(dirs)
            derivs = derivs.at[np.asarray(rows)].set(vals)
        return jnp.dot(coeffs(y), derivs)

    return jax.vmap(one)(x)


class _LogPlan(eqx.Module):
    """Static recipe: which derivatives of log Q to compute and how to combine them."""

    groups: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]  # per tail length
    pairs: np.ndarray  # (n_pairs, 2) index pairs of the second-order entries
    bell: np.ndarray  # (n_terms, n_partitions, max_blocks) into (grad, higher, 1, 0)
    n_higher: int


@functools.cache
def _log_plan(terms: tuple, dim: int) -> _LogPlan:
    idx = [_indices(d) for d, _ in terms]
    parts = [_set_partitions(i) for i in idx]
    needed = sorted(
        {b for ps in parts for p in ps for b in p if len(b) >= 2},
        key=lambda b: (len(b), b),
    )
    pos = {(i,): i for i in range(dim)}
    pos.update({b: dim + r for r, b in enumerate(needed)})
    one, zero = dim + len(needed), dim + len(needed) + 1
    groups = []
    for k in sorted({len(b) for b in needed}):
        tails = sorted({b[1:] for b in needed if len(b) == k})
        tail_row = {t: r for r, t in enumerate(tails)}
        members = [b for b in needed if len(b) == k]
        groups.append(
            (
                np.asarray(tails, np.int32),
                np.asarray([tail_row[b[1:]] for b in members], np.int32),
                np.asarray([b[0] for b in members], np.int32),
            )
        )
    n_part = max(len(ps) for ps in parts) if parts else 1
    n_block = max([1, *(len(i) for i in idx)])
    bell = np.full((len(idx), n_part, n_block), one, np.int32)
    for t, ps in enumerate(parts):
        bell[t, len(ps) :, 0] = zero
        for r, p in enumerate(ps):
            bell[t, r, : len(p)] = [pos[b] for b in p]
    pairs = np.asarray([b for b in needed if len(b) == 2], np.int32).reshape(-1, 2)
    return _LogPlan(tuple(groups), pairs, bell, len(needed))


_ESTIMATORS = ("exact", "hutchinson")


def dlogq_dt(
    pde: QPDE,
    logq_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    *,
    trace_estimator: str = "exact",
    num_probes: int = 1,
    key: jax.Array | None = None,
) -> jax.Array:
    """Evaluates s(x) = d log Q/dt = (L Q)(x) / Q(x) from derivatives of f = log Q.

    With Q = exp(f), (d^m Q)/Q is a Bell polynomial in derivatives of f, so for a
    second-order PDE

        s = c_0 + sum_i c_i d_i f + sum_ij c_ij (d_ij f + d_i f d_j f),

    and third- and fourth-order terms add d_ijk f + 3 sym(d_ij f d_k f) + ... . Only
    the Hessian entries (and higher derivatives) that the PDE uses are computed, as
    components of nested forward-over-reverse products, so a diagonal diffusion costs
    2N Hessian-vector products.

    With `trace_estimator="hutchinson"` (second-order PDEs only) every needed Hessian
    entry d_ij f is replaced by the unbiased estimate
    mean_s (v_i (H v)_j + v_j (H v)_i) / 2
    over `num_probes` Rademacher vectors v per point, at a cost of `num_probes`
    Hessian-vector products per point whatever the dimension.

    Args:
        pde: compiled PDE.
        logq_fn: maps one point, shape (2N,), to log Q there. Pass an
            `equinox.Module` or `equinox.Partial` to avoid recompiling for new
            parameters.
        x: (..., 2N) points.
        trace_estimator: "exact" or "hutchinson".
        num_probes: probes per point for "hutchinson".
        key: PRNG key, required for "hutchinson".

    Returns:
        (...,) values of (L Q)/Q.

    Examples:
        >>> from qflow_jax.husimi import a, adag, compile_qpde
        >>> pde = compile_qpde(adag(0) @ a(0), [a(0)])
        >>> logq = lambda y: -jnp.sum(y**2) - jnp.log(jnp.pi)  # the vacuum: steady
        >>> print(np.abs(pde.dlogq_dt(logq, jnp.ones((4, 2)))).max() < 1e-12)
        True
    """
    x = _check_points(x, pde.dim)
    if trace_estimator not in _ESTIMATORS:
        raise ValueError(
            f"`trace_estimator` must be one of {_ESTIMATORS}, got {trace_estimator!r}"
        )
    flat = x.reshape(-1, pde.dim)
    if trace_estimator == "exact":
        out = _dlogq_exact(pde, logq_fn, flat)
    else:
        if pde.max_order > 2:
            raise ValueError(
                "`trace_estimator='hutchinson'` needs a PDE of order <= 2, this one "
                f"has order {pde.max_order}"
            )
        if isinstance(num_probes, bool) or not isinstance(num_probes, int):
            raise ValueError(
                f"`num_probes` must be a positive integer, got {num_probes!r}"
            )
        if num_probes < 1:
            raise ValueError(
                f"`num_probes` must be a positive integer, got {num_probes}"
            )
        if key is None:
            raise ValueError("`key` (a jax PRNG key) is required for 'hutchinson'")
        keys = jax.random.split(key, flat.shape[0])
        out = _dlogq_hutchinson(pde, logq_fn, flat, keys, num_probes)
    return out.reshape(x.shape[:-1])


def _combine(pde: QPDE, plan: _LogPlan, y, grad, higher) -> jax.Array:
    dvec = jnp.concatenate(
        [grad, higher, jnp.ones((1,), y.dtype), jnp.zeros((1,), y.dtype)]
    )
    bell = jnp.sum(jnp.prod(dvec[plan.bell], axis=-1), axis=-1)
    return jnp.dot(_coefficients(pde.terms, pde.dim)(y), bell)


@eqx.filter_jit
def _dlogq_exact(pde: QPDE, logq_fn: Callable, x: jax.Array) -> jax.Array:
    plan = _log_plan(pde.terms, pde.dim)
    grad_fn = jax.grad(logq_fn)
    eye = jnp.eye(pde.dim, dtype=x.dtype)

    def one(y):
        grad = grad_fn(y)
        higher = [jnp.zeros((0,), y.dtype)]
        for tails, rows, first in plan.groups:
            cols = jax.vmap(lambda d: _nested_jvp(grad_fn, y, d))(eye[tails])
            higher.append(cols[rows, first])
        return _combine(pde, plan, y, grad, jnp.concatenate(higher))

    return jax.vmap(one)(x)


@eqx.filter_jit
def _dlogq_hutchinson(
    pde: QPDE, logq_fn: Callable, x: jax.Array, keys: jax.Array, num_probes: int
) -> jax.Array:
    plan = _log_plan(pde.terms, pde.dim)
    grad_fn = jax.grad(logq_fn)
    i, j = plan.pairs[:, 0], plan.pairs[:, 1]

    def one(y, key):
        v = jax.random.rademacher(key, (num_probes, pde.dim), dtype=y.dtype)
        grad, hv = jax.vmap(lambda u: jax.jvp(grad_fn, (y,), (u,)))(v)
        est = 0.5 * jnp.mean(v[:, i] * hv[:, j] + v[:, j] * hv[:, i], axis=0)
        return _combine(pde, plan, y, grad[0], est)

    return jax.vmap(one)(x, keys)
