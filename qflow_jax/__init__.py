"""qflow_jax: a JAX-accelerated, differentiable simulator of open quantum dynamics.

Every solver follows one convention: the generator, the initial state and the save
times first (`mesolve(H, jump_ops, rho0, tsave)`, `network_mesolve(network, rho0,
tsave)`, `solve_grid(pde, Q0, tsave, grid=...)`, `evolve(pde, flow, params, tsave,
method=qf.TDVP(), key=...)`); then `method=` (a method object such as
`qf.Tsit5(rtol=1e-8)` or `qf.TDVP(qgt="sample")`, or its name); then the shared
options (`rtol`, `atol`, `max_steps`, `exp_ops`, `save_states`); then
engine-specific ones. Every result is a `SolveResult`
(equinox Module) with `tsave`, `states`, `expects`, `final_state`, `stats`, `method`.

Precision: importing the package enables 64-bit floats in JAX
(`jax_enable_x64`), as quantum dynamics to QuTiP's accuracy needs; complex64 inputs
still run in single precision. To leave JAX's default (32-bit) untouched, set the
environment variable `QFLOW_JAX_X64=0` before the import; `qf.set_precision("single")`
or `qf.set_precision("double")` switches at any time.

Every name is imported on first use, so `import qflow_jax` (and the `qflow` command's
`--help`) does not import JAX; 64-bit floats are switched on through JAX's
`JAX_ENABLE_X64` variable when JAX is not imported yet (child processes inherit it),
through `jax.config` when it is.
"""

import importlib
import os
import sys
import warnings

__version__ = "0.1.0"


def set_precision(precision: str) -> None:
    """Sets JAX's float width for the whole process: "double" (jax_enable_x64,
    the package's default at import) or "single" (JAX's own default).

    Examples:
        >>> import qflow_jax as qf
        >>> qf.set_precision("double")
    """
    if precision not in ("single", "double"):
        raise ValueError(f"`precision` must be 'single' or 'double', got {precision!r}")
    import jax

    jax.config.update("jax_enable_x64", precision == "double")


if os.environ.get("QFLOW_JAX_X64", "1").strip().lower() not in ("0", "false", "no"):
    if "jax" in sys.modules:
        set_precision("double")
    else:  # read by JAX when it is imported
        os.environ["JAX_ENABLE_X64"] = "1"

# every public name -> the module that defines it (imported on first use)
_MODULES = {
    "qflow_jax.core.methods": (
        "RK4 Auto Dopri5 Dopri8 Euler Heun KenCarp4 KenCarp5 Kvaerno3 Kvaerno5 "
        "Lawson Solver Tsit5 method_from"
    ),
    "qflow_jax.core.memory": "InsufficientMemoryError",
    "qflow_jax.core.result": "SolveResult",
    "qflow_jax.core.timeops": "constant modulated timecallable",
    "qflow_jax.husimi": "QPDE Grid GridSolution compile_qpde husimi_q solve_grid",
    "qflow_jax.lindblad": (
        "ENRBasis MCSolveResult MESolveResult TruncationError mcsolve mesolve"
    ),
    "qflow_jax.network": (
        "NetworkResult PermutationInvariantBasis QubitNetwork ReducedResult "
        "blended_invariant_mesolve blended_lindbladian blended_network_mesolve "
        "blended_trajectory k_sweep laplacian_spectrum network_memory_estimate "
        "network_mesolve solve_reduced"
    ),
    "qflow_jax.operators": (
        "basis coherent coherent_dm create destroy expect eye fidelity fock fock_dm "
        "ket2dm number ptrace sigmam sigmap sigmax sigmay sigmaz tensor thermal_dm "
        "trace_distance"
    ),
    "qflow_jax.flows": "NormalizingFlow",
    "qflow_jax.evolution": (
        "EulerKL EulerKLSettings EvolutionResult TDVP TDVPSettings evolve "
        "evolve_euler_kl evolve_tdvp"
    ),
    "qflow_jax.pinn": "PINNSettings PINNSolution train_pinn",
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names.split()}
_DEPRECATED = {"run_blended": "qflow_jax.apps.blended"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _DEPRECATED:
        warnings.warn(
            f"qflow_jax.{name} is deprecated (a command-line runner); import it from "
            f"{_DEPRECATED[name]}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_DEPRECATED[name]), name)
    raise AttributeError(f"module 'qflow_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    # solvers
    "mesolve",
    "mcsolve",
    "network_mesolve",
    "solve_reduced",
    "blended_network_mesolve",
    "blended_invariant_mesolve",
    "solve_grid",
    "evolve",
    "evolve_tdvp",
    "evolve_euler_kl",
    "train_pinn",
    # results
    "SolveResult",
    "MESolveResult",
    "MCSolveResult",
    "TruncationError",
    "InsufficientMemoryError",
    "NetworkResult",
    "ReducedResult",
    "GridSolution",
    "EvolutionResult",
    "PINNSolution",
    # methods
    "Auto",
    "Dopri5",
    "Dopri8",
    "Euler",
    "Heun",
    "KenCarp4",
    "KenCarp5",
    "Kvaerno3",
    "Kvaerno5",
    "Lawson",
    "RK4",
    "Solver",
    "Tsit5",
    "TDVP",
    "EulerKL",
    "method_from",
    # time-dependent operators
    "constant",
    "modulated",
    "timecallable",
    # models and settings
    "QPDE",
    "Grid",
    "QubitNetwork",
    "NormalizingFlow",
    "TDVPSettings",
    "EulerKLSettings",
    "PINNSettings",
    "compile_qpde",
    "husimi_q",
    # qubit networks
    "PermutationInvariantBasis",
    "blended_lindbladian",
    "blended_trajectory",
    "k_sweep",
    "laplacian_spectrum",
    "network_memory_estimate",
    # operators and states
    "basis",
    "ENRBasis",
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
    "set_precision",
]
