"""Euler-KL: explicit time steps of the Husimi PDE, each one a KL fit of the flow.

From t to t + dt the target is Q~ = q_theta (1 + dt s), s = d log Q/dt = (L Q)/Q from
the compiled PDE at the frozen current flow. The next parameters minimize

    KL(Q~ || q_theta') = E_{x ~ q_theta}[(1 + dt s) (log q_theta(x) + log(1 + dt s)
                                           - log q_theta'(x))]

(an importance-weighted maximum likelihood; the weights have mean 1 since the
integral of L Q is 0), by optax with fresh samples at every inner step, warm-started
at theta. The inner loop stops when the loss averaged over a window of steps
changes by less than `loss_tol` (or after `max_inner_steps`).

That "forward" objective re-fits the whole density from samples at every step, so
its minimizer carries sampling noise of order 1/sqrt(batch) even at dt = 0, and the
noise random-walks over many steps. The "reverse" objective (the one of docs/physics.md)
samples x = f_theta'(z) from the new flow and minimizes

    KL(q_theta' || Q~) = E_{x ~ q_theta'}[log q_theta'(x) - log q_theta(x)
                                          - log(1 + dt s(x))]

with the path-wise "sticking the landing" gradient (Roeder et al. 2017: the density
log q_theta' is evaluated at stopped parameters, gradients flow through the samples
only). At theta' = theta every sample's gradient of the first two terms cancels, so
the only signal, and the only noise, is the O(dt) term: the step's error shrinks with
dt instead of staying at the sampling floor. It needs d s/d x (one more derivative
of log q through the PDE kernel).

Euler's own error is first order: on the damped oscillator <n> decays like
(1 - gamma dt)^(t/dt), 1% too fast at t = 2/gamma with dt = 0.01. The "midpoint"
scheme (explicit midpoint rule, two fits per step) is second order.

Defaults: reverse objective, midpoint scheme, dt = 0.02 (on the damped oscillator:
<n> within 0.8% of exact at every time to t = 2/gamma, KL 2e-4, where the forward
Euler form with the same budget drifts by over 10%; configs/damped_1mode_euler_kl.yaml).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qflow_jax.config import PositiveFloat, PositiveInt, settings_class
from qflow_jax.core.checks import check_positive_number
from qflow_jax.core.training import adam, scan_steps
from qflow_jax.evolution._flowfns import is_finite_tree, logq_fn, sample_and_log_prob
from qflow_jax.evolution.evolve import EvolutionMethod, evolve
from qflow_jax.evolution.result import EvolutionResult, deprecated_evolve
from qflow_jax.husimi import QPDE, dlogq_dt
from qflow_jax.parallel import shard_samples

__all__ = [
    "EulerKL",
    "EulerKLSettings",
    "euler_kl_evolve",
    "euler_kl_step",
    "evolve_euler_kl",
]


OBJECTIVES = ("forward", "reverse")
SCHEMES = ("euler", "midpoint")


class EulerKL(EvolutionMethod):
    """The Euler-KL evolution method (module docstring): steps of at most `dt`, each
    a KL fit of the flow by an optax optimizer.

    Attributes:
        objective: "reverse" (path-wise KL on samples of the new flow) or "forward"
            (importance-weighted maximum likelihood).
        scheme: "euler" (one fit per step) or "midpoint" (two, second order).
        optimizer: the optax optimizer of the fits (re-initialized every fit).
        dt: the largest time step; each save interval is cut into equal steps.
        batch_size: samples per optimizer step.
        max_inner_steps, min_inner_steps: bounds of each fit's optimizer steps.
        window: optimizer steps per loss average of the stopping rule.
        loss_tol: a fit stops when two window averages differ by less.
        max_retries: halvings of dt for an interval that failed.

    Examples:
        >>> EulerKL(optimizer=optax.adam(1e-3), dt=0.05).scheme
        'midpoint'
    """

    name: ClassVar[str] = "euler-kl"
    objective: str = eqx.field(default="reverse", static=True)
    scheme: str = eqx.field(default="midpoint", static=True)
    optimizer: optax.GradientTransformation = eqx.field(
        default_factory=lambda: adam("cosine", 3e-3, 50), static=True
    )
    dt: float = eqx.field(default=0.02, static=True)
    batch_size: int = eqx.field(default=512, static=True)
    max_inner_steps: int = eqx.field(default=50, static=True)
    min_inner_steps: int = eqx.field(default=50, static=True)
    window: int = eqx.field(default=10, static=True)
    loss_tol: float = eqx.field(default=1e-6, static=True)
    max_retries: int = eqx.field(default=3, static=True)

    def __check_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"`objective` must be one of {', '.join(OBJECTIVES)}, got "
                f"{self.objective!r}"
            )
        if self.scheme not in SCHEMES:
            raise ValueError(
                f"`scheme` must be one of {', '.join(SCHEMES)}, got {self.scheme!r}"
            )
        if not isinstance(self.optimizer, optax.GradientTransformation):
            raise TypeError(
                "`optimizer` must be an optax GradientTransformation, got "
                f"{type(self.optimizer).__name__}"
            )
        for name in ("dt", "loss_tol"):
            check_positive_number(getattr(self, name), name)
        for name in ("batch_size", "max_inner_steps", "min_inner_steps", "window"):
            check_positive_number(getattr(self, name), name, integer=True)

    def advance(self, flow, pde, params, t0, t1, key):
        span = float(t1 - t0)
        n_steps = max(1, int(np.ceil(span / self.dt - 1e-9)))
        info = {"loss": float("nan"), "steps": n_steps, "inner_steps": 0}
        for _ in range(n_steps):
            key, sub = jax.random.split(key)
            params, step = euler_kl_step(flow, pde, params, sub, self, span / n_steps)
            info["loss"] = step["loss"]
            info["inner_steps"] += step["inner_steps"]
            if not step["finite"]:
                return (
                    params,
                    info,
                    f"non-finite loss or parameters (loss {step['loss']})",
                )
            if step["min_weight"] <= 0:
                return (
                    params,
                    info,
                    (
                        f"min(1 + dt s) = {step['min_weight']:.3g} <= 0: the target is "
                        "no density at this step"
                    ),
                )
        return params, info, None


@settings_class
class EulerKLSettings:
    """Settings of the Euler-KL evolution: the `euler_kl:` section of a `qflow run`
    config, turned into the method object by `method()`.

    Attributes:
        dt: time step.
        batch_size: samples per inner optimizer step.
        learning_rate: Adam learning rate (peak value for "cosine").
        schedule: "constant" or "cosine" (decay to 1% over max_inner_steps).
        max_inner_steps, min_inner_steps: bounds of the inner loop.
        window: inner steps per loss average for the stopping rule.
        loss_tol: stop when two consecutive window averages differ by less.
        objective: "forward" (importance-weighted maximum likelihood on samples of
            the current flow) or "reverse" (path-wise KL on samples of the new flow,
            zero-variance at dt = 0; see the module docstring).
        scheme: "euler" (one fit per step, first order in dt) or "midpoint" (two
            fits per step, second order; see `euler_kl_step`).

    Examples:
        >>> EulerKLSettings(dt=0.05).method().dt
        0.05
    """

    dt: PositiveFloat = 0.02
    batch_size: PositiveInt = 512
    learning_rate: PositiveFloat = 3e-3
    schedule: Literal["constant", "cosine"] = "cosine"
    max_inner_steps: PositiveInt = 50
    min_inner_steps: PositiveInt = 50
    window: PositiveInt = 10
    loss_tol: PositiveFloat = 1e-6
    objective: Literal["forward", "reverse"] = "reverse"
    scheme: Literal["euler", "midpoint"] = "midpoint"

    def optimizer(self) -> optax.GradientTransformation:
        """Adam at `learning_rate`, "cosine" decaying to 1% of it over
        `max_inner_steps` (`qflow_jax.core.training.adam`; one object per set of
        values, so the jitted inner loop compiles once)."""
        return adam(self.schedule, self.learning_rate, self.max_inner_steps)

    def method(self) -> EulerKL:
        """The `EulerKL` method of these settings."""
        return EulerKL(
            objective=self.objective,
            scheme=self.scheme,
            optimizer=self.optimizer(),
            dt=self.dt,
            batch_size=self.batch_size,
            max_inner_steps=self.max_inner_steps,
            min_inner_steps=self.min_inner_steps,
            window=self.window,
            loss_tol=self.loss_tol,
        )


def _rate(flow, pde, params_old, params_rate, x):
    """r(x) = (L q_rate)(x) / q_old(x): the target is q_old (1 + dt r). For Euler
    (params_rate None) r = s; for the midpoint scheme q_rate is the half-step flow
    and r = s_rate q_rate / q_old."""
    if params_rate is None:
        return dlogq_dt(pde, logq_fn(flow, params_old), x)
    r = dlogq_dt(pde, logq_fn(flow, params_rate), x)
    return r * jnp.exp(flow.apply(params_rate, x) - flow.apply(params_old, x))


def _forward_kl(flow, pde, params_old, params_rate, params_new, key, dt, batch_size):
    x, logq_old = sample_and_log_prob(flow, params_old, key, batch_size)
    x, logq_old = jax.lax.stop_gradient(shard_samples(x)), shard_samples(logq_old)
    w = 1.0 + dt * jax.lax.stop_gradient(_rate(flow, pde, params_old, params_rate, x))
    logq_new = flow.apply(params_new, x)
    return jnp.mean(w * (logq_old + jnp.log(jnp.abs(w)) - logq_new)), jnp.min(w)


def _reverse_kl(flow, pde, params_old, params_rate, params_new, key, dt, batch_size):
    x = shard_samples(sample_and_log_prob(flow, params_new, key, batch_size)[0])
    logq_new = flow.apply(jax.lax.stop_gradient(params_new), x)
    logq_old = flow.apply(params_old, x)
    w = 1.0 + dt * _rate(flow, pde, params_old, params_rate, x)
    return jnp.mean(logq_new - logq_old - jnp.log(jnp.abs(w))), jnp.min(w)


_OBJECTIVES = {"forward": _forward_kl, "reverse": _reverse_kl}


@eqx.filter_jit
def _window(flow, pde, optimizer, objective, params, opt_state, keys, dt, batch):
    params_old, params_rate, params_new = params

    def loss(p, key):
        kl = _OBJECTIVES[objective]
        return kl(flow, pde, params_old, params_rate, p, key, dt, batch)

    return scan_steps(loss, optimizer, params_new, opt_state, keys)


def _fit(flow, pde, params, params_rate, start, key, settings, dt):
    """Fits q_theta' to q_params (1 + dt r), r from `params_rate` (None: s of
    q_params itself), starting at `start`; `settings` is an `EulerKL`."""
    optimizer = settings.optimizer
    opt_state = optimizer.init(start)
    new = start
    previous = np.inf
    steps, loss, wmin = 0, np.inf, np.inf
    while steps < settings.max_inner_steps:
        key, sub = jax.random.split(key)
        keys = jax.random.split(sub, settings.window)
        new, opt_state, losses, wmins = _window(
            flow,
            pde,
            optimizer,
            settings.objective,
            (params, params_rate, new),
            opt_state,
            keys,
            jnp.asarray(dt, float),  # traced: every interval's dt differs in ulps
            settings.batch_size,
        )
        steps += settings.window
        loss = float(jnp.mean(losses))
        wmin = min(wmin, float(jnp.min(wmins)))
        if not np.isfinite(loss):
            break
        if (
            steps >= settings.min_inner_steps
            and abs(previous - loss) < settings.loss_tol
        ):
            break
        previous = loss
    finite = bool(np.isfinite(loss)) and bool(is_finite_tree(new))
    return new, {
        "loss": loss,
        "inner_steps": steps,
        "min_weight": wmin,
        "finite": finite,
    }


def euler_kl_step(
    flow: nn.Module,
    pde: QPDE,
    params: Any,
    key: jax.Array,
    settings: EulerKL | EulerKLSettings,
    dt: float | None = None,
) -> tuple[Any, dict[str, Any]]:
    """One Euler-KL step of length dt: fits q_theta' to q_theta (1 + dt s).

    With `settings.scheme == "midpoint"` it first fits the half step theta_h to
    q_theta (1 + dt/2 s), then theta' to q_theta (1 + dt (L q_h)/q_theta) (explicit
    midpoint rule: second order in dt, two fits per step).

    `settings` is the `EulerKL` method (or its `EulerKLSettings`).

    Returns:
        (new params, info) with info["loss"] (the final KL estimate),
        info["inner_steps"], info["min_weight"] (min of the target's weight 1 + dt r
        seen; <= 0 means dt is too large for the target to be a density) and
        info["finite"].
    """
    if isinstance(settings, EulerKLSettings):
        settings = settings.method()
    dt = settings.dt if dt is None else dt
    k1, k2 = jax.random.split(key)
    if settings.scheme == "euler":
        return _fit(flow, pde, params, None, params, k1, settings, dt)
    half, h_info = _fit(flow, pde, params, None, params, k1, settings, dt / 2)
    new, info = _fit(flow, pde, params, half, half, k2, settings, dt)
    return new, {
        "loss": info["loss"],
        "inner_steps": h_info["inner_steps"] + info["inner_steps"],
        "min_weight": min(h_info["min_weight"], info["min_weight"]),
        "finite": h_info["finite"] and info["finite"],
    }


def evolve_euler_kl(
    pde: QPDE,
    flow: nn.Module,
    params: Any,
    tsave: Any,
    *,
    key: jax.Array,
    settings: EulerKLSettings | None = None,
    callback: Callable[[int, Any, dict], None] | None = None,
) -> EvolutionResult:
    """`evolve(pde, flow, params, tsave, method=settings.method(), ...)`: Euler-KL
    from its config settings (default `EulerKLSettings()`); see `evolve` and
    `EulerKL`."""
    settings = EulerKLSettings() if settings is None else settings
    return evolve(
        pde, flow, params, tsave, method=settings.method(), key=key, callback=callback
    )


euler_kl_evolve = deprecated_evolve("euler_kl_evolve", evolve_euler_kl)
