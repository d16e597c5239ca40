"""Deprecated: moved to `qflow_jax.apps.bench.suite`."""

from qflow_jax._deprecated import moved

__getattr__ = moved("qflow_jax.bench.suite", "qflow_jax.apps.bench.suite")
