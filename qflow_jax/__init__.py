"""qflow_jax: a JAX-accelerated, differentiable simulator of open quantum dynamics.

Importing the package enables 64-bit floats in JAX (`jax_enable_x64`), so that
complex128 inputs stay complex128; complex64 inputs still run in single precision.
"""

import jax

jax.config.update("jax_enable_x64", True)

from qflow_jax.lindblad import MESolveResult, mesolve  # noqa: E402
from qflow_jax.network import (  # noqa: E402
    NetworkResult,
    QubitNetwork,
    blended_lindbladian,
    blended_trajectory,
    k_sweep,
    laplacian_spectrum,
    network_mesolve,
    run_blended,
    solve_reduced,
)
from qflow_jax.operators import (  # noqa: E402
    basis,
    coherent,
    coherent_dm,
    create,
    destroy,
    expect,
    eye,
    fidelity,
    fock,
    fock_dm,
    ket2dm,
    number,
    ptrace,
    sigmam,
    sigmap,
    sigmax,
    sigmay,
    sigmaz,
    tensor,
    thermal_dm,
    trace_distance,
)

__version__ = "0.1.0"

__all__ = [
    "MESolveResult",
    "NetworkResult",
    "QubitNetwork",
    "blended_lindbladian",
    "blended_trajectory",
    "k_sweep",
    "laplacian_spectrum",
    "network_mesolve",
    "run_blended",
    "solve_reduced",
    "basis",
    "coherent",
    "coherent_dm",
    "create",
    "destroy",
    "expect",
    "eye",
    "fidelity",
    "fock",
    "fock_dm",
    "ket2dm",
    "mesolve",
    "number",
    "ptrace",
    "sigmam",
    "sigmap",
    "sigmax",
    "sigmay",
    "sigmaz",
    "tensor",
    "thermal_dm",
    "trace_distance",
]
