"""Lindblad engine: dense master-equation solvers on diffrax."""

from qflow_jax.lindblad.mesolve import SOLVERS, MESolveResult, mesolve

__all__ = ["SOLVERS", "MESolveResult", "mesolve"]
