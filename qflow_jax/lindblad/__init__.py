"""Lindblad engine: dense master-equation solvers on diffrax."""

from qflow_jax.lindblad.mesolve import (
    MESOLVE_METHODS,
    MESolveResult,
    TruncationError,
    mesolve,
)

__all__ = ["MESOLVE_METHODS", "MESolveResult", "TruncationError", "mesolve"]
