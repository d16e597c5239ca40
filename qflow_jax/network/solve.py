"""Solvers for qubit networks: the full state (structured) and the reduced states."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from qflow_jax.network.model import QubitNetwork
from qflow_jax.network.tsit5 import UnrolledTsit5
from qflow_jax.network.vector_field import NetworkVectorField, partial_traces

__all__ = [
    "METHODS",
    "NetworkResult",
    "ReducedResult",
    "ReducedVectorField",
    "network_mesolve",
    "product_state",
    "solve_reduced",
    "sweep_reduced_states",
]

METHODS = ("tsit5", "dopri5", "dopri8", "kvaerno5", "kencarp4", "kencarp5")
_EXPLICIT: dict[str, Callable[[], dfx.AbstractSolver]] = {
    "tsit5": UnrolledTsit5,
    "dopri5": dfx.Dopri5,
    "dopri8": dfx.Dopri8,
}


def _solver(method: str | dfx.AbstractSolver, rtol: float, atol: float):
    """(solver, imex): implicit stages use matrix-free GMRES, never a dense Jacobian."""
    if isinstance(method, dfx.AbstractSolver):
        return method, isinstance(method, dfx.AbstractImplicitSolver) and isinstance(
            method, dfx.KenCarp3 | dfx.KenCarp4 | dfx.KenCarp5
        )
    if method in _EXPLICIT:
        return _EXPLICIT[method](), False
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(METHODS)} or a diffrax solver, got "
            f"{method!r}"
        )
    gmres = lx.GMRES(rtol=1e-2 * rtol, atol=1e-2 * atol, restart=30, max_steps=300)
    # optx.Newton: diffrax's VeryChord cannot carry a matrix-free (linearised)
    # Jacobian through its state with this JAX version
    root = optx.Newton(rtol=rtol, atol=atol, linear_solver=gmres)
    cls = {"kvaerno5": dfx.Kvaerno5, "kencarp4": dfx.KenCarp4, "kencarp5": dfx.KenCarp5}
    return cls[method](root_finder=root), method.startswith("kencarp")


def _solver_and_fields(field_cls, network, method, rtol, atol, kernel=None):
    """The solver and its vector fields: (local, swap) parts for IMEX, else one.

    `kernel` goes to `NetworkVectorField.build`. The native kernel needs Hermitian
    states, which explicit Runge-Kutta stages are; Newton and GMRES iterates are not,
    so an implicit or IMEX solver gets the XLA kernel with "auto".
    """
    solver, imex = _solver(method, rtol, atol)
    opts = {}
    if kernel is not None:  # checked by `build`
        implicit = isinstance(solver, dfx.AbstractImplicitSolver) or imex
        if implicit and kernel == "native":
            raise ValueError(
                "kernel='native' needs an explicit method (it takes Hermitian states;"
                f" implicit iterates are not), got method={method!r}"
            )
        opts["kernel"] = "xla" if implicit and kernel == "auto" else kernel
    if imex:
        return solver, (
            field_cls.build(network, "local", **opts),
            field_cls.build(network, "swap", **opts),
        )
    return solver, (field_cls.build(network, **opts),)


def _check_tsave(tsave: Any) -> jax.Array:
    t = np.asarray(tsave, dtype=float)
    if t.ndim != 1 or t.shape[0] < 2:
        raise ValueError(
            f"`tsave` must be 1-D with at least 2 times, got shape {t.shape}"
        )
    if not np.all(np.isfinite(t)) or not np.all(np.diff(t) > 0):
        raise ValueError("`tsave` must be finite and strictly increasing")
    return jnp.asarray(t)


def _check_tols(rtol: float, atol: float, max_steps: int) -> None:
    if not rtol > 0 or not atol > 0:
        raise ValueError(f"`rtol` and `atol` must be > 0, got {rtol}, {atol}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}")


def _check_density(r: np.ndarray, name: str, tol: float = 1e-8) -> None:
    herm = np.abs(r - np.conj(np.swapaxes(r, -1, -2))).max()
    if herm > tol:
        raise ValueError(
            f"`{name}` must be Hermitian, got max |rho - rho^dag| = {herm:.3g}"
        )
    tr = np.trace(r, axis1=-2, axis2=-1)
    if np.abs(tr - 1).max() > tol:
        raise ValueError(f"`{name}` must have trace 1, got trace(s) {np.round(tr, 8)}")
    emin = np.linalg.eigvalsh(0.5 * (r + np.conj(np.swapaxes(r, -1, -2)))).min()
    if emin < -tol:
        raise ValueError(
            f"`{name}` must be positive semidefinite, got eigenvalue {emin:.3g}"
        )


def product_state(states: Any) -> jax.Array:
    """rho_0 (x) rho_1 (x) ... for n single-qubit density matrices (n, 2, 2).

    Example:
        >>> product_state([qf.fock_dm(2, 0), qf.fock_dm(2, 1)]).shape
        (4, 4)
    """
    arr = np.asarray(states, dtype=complex)
    if arr.ndim != 3 or arr.shape[1:] != (2, 2):
        raise ValueError(f"`states` must have shape (n, 2, 2), got {arr.shape}")
    _check_density(arr, "states")
    # exactly Hermitian factors give an exactly Hermitian product (conjugation
    # commutes with floating-point products), as the native kernel needs
    arr = 0.5 * (arr + np.conj(np.swapaxes(arr, -1, -2)))
    out = np.ones((1, 1), dtype=complex)
    for s in arr:
        out = np.kron(out, s)
    return jnp.asarray(out)


def _network_state(rho0: Any, n: int) -> jax.Array:
    if type(rho0).__name__ == "Qobj":
        rho0 = rho0.full()
    arr = np.asarray(rho0, dtype=complex)
    N = 2**n
    if arr.shape == (n, 2, 2):
        return product_state(arr)
    if arr.shape in ((N, 1), (N,)):
        arr = np.outer(arr.reshape(-1), arr.reshape(-1).conj())
    if arr.shape != (N, N):
        raise ValueError(
            f"`rho0` must be a ({N}, {N}) density matrix, a ({N}, 1) ket or (n={n}, 2, "
            f"2) qubit states, got shape {arr.shape}"
        )
    _check_density(arr, "rho0")
    # exactly Hermitian: the native kernel and every explicit stage keep it so
    return jnp.asarray(0.5 * (arr + arr.conj().T))


def _reduced_state(rho0: Any, n: int) -> jax.Array:
    """(n, 2, 2) reduced states from themselves or from a (2^n, 2^n) network state."""
    arr = np.asarray(rho0, dtype=complex)
    if arr.shape == (2**n, 2**n) and n > 1:
        _check_density(arr, "rho0")
        arr = np.asarray(partial_traces(jnp.asarray(arr), n))
    if arr.shape != (n, 2, 2):
        raise ValueError(f"`rho0` must have shape (n={n}, 2, 2), got {arr.shape}")
    _check_density(arr, "rho0")
    return jnp.asarray(arr)


class NetworkResult(eqx.Module):
    """What `network_mesolve` returns.

    Attributes:
        tsave: (nt,) save times.
        states: (nt, 2^n, 2^n) network states, or None with `save_states=False`.
        reduced: (nt, n, 2, 2) single-qubit reduced states.
        expects: (len(exp_ops), nt) complex expectation values, or None.
        final_state: (2^n, 2^n) state at tsave[-1].
        stats: diffrax counts num_steps, num_accepted_steps, num_rejected_steps.
    """

    tsave: jax.Array
    states: jax.Array | None
    reduced: jax.Array
    expects: jax.Array | None
    final_state: jax.Array
    stats: dict[str, jax.Array]


def _stats(sol: dfx.Solution) -> dict[str, jax.Array]:
    keys = ("num_steps", "num_accepted_steps", "num_rejected_steps")
    return {k: sol.stats[k] for k in keys}


def _diffeqsolve(terms, solver, y0, tsave, save, rtol, atol, max_steps):
    first = (
        dfx.SubSaveAt(ts=tsave) if save is None else dfx.SubSaveAt(ts=tsave, fn=save)
    )
    saveat = dfx.SaveAt(subs=[first, dfx.SubSaveAt(t1=True)])
    with warnings.catch_warnings():
        # complex states: checked against the dense engine and exact references
        warnings.filterwarnings("ignore", message="Complex dtype support")
        warnings.filterwarnings("ignore", message="Complex support in Optimistix")
        return dfx.diffeqsolve(
            terms,
            solver,
            tsave[0],
            tsave[-1],
            None,
            y0,
            saveat=saveat,
            stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
            throw=False,
        )


@eqx.filter_jit
def _solve_network(
    vfs, n, solver, rho0, tsave, exp_ops, save_states, rtol, atol, max_steps
):
    terms = (
        dfx.ODETerm(vfs[0])
        if len(vfs) == 1
        else dfx.MultiTerm(*(dfx.ODETerm(v) for v in vfs))
    )

    def save(t, rho, args):
        ex = None if exp_ops is None else jnp.einsum("kij,ji->k", exp_ops, rho)
        return (rho if save_states else None), partial_traces(rho, n), ex

    sol = _diffeqsolve(terms, solver, rho0, tsave, save, rtol, atol, max_steps)
    (states, reduced, expects), final = sol.ys
    ok = sol.result == dfx.RESULTS.successful
    expects = None if expects is None else expects.T
    return states, reduced, expects, final[0], _stats(sol), ok


def _raise_if_failed(ok: jax.Array, where: str, max_steps: int) -> None:
    if not bool(ok):
        raise RuntimeError(
            f"{where}: the solver stopped early: the step limit max_steps={max_steps} "
            "was reached or a step failed (non-finite values). For large swap gains "
            "use method='kencarp4' (swaps implicit) or raise `max_steps`."
        )


def network_mesolve(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    *,
    exp_ops: Sequence[Any] | None = None,
    method: str | dfx.AbstractSolver = "tsit5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    save_states: bool = True,
    max_steps: int = 100_000,
    kernel: str = "auto",
) -> NetworkResult:
    r"""Solves the network master equation on the full 2^n x 2^n density matrix.

        d rho/dt = -i[H, rho] + sum_j sum_m D[L_jm] rho
                   + k sum_{(j,l) in E} a_jl (U_jl rho U_jl - rho)

    with the structured `NetworkVectorField`: O(terms x 4^n) per right-hand side,
    no dense operator.

    Args:
        network: the `QubitNetwork`.
        rho0: (2^n, 2^n) density matrix, (2^n, 1) ket or (n, 2, 2) qubit states
            (product state).
        tsave: (nt,) increasing save times.
        exp_ops: (2^n, 2^n) operators whose expectation values are saved.
        method: "tsit5" (default; `UnrolledTsit5`, diffrax's Tsit5 with its stages
            unrolled), "dopri5", "dopri8" explicit; "kvaerno5"
            implicit; "kencarp4"/"kencarp5" IMEX with the swap term implicit
            (for large k; the explicit part keeps its own step size). Implicit
            stages use matrix-free GMRES.
        rtol, atol: PID step-size controller tolerances.
        save_states: keep the network state at every save time.
        max_steps: step limit (a RuntimeError when reached).
        kernel: the right-hand side's kernel (`NetworkVectorField`): "auto" (the
            compiled CPU kernel with an explicit method where it builds, else XLA),
            "native" or "xla".

    Returns:
        `NetworkResult` with the states, the reduced states (nt, n, 2, 2) and the
        expectation values.

    Example:
        >>> net = QubitNetwork(3, "path", k=5.0, jump_ops=[[qf.sigmam()]] * 3)
        >>> res = network_mesolve(net, [qf.fock_dm(2, 0)] * 3, jnp.linspace(0, 1, 11))
        >>> res.reduced.shape
        (11, 3, 2, 2)
    """
    if not isinstance(network, QubitNetwork):
        raise TypeError(
            f"`network` must be a QubitNetwork, got {type(network).__name__}"
        )
    solver, vfs = _solver_and_fields(
        NetworkVectorField, network, method, rtol, atol, kernel
    )
    return _run_network(
        vfs, network.n, rho0, tsave, exp_ops, solver, rtol, atol, save_states, max_steps
    )


def _run_network(
    vfs, n, rho0, tsave, exp_ops, solver, rtol, atol, save_states, max_steps
) -> NetworkResult:
    """Checks the inputs and integrates the vector fields `vfs` (summed)."""
    _check_tols(rtol, atol, max_steps)
    tsave = _check_tsave(tsave)
    y0 = _network_state(rho0, n)
    ex = None
    if exp_ops is not None:
        N = 2**n
        ex = np.stack([np.asarray(o, dtype=complex) for o in exp_ops])
        if ex.shape[1:] != (N, N):
            raise ValueError(
                f"`exp_ops` must be ({N}, {N}) operators, got {ex.shape[1:]}"
            )
        ex = jnp.asarray(ex)
    states, reduced, expects, final, stats, ok = _solve_network(
        vfs, n, solver, y0, tsave, ex, save_states, rtol, atol, max_steps
    )
    _raise_if_failed(ok, "network_mesolve", max_steps)
    return NetworkResult(tsave, states, reduced, expects, final, stats)


class ReducedVectorField(eqx.Module):
    r"""The closed reduced-state system of a network with local terms only:

        d rho_j/dt = L_j(rho_j) + k sum_l a_jl (rho_l - rho_j)

    on y of shape (n, 2, 2); O(n + |E|) per right-hand side. `part` selects "all",
    "local" (the L_j) or "swap" (the coupling), as in `NetworkVectorField`.
    """

    superops: jax.Array
    src: jax.Array
    dst: jax.Array
    rates: jax.Array
    part: str = eqx.field(static=True)

    @classmethod
    def build(cls, network: QubitNetwork, part: str = "all") -> ReducedVectorField:
        if not network.is_local:
            raise ValueError(
                "the reduced states close only when all terms are local; this network "
                f"has {len(network.couplings)} pair couplings (use network_mesolve)"
            )
        edges = np.asarray(network.edges, dtype=int).reshape(-1, 2)
        return cls(
            superops=jnp.asarray(network.local_superoperators().reshape(-1, 4, 4)),
            src=jnp.asarray(edges[:, 0]),
            dst=jnp.asarray(edges[:, 1]),
            rates=jnp.asarray(network.k * network.weights, dtype=jnp.float64),
            part=part,
        )

    def __call__(self, t: jax.Array, y: jax.Array, args: object) -> jax.Array:
        n = y.shape[0]
        out = jnp.zeros_like(y)
        if self.part != "swap":
            out = jnp.einsum("jpq,jq->jp", self.superops, y.reshape(n, 4)).reshape(
                y.shape
            )
        if self.part != "local":
            flow = self.rates[:, None, None] * (y[self.dst] - y[self.src])
            out = out + jax.ops.segment_sum(flow, self.src, num_segments=n)
            out = out - jax.ops.segment_sum(flow, self.dst, num_segments=n)
        return out


class ReducedResult(eqx.Module):
    """What `solve_reduced` returns: tsave (nt,), states (nt, n, 2, 2), stats."""

    tsave: jax.Array
    states: jax.Array
    stats: dict[str, jax.Array]


@eqx.filter_jit
def _solve_reduced(vfs, solver, y0, tsave, rtol, atol, max_steps):
    terms = (
        dfx.ODETerm(vfs[0])
        if len(vfs) == 1
        else dfx.MultiTerm(*(dfx.ODETerm(v) for v in vfs))
    )
    sol = _diffeqsolve(terms, solver, y0, tsave, None, rtol, atol, max_steps)
    states, _ = sol.ys
    return states, _stats(sol), sol.result == dfx.RESULTS.successful


def solve_reduced(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    *,
    method: str | dfx.AbstractSolver = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
) -> ReducedResult:
    r"""Solves the single-qubit reduced states of a network with local terms only.

    Because Tr_{not j}(U_jl rho U_jl) = rho_l, the reduced states close:

        d rho_j/dt = L_j(rho_j) + k sum_l a_jl (rho_l - rho_j)

    exactly, whatever correlations the full state holds. Cost O(n + |E|) per
    right-hand side: networks of thousands of qubits.

    Args:
        network: a `QubitNetwork` without pair couplings.
        rho0: (n, 2, 2) initial reduced states, or a (2^n, 2^n) network state
            (its partial traces are used; small n only).
        tsave: (nt,) increasing save times.
        method: as in `network_mesolve`; "kencarp4" treats the coupling implicitly.
        rtol, atol, max_steps: step-size control and step limit.

    Example:
        >>> net = QubitNetwork(1000, "ring", k=10.0, H=[qf.sigmax()] * 1000)
        >>> solve_reduced(net, [qf.fock_dm(2, 0)] * 1000, [0.0, 1.0]).states.shape
        (2, 1000, 2, 2)
    """
    if not isinstance(network, QubitNetwork):
        raise TypeError(
            f"`network` must be a QubitNetwork, got {type(network).__name__}"
        )
    _check_tols(rtol, atol, max_steps)
    tsave = _check_tsave(tsave)
    y0 = _reduced_state(rho0, network.n)
    solver, vfs = _solver_and_fields(ReducedVectorField, network, method, rtol, atol)
    states, stats, ok = _solve_reduced(vfs, solver, y0, tsave, rtol, atol, max_steps)
    _raise_if_failed(ok, "solve_reduced", max_steps)
    return ReducedResult(tsave, states, stats)


def sweep_reduced_states(
    networks: Sequence[QubitNetwork],
    rho0: Any,
    tsave: Any,
    *,
    method: str | dfx.AbstractSolver = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 1_000_000,
) -> jax.Array:
    """Reduced-state trajectories (len(networks), nt, n, 2, 2) of networks that
    differ only in their coefficients (swap gain, weights, Hamiltonians, rates: one
    graph and one set of term shapes), e.g. a k-sweep.

    One solve per network, `solve_reduced` when all terms are local (exact closure),
    else `network_mesolve`'s structured engine with its partial traces. The batch is
    split over the devices of the run (`qflow_jax.parallel.map_batch`; each device
    solves its networks one after the other, every one with its own steps); one
    compilation serves the whole sweep.

    Example:
        >>> nets = [QubitNetwork(3, "path", k=k, jump_ops=[[qf.sigmam()]] * 3)
        ...         for k in (10.0, 100.0)]
        >>> sweep_reduced_states(nets, [qf.fock_dm(2, 1)] * 3, [0.0, 1.0]).shape
        (2, 2, 3, 2, 2)
    """
    from qflow_jax.parallel import map_batch

    if not networks or not all(isinstance(n, QubitNetwork) for n in networks):
        raise TypeError("`networks` must be a non-empty sequence of QubitNetwork")
    _check_tols(rtol, atol, max_steps)
    tsave = _check_tsave(tsave)
    net0 = networks[0]
    local = net0.is_local
    field_cls = ReducedVectorField if local else NetworkVectorField
    kernel = None if local else "auto"
    built = [
        _solver_and_fields(field_cls, net, method, rtol, atol, kernel)
        for net in networks
    ]
    solver = built[0][0]
    fields = [vfs for _, vfs in built]

    def shapes(f):
        leaves, tree = jax.tree.flatten(f)
        return tree, [np.shape(x) for x in leaves]

    if any(shapes(f) != shapes(fields[0]) for f in fields):
        raise ValueError(
            "`networks` must share their graph and the shapes of their terms (they "
            "may differ in coefficients only)"
        )
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *fields)
    if local:
        y0 = _reduced_state(rho0, net0.n)

        def one(vfs):
            states, _, ok = _solve_reduced(
                vfs, solver, y0, tsave, rtol, atol, max_steps
            )
            return states, ok

    else:
        y0 = _network_state(rho0, net0.n)

        def one(vfs):
            out = _solve_network(
                vfs, net0.n, solver, y0, tsave, None, False, rtol, atol, max_steps
            )
            return out[1], out[-1]

    states, ok = map_batch(one, stacked, sequential=True)
    for i, good in enumerate(np.asarray(ok)):
        _raise_if_failed(good, f"sweep_reduced_states (network {i})", max_steps)
    return states
