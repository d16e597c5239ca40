"""Deprecated: the `qflow lindblad` command moved to `qflow_jax.apps.lindblad`."""

from qflow_jax._deprecated import moved

__getattr__ = moved("qflow_jax.lindblad.run", "qflow_jax.apps.lindblad")
