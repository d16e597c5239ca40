"""Physics-informed neural network (PINN) baseline for compiled Husimi-Q PDEs."""

from qflow_jax.pinn.network import ACTIVATIONS, ENVELOPES, LogQNet
from qflow_jax.pinn.train import PINNSettings, PINNSolution, pinn_residual, train_pinn

__all__ = [
    "ACTIVATIONS",
    "ENVELOPES",
    "LogQNet",
    "PINNSettings",
    "PINNSolution",
    "pinn_residual",
    "train_pinn",
]
