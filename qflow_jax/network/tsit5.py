"""Tsitouras 5(4) with its stages as straight-line code, for permutation-heavy fields.

`diffrax.Tsit5` loops over its stages and keeps them in a (7, *y.shape) buffer: every
stage input is a dot over all 7 slots and every step writes the whole buffer. On the
network engine at n = 8 diffrax's own work was 4.3 ms per step next to 5.5 ms for
the six right-hand sides (`benchmarks/network.py`, `solver_s`). Unrolling the stages
removes the buffer, but then XLA:CPU fuses each stage's elementwise sum into the next
right-hand side's permuted reads and recomputes every earlier stage per read: the
cost grows exponentially with the stage count (90 ms instead of 6 ms per step at
n = 8). `lax.optimization_barrier` does not stop this on CPU (XLA removes it before
fusion), so every stage input and every stage derivative is computed inside a
`lax.cond` on a runtime predicate (dt is not NaN), which XLA neither fuses across
nor folds. The right-hand side itself stays outside the cond (compiled inside a
branch it runs 2x slower). Under `jax.vmap` a cond becomes a select: results stay
exact, the materialization is lost (the package's sweeps map sequentially,
`parallel.map_batch`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["UnrolledTsit5"]

_TABLEAU = dfx.Tsit5.tableau
# the last stage is evaluated at the new solution (first same as last)
assert np.allclose(_TABLEAU.a_lower[-1], _TABLEAU.b_sol[:-1])


def _materialized(pred: jax.Array, fn, like: jax.Array) -> jax.Array:
    """fn() written to its own buffer; NaN where `pred` is false (dt is NaN)."""
    return jax.lax.cond(pred, fn, lambda: jnp.full_like(like, jnp.nan))


class _Dense(dfx.AbstractLocalInterpolation):
    """The Tsit5 interpolant on one step, with the stage derivatives as a tuple."""

    t0: Any
    t1: Any
    y0: jax.Array
    fs: tuple[jax.Array, ...]

    def __init__(self, *, t0, t1, y0, y1, fs):
        del y1  # part of the interpolation API
        self.t0, self.t1, self.y0, self.fs = t0, t1, y0, fs

    def evaluate(self, t0, t1=None, left: bool = True) -> jax.Array:
        del left
        if t1 is not None:
            return self.evaluate(t1) - self.evaluate(t0)
        # the 7 dense-output weights b_i(theta): the Tsit5 interpolant of unit stages
        unit = dfx.Tsit5.interpolation_cls(
            t0=self.t0, t1=self.t1, y0=jnp.zeros(7), y1=None, k=jnp.eye(7)
        )
        b = unit.evaluate(t0) * (self.t1 - self.t0)
        out = self.y0
        for i, f in enumerate(self.fs):
            out = out + b[i].astype(f.dtype) * f
        return out


class UnrolledTsit5(dfx.AbstractAdaptiveSolver):
    """`diffrax.Tsit5` (same tableau, error estimate, FSAL and dense output) with the
    stages unrolled and each materialized once: for single-array states whose vector
    field reads the state at many permuted positions (`NetworkVectorField`).

    Examples:
        >>> import qflow_jax as qf
        >>> net = qf.QubitNetwork(2, "path", k=1.0)
        >>> res = qf.network_mesolve(net, [qf.fock_dm(2, 0)] * 2, [0.0, 1.0],
        ...                          method=UnrolledTsit5())
    """

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar = _Dense
    # right-hand sides per attempted step (the seventh stage is the next first)
    rhs_per_step: ClassVar[int] = 6

    def order(self, terms) -> int:
        return 5

    def init(self, terms, t0, t1, y0, args):
        return terms.vf(t0, y0, args)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        dt = jnp.asarray(t1 - t0)
        ok = dt == dt
        f0 = jax.lax.cond(
            made_jump, lambda: terms.vf(t0, y0, args), lambda: solver_state
        )
        fs = [f0]  # a cond output or the loop-carried FSAL value: its own buffer
        for a, c in zip(_TABLEAU.a_lower, _TABLEAU.c, strict=True):

            def stage_input(a=a, fs=tuple(fs)):
                incr = sum(float(aj) * fj for aj, fj in zip(a, fs, strict=True))
                return y0 + dt.astype(y0.dtype) * incr

            y = _materialized(ok, stage_input, y0)
            f = terms.vf(t0 + float(c) * dt, y, args)
            fs.append(_materialized(ok, lambda f=f: f, y0))
        err = sum(float(b) * f for b, f in zip(_TABLEAU.b_error, fs, strict=True))
        dense = dict(y0=y0, y1=y, fs=tuple(fs))
        return y, dt * err, dense, fs[-1], dfx.RESULTS.successful
