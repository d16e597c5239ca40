"""References for phase-space methods: what a Q-Flow, grid or PINN solution of a
bosonic model is compared with.

A `Reference` holds the model's compiled Husimi PDE and, at the save times, the
reference <n_j>(t), <a_j>(t) and the single-mode Q marginals:

- `ExactDampedChain`: damped modes on a chain from a coherent product, whose exact
  solution stays a coherent product (`DampedChain.alpha`); exact samples, so also
  the full KL of a model density.
- `FockReference`: any model written in the boson algebra, solved by the Lindblad
  engine (`mesolve`) in a truncated Fock basis built from the same operators; the
  solve refuses (`TruncationError`) when the highest level of a mode holds more
  than `max_top_population`.

Examples:
    >>> from qflow_jax.husimi import a, adag
    >>> from qflow_jax.husimi.initial import CoherentState
    >>> from qflow_jax.husimi.models import DampedChain
    >>> tsave = np.linspace(0.0, 1.0, 3)
    >>> exact = ExactDampedChain(DampedChain(1, 1.0, 0.5), CoherentState([1.0]), tsave)
    >>> ref = FockReference(adag(0) @ a(0), [np.sqrt(0.5) * a(0)], CoherentState([1.0]),
    ...                     tsave, cutoff=12)
    >>> bool(np.allclose(ref.n_ref, exact.n_ref, atol=1e-7))  # <n> = e^{-gamma t}
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.husimi.algebra import BosonOp
from qflow_jax.husimi.compiler import QPDE, compile_qpde
from qflow_jax.husimi.initial import CoherentState, InitialState
from qflow_jax.husimi.models import DampedChain
from qflow_jax.husimi.states import husimi_q
from qflow_jax.lindblad.mesolve import mesolve
from qflow_jax.operators import ptrace

__all__ = ["ExactDampedChain", "FockReference", "Reference"]


class Reference:
    """What a phase-space solution is compared with, at the save times `tsave`.

    Attributes:
        n_modes: number of modes N.
        pde: the compiled Husimi PDE of the model.
        tsave: (nt,) save times.
        n_ref: (nt, N) reference <n_j>.
        a_ref: (nt, N) reference <a_j> (complex).
        description: what the reference is, in words.
        info: what its computation measured (time, steps, truncation).
    """

    n_modes: int
    pde: QPDE
    tsave: np.ndarray
    n_ref: np.ndarray
    a_ref: np.ndarray
    description: str
    info: dict[str, Any]

    def q_marginal(self, i: int, mode: int, alphas: Any) -> np.ndarray:
        """Reference Q marginal of `mode` at save time `tsave[i]` at complex points."""
        raise NotImplementedError

    def kl_exact(self, i: int, log_q: Callable, key: jax.Array, n: int) -> float | None:
        """KL(Q || q) over all 2N coordinates at `tsave[i]` from n exact samples,
        where the reference has them (else None)."""
        return None


class ExactDampedChain(Reference):
    """The exact solution of `chain` from the coherent product `initial`."""

    def __init__(self, chain: DampedChain, initial: CoherentState, tsave: Any):
        if not isinstance(initial, CoherentState):
            raise TypeError(
                "`initial` must be a CoherentState (the exact solution is a coherent "
                f"product), got {type(initial).__name__}"
            )
        if initial.n_modes != chain.n_modes:
            raise ValueError(
                f"`initial` has {initial.n_modes} modes, the chain {chain.n_modes}"
            )
        self.chain, self.alpha0 = chain, initial.alpha
        self.n_modes, self.pde = chain.n_modes, chain.pde()
        self.tsave = np.asarray(tsave, float)
        self.a_ref = np.stack([chain.alpha(t, self.alpha0) for t in self.tsave])
        self.n_ref = np.abs(self.a_ref) ** 2
        self.description = "exact coherent-product solution"
        self.info = {}

    def q_marginal(self, i: int, mode: int, alphas: Any) -> np.ndarray:
        return np.exp(-(np.abs(np.asarray(alphas) - self.a_ref[i, mode]) ** 2)) / np.pi

    def kl_exact(self, i: int, log_q: Callable, key: jax.Array, n: int) -> float:
        exact = CoherentState(self.a_ref[i])
        y = exact.sample(key, n)
        return float(_mean_log_ratio(exact.log_q(y), log_q, y))


@eqx.filter_jit
def _mean_log_ratio(log_p: jax.Array, log_q: Callable, y: jax.Array) -> jax.Array:
    """E_y[log p(y) - log q(y)] from log p at y, compiled (a log_q that is a
    pytree, such as `eqx.Partial`, compiles once for all its parameter values)."""
    return jnp.mean(log_p - log_q(y))


class FockReference(Reference):
    """The Lindblad equation of H and `jump_ops` solved by `mesolve` in the Fock
    basis truncated at `cutoff` levels per mode, from `initial`.

    Raises:
        TruncationError: when the highest level of a mode holds more than
            `max_top_population` at a save time (the initial state included).
    """

    def __init__(
        self,
        H: BosonOp,
        jump_ops: Sequence[BosonOp],
        initial: InitialState,
        tsave: Any,
        *,
        cutoff: int,
        rtol: float = 1e-8,
        atol: float = 1e-10,
        max_top_population: float = 1e-4,
    ):
        N = initial.n_modes
        self.n_modes, self.pde = N, compile_qpde(H, list(jump_ops), n_modes=N)
        self.tsave = np.asarray(tsave, float)
        dims = [cutoff] * N
        started = time.perf_counter()
        res = mesolve(
            H.to_matrix(dims),
            [L.to_matrix(dims) for L in jump_ops],
            initial.density_matrix(cutoff).astype(jnp.complex128),
            jnp.asarray(self.tsave),
            rtol=rtol,
            atol=atol,
            fock_dims=dims,
            max_top_population=max_top_population,
        )
        states = res.states
        reduced = (
            states[:, None]
            if N == 1
            else jnp.stack([ptrace(states, j, dims) for j in range(N)], 1)
        )  # (nt, N, c, c)
        diag = jnp.real(jnp.diagonal(reduced, axis1=-2, axis2=-1))
        lower = jnp.diag(jnp.sqrt(jnp.arange(1.0, cutoff)), 1)
        self.n_ref = np.asarray(diag @ jnp.arange(cutoff, dtype=float))
        self.a_ref = np.asarray(jnp.einsum("tjmn,nm->tj", reduced, lower))
        self.reduced = reduced
        self.description = (
            f"mesolve in the Fock basis, {cutoff} levels per mode (D = {cutoff**N}), "
            f"rtol {rtol:g}, atol {atol:g}"
        )
        self.info = {
            "cutoff": cutoff,
            "dimension": cutoff**N,
            "solve_s": time.perf_counter() - started,
            "mesolve_steps": int(res.stats["num_steps"]),
            "max_top_population": float(np.max(np.asarray(res.top_population))),
            "max_trace_error": float(
                np.max(np.abs(np.asarray(jnp.trace(states, axis1=-2, axis2=-1)) - 1))
            ),
        }

    def q_marginal(self, i: int, mode: int, alphas: Any) -> np.ndarray:
        return np.asarray(
            husimi_q(self.reduced[i, mode], jnp.asarray(alphas)[..., None])
        )
