"""Qubit networks with diffusive (swap) coupling and their blended dynamics.

docs/physics.md, section 2: the model (`QubitNetwork`), its structured Lindbladian
(`NetworkVectorField`, `network_mesolve`), the closed reduced-state system
(`solve_reduced`), the blended dynamics and quantum Laplacian, diagnostics of
clustering and the k-sweep; the blended dynamics in the permutation-invariant
operators at any n (`qflow_jax.network.permutation`). The `qflow blended CONFIG`
command is `qflow_jax.apps.blended`.
"""

from qflow_jax._deprecated import moved
from qflow_jax.network.blended import (
    BlendedNetworkVectorField,
    blended_lindbladian,
    blended_network_mesolve,
    blended_superoperator,
    blended_trajectories,
    blended_trajectory,
    laplacian_spectrum,
    quantum_laplacian,
    symmetrize,
)
from qflow_jax.network.diagnostics import (
    bloch_vectors,
    component_averages,
    detect_clusters,
    first_order_correction,
    frobenius_distances,
    k_sweep,
    network_trajectories,
    orbit_sweep,
    trace_distances,
)
from qflow_jax.network.dicke import dicke_operators
from qflow_jax.network.model import (
    GRAPHS,
    NAMED_COUPLINGS,
    QubitNetwork,
    collective_couplings,
    coupling_matrix,
    graph_edges,
    swap_matrix,
)
from qflow_jax.network.permutation import (
    InvariantResult,
    InvariantVectorField,
    PermutationInvariantBasis,
    blended_invariant_mesolve,
    invariant_generator,
)
from qflow_jax.network.solve import (
    METHODS,
    NetworkMemoryEstimate,
    NetworkResult,
    ReducedResult,
    ReducedVectorField,
    network_memory_estimate,
    network_mesolve,
    product_state,
    solve_reduced,
    sweep_reduced_states,
)
from qflow_jax.network.vector_field import NetworkVectorField, partial_traces

__all__ = [
    "GRAPHS",
    "METHODS",
    "NAMED_COUPLINGS",
    "BlendedNetworkVectorField",
    "InvariantResult",
    "InvariantVectorField",
    "NetworkMemoryEstimate",
    "NetworkResult",
    "NetworkVectorField",
    "PermutationInvariantBasis",
    "QubitNetwork",
    "ReducedResult",
    "ReducedVectorField",
    "blended_invariant_mesolve",
    "blended_lindbladian",
    "blended_network_mesolve",
    "blended_superoperator",
    "blended_trajectories",
    "blended_trajectory",
    "bloch_vectors",
    "collective_couplings",
    "component_averages",
    "coupling_matrix",
    "detect_clusters",
    "dicke_operators",
    "first_order_correction",
    "frobenius_distances",
    "graph_edges",
    "invariant_generator",
    "k_sweep",
    "laplacian_spectrum",
    "network_memory_estimate",
    "network_mesolve",
    "network_trajectories",
    "orbit_sweep",
    "partial_traces",
    "product_state",
    "quantum_laplacian",
    "solve_reduced",
    "sweep_reduced_states",
    "swap_matrix",
    "symmetrize",
    "trace_distances",
]


_MOVED = ("BLENDED_SCHEMA", "build_network", "initial_states", "run_blended")


def __getattr__(name: str):
    if name in _MOVED:  # deprecated: the command's names moved to the app
        return moved("qflow_jax.network", "qflow_jax.apps.blended")(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
