"""Grid solvers for a compiled Q-PDE: finite differences and pseudo-spectral.

Both discretise space on a uniform grid of G_k points per real coordinate over
[center_k - L_k, center_k + L_k) (spacing h_k = 2 L_k / G_k) and integrate the
resulting ODE system dQ/dt = sum_m c_m(X) D^m Q (method of lines) with diffrax:

- "fd": second-order central differences, Q = 0 outside the box.
- "spectral": FFT derivatives on the periodic box (Q must be negligible at its edges).

Memory grows like prod_k G_k: both refuse, before allocating, a grid whose estimated
footprint exceeds `max_memory`.

Stabilisation (opt-in, `stabilize=True`, second-order PDEs only): where the symmetric
second-order coefficient matrix D(x) has a negative eigenvalue (backward-parabolic
regions, e.g. far out for Kerr models, where U |alpha|^2 beats the damping), the PDE is
ill-posed and fine grids blow up. The solvers then add the isotropic diffusion
nu(x) * Laplacian(Q), nu(x) = max(0, -lambda_min(D(x))), precomputed once on the grid
and discretised like the other derivatives, so D + nu I is positive semidefinite at
every grid point. This changes the PDE wherever nu > 0: the result is only trustworthy
when Q is negligible there, which `GridSolution.q_mass_stabilized` and
`GridSolution.q_max_stabilized` report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.core.checks import check_finite, check_tsave, is_concrete
from qflow_jax.core.integrate import integrate, raise_if_failed
from qflow_jax.core.memory import InsufficientMemoryError, available_memory
from qflow_jax.core.methods import (
    DEFAULT_ATOL,
    DEFAULT_MAX_STEPS,
    DEFAULT_RTOL,
    AbstractMethod,
    Solver,
    method_from,
)
from qflow_jax.core.result import SolveResult
from qflow_jax.husimi.compiler import QPDE

__all__ = [
    "Grid",
    "GridSolution",
    "added_diffusion",
    "estimate_grid_memory",
    "solve_fd",
    "solve_grid",
    "solve_spectral",
]

_METHODS = ("fd", "spectral")
# Arrays of the grid's size alive at once: Tsit5 keeps 7 stages plus y0, y1 and the
# error estimate (10); the right-hand side needs about 3 (fd) or 4 (spectral: the
# half-spectrum is complex) temporaries; +1 for evaluating Q0.
_STATE_COPIES = 11
_RHS_COPIES = {"fd": 3, "spectral": 4}
# stabilize: nu(x) and the region mask are kept, the Laplacian needs a temporary.
_STABILIZE_COPIES = 2
# nu(x) below this times max |D| over the grid is floating-point noise of a
# semidefinite D (e.g. D = 0 for a Hamiltonian part alone), not an indefinite one.
_NU_RELATIVE_TOL = 1e-12


def _per_axis(value: Any, dim: int, name: str, kind: type) -> tuple:
    if np.ndim(value) > 1 or (np.ndim(value) == 1 and len(value) != dim):
        raise ValueError(
            f"`{name}` must be a scalar or a length-{dim} sequence, got {value!r}"
        )
    return tuple(kind(v) for v in np.broadcast_to(np.asarray(value), (dim,)).tolist())


class Grid(eqx.Module):
    """Uniform grid on the box prod_k [center_k - L_k, center_k + L_k) in R^dim.

    Attributes:
        points: points per axis G_k.
        half_width: half-widths L_k.
        center: box centers.

    Examples:
        >>> grid = Grid(dim=2, points=64, half_width=6.0)
        >>> grid.spacing
        (0.1875, 0.1875)
    """

    points: tuple[int, ...] = eqx.field(static=True)
    half_width: tuple[float, ...] = eqx.field(static=True)
    center: tuple[float, ...] = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        points: int | Sequence[int],
        half_width: float | Sequence[float],
        center: float | Sequence[float] = 0.0,
    ):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"`dim` must be a positive integer, got {dim!r}")
        self.points = _per_axis(points, dim, "points", int)
        self.half_width = _per_axis(half_width, dim, "half_width", float)
        self.center = _per_axis(center, dim, "center", float)
        if any(g < 4 for g in self.points):
            raise ValueError(f"`points` must be >= 4 per axis, got {self.points}")
        if any(w <= 0 for w in self.half_width):
            raise ValueError(f"`half_width` must be positive, got {self.half_width}")

    @property
    def dim(self) -> int:
        return len(self.points)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.points

    @property
    def n_points(self) -> int:
        return math.prod(self.points)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(
            2 * w / g for w, g in zip(self.half_width, self.points, strict=True)
        )

    @property
    def cell_volume(self) -> float:
        return math.prod(self.spacing)

    def axes(self) -> list[jax.Array]:
        """1-D coordinate arrays, one per axis."""
        return [
            c - w + h * jnp.arange(g, dtype=float)
            for c, w, h, g in zip(
                self.center, self.half_width, self.spacing, self.points, strict=True
            )
        ]

    def _broadcast_axes(self) -> list[jax.Array]:
        return [
            ax.reshape([-1 if k == i else 1 for k in range(self.dim)])
            for i, ax in enumerate(self.axes())
        ]

    def evaluate(self, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
        """fn on every grid point, shape `grid.shape`; fn maps (..., dim) -> (...).

        Evaluated one slice of the first axis at a time to bound memory; compiled
        once per `fn` object and grid shape."""
        axes = self.axes()
        return _evaluate_on(axes[0], axes[1:], fn)


@eqx.filter_jit
def _evaluate_on(first: jax.Array, rest: list[jax.Array], fn: Callable) -> jax.Array:
    mesh = jnp.stack(jnp.meshgrid(*rest, indexing="ij"), axis=-1) if rest else None

    def slab(x0):
        if mesh is None:
            return fn(x0[None])
        pts = jnp.concatenate([jnp.broadcast_to(x0, mesh.shape[:-1] + (1,)), mesh], -1)
        return fn(pts)

    return jax.lax.map(slab, first)


def estimate_grid_memory(
    grid: Grid, method: str, n_save: int, *, stabilize: bool = False
) -> int:
    """Estimated peak bytes of a float64 grid solve (state copies + saved frames)."""
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}")
    copies = _STATE_COPIES + _RHS_COPIES[method] + n_save
    if stabilize:
        copies += _STABILIZE_COPIES
    return 8 * grid.n_points * copies


def _fd_weights(order: int) -> np.ndarray:
    """Central second-order stencil for d^order on offsets -r..r, r = (order+1)//2."""
    r = (order + 1) // 2
    offsets = np.arange(-r, r + 1)
    V = np.vander(offsets, increasing=True).T.astype(float)
    rhs = np.zeros(2 * r + 1)
    rhs[order] = math.factorial(order)
    return np.linalg.solve(V, rhs)


def _fd_derivative(Q: jax.Array, axis: int, order: int, h: float) -> jax.Array:
    w = _fd_weights(order)
    r = (len(w) - 1) // 2
    pad = [(0, 0)] * Q.ndim
    pad[axis] = (r, r)
    padded = jnp.pad(Q, pad)
    n = Q.shape[axis]
    out = sum(
        float(ws) * jax.lax.slice_in_dim(padded, s, s + n, axis=axis)
        for s, ws in enumerate(w)
        if ws != 0
    )
    return out / h**order


def _check_second_order(pde: QPDE) -> None:
    if pde.max_order > 2:
        raise ValueError(
            "`stabilize=True` only handles second-order PDEs, but this one has "
            f"derivatives of order {pde.max_order}"
        )


def added_diffusion(pde: QPDE, grid: Grid) -> jax.Array:
    """nu(x) = max(0, -lambda_min(D(x))) on the grid, shape `grid.shape`.

    D(x) is the symmetric second-order coefficient matrix (`QPDE.diffusion_matrix`,
    order-2 terms only), so D + nu I is positive semidefinite at every grid point; nu
    is 0 where D is already semidefinite. Values below 1e-12 max |D| are set to 0
    (round-off of a semidefinite D). This is the diffusion `stabilize=True` adds.

    Raises:
        ValueError: if the PDE has derivatives of order > 2 (not handled).
    """
    _check_second_order(pde)

    def lam_and_scale(pts):
        D = pde.diffusion_matrix(pts)
        return jnp.linalg.eigvalsh(D)[..., 0], jnp.max(jnp.abs(D), axis=(-2, -1))

    lam, scale = grid.evaluate(lam_and_scale)
    tol = _NU_RELATIVE_TOL * jnp.maximum(jnp.max(scale), 1.0)
    return jnp.where(-lam > tol, -lam, 0.0)


class GridVectorField(eqx.Module):
    """dQ/dt = sum_m c_m(X) D^m Q [+ nu(X) Laplacian(Q)] on a grid, D^m by finite
    differences or FFT; the nu term only when `nu` (the added diffusion) is given."""

    pde: QPDE
    grid: Grid
    method: str = eqx.field(static=True)
    nu: jax.Array | None = None

    def _coefficient(self, poly, X: list[jax.Array]) -> jax.Array:
        total = 0.0
        for expo, c in poly:
            term = c
            for xk, e in zip(X, expo, strict=True):
                if e:
                    term = term * xk**e
            total = total + term
        return total

    def _spectral_multiplier(self, deriv: tuple[int, ...]) -> jax.Array:
        mult = 1.0
        last = self.grid.dim - 1
        for k, (g, h, m) in enumerate(
            zip(self.grid.points, self.grid.spacing, deriv, strict=True)
        ):
            if not m:
                continue
            freq = np.fft.rfftfreq(g, h) if k == last else np.fft.fftfreq(g, h)
            kk = 2 * np.pi * freq
            if m % 2 and g % 2 == 0:
                kk[g // 2 if k != last else -1] = 0.0  # odd derivative: drop Nyquist
            shape = [1] * self.grid.dim
            shape[k] = -1
            mult = mult * jnp.asarray((1j * kk) ** m).reshape(shape)
        return mult

    def __call__(self, t: Any, Q: jax.Array, args: Any) -> jax.Array:
        X = self.grid._broadcast_axes()
        Qhat = jnp.fft.rfftn(Q) if self.method == "spectral" else None
        out = jnp.zeros_like(Q)
        for deriv, poly in self.pde.terms:
            if self.method == "spectral" and sum(deriv):
                dQ = jnp.fft.irfftn(Qhat * self._spectral_multiplier(deriv), s=Q.shape)
            else:
                dQ = Q
                for axis, m in enumerate(deriv):
                    if m:
                        dQ = _fd_derivative(dQ, axis, m, self.grid.spacing[axis])
            out = out + self._coefficient(poly, X) * dQ
        if self.nu is not None:
            out = out + self.nu * self._laplacian(Q, Qhat)
        return out

    def _laplacian(self, Q: jax.Array, Qhat: jax.Array | None) -> jax.Array:
        if self.method == "spectral":
            mult = sum(
                self._spectral_multiplier(tuple(2 * (i == k) for i in range(Q.ndim)))
                for k in range(Q.ndim)
            )
            return jnp.fft.irfftn(Qhat * mult, s=Q.shape)
        return sum(_fd_derivative(Q, k, 2, h) for k, h in enumerate(self.grid.spacing))


class GridSolution(SolveResult):
    """What `solve_grid` returns (`SolveResult`): states (nt, *grid.shape) is Q on
    the grid at tsave; expects is None.

    Attributes:
        integral: (nt,) integral of Q over the box (conserved: 1 for a normalised Q0).
        grid: the grid.
        scheme: "fd" or "spectral".
        memory_bytes: estimated peak memory of the solve.
        max_added_diffusion: with `stabilize=True`, the largest nu(x) added to the
            PDE over the grid (0: the PDE was not modified); None otherwise.
        q_mass_stabilized: with `stabilize=True`, (nt,) integral of Q at tsave over
            the grid points where nu > 0, i.e. where the solved PDE differs from the
            given one; None otherwise.
        q_max_stabilized: with `stabilize=True`, (nt,) max |Q| at tsave over those
            points; None otherwise.
    """

    integral: jax.Array
    grid: Grid
    scheme: str = eqx.field(static=True)
    memory_bytes: int = eqx.field(static=True)
    max_added_diffusion: jax.Array | None = None
    q_mass_stabilized: jax.Array | None = None
    q_max_stabilized: jax.Array | None = None

    @property
    def Q(self) -> jax.Array:
        """Q on the grid at tsave (= `states`)."""
        return self.states

    @property
    def num_steps(self) -> jax.Array:
        """Deprecated: `stats["num_steps"]`."""
        return self.stats["num_steps"]


def solve_grid(
    pde: QPDE,
    Q0: Any,
    tsave: Any,
    *,
    grid: Grid,
    scheme: str = "fd",
    method: str | AbstractMethod | dfx.AbstractSolver = "tsit5",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    max_memory: int | None = None,
    stabilize: bool = False,
) -> GridSolution:
    """Solves the compiled Q-PDE dQ/dt = sum_m c_m(x) d^m Q on a grid.

    The PDE is discretised in space and integrated in time by diffrax (method of
    lines), with `scheme`:

    - "fd": central differences of second order for every derivative, Q = 0
      outside the box;
    - "spectral": exact derivatives of the trigonometric interpolant on the
      periodic box (FFT), Nyquist mode dropped for odd orders.

    Args:
        pde: compiled PDE on R^dim (the generator).
        Q0: initial Q, a callable (..., dim) -> (...) (e.g. `coherent_q(1.0)`) or an
            array of shape `grid.shape`.
        tsave: (nt,) increasing save times; the solve starts at tsave[0].
        grid: the `Grid` (dim must match the PDE).
        scheme: "fd" or "spectral".
        method: a method object or name (default "tsit5"; any explicit or implicit
            method, `qf.RK4(dt)` for fixed steps, or a diffrax solver).
        rtol, atol, max_steps: override the method's (defaults 1e-6, 1e-8, 100000).
        max_memory: refuse grids whose estimated footprint exceeds this many bytes
            (default: half the available memory), raising MemoryError before
            allocating anything.
        stabilize: opt-in; solve a modified PDE that is well-posed where the given
            one is backward-parabolic. At every grid point nu(x) =
            max(0, -lambda_min(D(x))), D(x) the symmetric matrix of the second-order
            coefficients, is computed once (`added_diffusion`) and
            nu(x) * Laplacian(Q) is added to the right-hand side (discretised as
            the scheme's other derivatives), so the local diffusion D + nu I is
            positive semidefinite. Where D is already semidefinite (everywhere for
            a Fokker-Planck PDE) nothing changes. The answer is only that of the
            given PDE if Q is negligible where nu > 0: check
            `max_added_diffusion`, `q_mass_stabilized` and `q_max_stabilized` of
            the result. Raises ValueError for PDEs of order > 2.

    Returns:
        `GridSolution` with Q at tsave, the integral of Q, grid and memory estimate
        (and, with `stabilize=True`, what the stabilisation added and where).

    Raises:
        RuntimeError: if the solution blew up (non-finite, or |Q| above 10
            max(|Q0|, pi^-N)): typical of indefinite diffusion on a fine grid
            without `stabilize=True`; or if the solve reached its step limit.

    Examples:
        >>> import jax.numpy as jnp
        >>> from qflow_jax.husimi import Grid, a, adag, coherent_q, compile_qpde
        >>> from qflow_jax.husimi import solve_grid
        >>> pde = compile_qpde(adag(0) @ a(0), [0.5 * a(0)])
        >>> sol = solve_grid(pde, coherent_q(1.0), jnp.array([0.0, 1.0]),
        ...                  grid=Grid(2, 64, 6.0))
        >>> [round(float(x), 4) for x in sol.integral]
        [1.0, 1.0]
    """
    if not isinstance(pde, QPDE):
        raise TypeError(
            f"`pde` must be a QPDE from compile_qpde, got {type(pde).__name__}"
        )
    if not isinstance(grid, Grid):
        raise TypeError(f"`grid` must be a Grid, got {type(grid).__name__}")
    if grid.dim != pde.dim:
        raise ValueError(
            f"`grid` has dimension {grid.dim} but the PDE lives on R^{pde.dim}"
        )
    if scheme not in _METHODS:
        raise ValueError(f"`scheme` must be one of {_METHODS}, got {scheme!r}")
    method = method_from(method, rtol=rtol, atol=atol, max_steps=max_steps)
    tsave = check_tsave(tsave, float)
    if not isinstance(stabilize, bool):
        raise TypeError(f"`stabilize` must be a bool, got {stabilize!r}")
    if stabilize:
        _check_second_order(pde)
    limit = int(0.5 * available_memory()) if max_memory is None else int(max_memory)
    need = estimate_grid_memory(grid, scheme, tsave.shape[0], stabilize=stabilize)
    if need > limit:
        raise InsufficientMemoryError(
            f"grid {'x'.join(map(str, grid.shape))} = {grid.n_points:.3g} points needs "
            f"about {need / 2**30:.3g} GiB for a '{scheme}' solve, over the limit of "
            f"{limit / 2**30:.3g} GiB (`max_memory`); use fewer `points`"
        )
    if callable(Q0):
        y0 = grid.evaluate(Q0)
    else:
        y0 = jnp.asarray(Q0, dtype=float)
        if y0.shape != grid.shape:
            raise ValueError(
                f"`Q0` must be a callable or an array of the grid shape {grid.shape}, "
                f"got shape {y0.shape}"
            )
    y0 = check_finite(y0, "Q0")
    nu = added_diffusion(pde, grid) if stabilize else None
    # nu = 0 everywhere (semidefinite D): leave the vector field exactly as without
    # stabilisation; the solution still reports max_added_diffusion = 0.
    modified = nu is not None and bool(jnp.any(nu > 0))
    vf = GridVectorField(pde, grid, scheme, nu if modified else None)
    # under a trace failures raise inside the program; eagerly they are checked
    # here, for a plain RuntimeError
    throw = not is_concrete((y0, tsave))
    sol, status, blew_up, remedy = _run(vf, y0, tsave, method, need, nu, throw)
    if not throw:
        raise_if_failed(status, f"solve_grid ({scheme})", method.max_steps, remedy)
        if bool(blew_up):
            raise RuntimeError(_blow_up_message(remedy))
    return sol


def _blow_up_message(remedy: str) -> str:
    return (
        "the grid solution blew up (|Q| > 10 max(|Q0|, pi^-N)): a PDE that is not "
        "Fokker-Planck (QPDE.is_fokker_planck() is False: indefinite diffusion or "
        f"order > 2) is ill-posed on fine grids; {remedy}"
    )


@eqx.filter_jit
def _run(vf, y0, tsave, method, need, nu, throw):
    vol = vf.grid.cell_volume

    def save(t, y):
        out = (y, jnp.sum(y) * vol)
        if nu is None:
            return out
        inside = jnp.where(nu > 0, y, 0.0)
        return (*out, jnp.sum(inside) * vol, jnp.max(jnp.abs(inside)))

    if nu is None:
        remedy = (
            "pass `stabilize=True` (adds diffusion where D(x) is indefinite; second "
            "order only), use a coarser grid or a Fock solve"
        )
    else:
        remedy = "use a coarser grid, a smaller box or a Fock solve"
    out = integrate(
        vf,
        method.solver(),
        y0,
        tsave,
        method=method,
        engine=f"solve_grid ({vf.method})",
        save=save,
        remedy=remedy,
        throw=throw,
    )
    Q, integral = out.saved[:2]
    bound = 10 * jnp.maximum(jnp.max(jnp.abs(y0)), jnp.pi ** (-vf.grid.dim / 2))
    blew_up = jnp.max(jnp.abs(Q)) > bound
    if throw:
        Q = eqx.error_if(Q, blew_up, _blow_up_message(remedy))
    stab = {}
    if nu is not None:
        stab = dict(
            max_added_diffusion=jnp.max(nu),
            q_mass_stabilized=out.saved[2],
            q_max_stabilized=out.saved[3],
        )
    return (
        GridSolution(
            tsave=tsave,
            states=Q,
            expects=None,
            final_state=Q[-1],
            stats=out.stats,
            method=method.name,
            integral=integral,
            grid=vf.grid,
            scheme=vf.method,
            memory_bytes=need,
            **stab,
        ),
        out.status,
        blew_up,
        remedy,
    )


def _deprecated_grid_solver(scheme: str) -> Callable[..., GridSolution]:
    """The old per-scheme entry point, kept for one release."""

    def solve(
        pde: QPDE,
        Q0: Any,
        grid: Grid,
        tsave: Any,
        *,
        solver: dfx.AbstractSolver | None = None,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        dt0: float | None = None,
        stepsize_controller: dfx.AbstractStepSizeController | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_memory: int | None = None,
        stabilize: bool = False,
    ) -> GridSolution:
        warnings.warn(
            f"solve_{scheme}(pde, Q0, grid, tsave) is deprecated; use "
            f"solve_grid(pde, Q0, tsave, grid=grid, scheme={scheme!r})",
            DeprecationWarning,
            stacklevel=2,
        )
        fixed = isinstance(stepsize_controller, dfx.ConstantStepSize)
        if stepsize_controller is not None and not fixed:
            raise ValueError(
                "`stepsize_controller` may only be ConstantStepSize() (with `dt0`); "
                "use `method=` of solve_grid"
            )
        method = Solver(
            solver or dfx.Tsit5(), rtol, atol, max_steps, dt=dt0 if fixed else None
        )
        return solve_grid(
            pde,
            Q0,
            tsave,
            grid=grid,
            scheme=scheme,
            method=method,
            max_memory=max_memory,
            stabilize=stabilize,
        )

    solve.__name__ = solve.__qualname__ = f"solve_{scheme}"
    solve.__doc__ = (
        f"Deprecated: `solve_grid(pde, Q0, tsave, grid=grid, scheme={scheme!r})`."
    )
    return solve


solve_fd = _deprecated_grid_solver("fd")
solve_spectral = _deprecated_grid_solver("spectral")
