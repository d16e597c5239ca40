"""Normalizing flows (Flax linen + distrax) for Husimi Q functions."""

from qflow_jax.flows.flow import NormalizingFlow

__all__ = ["NormalizingFlow"]
