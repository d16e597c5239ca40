"""Lawson (integrating-factor) Runge-Kutta solvers for diffrax.

For dy/dt = Lambda y + N(t, y) with a linear part whose flow exp(Lambda s) is exact
and cheap, each step from t0 integrates v(s) = exp(-Lambda (s - t0)) y(s),

    dv/ds = exp(-Lambda (s - t0)) N(s, exp(Lambda (s - t0)) v),

with an explicit Runge-Kutta method, then maps back: y(t1) = exp(Lambda h) v(t1).
Stiffness that lives in Lambda (large detunings and Kerr energies, fast decay of
highly excited levels) no longer limits the step; the frame restarts at every step,
so exp(-Lambda s) never grows beyond one step. Error estimates, dense output, step
control and adjoints all stay diffrax's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import diffrax as dfx
import jax
import jax.numpy as jnp

from qflow_jax.lindblad.vector_field import LindbladVectorField, to_complex, to_real

__all__ = ["LawsonSolver"]


def _vector_field(terms: Any) -> LindbladVectorField:
    while hasattr(terms, "term"):  # diffeqsolve wraps terms (for the direction)
        terms = terms.term
    vf = getattr(terms, "vector_field", None)
    if not isinstance(vf, LindbladVectorField):
        raise TypeError("Lawson solvers need an ODETerm of a LindbladVectorField")
    return vf


class _LawsonInterpolation(dfx.AbstractLocalInterpolation):
    t0: jax.Array
    t1: jax.Array
    inner: dfx.AbstractLocalInterpolation
    diag: jax.Array

    def evaluate(self, t0, t1=None, left=True):
        if t1 is not None:
            return self.evaluate(t1) - self.evaluate(t0)
        v = self.inner.evaluate(t0)
        p = jnp.exp(-1j * self.diag * (t0 - self.t0))
        return to_real(p[:, None] * to_complex(v) * jnp.conj(p)[None, :])


class LawsonSolver(dfx.AbstractAdaptiveSolver):
    """Wraps an explicit Runge-Kutta solver (Tsit5, Dopri5, Dopri8) into its
    integrating-factor form for a `LindbladVectorField`.

    Examples:
        >>> import diffrax
        >>> solver = LawsonSolver(diffrax.Tsit5())  # mesolve's "lawson-tsit5"
    """

    solver: dfx.AbstractRungeKutta
    term_structure: ClassVar = dfx.AbstractTerm

    @property
    def interpolation_cls(self) -> Callable[..., dfx.AbstractLocalInterpolation]:
        inner_cls = self.solver.interpolation_cls

        def make(*, t0, t1, diag, **info):
            return _LawsonInterpolation(t0, t1, inner_cls(t0=t0, t1=t1, **info), diag)

        return make

    def order(self, terms):
        return self.solver.order(terms)

    def _inner_term(self, vf: LindbladVectorField, t0: jax.Array) -> dfx.ODETerm:
        def g(s, v, args):
            rho = to_complex(vf.linear_flow(s - t0, v))
            return vf.linear_flow(t0 - s, to_real(vf.remainder(s, rho)))

        return dfx.ODETerm(g)

    def init(self, terms, t0, t1, y0, args):
        vf = _vector_field(terms)
        return self.solver.init(self._inner_term(vf, t0), t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        vf = _vector_field(terms)
        v1, v_err, info, state, result = self.solver.step(
            self._inner_term(vf, t0), t0, t1, y0, args, solver_state, made_jump
        )
        h = t1 - t0
        y1 = vf.linear_flow(h, v1)
        y_err = None if v_err is None else vf.linear_flow(h, v_err)
        # The FSAL stage g(t1, v1) seen from the next frame (origin t1) is
        # exp(Lambda h) g(t1, v1).
        if state is not None:
            first_step, f1 = state
            state = (first_step, vf.linear_flow(h, f1))
        diag = vf.diag
        if diag is None:
            diag = jnp.zeros(y0.shape[-1], jnp.result_type(y0.dtype, jnp.complex64))
        return y1, y_err, dict(info, diag=diag), state, result

    def func(self, terms, t0, y0, args):
        return _vector_field(terms)(t0, y0, args)
