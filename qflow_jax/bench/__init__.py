"""Deprecated: the comparison suite (`qflow bench`) moved to `qflow_jax.apps.bench`."""

from qflow_jax._deprecated import moved

__getattr__ = moved("qflow_jax.bench", "qflow_jax.apps.bench")
