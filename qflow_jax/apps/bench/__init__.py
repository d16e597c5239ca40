"""The comparison suite: Q-Flow against grid solvers, PINNs and exact references
across dimensions, and the Lindblad engines against QuTiP and dynamiqs.

    qflow bench dims [--quick] [--out DIR] [--time-budget S] [--memory-budget GIB]

See `qflow_jax.apps.bench.suite` for the suite configs and outputs and
`qflow_jax.apps.bench.methods` for how every method is measured.
"""

from qflow_jax.apps.bench.methods import METHOD_KINDS, run_method
from qflow_jax.apps.bench.suite import load_suite, run_suite

__all__ = ["METHOD_KINDS", "load_suite", "run_method", "run_suite"]
