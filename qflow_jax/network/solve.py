"""Solvers for qubit networks: the full state (structured) and the reduced states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from qflow_jax.core.checks import check_density, check_tsave, is_concrete, to_array
from qflow_jax.core.integrate import Integration, integrate, raise_if_failed
from qflow_jax.core.memory import (
    InsufficientMemoryError,
    available_memory,
    memory_place,
)
from qflow_jax.core.methods import (
    ADAPTIVE_NAMES,
    AbstractMethod,
    KenCarp4,
    KenCarp5,
    Kvaerno3,
    Kvaerno5,
    Tsit5,
    method_from,
)
from qflow_jax.core.result import SolveResult
from qflow_jax.network.model import QubitNetwork
from qflow_jax.network.tsit5 import UnrolledTsit5
from qflow_jax.network.vector_field import NetworkVectorField, partial_traces

__all__ = [
    "METHODS",
    "NetworkMemoryEstimate",
    "NetworkResult",
    "ReducedResult",
    "ReducedVectorField",
    "network_memory_estimate",
    "network_mesolve",
    "product_state",
    "solve_reduced",
    "sweep_reduced_states",
]

# the adaptive methods without an integrating factor (the network's generator has
# no cheap exact diagonal flow)
METHODS = tuple(m for m in ADAPTIVE_NAMES if m != "auto" and not m.startswith("lawson"))
_REMEDY = "for large swap gains use method='kencarp4' (swaps implicit)"

# State-sized (2^n x 2^n complex128) buffers of a solve that saves no states, from
# the compiled programs on the CPU (`memory_analysis()`: temporaries + arguments +
# outputs - donated, n = 8..10, either kernel): the state (donated, also the final
# state), the stages, the stage input, the error estimate and XLA's copy of the
# first stage (the loop carries it); implicit methods add the Newton iterates and
# GMRES's Krylov basis (restart 30)
_STATE_BUFFERS = {
    "tsit5": 11,
    "dopri5": 18,
    "dopri8": 20,
    "kvaerno3": 118,
    "kvaerno5": 121,
    "kencarp4": 90,
    "kencarp5": 94,
}


def _solver(method: AbstractMethod) -> dfx.AbstractSolver:
    """The diffrax solver of `method` for a network field: Tsit5 with unrolled
    stages; implicit stages by matrix-free GMRES, never a dense Jacobian."""
    if isinstance(method, Tsit5):
        return UnrolledTsit5()
    if not isinstance(method, Kvaerno3 | Kvaerno5 | KenCarp4 | KenCarp5):
        return method.solver()
    rtol, atol = method.rtol, method.atol
    gmres = lx.GMRES(rtol=1e-2 * rtol, atol=1e-2 * atol, restart=30, max_steps=300)
    # optx.Newton: diffrax's VeryChord cannot carry a matrix-free (linearised)
    # Jacobian through its state with this JAX version
    root = optx.Newton(rtol=rtol, atol=atol, linear_solver=gmres)
    cls = {
        "kvaerno3": dfx.Kvaerno3,
        "kvaerno5": dfx.Kvaerno5,
        "kencarp4": dfx.KenCarp4,
        "kencarp5": dfx.KenCarp5,
    }[method.name]
    return cls(root_finder=root)


def _method(method: Any, rtol: Any, atol: Any, max_steps: Any) -> AbstractMethod:
    return method_from(
        method, rtol=rtol, atol=atol, max_steps=max_steps, allowed=METHODS
    )


def _solver_and_fields(field_cls, network, method, kernel=None):
    """The solver and its vector fields: (local, swap) parts for IMEX, else one.

    `kernel` goes to `NetworkVectorField.build`. The native kernel needs Hermitian
    states, which explicit Runge-Kutta stages are; Newton and GMRES iterates are not,
    so an implicit or IMEX solver gets the XLA kernel with "auto".
    """
    solver = _solver(method)
    opts = {}
    if kernel is not None:  # checked by `build`
        if method.implicit and kernel == "native":
            raise ValueError(
                "kernel='native' needs an explicit method (it takes Hermitian states;"
                f" implicit iterates are not), got method={method.name!r}"
            )
        opts["kernel"] = "xla" if method.implicit and kernel == "auto" else kernel
    if method.imex:
        return solver, (
            field_cls.build(network, "local", **opts),
            field_cls.build(network, "swap", **opts),
        )
    return solver, (field_cls.build(network, **opts),)


def _hermitian(x: jax.Array) -> jax.Array:
    """x made exactly Hermitian: the native kernel and every explicit stage keep it
    so (conjugation commutes with floating-point sums)."""
    return 0.5 * (x + jnp.conj(jnp.swapaxes(x, -1, -2)))


def product_state(states: Any) -> jax.Array:
    """rho_0 (x) rho_1 (x) ... for n single-qubit density matrices (n, 2, 2).

    Examples:
        >>> import qflow_jax as qf
        >>> from qflow_jax.network import product_state
        >>> product_state([qf.fock_dm(2, 0), qf.fock_dm(2, 1)]).shape
        (4, 4)
    """
    arr = to_array(
        jnp.stack([to_array(x) for x in states])
        if isinstance(states, list | tuple)
        else states,
        "states",
    )
    if arr.ndim != 3 or arr.shape[1:] != (2, 2):
        raise ValueError(f"`states` must have shape (n, 2, 2), got {arr.shape}")
    # exactly Hermitian factors give an exactly Hermitian product
    arr = _hermitian(check_density(arr, "states"))
    out = arr[0]
    for s in arr[1:]:
        out = jnp.kron(out, s)
    return out


def _network_state(rho0: Any, n: int) -> jax.Array:
    arr = to_array(rho0, "rho0")
    if arr.dtype != jnp.complex128:
        arr = arr.astype(jnp.complex128)
    N = 2**n
    if arr.shape == (n, 2, 2):
        return product_state(arr)
    if arr.shape in ((N, 1), (N,)):
        arr = arr.reshape(N, 1) @ jnp.conj(arr.reshape(1, N))
    if arr.shape != (N, N):
        raise ValueError(
            f"`rho0` must be a ({N}, {N}) density matrix, a ({N}, 1) ket or (n={n}, 2, "
            f"2) qubit states, got shape {tuple(arr.shape)}"
        )
    return _hermitian(check_density(arr, "rho0"))


def _reduced_state(rho0: Any, n: int) -> jax.Array:
    """(n, 2, 2) reduced states from themselves or from a (2^n, 2^n) network state."""
    arr = to_array(rho0, "rho0").astype(jnp.complex128)
    if arr.shape == (2**n, 2**n) and n > 1:
        arr = partial_traces(check_density(arr, "rho0"), n)
    if arr.shape != (n, 2, 2):
        raise ValueError(
            f"`rho0` must have shape (n={n}, 2, 2), got {tuple(arr.shape)}"
        )
    return check_density(arr, "rho0")


class NetworkResult(SolveResult):
    """What `network_mesolve` returns (`SolveResult`), plus the reduced states.

    Attributes:
        states: (nt, 2^n, 2^n) network states, or None with `save_states=False`.
        reduced: (nt, n, 2, 2) single-qubit reduced states.
        kernels: the right-hand-side kernel of each term of the solve, "native"
            (the compiled CPU kernel) or "xla" (`NetworkVectorField`).
    """

    reduced: jax.Array
    kernels: tuple[str, ...] = eqx.field(static=True)


def _terms(vfs):
    if len(vfs) == 1:
        return dfx.ODETerm(vfs[0])
    return dfx.MultiTerm(*(dfx.ODETerm(v) for v in vfs))


def _solve_network(
    vfs, n, solver, method, rho0, tsave, exp_ops, save_states, throw, donate=False
) -> Integration:
    """The network solve, compiled. `donate`: rho0's buffer becomes the solver's
    state (one state-sized buffer less); rho0 must then be a fresh array."""
    setup = (vfs, n, solver, method, tsave, exp_ops, save_states, throw)
    if donate:
        return _network_integration_donating(setup, rho0)
    return _network_integration(setup, rho0)


def _integrate_network(setup: tuple, rho0: jax.Array) -> Integration:
    vfs, n, solver, method, tsave, exp_ops, save_states, throw = setup

    def save(t, rho):
        ex = None if exp_ops is None else jnp.einsum("kij,ji->k", exp_ops, rho)
        return (rho if save_states else None), partial_traces(rho, n), ex

    return integrate(
        _terms(vfs),
        solver,
        rho0,
        tsave,
        method=method,
        engine="network_mesolve",
        save=save,
        throw=throw,
        remedy=_REMEDY,
    )


_network_integration = eqx.filter_jit(_integrate_network)
_network_integration_donating = eqx.filter_jit(
    _integrate_network, donate="all-except-first"
)


def network_mesolve(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    *,
    method: str | AbstractMethod | dfx.AbstractSolver = "tsit5",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    exp_ops: Sequence[Any] | None = None,
    save_states: bool = True,
    kernel: str = "auto",
    max_memory: int | None = None,
) -> NetworkResult:
    r"""Solves the network master equation on the full 2^n x 2^n density matrix.

        d rho/dt = -i[H, rho] + sum_j sum_m D[L_jm] rho
                   + k sum_{(j,l) in E} a_jl (U_jl rho U_jl - rho)

    with the structured `NetworkVectorField`: O(terms x 4^n) per right-hand side,
    no dense operator.

    Args:
        network: the `QubitNetwork` (the generator).
        rho0: (2^n, 2^n) density matrix, (2^n, 1) ket or (n, 2, 2) qubit states
            (product state).
        tsave: (nt,) increasing save times.
        method: a method object or name: "tsit5" (default; diffrax's Tsit5 with
            its stages unrolled), "dopri5", "dopri8" explicit; "kvaerno3",
            "kvaerno5" implicit; "kencarp4"/"kencarp5" IMEX with the swap term
            implicit (for large k; the explicit part keeps its own step size).
            Implicit stages use matrix-free GMRES.
        rtol, atol, max_steps: override the method's (defaults 1e-6, 1e-8,
            100000; RMS norm).
        exp_ops: (2^n, 2^n) operators whose expectation values are saved.
        save_states: keep the network state at every save time.
        kernel: the right-hand side's kernel (`NetworkVectorField`): "auto" (the
            compiled CPU kernel with an explicit method where it builds, else XLA),
            "native" or "xla".
        max_memory: refuse, before allocating, a solve whose estimated peak
            (`network_memory_estimate`) exceeds this many bytes (default: the
            memory available on JAX's first device: an accelerator's allocator
            limit less what is in use, on the CPU the available RAM), with an
            `InsufficientMemoryError` (a MemoryError and a ValueError).

    Works under `jax.jit`, `jax.vmap` and `jax.grad` with respect to rho0 and to the
    network's parameters (swap gain, qubit Hamiltonians, jump operators, coupling
    strengths) when the `QubitNetwork` is built inside the trace; a solve that
    reaches its step limit or goes non-finite raises.

    Returns:
        `NetworkResult` with the states, the reduced states (nt, n, 2, 2) and the
        expectation values.

    Examples:
        >>> import jax.numpy as jnp, qflow_jax as qf
        >>> net = qf.QubitNetwork(3, "path", k=5.0, jump_ops=[[qf.sigmam()]] * 3)
        >>> res = qf.network_mesolve(net, [qf.fock_dm(2, 0)] * 3,
        ...                          jnp.linspace(0, 1, 11))
        >>> res.reduced.shape
        (11, 3, 2, 2)
    """
    if not isinstance(network, QubitNetwork):
        raise TypeError(
            f"`network` must be a QubitNetwork, got {type(network).__name__}"
        )
    method = _method(method, rtol, atol, max_steps)
    tsave = check_tsave(tsave, jnp.float64)
    n_ex = 0 if exp_ops is None else len(exp_ops)
    _check_memory(network.n, method, tsave.shape[0], save_states, n_ex, max_memory)
    y0, tsave, ex = _network_inputs(network.n, rho0, tsave, exp_ops)
    solver, vfs = _solver_and_fields(NetworkVectorField, network, method, kernel)
    return _run_network(
        vfs, network.n, y0, tsave, ex, solver, method, save_states, "network_mesolve"
    )


def _lower_network(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    *,
    method: Any = "tsit5",
    exp_ops: Any = None,
    save_states: bool = True,
    kernel: str = "auto",
):
    """The `jax.stages.Lowered` program of the concrete `network_mesolve` call with
    these arguments (for `memory_analysis()` in tests and benchmarks)."""
    method = _method(method, None, None, None)
    y0, tsave, ex = _network_inputs(network.n, rho0, tsave, exp_ops)
    solver, vfs = _solver_and_fields(NetworkVectorField, network, method, kernel)
    setup = (vfs, network.n, solver, method, tsave, ex, save_states, False)
    return _network_integration_donating.lower(setup, y0).lowered


class NetworkMemoryEstimate(NamedTuple):
    """What `network_memory_estimate` returns.

    Attributes:
        bytes: estimated peak bytes of the solve (all its buffers at once).
        buffers: state-sized buffers among them (the saved states included).
        state_bytes: bytes of one 2^n x 2^n complex128 state, 16 x 4^n.
    """

    bytes: int
    buffers: int
    state_bytes: int


def network_memory_estimate(
    n: int,
    method: str | AbstractMethod | dfx.AbstractSolver = "tsit5",
    *,
    nt: int = 2,
    save_states: bool = True,
    n_exp_ops: int = 0,
) -> NetworkMemoryEstimate:
    """Estimated peak memory of a `network_mesolve` solve of n qubits, before
    anything is allocated (`network_mesolve` refuses a solve that does not fit).

    The solve holds B state-sized buffers of 16 x 4^n bytes,

        B = B_method + nt (save_states) + n_exp_ops,

    B_method = 11 for "tsit5" (the state, 7 stages, the stage input, the error
    estimate and a copy of the first stage: counted in the compiled program), 18
    for "dopri5", 20 for "dopri8", 90 to 121 for the implicit methods (GMRES keeps
    31 Krylov vectors); plus the saved reduced states and expectation values.

    Args:
        n: number of qubits.
        method: as in `network_mesolve`.
        nt: number of save times (len(tsave)).
        save_states: whether the nt network states are kept.
        n_exp_ops: number of operators in `exp_ops`.

    Examples:
        >>> from qflow_jax.network import network_memory_estimate
        >>> est = network_memory_estimate(12, nt=51, save_states=False)
        >>> est.buffers, round(est.bytes / 2**30, 2)
        (11, 2.75)
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"`n` must be a positive integer, got {n!r}")
    method = _method(method, None, None, None)
    buffers = _state_buffers(method) + nt * bool(save_states) + n_exp_ops
    state = 16 * 4**n
    small = 16 * nt * (4 * n + n_exp_ops)  # reduced states and expectation values
    return NetworkMemoryEstimate(buffers * state + small, buffers, state)


def _state_buffers(method: AbstractMethod) -> int:
    """B_method of `network_memory_estimate`; a diffrax solver: an explicit one its
    stages + 11, any other the largest implicit count."""
    solver = getattr(method, "diffrax_solver", None)
    if solver is None:
        return _STATE_BUFFERS[method.name]
    if isinstance(solver, UnrolledTsit5):
        return _STATE_BUFFERS["tsit5"]
    if isinstance(solver, dfx.AbstractERK):
        return len(solver.tableau.b_sol) + 11
    return max(_STATE_BUFFERS.values())


def _check_memory(
    n: int,
    method: AbstractMethod,
    nt: int,
    save_states: bool,
    n_exp_ops: int,
    max_memory: int | None,
) -> None:
    """Raises InsufficientMemoryError when the estimated solve exceeds the limit."""
    est = network_memory_estimate(
        n, method, nt=nt, save_states=save_states, n_exp_ops=n_exp_ops
    )
    limit = available_memory() if max_memory is None else int(max_memory)
    if est.bytes <= limit:
        return
    where = memory_place() if max_memory is None else "`max_memory`"
    hints = ["fewer qubits", "a device with more memory"]
    if save_states:
        hints.insert(0, f"save_states=False (saves {nt} states less)")
    if method.implicit:
        hints.insert(0, f"an explicit method ('tsit5': {_STATE_BUFFERS['tsit5']})")
    if n_exp_ops:
        hints.insert(0, "fewer `exp_ops` (or the reduced states, always saved)")
    raise InsufficientMemoryError(
        f"network_mesolve: n={n} qubits with method={method.name!r} needs about "
        f"{_size(est.bytes)} ({est.buffers} buffers of {_size(est.state_bytes)}, "
        "the 2^n x 2^n state; `network_memory_estimate`), more than the "
        f"{_size(limit)} available ({where}). Use " + ", ".join(hints) + "."
    )


def _size(nbytes: float) -> str:
    return (
        f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.3g} MiB"
    )


def _network_inputs(n: int, rho0: Any, tsave: Any, exp_ops: Any) -> tuple:
    """(rho0, tsave, exp_ops) of a network solve, checked and converted."""
    tsave = check_tsave(tsave, jnp.float64)
    y0 = _network_state(rho0, n)
    ex = None
    if exp_ops is not None:
        N = 2**n
        ex = jnp.stack(
            [
                to_array(o, f"exp_ops[{i}]", jnp.complex128)
                for i, o in enumerate(exp_ops)
            ]
        )
        if ex.shape[1:] != (N, N):
            raise ValueError(
                f"`exp_ops` must be ({N}, {N}) operators, got {tuple(ex.shape[1:])}"
            )
    return y0, tsave, ex


def _run_network(vfs, n, y0, tsave, ex, solver, method, save_states, engine):
    """Integrates the vector fields `vfs` (summed) from the checked inputs."""
    # under a trace failures raise inside the program; eagerly they are checked
    # here, for a plain RuntimeError
    throw = not is_concrete((vfs, y0, tsave, ex))
    # y0 is the checked copy of the caller's rho0: its buffer can be donated
    out = _solve_network(
        vfs, n, solver, method, y0, tsave, ex, save_states, throw, donate=not throw
    )
    if not throw:
        raise_if_failed(out.status, engine, method.max_steps, _REMEDY)
    states, reduced, expects = out.saved
    return NetworkResult(
        tsave=tsave,
        states=states,
        expects=None if expects is None else expects.T,
        final_state=out.final,
        stats=out.stats,
        method=method.name,
        reduced=reduced,
        kernels=tuple(vf.kernel for vf in vfs),
    )


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


class ReducedResult(SolveResult):
    """What `solve_reduced` returns (`SolveResult`): states (nt, n, 2, 2) and
    final_state (n, 2, 2) are the single-qubit reduced states; expects is None."""


@eqx.filter_jit
def _solve_reduced(vfs, solver, method, y0, tsave, throw) -> Integration:
    return integrate(
        _terms(vfs),
        solver,
        y0,
        tsave,
        method=method,
        engine="solve_reduced",
        throw=throw,
        remedy=_REMEDY,
    )


def solve_reduced(
    network: QubitNetwork,
    rho0: Any,
    tsave: Any,
    *,
    method: str | AbstractMethod | dfx.AbstractSolver = "tsit5",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
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
        rtol, atol, max_steps: override the method's (defaults 1e-6, 1e-8, 100000).

    Examples:
        >>> import qflow_jax as qf
        >>> net = qf.QubitNetwork(1000, "ring", k=10.0, H=[qf.sigmax()] * 1000)
        >>> qf.solve_reduced(net, [qf.fock_dm(2, 0)] * 1000, [0.0, 1.0]).states.shape
        (2, 1000, 2, 2)
    """
    if not isinstance(network, QubitNetwork):
        raise TypeError(
            f"`network` must be a QubitNetwork, got {type(network).__name__}"
        )
    method = _method(method, rtol, atol, max_steps)
    tsave = check_tsave(tsave, jnp.float64)
    y0 = _reduced_state(rho0, network.n)
    solver, vfs = _solver_and_fields(ReducedVectorField, network, method)
    throw = not is_concrete((vfs, y0, tsave))
    out = _solve_reduced(vfs, solver, method, y0, tsave, throw)
    if not throw:
        raise_if_failed(out.status, "solve_reduced", method.max_steps, _REMEDY)
    return ReducedResult(
        tsave=tsave,
        states=out.saved,
        expects=None,
        final_state=out.final,
        stats=out.stats,
        method=method.name,
    )


def sweep_reduced_states(
    networks: Sequence[QubitNetwork],
    rho0: Any,
    tsave: Any,
    *,
    method: str | AbstractMethod | dfx.AbstractSolver = "tsit5",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
) -> jax.Array:
    """Reduced-state trajectories (len(networks), nt, n, 2, 2) of networks that
    differ only in their coefficients (swap gain, weights, Hamiltonians, rates: one
    graph and one set of term shapes), e.g. a k-sweep.

    One solve per network, `solve_reduced` when all terms are local (exact closure),
    else `network_mesolve`'s structured engine with its partial traces. The batch is
    split over the devices of the run (`qflow_jax.parallel.map_batch`; each device
    solves its networks one after the other, every one with its own steps); one
    compilation serves the whole sweep.

    Examples:
        >>> import qflow_jax as qf
        >>> from qflow_jax.network import sweep_reduced_states
        >>> nets = [qf.QubitNetwork(3, "path", k=k, jump_ops=[[qf.sigmam()]] * 3)
        ...         for k in (10.0, 100.0)]
        >>> sweep_reduced_states(nets, [qf.fock_dm(2, 1)] * 3, [0.0, 1.0]).shape
        (2, 2, 3, 2, 2)
    """
    from qflow_jax.parallel import map_batch

    if not networks or not all(isinstance(n, QubitNetwork) for n in networks):
        raise TypeError("`networks` must be a non-empty sequence of QubitNetwork")
    method = _method(method, rtol, atol, max_steps)
    tsave = check_tsave(tsave, jnp.float64)
    net0 = networks[0]
    local = net0.is_local
    field_cls = ReducedVectorField if local else NetworkVectorField
    kernel = None if local else "auto"
    built = [_solver_and_fields(field_cls, net, method, kernel) for net in networks]
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
            out = _solve_reduced(vfs, solver, method, y0, tsave, False)
            return out.saved, out.status

    else:
        y0 = _network_state(rho0, net0.n)

        def one(vfs):
            out = _solve_network(
                vfs, net0.n, solver, method, y0, tsave, None, False, False
            )
            return out.saved[1], out.status

    states, status = map_batch(one, stacked, sequential=True)
    raise_if_failed(status, "sweep_reduced_states", method.max_steps, _REMEDY)
    return states
