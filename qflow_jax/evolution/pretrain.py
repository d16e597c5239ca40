"""Pre-training: fit a flow to Q(0) before the time evolution starts.

By maximum likelihood on exact samples where Q(0) can be sampled (coherent, thermal
and Fock products), else by minimizing the reverse KL to an analytic log Q(0) (cat
states). Training stops once the measured KL falls below `kl_tol` (checked every
`check_every` steps) or after `max_steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from qflow_jax.evolution._flowfns import sample_and_log_prob

__all__ = ["PretrainSettings", "pretrain"]

Sampler = Callable[[jax.Array, int], jax.Array]
LogDensity = Callable[[jax.Array], jax.Array]


@dataclass(frozen=True)
class PretrainSettings:
    """Optimizer and stopping rule of `pretrain`."""

    max_steps: int = 3000
    batch_size: int = 1024
    learning_rate: float = 3e-3
    kl_tol: float = 2e-3
    check_every: int = 100
    check_samples: int = 20_000
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(
                f"`schedule` must be 'constant' or 'cosine', got {self.schedule!r}"
            )

    def optimizer(self) -> optax.GradientTransformation:
        """Adam at `learning_rate`, or decaying to 1% of it over `max_steps`
        ("cosine": the late small steps average out the sampling noise of the
        gradient, which a constant rate leaves as a floor on the KL)."""
        if self.schedule == "cosine":
            return optax.adam(
                optax.cosine_decay_schedule(self.learning_rate, self.max_steps, 0.01)
            )
        return optax.adam(self.learning_rate)


def _mle_loss(flow, params, x):
    return -jnp.mean(flow.apply(params, x))


def _reverse_kl_loss(flow, params, key, n, logq0):
    x, logq = sample_and_log_prob(flow, params, key, n)
    return jnp.mean(logq - jax.vmap(logq0)(x))


@eqx.filter_jit
def _train(flow, params, opt_state, keys, optimizer, sampler, logq0, n):
    def body(carry, key):
        p, st = carry
        if sampler is not None:
            loss, g = jax.value_and_grad(lambda q: _mle_loss(flow, q, sampler(key, n)))(
                p
            )
        else:
            loss, g = jax.value_and_grad(
                lambda q: _reverse_kl_loss(flow, q, key, n, logq0)
            )(p)
        updates, st = optimizer.update(g, st, p)
        return (optax.apply_updates(p, updates), st), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), keys)
    return params, opt_state, losses


def measured_kl(
    flow: nn.Module,
    params: Any,
    key: jax.Array,
    logq0: LogDensity,
    sampler: Sampler | None,
    n: int,
) -> float:
    """KL(Q0 || q) from exact samples if a sampler exists, else KL(q || Q0)."""
    if sampler is not None:
        x = sampler(key, n)
        return float(jnp.mean(jax.vmap(logq0)(x) - flow.apply(params, x)))
    x, logq = sample_and_log_prob(flow, params, key, n)
    return float(jnp.mean(logq - jax.vmap(logq0)(x)))


def pretrain(
    flow: nn.Module,
    params: Any,
    key: jax.Array,
    logq0: LogDensity,
    sampler: Sampler | None,
    settings: PretrainSettings,
) -> tuple[Any, dict[str, Any]]:
    """Fits the flow to Q(0); returns the parameters and {"kl", "steps"}.

    Args:
        logq0: y (dim,) -> log Q(0)(y), the target log-density.
        sampler: (key, n) -> (n, dim) exact samples of Q(0), or None (then the
            reverse KL to logq0 is minimized).
    """
    optimizer = settings.optimizer()
    opt_state = optimizer.init(params)
    steps = 0
    key, sub = jax.random.split(key)
    kl = measured_kl(flow, params, sub, logq0, sampler, settings.check_samples)
    while kl > settings.kl_tol and steps < settings.max_steps:
        key, sub, check = jax.random.split(key, 3)
        keys = jax.random.split(sub, settings.check_every)
        params, opt_state, _ = _train(
            flow,
            params,
            opt_state,
            keys,
            optimizer,
            sampler,
            logq0,
            settings.batch_size,
        )
        steps += settings.check_every
        kl = measured_kl(flow, params, check, logq0, sampler, settings.check_samples)
    return params, {"kl": kl, "steps": steps}
