"""Physics-informed neural network (PINN) solver for a compiled Husimi-Q PDE.

A network f_theta(x, t) = log Q(x, t) (`LogQNet`) is trained on the loss

    w_r E_{(x,t)}[r(x, t)^2] + w_0 E_x[(f(x, 0) - log Q0(x))^2]
        + w_n E_t[(integral exp f(x, t) dx - 1)^2],

    r(x, t) = d_t f(x, t) - s(x, t),   s = (L Q)/Q = `dlogq_dt(pde, f(., t), x)`,

i.e. the PDE dQ/dt = L Q divided by Q: the residual uses the same pointwise kernel as
the flows (Faa di Bruno from derivatives of log Q), so any compiled PDE works,
of any derivative order.

Collocation (fresh at every optimizer step):
    t ~ U[0, t_end];
    x ~ U(box) (sampler "box": the cube center +- box_half_width), or
    x ~ Q0 * N(0, initial_spread^2 I) (sampler "initial": exact resampling of Q0 on
    a quadrature set, blurred; covers Q(t) only while it stays near Q0).
The initial term uses the same sampler at t = 0. Log-values below `log_floor` are
clipped on both sides, so Q0 with zeros (Fock states) gives finite targets.

Weighting ("q", the default): a log-residual is as large in the far tails as in the
bulk (its terms grow like |x|^2), so uniform weights spend the network on regions
where Q ~ e^-50. Each squared residual is weighted by (1 - floor) Q/mean(Q) + floor
(Q of the network at (x, t), held constant under differentiation; the initial term
uses Q0), i.e. the residual is measured under Q itself, as Q-Flow does, with a
`weight_floor` share of uniform weight that keeps the tails in check. On the damped
oscillator uniform weights ("none") still have a relative L2 error of Q near 100%
after 200 steps (Q0 is given up to fit the tails), "q" reaches 20% after 600 steps,
and the floor 0.05 cuts the error at 1500 steps from 5-6% (floor 0) to 1.5-3%.

Normalization penalty: the PDE conserves the integral of Q and the log-form residual
only fixes f up to a constant (set by the initial term), so the penalty is a
regulariser. The integral at `n_norm_times` random times per step is estimated by
importance sampling from the fixed Gaussian proposal N(box center, (box_half_width /
2)^2 I), `n_norm` fresh samples shared by the times. The squared estimate is biased
upwards by its variance / n_norm (the logged "norm" term settles at 1e-3 to 1e-2 on
the damped oscillator), so its gradient is mostly noise once the integral is close to
1: the default weight 0.1 halves the final error of weight 1 (one seed).

Optional causal weighting (Wang, Sankaran & Perdikaris 2022): times are stratified
into `causal_bins` bins and bin k's mean squared residual is weighted by
exp(-causal_eps * sum_{j<k} L_j), so later times train once earlier ones fit. It is
off by default: on the damped oscillator eps = 1 starves late times (rel. error 1.2
at t = 2 after 1500 steps) and eps = 0.1 matches plain training within seed noise.

Measured (damped oscillator omega = gamma = 1, |alpha0 = 2>, t_end = 2, default
settings, 3000 steps, 2 CPU cores, about 20 ms a step): relative L2 error of Q
0.6% / 0.4% / 0.3% at t = 0 / 1 / 2, <n> within 0.002 of exact, integral of Q within
0.3% of 1. The "gaussian" envelope reaches 0.4-0.6% and 0.003.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from annotated_types import Ge, Le, Len
from pydantic import Strict
from tqdm import tqdm

from qflow_jax.config import (
    Float,
    Int,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    settings_class,
)
from qflow_jax.core.result import SolveResult
from qflow_jax.core.training import (
    SCHEDULES,
    adam,
    gaussian_proposal,
    scan_steps,
    schedule,
)
from qflow_jax.husimi import QPDE, dlogq_dt
from qflow_jax.pinn.network import ACTIVATIONS, ENVELOPES, LogQNet

__all__ = ["PINNSettings", "PINNSolution", "pinn_residual", "train_pinn"]

_SAMPLERS = ("box", "initial")
_SCHEDULES = SCHEDULES


@settings_class
class PINNSettings:
    """Settings of `train_pinn`.

    Attributes:
        hidden: widths of the MLP's hidden layers.
        activation: "tanh", "gelu", "silu" or "softplus" (smooth: the PDE needs
            second or higher x-derivatives).
        envelope: "isotropic" (constant Gaussian) or "gaussian" (time-dependent
            full Gaussian) envelope of log Q; see `LogQNet`.
        t_end: final time; the network is trained on [0, t_end].
        sampler: collocation in x, "box" or "initial" (module docstring).
        box_half_width: half-width L of the box center +- L (also the input scale
            of the network, the quadrature domain and twice the normalization
            proposal's width).
        box_center: centre of the box, one float per coordinate (None: origin).
        initial_spread: std of the blur added to Q0 samples (sampler "initial").
        n_collocation: residual points (x, t) per step.
        n_initial: initial-condition points per step.
        n_norm, n_norm_times: proposal samples and times of the normalization
            penalty per step.
        steps: optimizer steps.
        learning_rate: Adam learning rate (peak value of the schedules).
        schedule: "constant", "cosine" (decay to 1% at the last step) or
            "warmup_cosine" (linear warm-up over 5% of the steps, then cosine).
        weight_residual, weight_initial, weight_norm: loss weights w_r, w_0, w_n.
        causal_eps: causal weighting strength (0: off), with `causal_bins` bins.
        log_floor: log-values below are clipped in the initial term.
        log_every: optimizer steps per jitted chunk (history keeps every step;
            progress and divergence checks happen once per chunk).
        seed: PRNG seed used when `train_pinn` gets no key.

    Examples:
        >>> PINNSettings(hidden=(32, 32), steps=2000, t_end=2.0).learning_rate
        0.003
    """

    hidden: Annotated[tuple[PositiveInt, ...], Len(1)] = (64, 64)
    activation: Literal[tuple(ACTIVATIONS)] = "tanh"
    envelope: Literal[ENVELOPES] = "isotropic"
    t_end: PositiveFloat = 2.0
    sampler: Literal[_SAMPLERS] = "box"
    box_half_width: PositiveFloat = 5.0
    box_center: tuple[Float, ...] | None = None
    initial_spread: PositiveFloat = 1.0
    n_collocation: PositiveInt = 512
    n_initial: PositiveInt = 512
    n_norm: PositiveInt = 1024
    n_norm_times: PositiveInt = 8
    steps: PositiveInt = 3000
    learning_rate: PositiveFloat = 3e-3
    schedule: Literal[_SCHEDULES] = "cosine"
    weight_residual: NonNegativeFloat = 1.0
    weight_initial: NonNegativeFloat = 1.0
    weight_norm: NonNegativeFloat = 0.1
    weighting: Literal["none", "q"] = "q"
    weight_floor: Annotated[float, Strict(), Ge(0), Le(1)] = 0.05
    causal_eps: NonNegativeFloat = 0.0
    causal_bins: PositiveInt = 16
    log_floor: Float = -40.0
    log_every: PositiveInt = 100
    seed: Int = 0

    def center(self, dim: int) -> np.ndarray:
        """(dim,) centre of the box."""
        if self.box_center is None:
            return np.zeros(dim)
        if len(self.box_center) != dim:
            raise ValueError(
                f"`box_center` must have {dim} entries (2N coordinates), got "
                f"{len(self.box_center)}"
            )
        return np.asarray(self.box_center)

    def optimizer(self) -> optax.GradientTransformation:
        """Adam on the `schedule` over `steps` (`qflow_jax.core.training.adam`;
        one object per set of values, so the jitted chunk compiles once)."""
        return adam(self.schedule, self.learning_rate, self.steps)


# ---------------------------------------------------------------- residual


def _at_time(logq_fn: Callable, t: jax.Array, y: jax.Array) -> jax.Array:
    return logq_fn(y, t)


def _residual_point(pde: QPDE, logq_fn: Callable, x: jax.Array, t: jax.Array):
    _, f_t = jax.jvp(lambda s: logq_fn(x, s), (t,), (jnp.ones_like(t),))
    s = dlogq_dt(pde, eqx.Partial(_at_time, logq_fn, t), x[None])[0]
    return f_t - s


def _residuals(pde: QPDE, logq_fn: Callable, x: jax.Array, t: jax.Array):
    return jax.vmap(functools.partial(_residual_point, pde, logq_fn))(x, t)


def pinn_residual(
    pde: QPDE,
    logq_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: Any,
    t: Any,
) -> jax.Array:
    """PDE residual of a log Q(x, t) ansatz: r = d_t log Q - (L Q)/Q.

    With f = log Q, dQ/dt = L Q is equivalent to

        d_t f(x, t) = s(x, t) = (L Q)(x, t) / Q(x, t),

    where s is the compiled PDE's `dlogq_dt` kernel applied to f(., t); r vanishes
    wherever f solves the PDE.

    Args:
        pde: compiled PDE on R^{2N}.
        logq_fn: maps one point, x of shape (2N,), and a scalar time t to log Q.
            Pass an `equinox.Partial` (or Module) to avoid recompiling.
        x: (..., 2N) real points.
        t: times, broadcastable to x.shape[:-1].

    Returns:
        (...) residuals.

    Examples:
        >>> from qflow_jax.husimi import a, adag, compile_qpde
        >>> pde = compile_qpde(adag(0) @ a(0), [a(0)])
        >>> vacuum = lambda y, t: -jnp.sum(y**2) - jnp.log(jnp.pi)  # steady state
        >>> residual = pinn_residual(pde, vacuum, jnp.ones((4, 2)), 0.5)
        >>> print(float(jnp.abs(residual).max()))
        0.0
    """
    if not isinstance(pde, QPDE):
        raise TypeError(
            f"`pde` must be a QPDE (compile_qpde), got {type(pde).__name__}"
        )
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != pde.dim or jnp.iscomplexobj(x):
        raise ValueError(
            f"`x` must be real with shape (..., {pde.dim}), got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}"
        )
    x = x.astype(jnp.result_type(float))
    t = jnp.asarray(t, dtype=x.dtype)
    try:
        t = jnp.broadcast_to(t, x.shape[:-1])
    except ValueError:
        raise ValueError(
            f"`t` must broadcast to x.shape[:-1] = {x.shape[:-1]}, got shape {t.shape}"
        ) from None
    flat_x, flat_t = x.reshape(-1, pde.dim), t.reshape(-1)
    return _residuals_jit(pde, logq_fn, flat_x, flat_t).reshape(x.shape[:-1])


_residuals_jit = eqx.filter_jit(_residuals)


# ------------------------------------------------------------- quadrature


def _quadrature(
    dim: int, center: np.ndarray, half_width: float, n_grid: int, n_samples: int, key
) -> tuple[jax.Array, jax.Array]:
    """Points and weights with sum w g(x) ~ integral g over R^dim: a midpoint grid
    on the box for dim = 2, importance sampling from N(center, (L/2)^2 I) otherwise."""
    center = jnp.asarray(center, float)
    if dim == 2:
        h = 2 * half_width / n_grid
        u = -half_width + h * (jnp.arange(n_grid) + 0.5)
        X, P = jnp.meshgrid(u, u, indexing="ij")
        pts = center + jnp.stack([X.ravel(), P.ravel()], -1)
        return pts, jnp.full(pts.shape[0], h * h)
    pts, log_p = gaussian_proposal(key, n_samples, dim, center, 0.5 * half_width)
    return pts, jnp.exp(-log_p) / n_samples


def _moments(logq: jax.Array, pts: jax.Array, w: jax.Array) -> dict[str, jax.Array]:
    """Integral, mean and covariance of exp(logq) from quadrature (pts, w)."""
    m = w * jnp.exp(logq)
    Z = jnp.sum(m)
    mean = jnp.sum(m[:, None] * pts, 0) / Z
    d = pts - mean
    cov = jnp.einsum("b,bi,bj->ij", m, d, d) / Z
    return {"norm": Z, "mean": mean, "cov": cov}


# ---------------------------------------------------------------- training


def _net_point(net: LogQNet, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
    return net.apply(params, x, t)


def _log_of(Q0: Callable, x: jax.Array) -> jax.Array:
    return jnp.log(Q0(x))


class _Problem(eqx.Module):
    """Everything a training step needs besides the parameters."""

    net: LogQNet = eqx.field(static=True)
    pde: QPDE = eqx.field(static=True)
    settings: PINNSettings = eqx.field(static=True)
    logq0: Callable
    center: jax.Array
    pool: jax.Array  # (M, dim) quadrature points ("initial" sampler)
    pool_cdf: jax.Array  # (M,) normalised cumulative sum of w Q0 on the pool


def _cdf(logits: jax.Array) -> jax.Array:
    c = jnp.cumsum(jnp.exp(logits - jnp.max(logits)))
    return c / c[-1]


def _sample_x(prob: _Problem, key: jax.Array, n: int) -> jax.Array:
    st, dim = prob.settings, prob.net.dim
    if st.sampler == "box":
        u = jax.random.uniform(key, (n, dim), minval=-1.0, maxval=1.0)
        return prob.center + st.box_half_width * u
    k1, k2 = jax.random.split(key)
    # inverse CDF: categorical(shape=(n,)) would draw an (n, M) Gumbel array
    idx = jnp.searchsorted(prob.pool_cdf, jax.random.uniform(k1, (n,)))
    idx = jnp.minimum(idx, prob.pool.shape[0] - 1)
    return prob.pool[idx] + st.initial_spread * jax.random.normal(k2, (n, dim))


def _weights(logq: jax.Array, st: PINNSettings) -> jax.Array:
    """sqrt of (1 - floor) Q / mean(Q) + floor over the batch."""
    q = jnp.exp(logq - jnp.max(logq))
    return jnp.sqrt((1 - st.weight_floor) * q / jnp.mean(q) + st.weight_floor)


def _loss(params: Any, prob: _Problem, key: jax.Array):
    st, net = prob.settings, prob.net
    kx, kt, k0, kn, knt = jax.random.split(key, 5)
    n = st.n_collocation
    x = _sample_x(prob, kx, n)
    u = jax.random.uniform(kt, (n,))
    if st.causal_eps > 0:
        # stratified: point i in bin i % causal_bins
        bins = jnp.arange(n) % st.causal_bins
        t = st.t_end * (bins + u) / st.causal_bins
    else:
        t = st.t_end * u
    r = _residuals(prob.pde, eqx.Partial(_net_point, net, params), x, t)
    if st.weighting == "q":
        r = r * _weights(net.apply(jax.lax.stop_gradient(params), x, t), st)
    if st.causal_eps > 0:
        per_bin = jax.ops.segment_sum(r**2, bins, st.causal_bins) / jnp.maximum(
            jax.ops.segment_sum(jnp.ones(n), bins, st.causal_bins), 1.0
        )
        before = jnp.cumsum(per_bin) - per_bin
        wts = jax.lax.stop_gradient(jnp.exp(-st.causal_eps * before))
        loss_r = jnp.mean(wts * per_bin)
        causal_min = wts[-1]
    else:
        loss_r = jnp.mean(r**2)
        causal_min = jnp.ones(())
    x0 = _sample_x(prob, k0, st.n_initial)
    floor = st.log_floor
    logq0 = prob.logq0(x0)
    target = jnp.maximum(logq0, floor)
    err0 = jnp.maximum(net.apply(params, x0, jnp.zeros(st.n_initial)), floor) - target
    if st.weighting == "q":
        err0 = err0 * _weights(logq0, st)
    loss_0 = jnp.mean(err0**2)
    y, log_p = gaussian_proposal(
        kn, st.n_norm, net.dim, prob.center, 0.5 * st.box_half_width
    )
    tn = st.t_end * jax.random.uniform(knt, (st.n_norm_times, 1))
    Z = jnp.mean(jnp.exp(net.apply(params, y[None], tn) - log_p), axis=1)
    loss_n = jnp.mean((Z - 1.0) ** 2)
    total = (
        st.weight_residual * loss_r
        + st.weight_initial * loss_0
        + st.weight_norm * loss_n
    )
    return total, jnp.stack([total, loss_r, loss_0, loss_n, causal_min])


@eqx.filter_jit
def _chunk(prob: _Problem, optimizer, params, opt_state, keys):
    def loss(p, key):
        return _loss(p, prob, key)

    params, opt_state, _, terms = scan_steps(loss, optimizer, params, opt_state, keys)
    return params, opt_state, terms


_HISTORY_KEYS = ("loss", "residual", "initial", "norm", "causal_min_weight")


class PINNSolution(SolveResult):
    """A trained PINN (`SolveResult`): log Q(x, t) on [0, t_end] and its training
    history.

    Attributes:
        tsave: (2,) the training window [0, t_end].
        states, expects: None (Q is a function of (x, t): `q`, `log_q`).
        final_state: the trained parameters (also `params`).
        stats: the training history: per optimizer step "loss" (weighted total),
            "residual", "initial", "norm" (unweighted terms), "causal_min_weight",
            "learning_rate"; "wall_time" (s since the start, per step, compilation
            included); scalars "train_wall_s" and "q0_norm" (the integral of Q0 on
            the quadrature domain). Also `history`.
        method: "pinn".
        net: the `LogQNet`.
        pde: the PDE it was trained on.
        settings: the `PINNSettings` used.
    """

    net: LogQNet = eqx.field(static=True)
    pde: QPDE
    settings: PINNSettings = eqx.field(static=True)

    @property
    def params(self) -> Any:
        return self.final_state

    @property
    def history(self) -> dict[str, Any]:
        return self.stats

    @property
    def dim(self) -> int:
        return self.pde.dim

    def logq_fn(self) -> eqx.Partial:
        """(x (2N,), t) -> log Q, as a pytree for jitted kernels."""
        return eqx.Partial(_net_point, self.net, self.params)

    def log_q(self, x: Any, t: Any) -> jax.Array:
        """log Q at x (..., 2N) and t broadcastable to x.shape[:-1]."""
        x = jnp.asarray(x, float)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"`x` must have shape (..., {self.dim}), got {tuple(x.shape)}"
            )
        t = jnp.broadcast_to(jnp.asarray(t, float), x.shape[:-1])
        return _apply_jit(self.net, self.params, x, t)

    def q(self, x: Any, t: Any) -> jax.Array:
        """Q = exp(log Q) at x (..., 2N), t."""
        return jnp.exp(self.log_q(x, t))

    def residual(self, x: Any, t: Any) -> jax.Array:
        """PDE residual d_t log Q - (L Q)/Q at x (..., 2N), t (`pinn_residual`)."""
        return pinn_residual(self.pde, self.logq_fn(), x, t)

    def relative_residual(self, x: Any, t: float, weights: Any = None) -> float:
        """E[(r - E r)^2] / E[(s - E s)^2] at time t over points x (B, 2N), with r
        the PDE residual and s = (L Q)/Q from the PINN's own log Q: the measure of
        a flow's TDVP residual (`qflow_jax.evolution.tdvp_residual`), 0 where the
        PINN solves the PDE. `weights` (B,) make E an expectation under Q (e.g.
        importance weights q/p of proposal samples); default uniform."""
        x = jnp.asarray(x, float)
        ts = jnp.full(x.shape[:-1], float(t))
        f = self.logq_fn()
        r = pinn_residual(self.pde, f, x, ts)
        s = jax.vmap(jax.grad(lambda ti, xi: f(xi, ti)))(ts, x) - r
        w = jnp.ones_like(r) if weights is None else jnp.asarray(weights, float)
        w = w / jnp.sum(w)

        def var(v):
            return jnp.sum(w * (v - jnp.sum(w * v)) ** 2)

        return float(var(r) / var(s))

    def observables(
        self,
        t: Any,
        *,
        n_grid: int = 256,
        n_samples: int = 200_000,
        key: jax.Array | None = None,
    ) -> dict[str, np.ndarray]:
        """Integral of Q and moments of the normalised Q at times t.

        Quadrature: a midpoint grid of n_grid^2 points on the box for one mode,
        otherwise importance sampling (n_samples from N(center, (L/2)^2 I)). Moments
        are anti-normally ordered (docs/physics.md, section 3): <a_j> = E[alpha_j],
        <n_j> = E|alpha_j|^2 - 1, with E over Q / integral Q.

        Returns:
            "t" (T,), "norm" (T,), "a" (T, N) complex, "n" (T, N).
        """
        ts = np.atleast_1d(np.asarray(t, float))
        key = jax.random.key(0) if key is None else key
        st = self.settings
        pts, w = _quadrature(
            self.dim, st.center(self.dim), st.box_half_width, n_grid, n_samples, key
        )
        norms, alphas, ns = [], [], []
        for tk in ts:
            logq = self.log_q(pts, tk)
            m = w * jnp.exp(logq)
            Z = jnp.sum(m)
            alpha = pts[:, 0::2] + 1j * pts[:, 1::2]
            norms.append(float(Z))
            alphas.append(np.asarray(jnp.sum(m[:, None] * alpha, 0) / Z))
            ns.append(np.asarray(jnp.sum(m[:, None] * jnp.abs(alpha) ** 2, 0) / Z - 1))
        return {
            "t": ts,
            "norm": np.asarray(norms),
            "a": np.asarray(alphas),
            "n": np.asarray(ns),
        }

    def normalization(self, t: Any, **kwargs: Any) -> np.ndarray:
        """Integral of Q(., t) at times t (see `observables` for the quadrature)."""
        return self.observables(t, **kwargs)["norm"]


@eqx.filter_jit
def _apply_jit(net: LogQNet, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
    return net.apply(params, x, t)


def _check_q0(Q0: Any, logQ0: Any, dim: int) -> Callable:
    if (Q0 is None) == (logQ0 is None):
        raise ValueError("give exactly one of `Q0` (Q at t = 0) and `logQ0` (log Q)")
    name, fn = ("Q0", Q0) if Q0 is not None else ("logQ0", logQ0)
    if not callable(fn):
        raise ValueError(
            f"`{name}` must be a callable on points (..., {dim}), got "
            f"{type(fn).__name__}"
        )
    try:
        val = jnp.asarray(fn(jnp.zeros((3, dim))))
    except Exception as err:  # noqa: BLE001 - report what the callable raised
        raise ValueError(
            f"`{name}` must map points (..., {dim}) to values (...); calling it on "
            f"shape (3, {dim}) raised {type(err).__name__}: {err}"
        ) from err
    if val.shape != (3,):
        raise ValueError(
            f"`{name}` must map points (..., {dim}) to values (...), got shape "
            f"{val.shape} for input shape (3, {dim})"
        )
    return eqx.Partial(_log_of, Q0) if Q0 is not None else logQ0


def train_pinn(
    pde: QPDE,
    Q0: Callable[[jax.Array], jax.Array] | None = None,
    settings: PINNSettings | None = None,
    key: jax.Array | None = None,
    *,
    logQ0: Callable[[jax.Array], jax.Array] | None = None,
    progress: bool = False,
) -> PINNSolution:
    """Trains a PINN for dQ/dt = L Q on [0, t_end] from Q(0) = Q0.

    Minimises (module docstring)

        w_r mean r(x, t)^2 + w_0 mean (f(x, 0) - log Q0(x))^2
            + w_n mean_t (integral exp f(x, t) dx - 1)^2,
        r = d_t f - (L e^f)/e^f,   f = log Q = `LogQNet`(x, t),

    by Adam with fresh collocation points at every step.

    Args:
        pde: compiled PDE (`compile_qpde`).
        Q0: initial Q on points (..., 2N) -> (...), e.g. `coherent_q(2.0)`; or give
            `logQ0` (log Q0 on points) instead.
        settings: `PINNSettings` (default: its defaults).
        key: PRNG key (default: `jax.random.key(settings.seed)`).
        logQ0: log of the initial Q, instead of `Q0`.
        progress: show a tqdm bar.

    Returns:
        A `PINNSolution` (network, parameters, per-step history).

    Examples:
        >>> from qflow_jax.husimi import a, adag, coherent_q, compile_qpde
        >>> pde = compile_qpde(adag(0) @ a(0), [a(0)])
        >>> sol = train_pinn(pde, coherent_q(2.0), PINNSettings(steps=20, t_end=1.0))
        >>> sol.observables([0.0, 0.5, 1.0])["n"].shape  # ~ 4 exp(-t) when trained
        (3, 1)
    """
    if not isinstance(pde, QPDE):
        raise TypeError(
            f"`pde` must be a QPDE (compile_qpde), got {type(pde).__name__}"
        )
    settings = PINNSettings() if settings is None else settings
    if not isinstance(settings, PINNSettings):
        raise TypeError(
            f"`settings` must be PINNSettings, got {type(settings).__name__}"
        )
    dim, st = pde.dim, settings
    logq0 = _check_q0(Q0, logQ0, dim)
    center = st.center(dim)
    key = jax.random.key(st.seed) if key is None else key
    k_init, k_quad, k_train = jax.random.split(key, 3)

    # moments of Q0: the envelope starts at its mean and mean variance
    pts, w = _quadrature(dim, center, st.box_half_width, 256, 1 << 16, k_quad)
    logq0_pts = jnp.maximum(logq0(pts), -1e300)  # log 0 -> -inf is fine, NaN is not
    if not bool(jnp.all(jnp.isfinite(logq0_pts) | (logq0_pts == -jnp.inf))):
        raise ValueError("`Q0` (or `logQ0`) is NaN or +inf on the box")
    m0 = _moments(logq0_pts, pts, w)
    width0 = float(jnp.sqrt(jnp.trace(m0["cov"]) / dim))
    net = LogQNet(
        dim=dim,
        hidden=st.hidden,
        activation=st.activation,
        envelope=st.envelope,
        center=tuple(float(c) for c in center),
        scale=float(st.box_half_width),
        t_scale=float(st.t_end),
        init_mean=tuple(float(c) for c in np.asarray(m0["mean"])),
        init_width=width0,
    )
    params = net.init(k_init, jnp.zeros((1, dim)), jnp.zeros(1))
    prob = _Problem(
        net=net,
        pde=pde,
        settings=st,
        logq0=logq0,
        center=jnp.asarray(center, float),
        pool=pts,
        pool_cdf=_cdf(jnp.log(w) + logq0_pts),
    )
    optimizer = st.optimizer()
    opt_state = optimizer.init(params)
    n_chunks = -(-st.steps // st.log_every)
    terms, walls = [], []
    start = time.perf_counter()
    bar = tqdm(range(n_chunks), disable=not progress, desc="PINN")
    for c in bar:
        n = min(st.log_every, st.steps - c * st.log_every)
        keys = jax.random.split(jax.random.fold_in(k_train, c), n)
        params, opt_state, chunk_terms = _chunk(
            prob, optimizer, params, opt_state, keys
        )
        chunk_terms = np.asarray(chunk_terms)
        wall = time.perf_counter() - start
        terms.append(chunk_terms)
        walls.append(np.linspace(walls[-1][-1] if walls else 0.0, wall, n + 1)[1:])
        if not np.all(np.isfinite(chunk_terms[:, 0])):
            row = int(np.argmin(np.isfinite(chunk_terms[:, 0])))
            values = dict(zip(_HISTORY_KEYS, chunk_terms[row].tolist(), strict=True))
            raise RuntimeError(
                f"PINN training diverged at step {c * st.log_every + row}: loss "
                f"terms {values} (lower `learning_rate`, or check that the box "
                "covers Q)"
            )
        bar.set_postfix(
            loss=f"{chunk_terms[-1, 0]:.2e}",
            res=f"{chunk_terms[-1, 1]:.2e}",
            ic=f"{chunk_terms[-1, 2]:.2e}",
        )
    all_terms = np.concatenate(terms)
    history: dict[str, Any] = {k: all_terms[:, i] for i, k in enumerate(_HISTORY_KEYS)}
    lr = schedule(st.schedule, st.learning_rate, st.steps)
    history["learning_rate"] = np.asarray(lr(jnp.arange(st.steps)))
    history["wall_time"] = np.concatenate(walls)
    history["train_wall_s"] = float(history["wall_time"][-1])
    history["q0_norm"] = float(m0["norm"])
    return PINNSolution(
        tsave=jnp.asarray([0.0, st.t_end]),
        states=None,
        expects=None,
        final_state=params,
        stats=history,
        method="pinn",
        net=net,
        pde=pde,
        settings=st,
    )
