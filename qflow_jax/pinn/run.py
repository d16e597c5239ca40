"""Deprecated: the `qflow pinn` command moved to `qflow_jax.apps.pinn`."""

from qflow_jax._deprecated import moved

__getattr__ = moved("qflow_jax.pinn.run", "qflow_jax.apps.pinn")
