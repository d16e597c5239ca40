"""Pre-training: fit a flow to Q(0) before the time evolution starts.

By maximum likelihood on exact samples where Q(0) can be sampled (coherent, thermal
and Fock products), else by minimizing the reverse KL to an analytic log Q(0) (cat
states). Training stops once the measured KL falls below `kl_tol` (checked every
`check_every` steps) or after `max_steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from qflow_jax.config import PositiveFloat, PositiveInt, settings_class
from qflow_jax.core.training import adam, scan_steps
from qflow_jax.evolution._flowfns import sample_and_log_prob

__all__ = ["PretrainSettings", "pretrain"]

Sampler = Callable[[jax.Array, int], jax.Array]
LogDensity = Callable[[jax.Array], jax.Array]


@settings_class
class PretrainSettings:
    """Objective, optimizer and stopping rule of `pretrain` (also the `pretrain:`
    section of a `qflow run` config).

    Attributes:
        objective: "max_likelihood" on exact samples of Q(0) (needs a sampler) or
            "reverse_kl" to the analytic log Q(0).
    """

    objective: Literal["max_likelihood", "reverse_kl"] = "max_likelihood"
    max_steps: PositiveInt = 3000
    batch_size: PositiveInt = 1024
    learning_rate: PositiveFloat = 3e-3
    kl_tol: PositiveFloat = 2e-3
    check_every: PositiveInt = 100
    check_samples: PositiveInt = 20_000
    schedule: Literal["constant", "cosine"] = "constant"

    def optimizer(self) -> optax.GradientTransformation:
        """Adam at `learning_rate`, or decaying to 1% of it over `max_steps`
        ("cosine": the late small steps average out the sampling noise of the
        gradient, which a constant rate leaves as a floor on the KL;
        `qflow_jax.core.training.adam`)."""
        return adam(self.schedule, self.learning_rate, self.max_steps)


def _mle_loss(flow, params, x):
    return -jnp.mean(flow.apply(params, x))


def _reverse_kl_loss(flow, params, key, n, logq0):
    x, logq = sample_and_log_prob(flow, params, key, n)
    return jnp.mean(logq - jax.vmap(logq0)(x))


@eqx.filter_jit
def _train(flow, params, opt_state, keys, optimizer, sampler, logq0, n):
    def loss(p, key):
        if sampler is not None:
            return _mle_loss(flow, p, sampler(key, n)), None
        return _reverse_kl_loss(flow, p, key, n, logq0), None

    params, opt_state, losses, _ = scan_steps(loss, optimizer, params, opt_state, keys)
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
        sampler: (key, n) -> (n, dim) exact samples of Q(0), which
            `settings.objective` "max_likelihood" needs; "reverse_kl" minimizes the
            reverse KL to logq0 and does not use it.
    """
    if settings.objective == "reverse_kl":
        sampler = None
    elif sampler is None:
        raise ValueError(
            "`settings.objective` 'max_likelihood' needs exact samples of Q(0): "
            "pass `sampler`, or choose objective 'reverse_kl'"
        )
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
