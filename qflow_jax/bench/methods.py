"""Deprecated: moved to `qflow_jax.apps.bench.methods`."""

from qflow_jax._deprecated import moved

__getattr__ = moved("qflow_jax.bench.methods", "qflow_jax.apps.bench.methods")
