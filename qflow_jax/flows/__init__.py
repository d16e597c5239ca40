"""Normalizing flows (Flax linen + distrax) for Husimi Q functions."""

from qflow_jax.flows.flow import NormalizingFlow, perturb_params

__all__ = ["NormalizingFlow", "perturb_params"]
