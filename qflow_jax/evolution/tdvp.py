"""TDVP: the flow parameters follow d theta/dt = S^+ F (time-dependent variational
principle for a normalized density, docs/physics.md, section 4).

With G_i = grad_theta log q_theta(x_i) and s_i = d log Q/dt (x_i) from the compiled
PDE on samples x_i ~ q_theta, and Gc, sc their centred versions,

    S = Gc^T Gc / B  (the Fisher matrix, P x P),   F = Gc^T sc / B,   S theta_dot = F.

The numerics are arguments of the `TDVP` method, as in netket's TDVP driver:

- the geometric tensor (`qgt`): "dense" builds S from per-sample gradients;
  "sample" solves in sample space (minSR, the "kernel trick"): the B x B matrix
  T = Gc Gc^T / B has the nonzero eigenvalues of S, and theta_dot = Gc^T y / B with
  T y = sc is the same minimum-norm solution (with a diagonal shift eps:
  (S + eps)^-1 F = Gc^T (T + eps)^-1 sc / B), at O(B^2 P + B^3) instead of O(P^3);
  "matrix_free" gives products S v through jvp/vjp; "auto" takes "sample" when
  B < P, else "dense";
- the linear solver, any callable `solver(S, F) -> theta_dot` taking a `Fisher`
  (with `.to_dense()` and `S @ v`): `Cholesky(diag_shift)`, `PInv(rcond)` (a smooth
  eigenvalue cut-off), `SNR(rcond, cutoff)` (adding a signal-to-noise cut-off),
  `CG(diag_shift, maxiter)`; in sample space the solver gets (T, sc);
- a diffrax solver for theta(t): "heun", "rk4" (fixed steps of at most `dt`),
  "tsit5" (adaptive, `rtol`/`atol`), or any diffrax solver object.

Samples are x_i = f_theta(z_i) for base draws z_i fixed over a save interval, so
theta_dot is a smooth function of theta and diffrax's error control sees a
deterministic vector field. The residual

    r^2 = 1 + (theta_dot^T S theta_dot - 2 F . theta_dot) / E[s^2]

measures how much of the PDE's motion the flow cannot follow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import diffrax as dfx
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from qflow_jax.config import (
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    settings_class,
)
from qflow_jax.core.checks import check_positive_number
from qflow_jax.core.integrate import integrate
from qflow_jax.core.methods import RK4, AbstractMethod, Heun, Solver, Tsit5
from qflow_jax.evolution._flowfns import logq_fn
from qflow_jax.evolution.evolve import EvolutionMethod, evolve
from qflow_jax.evolution.result import EvolutionResult, deprecated_evolve
from qflow_jax.husimi import QPDE, dlogq_dt
from qflow_jax.parallel import shard_samples

__all__ = [
    "CG",
    "LINEAR_SOLVERS",
    "SNR",
    "TDVP",
    "Cholesky",
    "Fisher",
    "PInv",
    "TDVPSettings",
    "evolve_tdvp",
    "tdvp_evolve",
    "tdvp_residual",
    "tdvp_theta_dot",
]

QGTS = ("auto", "dense", "sample", "matrix_free")
ODE_SOLVERS = ("heun", "rk4", "tsit5")


class Fisher(eqx.Module):
    """The matrix of a TDVP linear system: S = Gc^T Gc / B in parameter space, or
    T = Gc Gc^T / B in sample space.

    Attributes:
        dense: the matrix, or None (matrix-free: products only).
        matvec: v -> matrix @ v when `dense` is None.
        scores: (B, P) centred per-sample scores Gc of a dense parameter-space S
            (for solvers that weigh samples, `SNR`), else None.
        targets: (B,) centred PDE rates sc belonging to `scores`, else None.
    """

    dense: jax.Array | None
    matvec: Callable[[jax.Array], jax.Array] | None = None
    scores: jax.Array | None = None
    targets: jax.Array | None = None

    def __matmul__(self, v: jax.Array) -> jax.Array:
        return self.dense @ v if self.dense is not None else self.matvec(v)

    def to_dense(self) -> jax.Array:
        """The matrix (a ValueError for a matrix-free one)."""
        if self.dense is None:
            raise ValueError(
                "this solver needs the dense matrix; the matrix-free geometric "
                "tensor gives products only (use CG)"
            )
        return self.dense


def _eig_filter(lam: jax.Array, rcond: float) -> jax.Array:
    cut = rcond * jnp.max(lam)
    return 1.0 / (1.0 + (cut / jnp.maximum(lam, 1e-300)) ** 6)


class Cholesky(eqx.Module):
    """theta_dot = (S + diag_shift I)^-1 F by a Cholesky factorization."""

    diag_shift: float = 1e-6

    def __call__(self, S: Fisher, F: jax.Array) -> jax.Array:
        A = S.to_dense() + self.diag_shift * jnp.eye(F.shape[0], dtype=F.dtype)
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), F)


class PInv(eqx.Module):
    """theta_dot = S^+ F with the smooth cut-off 1 / (1 + (rcond max(lam) / lam)^6)
    on the eigenvalues lam of S."""

    rcond: float = 1e-10

    def __call__(self, S: Fisher, F: jax.Array) -> jax.Array:
        lam, V = jnp.linalg.eigh(S.to_dense())
        keep = _eig_filter(lam, self.rcond)
        return V @ (keep * (V.T @ F) / jnp.maximum(lam, 1e-300))


class SNR(eqx.Module):
    """`PInv` that also drops eigen-directions whose component of F has a
    signal-to-noise ratio below `cutoff` over the samples (parameter space only)."""

    rcond: float = 1e-10
    cutoff: float = 2.0

    def __call__(self, S: Fisher, F: jax.Array) -> jax.Array:
        if S.scores is None:
            raise ValueError(
                "SNR weighs the samples' contributions: it needs the dense "
                "parameter-space geometric tensor (qgt='dense')"
            )
        lam, V = jnp.linalg.eigh(S.to_dense())
        contrib = (S.scores @ V) * S.targets[:, None]  # per-sample parts of V^T F
        Fp = contrib.mean(0)
        snr = jnp.sqrt(contrib.shape[0]) * jnp.abs(Fp) / (contrib.std(0) + 1e-300)
        keep = _eig_filter(lam, self.rcond) / (
            1.0 + (self.cutoff / (snr + 1e-300)) ** 6
        )
        return V @ (keep * Fp / jnp.maximum(lam, 1e-300))


class CG(eqx.Module):
    """theta_dot from conjugate gradients on (S + diag_shift I) theta_dot = F, with
    products S @ v only (works with every geometric tensor); at most `maxiter`
    iterations, stopping at the relative residual `tol`."""

    diag_shift: float = 1e-6
    maxiter: int = 200
    tol: float = 1e-5

    def __call__(self, S: Fisher, F: jax.Array) -> jax.Array:
        x, _ = jax.scipy.sparse.linalg.cg(
            lambda v: S @ v + self.diag_shift * v, F, tol=self.tol, maxiter=self.maxiter
        )
        return x


LINEAR_SOLVERS: dict[str, type[eqx.Module]] = {
    "cholesky": Cholesky,
    "pinv": PInv,
    "snr": SNR,
    "cg": CG,
}


class TDVP(EvolutionMethod):
    """The TDVP evolution method (module docstring): d theta/dt = S^+ F.

    Attributes:
        qgt: the geometric tensor: "auto", "dense", "sample" (minSR) or
            "matrix_free".
        solver: `solver(S, F) -> theta_dot` (`Fisher` S): `PInv()`, `Cholesky()`,
            `SNR()`, `CG()` or any callable of that form.
        ode_solver: "heun", "rk4", "tsit5" or a diffrax solver object (adaptive
            ones take rtol/atol, others fixed steps of at most dt).
        dt: the largest fixed step: each save interval is cut into
            ceil(span / dt) equal steps.
        batch_size: samples per evaluation of theta_dot.
        rtol, atol: tolerances of an adaptive ODE solver.
        max_retries: halvings of dt for an interval that failed.

    Examples:
        >>> TDVP(qgt="sample", solver=Cholesky(1e-8), dt=0.05).qgt
        'sample'
        >>> TDVP(qgt="matrix_free", solver=PInv())
        Traceback (most recent call last):
        ...
        ValueError: `solver` PInv needs the dense matrix (qgt='matrix_free': use CG())
    """

    name: ClassVar[str] = "tdvp"
    qgt: str = eqx.field(default="auto", static=True)
    solver: Callable[[Fisher, jax.Array], jax.Array] = PInv()
    ode_solver: str | dfx.AbstractSolver = eqx.field(default="rk4", static=True)
    dt: float = eqx.field(default=0.01, static=True)
    batch_size: int = eqx.field(default=2048, static=True)
    rtol: float = eqx.field(default=1e-4, static=True)
    atol: float = eqx.field(default=1e-6, static=True)
    max_retries: int = eqx.field(default=2, static=True)

    def __check_init__(self) -> None:
        if self.qgt not in QGTS:
            raise ValueError(
                f"`qgt` must be one of {', '.join(QGTS)}, got {self.qgt!r}"
            )
        if not callable(self.solver):
            raise TypeError(
                "`solver` must be a callable solver(S, F) -> theta_dot, got "
                f"{type(self.solver).__name__}"
            )
        dense_only = (Cholesky, PInv, SNR)
        if self.qgt == "matrix_free" and isinstance(self.solver, dense_only):
            raise ValueError(
                f"`solver` {type(self.solver).__name__} needs the dense matrix "
                "(qgt='matrix_free': use CG())"
            )
        if self.qgt == "sample" and isinstance(self.solver, SNR):
            raise ValueError("`solver` SNR needs qgt='dense' (per-sample scores of S)")
        if isinstance(self.ode_solver, str) and self.ode_solver not in ODE_SOLVERS:
            raise ValueError(
                f"`ode_solver` must be one of {', '.join(ODE_SOLVERS)} or a diffrax "
                f"solver, got {self.ode_solver!r}"
            )
        if not isinstance(self.ode_solver, str | dfx.AbstractSolver):
            raise TypeError(
                "`ode_solver` must be a name or a diffrax solver, got "
                f"{type(self.ode_solver).__name__}"
            )
        for name in ("dt", "rtol", "atol"):
            check_positive_number(getattr(self, name), name)
        check_positive_number(self.batch_size, "batch_size", integer=True)

    def ode_method(self, n_steps: int) -> AbstractMethod:
        """The ODE method of one save interval, in its own time s in [0, 1] with
        `n_steps` fixed steps (fixed-step solvers)."""
        if self.ode_solver == "tsit5":
            return Tsit5(rtol=self.rtol, atol=self.atol)
        if self.ode_solver in ("heun", "rk4"):
            return (Heun if self.ode_solver == "heun" else RK4)(1.0 / n_steps)
        adaptive = isinstance(self.ode_solver, dfx.AbstractAdaptiveSolver)
        return Solver(
            self.ode_solver,
            rtol=self.rtol,
            atol=self.atol,
            dt=None if adaptive else 1.0 / n_steps,
        )

    def advance(self, flow, pde, params, t0, t1, key):
        z = jax.random.normal(key, (self.batch_size, flow.dim))
        span = float(t1 - t0)
        n_steps = max(1, int(np.ceil(span / self.dt * (1 - 1e-9))))
        new, diag, steps, ok = _evolve_interval(
            flow, pde, params, z, jnp.asarray(span), n_steps, self
        )
        info = {"residual": float(diag["residual"]), "ode_steps": int(steps)}
        failure = None if bool(ok) else "the ODE solve failed or went non-finite"
        return new, info, failure


def _qgt_kind(method: TDVP, B: int, P: int) -> str:
    if method.qgt != "auto":
        return method.qgt
    return "sample" if B < P and not isinstance(method.solver, SNR) else "dense"


def _scores_dot(
    logq_theta: Callable, theta: jax.Array, x: jax.Array, v: jax.Array
) -> jax.Array:
    """(Gc v)_i: the centred derivative of log q_theta(x_i) along v (one jvp per
    sample; Gc the centred scores)."""
    gv = jax.vmap(lambda xi: jax.jvp(lambda th: logq_theta(th, xi), (theta,), (v,))[1])(
        x
    )
    return gv - gv.mean()


@eqx.filter_jit
def tdvp_theta_dot(
    flow: nn.Module,
    pde: QPDE,
    theta: jax.Array,
    unravel: Callable[[jax.Array], Any],
    z: jax.Array,
    method: TDVP | TDVPSettings,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """theta_dot = S^+ F on the samples x = f_theta(z); also the TDVP residual.

    The samples are split over the devices (`qflow_jax.parallel`); S and F are
    means over them, all-reduced by the compiler.

    Args:
        flow, pde: the flow and the compiled Q-PDE.
        theta, unravel: the flat parameters and the function back to the pytree
            (`jax.flatten_util.ravel_pytree`).
        z: (B, dim) base draws.
        method: a `TDVP` method (or `TDVPSettings`) giving the geometric tensor and
            the linear solver.

    Returns:
        (theta_dot, diagnostics): "residual", "mean_s" (E[s], zero up to sampling
        noise) and "es2" (E[(s - E s)^2]).
    """
    if isinstance(method, TDVPSettings):
        method = method.method()
    params = unravel(theta)
    z = shard_samples(z)
    x = jax.lax.stop_gradient(
        flow.apply(params, z, method=type(flow).forward_and_log_det)[0]
    )
    s = dlogq_dt(pde, logq_fn(flow, params), x)
    sc = s - s.mean()
    B, P = x.shape[0], theta.shape[0]

    def logq_theta(th: jax.Array, xi: jax.Array) -> jax.Array:
        return flow.apply(unravel(th), xi)

    kind = _qgt_kind(method, B, P)
    if kind == "matrix_free":

        def scores_dot(v):  # (Gc v)_i
            return _scores_dot(logq_theta, theta, x, v)

        _, vjp = jax.vjp(lambda th: jax.vmap(lambda xi: logq_theta(th, xi))(x), theta)

        def scores_t_dot(u):  # Gc^T u
            return vjp(u - u.mean())[0]

        S = Fisher(None, lambda v: scores_t_dot(scores_dot(v)) / B)
        F = scores_t_dot(sc) / B
        theta_dot = method.solver(S, F)
        motion = scores_dot(theta_dot)  # Gc theta_dot
    else:
        G = jax.vmap(jax.grad(logq_theta), in_axes=(None, 0))(theta, x)
        Gc = G - G.mean(0)
        if kind == "dense":
            F = Gc.T @ sc / B
            theta_dot = method.solver(Fisher(Gc.T @ Gc / B, scores=Gc, targets=sc), F)
        else:  # sample space: T y = sc, theta_dot = Gc^T y / B
            y = method.solver(Fisher(Gc @ Gc.T / B), sc)
            theta_dot = Gc.T @ y / B
        motion = Gc @ theta_dot
    es2 = jnp.mean(sc**2)
    # m = Gc theta_dot: theta_dot^T S theta_dot = |m|^2 / B, F . theta_dot = sc.m / B
    residual = 1.0 + (motion @ motion - 2.0 * sc @ motion) / (B * es2)
    return theta_dot, {"residual": residual, "mean_s": s.mean(), "es2": es2}


@eqx.filter_jit
def tdvp_residual(
    flow: nn.Module,
    pde: QPDE,
    params: Any,
    z_fit: jax.Array,
    z_test: jax.Array,
    method: TDVP | TDVPSettings,
) -> dict[str, jax.Array]:
    """How much of the PDE's motion the flow's tangent space misses, in sample and
    out of sample: theta_dot is fitted on x = f_theta(z_fit) (`tdvp_theta_dot`)
    and the relative residual

        r^2 = E[(sc - Gc theta_dot)^2] / E[sc^2]

    (sc, Gc: centred d log Q/dt and scores) is evaluated on those samples
    ("residual") and on independent ones, f_theta(z_test) ("residual_test"). With
    fewer samples than moving parameters the sample-space solve fits the samples
    exactly (residual ~ 0) while residual_test shows what it misses elsewhere.

    Returns:
        "residual", "residual_test" (both 0 where the flow follows the PDE
        exactly, 1 where it does not move along it at all).

    Examples:
        >>> from qflow_jax.flows import NormalizingFlow
        >>> from qflow_jax.husimi import a, adag, compile_qpde
        >>> pde = compile_qpde(adag(0) @ a(0), [a(0)])  # a damped oscillator
        >>> flow = NormalizingFlow(dim=2, n_layers=1, hidden=(4,), init_mean=(1.0, 0.0))
        >>> params = flow.init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> z1, z2 = jax.random.normal(jax.random.key(1), (2, 256, 2))
        >>> r = tdvp_residual(flow, pde, params, z1, z2, TDVP(qgt="dense"))
        >>> bool(r["residual_test"] < 1e-6)  # its Gaussian family holds the motion
        True
    """
    if isinstance(method, TDVPSettings):
        method = method.method()
    theta, unravel = ravel_pytree(params)
    theta_dot, diag = tdvp_theta_dot(flow, pde, theta, unravel, z_fit, method)
    forward = type(flow).forward_and_log_det
    x = jax.lax.stop_gradient(
        flow.apply(params, shard_samples(z_test), method=forward)[0]
    )
    s = dlogq_dt(pde, logq_fn(flow, params), x)
    motion = _scores_dot(
        lambda th, xi: flow.apply(unravel(th), xi), theta, x, theta_dot
    )
    r = (s - s.mean()) - motion
    return {
        "residual": diag["residual"],
        "residual_test": jnp.mean(r**2) / jnp.mean((s - s.mean()) ** 2),
    }


@eqx.filter_jit
def _evolve_interval(flow, pde, params, z, span, n_steps, method):
    """One save interval, integrated in s = (t - t_i) / span from 0 to 1 (the Q-PDE
    is autonomous): every time the solver sees is a constant, so the compiled
    program holds no run-time checks (host callbacks) and JAX's persistent
    compilation cache can store it; `n_steps` (static) fixed steps of span/n_steps.
    `span` is traced: intervals whose lengths differ in the last bits share one
    compiled program."""
    theta, unravel = ravel_pytree(params)

    def vf(s, th, args):
        return span * tdvp_theta_dot(flow, pde, th, unravel, z, method)[0]

    ode = method.ode_method(n_steps)
    out = integrate(
        vf,
        ode.solver(),
        theta,
        (0.0, 1.0),
        method=ode,
        engine="evolve_tdvp",
        throw=False,
    )
    _, diag = tdvp_theta_dot(flow, pde, out.final, unravel, z, method)
    ok = (out.status == 0) & jnp.all(jnp.isfinite(out.final))
    return unravel(out.final), diag, out.stats["num_steps"], ok


@settings_class
class TDVPSettings:
    """Settings of the TDVP evolution: the `tdvp:` section of a `qflow run` config,
    turned into the method object by `method()`.

    Attributes:
        batch_size: samples per evaluation of theta_dot.
        s_builder: the geometric tensor (`TDVP.qgt`): "auto", "dense", "sample"
            (minSR) or "matrix_free".
        linear_solver: "cholesky", "pinv", "snr" or "cg".
        diag_shift: added to the diagonal ("cholesky", "cg").
        rcond: relative eigenvalue cut-off ("pinv", "snr").
        snr_cutoff: signal-to-noise cut-off ("snr").
        cg_maxiter: iterations of "cg".
        ode_solver: "heun", "rk4" (fixed step dt) or "tsit5" (adaptive, rtol/atol).
        dt: the largest fixed step (heun, rk4): each save interval is cut into
            ceil(span / dt) equal steps. rtol, atol: tolerances of tsit5.

    A bad value raises a `ConfigError` (a ValueError) naming the field.

    Examples:
        >>> TDVPSettings(dt=0.05).method().dt
        0.05
        >>> TDVPSettings(dt=-0.1)
        Traceback (most recent call last):
        ...
        qflow_jax.config.ConfigError: `dt` must be > 0.0, got -0.1
    """

    batch_size: PositiveInt = 2048
    s_builder: Literal["auto", "dense", "sample", "matrix_free"] = "auto"
    linear_solver: Literal["cholesky", "pinv", "snr", "cg"] = "pinv"
    diag_shift: NonNegativeFloat = 1e-6
    rcond: PositiveFloat = 1e-10
    snr_cutoff: PositiveFloat = 2.0
    cg_maxiter: PositiveInt = 200
    ode_solver: Literal["heun", "rk4", "tsit5"] = "rk4"
    dt: PositiveFloat = 0.01
    rtol: PositiveFloat = 1e-4
    atol: PositiveFloat = 1e-6

    def __post_init__(self) -> None:
        if self.linear_solver != "cg" and self.s_builder == "matrix_free":
            raise ValueError(
                f"`linear_solver='{self.linear_solver}'` needs the dense S; use "
                "'cg' with `s_builder='matrix_free'`"
            )
        if self.linear_solver == "snr" and self.s_builder == "sample":
            raise ValueError(
                "`linear_solver='snr'` weighs per-sample scores of the dense S; use "
                "`s_builder='dense'` or 'auto'"
            )

    def solver(self) -> Callable[[Fisher, jax.Array], jax.Array]:
        """The linear solver object of `linear_solver` with its settings."""
        return {
            "cholesky": lambda: Cholesky(self.diag_shift),
            "pinv": lambda: PInv(self.rcond),
            "snr": lambda: SNR(self.rcond, self.snr_cutoff),
            "cg": lambda: CG(self.diag_shift, self.cg_maxiter),
        }[self.linear_solver]()

    def method(self) -> TDVP:
        """The `TDVP` method of these settings."""
        return TDVP(
            qgt=self.s_builder,
            solver=self.solver(),
            ode_solver=self.ode_solver,
            dt=self.dt,
            batch_size=self.batch_size,
            rtol=self.rtol,
            atol=self.atol,
        )


def evolve_tdvp(
    pde: QPDE,
    flow: nn.Module,
    params: Any,
    tsave: Any,
    *,
    key: jax.Array,
    settings: TDVPSettings | None = None,
    callback: Callable[[int, Any, dict], None] | None = None,
) -> EvolutionResult:
    """`evolve(pde, flow, params, tsave, method=settings.method(), ...)`: TDVP from
    its config settings (default `TDVPSettings()`); see `evolve` and `TDVP`."""
    settings = TDVPSettings() if settings is None else settings
    return evolve(
        pde, flow, params, tsave, method=settings.method(), key=key, callback=callback
    )


tdvp_evolve = deprecated_evolve("tdvp_evolve", evolve_tdvp)
