"""Time evolution of normalizing flows through the Husimi PDE: `evolve` with the
`TDVP` or `EulerKL` method."""

import warnings as _warnings

from qflow_jax.evolution.euler_kl import (
    EulerKL,
    EulerKLSettings,
    euler_kl_evolve,
    euler_kl_step,
    evolve_euler_kl,
)
from qflow_jax.evolution.evolve import EvolutionMethod, evolve
from qflow_jax.evolution.observables import normalization, sample_observables
from qflow_jax.evolution.pretrain import PretrainSettings, pretrain
from qflow_jax.evolution.result import EvolutionResult
from qflow_jax.evolution.tdvp import (
    CG,
    LINEAR_SOLVERS,
    SNR,
    TDVP,
    Cholesky,
    Fisher,
    PInv,
    TDVPSettings,
    evolve_tdvp,
    tdvp_evolve,
    tdvp_residual,
    tdvp_theta_dot,
)

__all__ = [
    "CG",
    "LINEAR_SOLVERS",
    "SNR",
    "TDVP",
    "Cholesky",
    "EulerKL",
    "EulerKLSettings",
    "EvolutionMethod",
    "EvolutionResult",
    "Fisher",
    "PInv",
    "PretrainSettings",
    "TDVPSettings",
    "euler_kl_evolve",
    "euler_kl_step",
    "evolve",
    "evolve_euler_kl",
    "evolve_tdvp",
    "normalization",
    "pretrain",
    "sample_observables",
    "tdvp_evolve",
    "tdvp_residual",
    "tdvp_theta_dot",
]


def __getattr__(name: str):
    if name == "RK4":
        _warnings.warn(
            "qflow_jax.evolution.RK4 is deprecated; the diffrax solver is "
            "qflow_jax.core.methods.RK4Solver, the method qflow_jax.RK4(dt)",
            DeprecationWarning,
            stacklevel=2,
        )
        from qflow_jax.core.methods import RK4Solver

        return RK4Solver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
