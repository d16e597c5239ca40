"""Euler-KL: one explicit Euler step of the Husimi PDE per fit of the flow.

From t to t + dt the target is Q~ = q_theta (1 + dt s), s = d log Q/dt = (L Q)/Q from
the compiled PDE at the frozen current flow. The next parameters minimize

    KL(Q~ || q_theta') = E_{x ~ q_theta}[(1 + dt s) (log q_theta(x) + log(1 + dt s)
                                           - log q_theta'(x))]

(an importance-weighted maximum likelihood; the weights have mean 1 since the
integral of L Q is 0), by optax with fresh samples at every inner step, warm-started
at theta. The inner loop stops when the loss averaged over a window of steps
changes by less than `loss_tol` (or after `max_inner_steps`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qflow_jax.evolution._flowfns import is_finite_tree, logq_fn, sample_and_log_prob
from qflow_jax.husimi import QPDE, dlogq_dt

__all__ = ["EulerKLSettings", "euler_kl_evolve", "euler_kl_step"]


@dataclass(frozen=True)
class EulerKLSettings:
    """Settings of one Euler-KL time step.

    Attributes:
        dt: time step.
        batch_size: samples per inner optimizer step.
        learning_rate: Adam learning rate (peak value for "cosine").
        schedule: "constant" or "cosine" (decay to 1% over max_inner_steps).
        max_inner_steps, min_inner_steps: bounds of the inner loop.
        window: inner steps per loss average for the stopping rule.
        loss_tol: stop when two consecutive window averages differ by less.
    """

    dt: float = 0.01
    batch_size: int = 1024
    learning_rate: float = 1e-3
    schedule: str = "constant"
    max_inner_steps: int = 300
    min_inner_steps: int = 20
    window: int = 10
    loss_tol: float = 1e-6

    def optimizer(self) -> optax.GradientTransformation:
        return _optimizer(self)


@functools.cache
def _optimizer(settings: EulerKLSettings) -> optax.GradientTransformation:
    # cached: a new optax object per step would recompile the jitted inner loop
    if settings.schedule == "cosine":
        lr = optax.cosine_decay_schedule(
            settings.learning_rate, settings.max_inner_steps, alpha=0.01
        )
    elif settings.schedule == "constant":
        lr = settings.learning_rate
    else:
        raise ValueError(
            f"`schedule` must be 'constant' or 'cosine', got {settings.schedule!r}"
        )
    return optax.adam(lr)


def _kl_loss(flow, pde, params_old, params_new, key, dt, batch_size):
    x, logq_old = sample_and_log_prob(flow, params_old, key, batch_size)
    x = jax.lax.stop_gradient(x)
    s = jax.lax.stop_gradient(dlogq_dt(pde, logq_fn(flow, params_old), x))
    w = 1.0 + dt * s
    logq_new = flow.apply(params_new, x)
    return jnp.mean(w * (logq_old + jnp.log(jnp.abs(w)) - logq_new)), jnp.min(w)


@eqx.filter_jit
def _window(flow, pde, optimizer, params_old, params_new, opt_state, keys, dt, batch):
    grad_fn = jax.value_and_grad(_kl_loss, argnums=3, has_aux=True)

    def body(carry, key):
        p, st = carry
        (loss, wmin), g = grad_fn(flow, pde, params_old, p, key, dt, batch)
        updates, st = optimizer.update(g, st, p)
        return (optax.apply_updates(p, updates), st), (loss, wmin)

    (params_new, opt_state), (losses, wmins) = jax.lax.scan(
        body, (params_new, opt_state), keys
    )
    return params_new, opt_state, losses, wmins


def euler_kl_step(
    flow: nn.Module,
    pde: QPDE,
    params: Any,
    key: jax.Array,
    settings: EulerKLSettings,
    dt: float | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fits q_theta' to q_theta (1 + dt s): one Euler-KL step of length dt.

    Returns:
        (new params, info) with info["loss"] (the final KL estimate),
        info["inner_steps"], info["min_weight"] (min of 1 + dt s seen; <= 0 means dt
        is too large for the Euler target to be a density) and info["finite"].
    """
    dt = settings.dt if dt is None else dt
    optimizer = settings.optimizer()
    opt_state = optimizer.init(params)
    new = params
    previous = np.inf
    steps, loss, wmin = 0, np.inf, np.inf
    while steps < settings.max_inner_steps:
        key, sub = jax.random.split(key)
        keys = jax.random.split(sub, settings.window)
        new, opt_state, losses, wmins = _window(
            flow, pde, optimizer, params, new, opt_state, keys, dt, settings.batch_size
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


def euler_kl_evolve(
    flow: nn.Module,
    pde: QPDE,
    params: Any,
    tsave: Any,
    key: jax.Array,
    settings: EulerKLSettings,
    callback: Callable[[int, Any, dict], None] | None = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Evolves the flow through tsave by Euler-KL steps of at most `settings.dt`.

    A step whose loss or parameters are non-finite, or whose Euler weights 1 + dt s
    turn negative, is rolled back and redone as two half steps (recursively, down to
    dt/8); each interval's info counts these retries. Failing at dt/8 raises.

    Returns:
        Parameters at every save time and per-interval info (last loss, inner steps,
        retries).
    """
    tsave = np.asarray(tsave, float)
    out, infos = [params], []
    for i in range(len(tsave) - 1):
        span = tsave[i + 1] - tsave[i]
        n_steps = max(1, int(np.ceil(span / settings.dt - 1e-9)))
        info = {
            "t": float(tsave[i + 1]),
            "steps": n_steps,
            "retries": 0,
            "inner_steps": 0,
        }
        for _ in range(n_steps):
            key, sub = jax.random.split(key)
            params, step_info = _robust_step(
                flow, pde, params, sub, settings, span / n_steps, info, depth=0
            )
            info["loss"] = step_info["loss"]
        infos.append(info)
        out.append(params)
        if callback is not None:
            callback(i + 1, params, info)
    return out, infos


def _robust_step(flow, pde, params, key, settings, dt, info, depth):
    new, step_info = euler_kl_step(flow, pde, params, key, settings, dt)
    info["inner_steps"] += step_info["inner_steps"]
    if step_info["finite"] and step_info["min_weight"] > 0:
        return new, step_info
    if depth == 3:
        raise FloatingPointError(
            f"Euler-KL step failed at dt={dt:.3g} after 3 halvings: loss "
            f"{step_info['loss']}, min(1 + dt s) = {step_info['min_weight']:.3g}"
        )
    info["retries"] += 1
    k1, k2 = jax.random.split(key)
    half, _ = _robust_step(flow, pde, params, k1, settings, dt / 2, info, depth + 1)
    return _robust_step(flow, pde, half, k2, settings, dt / 2, info, depth + 1)
