"""Lindblad engine: master-equation solvers on diffrax (`mesolve` for the density
matrix, `mcsolve` for quantum trajectories), and the excitation-number-restricted
basis of many bosonic modes."""

from qflow_jax.lindblad.enr import ENRBasis
from qflow_jax.lindblad.mcsolve import MCSolveResult, mcsolve
from qflow_jax.lindblad.mesolve import (
    MESOLVE_METHODS,
    MESolveResult,
    TruncationError,
    mesolve,
)

__all__ = [
    "MESOLVE_METHODS",
    "ENRBasis",
    "MCSolveResult",
    "MESolveResult",
    "TruncationError",
    "mcsolve",
    "mesolve",
]
