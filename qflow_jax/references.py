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
- `TrajectoryReference`: the same models where the density matrix does not fit:
  quantum trajectories (`mcsolve`) in the excitation-number-restricted basis
  (`ENRBasis`), whose <n_j> and <a_j> carry standard errors.

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

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.husimi.algebra import BosonOp
from qflow_jax.husimi.compiler import QPDE, compile_qpde
from qflow_jax.husimi.initial import CoherentState, FockState, InitialState
from qflow_jax.husimi.models import DampedChain
from qflow_jax.husimi.states import husimi_q
from qflow_jax.lindblad.enr import ENRBasis
from qflow_jax.lindblad.mcsolve import mcsolve
from qflow_jax.lindblad.mesolve import mesolve
from qflow_jax.operators import ptrace

__all__ = ["ExactDampedChain", "FockReference", "Reference", "TrajectoryReference"]


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

    def _set_model(
        self, H: BosonOp, jump_ops: Sequence[BosonOp], N: int, tsave: Any
    ) -> None:
        """n_modes, the compiled Q-PDE and tsave of a model given by its operators."""
        self.n_modes, self.pde = N, compile_qpde(H, list(jump_ops), n_modes=N)
        self.tsave = np.asarray(tsave, float)

    def kl_exact(self, i: int, log_q: Callable, key: jax.Array, n: int) -> float | None:
        """KL(Q || q) over all 2N coordinates at `tsave[i]` from n exact samples,
        where the reference has them (else None)."""
        return None

    def kl_flow(self, i: int, x: Any, log_q: Any) -> tuple[float, float] | None:
        """KL(q || Q) over all 2N coordinates at `tsave[i]` from samples x (M, 2N)
        of the flow q with their log q (M,), and its standard error, where the
        reference can evaluate Q at any point (else None)."""
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


def _mode_q(rho: Any, alphas: Any) -> np.ndarray:
    """Q of a one-mode density matrix at complex points."""
    return np.asarray(husimi_q(rho, jnp.asarray(alphas)[..., None]))


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
        self._set_model(H, jump_ops, N, tsave)
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
        return _mode_q(self.reduced[i, mode], alphas)


class TrajectoryReference(Reference):
    """The Lindblad equation of H and `jump_ops` unravelled into `ntraj` quantum
    trajectories (`mcsolve`) in the basis of at most `max_excitations` quanta
    (`ENRBasis`), from a coherent or Fock product `initial`.

    H keeps or lowers the total number of quanta for the models of this project
    (hopping, Kerr, loss), so the only truncation is that of the initial state:
    its weight outside the basis, `info["truncated_weight"]` (the Poisson tail of a
    coherent start), is refused above `max_truncated_weight`.

    Attributes (besides `Reference`'s):
        n_stderr: (nt, N) standard errors of `n_ref`.
        a_stderr: (nt, N) standard errors of `a_ref`.
        marginal_modes: the modes whose reduced states (hence Q marginals) were
            averaged.

    With `cache` (a file path) the solved reference is written there, tagged with
    its inputs, and a later reference of the same inputs reads it instead of
    solving again (`info["cached"]`): a resumed `qflow run` keeps its reference.

    With `keep_final_states` the trajectories' kets at tsave[-1] are kept
    (ntraj x D values, not cached): `kl_flow` then estimates KL(q || Q) there,
    with Q(alpha) = pi^-N mean_i |<alpha|psi_i>|^2 at the flow's samples
    (`ENRBasis.husimi_q`).

    With `progress` the solve shows mcsolve's progress bar over trajectories (a
    10-site reference of 500 trajectories runs for over half an hour on 2 CPU
    cores).

    Raises:
        TypeError: an initial state that is not a coherent or Fock product.
        ValueError: a truncated weight above `max_truncated_weight`.

    Examples:
        >>> from qflow_jax.husimi import a, adag
        >>> tsave = np.linspace(0.0, 1.0, 3)
        >>> ref = TrajectoryReference(
        ...     adag(0) @ a(0), [a(0)], FockState([2]), tsave, max_excitations=2,
        ...     ntraj=400, key=jax.random.key(0))
        >>> exact = 2 * np.exp(-tsave)  # <n> of Fock |2> under loss
        >>> dev = np.abs(ref.n_ref[:, 0] - exact)
        >>> bool(np.all(dev <= 4 * ref.n_stderr[:, 0] + 1e-9))
        True
    """

    def __init__(
        self,
        H: BosonOp,
        jump_ops: Sequence[BosonOp],
        initial: InitialState,
        tsave: Any,
        *,
        max_excitations: int,
        ntraj: int,
        key: jax.Array,
        marginal_modes: Sequence[int] = (0,),
        rtol: float = 1e-6,
        atol: float = 1e-8,
        max_truncated_weight: float = 1e-4,
        cache: str | Path | None = None,
        keep_final_states: bool = False,
        progress: bool = False,
    ):
        N = initial.n_modes
        self._set_model(H, jump_ops, N, tsave)
        basis = ENRBasis(N, max_excitations)
        if isinstance(initial, CoherentState):
            psi0, lost = basis.coherent_product(initial.alpha)
        elif isinstance(initial, FockState):
            if int(np.sum(initial.n)) > max_excitations:
                raise ValueError(
                    f"`max_excitations` ({max_excitations}) is below the "
                    f"{int(np.sum(initial.n))} quanta of the initial Fock state"
                )
            psi0, lost = basis.fock_state(initial.n), 0.0
        else:
            raise TypeError(
                "`initial` must be a CoherentState or FockState (a pure product "
                f"state), got {type(initial).__name__}"
            )
        if lost > max_truncated_weight:
            raise ValueError(
                f"the basis of at most {max_excitations} quanta leaves out "
                f"{lost:.3g} of the initial state (allowed: max_truncated_weight = "
                f"{max_truncated_weight:g}); raise `max_excitations`"
            )
        self.marginal_modes = tuple(int(m) for m in marginal_modes)
        ident = repr(
            (
                sorted(H.terms.items()),
                [sorted(L.terms.items()) for L in jump_ops],
                repr(initial),
                self.tsave.tolist(),
                max_excitations,
                ntraj,
                np.asarray(jax.random.key_data(key)).tolist(),
                self.marginal_modes,
                rtol,
                atol,
            )
        )
        self._basis, self.final_kets = basis, None
        if (
            cache is not None
            and not keep_final_states
            and self._load(Path(cache), ident)
        ):
            return
        exp_ops = [basis.number(j) for j in range(N)]
        exp_ops += [basis.destroy(j) for j in range(N)]
        modes = self.marginal_modes

        def reduced(t, psi):
            return jnp.stack([basis.reduced_density_matrix(psi, m) for m in modes])

        started = time.perf_counter()
        res = mcsolve(
            basis.operator(H),
            [basis.operator(L) for L in jump_ops],
            psi0,
            jnp.asarray(self.tsave),
            key=key,
            ntraj=ntraj,
            exp_ops=exp_ops,
            e_fn=reduced,
            rtol=rtol,
            atol=atol,
            progress=progress,
        )
        expects = np.asarray(res.expects).T  # (nt, 2N)
        stderr = np.asarray(res.expects_stderr).T
        self.n_ref, self.n_stderr = expects[:, :N].real, stderr[:, :N]
        self.a_ref, self.a_stderr = expects[:, N:], stderr[:, N:]
        self.reduced = np.asarray(res.e_fn_values)  # (nt, len(modes), c, c)
        if keep_final_states:
            self.final_kets = res.final_state[..., 0]  # (ntraj, D)
        self.description = (
            f"mcsolve, {ntraj} trajectories in the basis of at most "
            f"{max_excitations} quanta (D = {basis.dim}), rtol {rtol:g}, atol {atol:g}"
        )
        self.info = {
            "max_excitations": max_excitations,
            "dimension": basis.dim,
            "ntraj": ntraj,
            "truncated_weight": float(lost),
            "solve_s": time.perf_counter() - started,
            "mean_jumps": float(np.mean(np.asarray(res.num_jumps))),
            "max_n_stderr": float(np.max(self.n_stderr)),
        }
        if cache is not None:
            self._save(Path(cache), ident)

    _ARRAYS = ("n_ref", "n_stderr", "a_ref", "a_stderr", "reduced")

    def _save(self, path: Path, ident: str) -> None:
        """Writes the solved reference to `path` (atomically: a temporary, then a
        rename), tagged with its inputs."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            ident=np.asarray(ident),
            info=np.asarray(json.dumps(self.info)),
            description=np.asarray(self.description),
            **{name: getattr(self, name) for name in self._ARRAYS},
        )
        os.replace(tmp, path)

    def _load(self, path: Path, ident: str) -> bool:
        """Reads a reference that `_save` wrote for the same inputs; False when
        there is none (or it is of other inputs, or unreadable)."""
        try:
            with np.load(path) as saved:
                if str(saved["ident"]) != ident:
                    return False
                for name in self._ARRAYS:
                    setattr(self, name, saved[name])
                self.info = json.loads(str(saved["info"])) | {"cached": str(path)}
                self.description = str(saved["description"])
        except (OSError, KeyError, ValueError):
            return False
        return True

    def kl_flow(self, i: int, x: Any, log_q: Any) -> tuple[float, float] | None:
        """KL(q || Q) = E_q[log q - log Q] at the last save time (with
        `keep_final_states`; else None), Q from the final kets at the M samples x:
        the mean over samples and its standard error. Q is an average over ntraj
        trajectories, so log Q carries a bias of about var/(2 ntraj Q^2) on top."""
        if self.final_kets is None or i != len(self.tsave) - 1:
            return None
        x = np.asarray(x)
        alpha = x[:, 0::2] + 1j * x[:, 1::2]
        Q, _ = self._basis.husimi_q(self.final_kets, alpha, batch_size=16)
        terms = np.asarray(log_q) - np.log(np.maximum(np.asarray(Q), 1e-300))
        return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(terms.size))

    def q_marginal(self, i: int, mode: int, alphas: Any) -> np.ndarray:
        if mode not in self.marginal_modes:
            raise ValueError(
                f"the reference averaged the states of modes {self.marginal_modes} "
                f"only, not of mode {mode} (`marginal_modes`)"
            )
        return _mode_q(self.reduced[i, self.marginal_modes.index(mode)], alphas)
