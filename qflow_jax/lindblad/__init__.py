"""Lindblad engine: dense master-equation solvers on diffrax, and the
excitation-number-restricted basis of many bosonic modes."""

from qflow_jax.lindblad.enr import ENRBasis
from qflow_jax.lindblad.mesolve import (
    MESOLVE_METHODS,
    MESolveResult,
    TruncationError,
    mesolve,
)

__all__ = ["MESOLVE_METHODS", "ENRBasis", "MESolveResult", "TruncationError", "mesolve"]
