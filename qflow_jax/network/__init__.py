"""Qubit networks with diffusive (swap) coupling and their blended dynamics."""

from qflow_jax.network.model import (
    GRAPHS,
    NAMED_COUPLINGS,
    QubitNetwork,
    collective_couplings,
    coupling_matrix,
    graph_edges,
    swap_matrix,
)
from qflow_jax.network.solve import (
    METHODS,
    NetworkResult,
    ReducedResult,
    ReducedVectorField,
    network_mesolve,
    product_state,
    solve_reduced,
)
from qflow_jax.network.vector_field import NetworkVectorField, partial_traces
