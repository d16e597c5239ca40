"""Deprecated: the `qflow blended` command moved to `qflow_jax.apps.blended`."""

from qflow_jax._deprecated import moved

__getattr__ = moved("qflow_jax.network.run", "qflow_jax.apps.blended")
