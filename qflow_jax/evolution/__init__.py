"""Time evolution of normalizing flows through the Husimi PDE: Euler-KL and TDVP."""

from qflow_jax.evolution.euler_kl import EulerKLSettings, euler_kl_evolve, euler_kl_step
from qflow_jax.evolution.observables import normalization, sample_observables
from qflow_jax.evolution.pretrain import PretrainSettings, pretrain
from qflow_jax.evolution.tdvp import (
    LINEAR_SOLVERS,
    RK4,
    TDVPSettings,
    tdvp_evolve,
    tdvp_theta_dot,
)

__all__ = [
    "LINEAR_SOLVERS",
    "RK4",
    "EulerKLSettings",
    "PretrainSettings",
    "TDVPSettings",
    "euler_kl_evolve",
    "euler_kl_step",
    "normalization",
    "pretrain",
    "sample_observables",
    "tdvp_evolve",
    "tdvp_theta_dot",
]
