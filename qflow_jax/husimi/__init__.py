"""Husimi Q function: boson operator algebra, Lindblad-to-PDE compiler, pointwise
kernels, Fock-basis Q, initial states and grid solvers."""

from qflow_jax.husimi.algebra import BosonOp, a, adag
from qflow_jax.husimi.compiler import QPDE, compile_qpde
from qflow_jax.husimi.grid import (
    Grid,
    GridSolution,
    added_diffusion,
    estimate_grid_memory,
    solve_fd,
    solve_grid,
    solve_spectral,
)
from qflow_jax.husimi.kernels import apply, dlogq_dt
from qflow_jax.husimi.states import (
    alpha_to_real,
    cat_q,
    coherent_q,
    fock_q,
    husimi_q,
    q_from_rho,
    real_to_alpha,
    thermal_q,
)

__all__ = [
    "QPDE",
    "BosonOp",
    "Grid",
    "GridSolution",
    "a",
    "adag",
    "alpha_to_real",
    "apply",
    "cat_q",
    "coherent_q",
    "compile_qpde",
    "dlogq_dt",
    "added_diffusion",
    "estimate_grid_memory",
    "fock_q",
    "husimi_q",
    "q_from_rho",
    "real_to_alpha",
    "solve_fd",
    "solve_grid",
    "solve_spectral",
    "thermal_q",
]
