"""TDVP: the flow parameters follow d theta/dt = S^+ F (time-dependent variational
principle for a normalized density, docs/physics.md, section 4).

With G_i = grad_theta log q_theta(x_i) and s_i = d log Q/dt (x_i) from the compiled
PDE on samples x_i ~ q_theta,

    S = Cov(G, G)  (the Fisher matrix),   F = Cov(G, s),   S theta_dot = F.

The numerics are arguments, as in netket's TDVP driver: an S builder ("dense" from
per-sample gradients, or "matrix_free" products through jvp/vjp), a linear solver
`f(S, F) -> theta_dot` ("cholesky" with a diagonal shift, "pinv" with a smooth
eigenvalue cut-off, "snr" adding a signal-to-noise cut-off, "cg" conjugate
gradients), and a diffrax solver for theta(t) ("heun", "rk4" fixed-step; "tsit5"
adaptive). Samples are x_i = f_theta(z_i) for base draws z_i fixed over a time
interval, so theta_dot is a smooth function of theta and diffrax's error control
sees a deterministic vector field. The residual

    r^2 = 1 + (theta_dot^T S theta_dot - 2 F . theta_dot) / E[s^2]

measures how much of the PDE's motion the flow cannot follow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

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
from qflow_jax.core.checks import check_tsave
from qflow_jax.core.integrate import integrate
from qflow_jax.core.methods import RK4, AbstractMethod, Heun, Tsit5
from qflow_jax.evolution._flowfns import logq_fn
from qflow_jax.evolution.result import (
    EvolutionResult,
    deprecated_evolve,
    evolution_result,
)
from qflow_jax.husimi import QPDE, dlogq_dt
from qflow_jax.parallel import shard_samples

__all__ = [
    "LINEAR_SOLVERS",
    "TDVPSettings",
    "evolve_tdvp",
    "tdvp_evolve",
    "tdvp_theta_dot",
]


@settings_class
class TDVPSettings:
    """Settings of the TDVP evolution.

    Attributes:
        batch_size: samples per evaluation of theta_dot.
        s_builder: "dense" or "matrix_free".
        linear_solver: "cholesky", "pinv", "snr" or "cg".
        diag_shift: added to S's diagonal ("cholesky", "cg").
        rcond: relative eigenvalue cut-off ("pinv", "snr").
        snr_cutoff: signal-to-noise cut-off ("snr").
        cg_maxiter: iterations of "cg".
        ode_solver: "heun", "rk4" (fixed step dt) or "tsit5" (adaptive, rtol/atol).
        dt: the largest fixed step (heun, rk4): each save interval is cut into
            ceil(span / dt) equal steps. rtol, atol: tolerances of tsit5.

    The class is also the `tdvp:` section of a `qflow run` config: a bad value
    raises a `ConfigError` (a ValueError) naming the field.

    Examples:
        >>> TDVPSettings(dt=0.05).dt
        0.05
        >>> TDVPSettings(dt=-0.1)
        Traceback (most recent call last):
        ...
        qflow_jax.config.ConfigError: `dt` must be > 0.0, got -0.1
    """

    batch_size: PositiveInt = 2048
    s_builder: Literal["dense", "matrix_free"] = "dense"
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


class _Fisher(eqx.Module):
    """S = Gc^T Gc / B as a dense matrix or through products with centred scores."""

    dense: jax.Array | None
    matvec: Callable[[jax.Array], jax.Array] | None

    def __call__(self, v: jax.Array) -> jax.Array:
        return self.dense @ v if self.dense is not None else self.matvec(v)


def _solve_cholesky(
    S: _Fisher, F: jax.Array, st: TDVPSettings, extra: Any
) -> jax.Array:
    A = S.dense + st.diag_shift * jnp.eye(F.shape[0], dtype=F.dtype)
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), F)


def _eig_filter(lam: jax.Array, st: TDVPSettings) -> jax.Array:
    cut = st.rcond * jnp.max(lam)
    return 1.0 / (1.0 + (cut / jnp.maximum(lam, 1e-300)) ** 6)


def _solve_pinv(S: _Fisher, F: jax.Array, st: TDVPSettings, extra: Any) -> jax.Array:
    lam, V = jnp.linalg.eigh(S.dense)
    Fp = V.T @ F
    return V @ (_eig_filter(lam, st) * Fp / jnp.maximum(lam, 1e-300))


def _solve_snr(S: _Fisher, F: jax.Array, st: TDVPSettings, extra: Any) -> jax.Array:
    Gc, sc = extra
    lam, V = jnp.linalg.eigh(S.dense)
    contrib = (Gc @ V) * sc[:, None]  # per-sample contributions to V^T F
    Fp = contrib.mean(0)
    snr = jnp.sqrt(contrib.shape[0]) * jnp.abs(Fp) / (contrib.std(0) + 1e-300)
    keep = _eig_filter(lam, st) / (1.0 + (st.snr_cutoff / (snr + 1e-300)) ** 6)
    return V @ (keep * Fp / jnp.maximum(lam, 1e-300))


def _solve_cg(S: _Fisher, F: jax.Array, st: TDVPSettings, extra: Any) -> jax.Array:
    x, _ = jax.scipy.sparse.linalg.cg(
        lambda v: S(v) + st.diag_shift * v, F, maxiter=st.cg_maxiter
    )
    return x


LINEAR_SOLVERS: dict[str, Callable[..., jax.Array]] = {
    "cholesky": _solve_cholesky,
    "pinv": _solve_pinv,
    "snr": _solve_snr,
    "cg": _solve_cg,
}


def tdvp_theta_dot(
    flow: nn.Module,
    pde: QPDE,
    theta: jax.Array,
    unravel: Callable[[jax.Array], Any],
    z: jax.Array,
    settings: TDVPSettings,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """theta_dot = S^+ F on the samples x = f_theta(z); also the TDVP residual.

    The samples are split over the devices (`qflow_jax.parallel`); S and F are
    means over them, all-reduced by the compiler."""
    params = unravel(theta)
    z = shard_samples(z)
    x = jax.lax.stop_gradient(
        flow.apply(params, z, method=type(flow).forward_and_log_det)[0]
    )
    s = dlogq_dt(pde, logq_fn(flow, params), x)
    sc = s - s.mean()
    B = x.shape[0]

    def logq_theta(th: jax.Array, xi: jax.Array) -> jax.Array:
        return flow.apply(unravel(th), xi)

    if settings.s_builder == "dense":
        G = jax.vmap(jax.grad(logq_theta), in_axes=(None, 0))(theta, x)
        Gc = G - G.mean(0)
        S = _Fisher(Gc.T @ Gc / B, None)
        F = Gc.T @ sc / B
        extra = (Gc, sc)
    else:

        def scores_dot(v):  # (G v)_i, centred
            gv = jax.vmap(
                lambda xi: jax.jvp(lambda th: logq_theta(th, xi), (theta,), (v,))[1]
            )(x)
            return gv - gv.mean()

        _, vjp = jax.vjp(lambda th: jax.vmap(lambda xi: logq_theta(th, xi))(x), theta)

        def scores_t_dot(u):  # Gc^T u (u centred)
            return vjp(u - u.mean())[0]

        S = _Fisher(None, lambda v: scores_t_dot(scores_dot(v)) / B)
        F = scores_t_dot(sc) / B
        extra = None
    theta_dot = LINEAR_SOLVERS[settings.linear_solver](S, F, settings, extra)
    es2 = jnp.mean(sc**2)
    residual = 1.0 + (theta_dot @ S(theta_dot) - 2.0 * F @ theta_dot) / es2
    return theta_dot, {"residual": residual, "mean_s": s.mean(), "es2": es2}


def _ode_method(settings: TDVPSettings, n_steps: int) -> AbstractMethod:
    # in the interval's own time s = (t - t_i) / (t_{i+1} - t_i), 0 <= s <= 1
    if settings.ode_solver == "tsit5":
        return Tsit5(rtol=settings.rtol, atol=settings.atol)
    return (Heun if settings.ode_solver == "heun" else RK4)(1.0 / n_steps)


@eqx.filter_jit
def _evolve_interval(flow, pde, theta, unravel, z, span, n_steps, settings):
    """One save interval, integrated in s = (t - t_i) / span from 0 to 1 (the Q-PDE
    is autonomous): every time the solver sees is a constant, so the compiled
    program holds no run-time checks (host callbacks) and JAX's persistent
    compilation cache can store it; `n_steps` (static) fixed steps of span/n_steps."""

    def vf(s, th, args):
        return span * tdvp_theta_dot(flow, pde, th, unravel, z, settings)[0]

    method = _ode_method(settings, n_steps)
    out = integrate(
        vf,
        method.solver(),
        theta,
        (0.0, 1.0),
        method=method,
        engine="evolve_tdvp",
        throw=False,
    )
    theta1 = out.final
    _, diag = tdvp_theta_dot(flow, pde, theta1, unravel, z, settings)
    return theta1, diag, out.stats["num_steps"], out.status == 0


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
    """Evolves the flow parameters through tsave by TDVP (d theta/dt = S^+ F).

    Each interval [t_i, t_{i+1}] draws fresh base samples and is one diffrax solve;
    a non-finite result or a failed solve is rolled back and retried with half the
    step (twice at most), and reported in the interval's stats.

    Args:
        pde: the compiled Q-PDE (the generator).
        flow, params: the flow and its parameters at tsave[0] (the initial state).
        tsave: (nt,) increasing save times.
        key: random key of the base samples.
        settings: `TDVPSettings` (default `TDVPSettings()`).
        callback: called as callback(i, params, info) after save interval i - 1.

    Returns:
        `EvolutionResult`: parameters at every save time; per interval the residual
        at its end, the ODE steps and the retries.

    Raises:
        FloatingPointError: when an interval fails after its retries.
    """
    settings = TDVPSettings() if settings is None else settings
    theta, unravel = ravel_pytree(params)
    tsave = check_tsave(tsave, float)
    ts = np.asarray(tsave)
    out, infos = [unravel(theta)], []
    for i in range(len(ts) - 1):
        key, sub = jax.random.split(key)
        z = jax.random.normal(sub, (settings.batch_size, flow.dim))
        st, retries = settings, 0
        while True:
            span = ts[i + 1] - ts[i]
            n_steps = max(1, int(np.ceil(span / st.dt * (1 - 1e-9))))
            new, diag, steps, ok = _evolve_interval(
                flow, pde, theta, unravel, z, span, n_steps, st
            )
            if bool(ok) or retries == 2:
                break
            retries += 1
            st = TDVPSettings(**{**st.__dict__, "dt": st.dt / 2})
        if not bool(ok):
            raise FloatingPointError(
                f"TDVP failed on [{ts[i]}, {ts[i + 1]}] after {retries} retries "
                "with halved steps (non-finite parameters or step limit)"
            )
        theta = new
        info = {
            "t": float(ts[i + 1]),
            "residual": float(diag["residual"]),
            "ode_steps": int(steps),
            "retries": retries,
        }
        infos.append(info)
        out.append(unravel(theta))
        if callback is not None:
            callback(i + 1, out[-1], info)
    return evolution_result(tsave, out, infos, "tdvp")


tdvp_evolve = deprecated_evolve("tdvp_evolve", evolve_tdvp)
