"""Deprecated: the `qflow run` command moved to `qflow_jax.apps.run`."""

from qflow_jax._deprecated import moved

__getattr__ = moved(
    "qflow_jax.evolution.run",
    "qflow_jax.apps.run",
    {
        "parse_operator": "qflow_jax.husimi.expressions",
        "METRIC_DEFINITIONS": "qflow_jax.metrics",
        "MarginalGrid": "qflow_jax.metrics",
        "compare_marginal": "qflow_jax.metrics",
        "n_errors": "qflow_jax.metrics",
    },
)
