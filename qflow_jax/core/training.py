"""What the optax-trained solvers share: Adam with its learning-rate schedule, the
scan of optimizer steps, and the Gaussian proposal of importance-sampled integrals.

The Euler-KL fits (`qflow_jax.evolution.euler_kl`), the pre-training on Q(0)
(`qflow_jax.evolution.pretrain`) and the PINN (`qflow_jax.pinn.train`) build their
optimizer with `adam` and run their jitted chunks of steps with `scan_steps`; each
keeps its own loss, chunking and stopping rule. `gaussian_proposal` draws the
samples of `qflow_jax.evolution.normalization` and of the PINN's normalization
penalty and quadrature.

Examples:
    >>> opt = adam("cosine", 0.1, 50)
    >>> loss = lambda p, key: (jnp.sum((p - 1.0) ** 2), None)
    >>> p, _, losses, _ = scan_steps(
    ...     loss, opt, jnp.zeros(2), opt.init(jnp.zeros(2)),
    ...     jax.random.split(jax.random.key(0), 50))
    >>> bool(losses[-1] < 1e-2 * losses[0])
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["SCHEDULES", "adam", "gaussian_proposal", "scan_steps", "schedule"]

SCHEDULES = ("constant", "cosine", "warmup_cosine")


def schedule(
    name: str, learning_rate: float, steps: int, *, final_fraction: float = 0.01
) -> optax.Schedule:
    """The learning rate as a function of the optimizer step.

    Args:
        name: "constant"; "cosine" (cosine decay from `learning_rate` to
            `final_fraction` of it at step `steps`, held there after); or
            "warmup_cosine" (linear warm-up from 0 over 5% of the steps, at least
            one, then the cosine decay, to the same final value at step `steps`).
        learning_rate: the constant or peak rate.
        steps: the step at which the decaying schedules reach their final value.
        final_fraction: final rate over `learning_rate` of the decaying schedules.

    Returns:
        An optax schedule, step count -> learning rate.

    Raises:
        ValueError: for an unknown `name`.

    Examples:
        >>> print(round(float(schedule("cosine", 1e-2, 100)(100)), 12))
        0.0001
        >>> print(float(schedule("warmup_cosine", 1e-2, 100)(5)))
        0.01
    """
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, steps, alpha=final_fraction)
    if name == "warmup_cosine":
        warm = max(1, steps // 20)
        return optax.warmup_cosine_decay_schedule(
            0.0,
            learning_rate,
            warm,
            max(steps, warm + 1),
            end_value=final_fraction * learning_rate,
        )
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {name!r}")


@functools.cache
def adam(
    name: str, learning_rate: float, steps: int, *, final_fraction: float = 0.01
) -> optax.GradientTransformation:
    """Adam with the learning-rate `schedule(name, learning_rate, steps, ...)`.

    A constant rate is handed to optax as a number (no schedule step count in the
    optimizer state). Cached: equal arguments give the same optimizer object, which
    the jitted training chunks take as a static argument (a new object would
    recompile them).

    Args:
        name, learning_rate, steps, final_fraction: as for `schedule`.

    Returns:
        The optax optimizer.
    """
    if name == "constant":
        return optax.adam(learning_rate)
    return optax.adam(
        schedule(name, learning_rate, steps, final_fraction=final_fraction)
    )


def scan_steps(
    loss_fn: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
    optimizer: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    keys: jax.Array,
) -> tuple[Any, Any, jax.Array, Any]:
    """One optimizer step per key, by `jax.lax.scan`: step i descends the gradient
    of `loss_fn(params, keys[i])`.

    Call it inside the caller's jitted function: it traces the loop, it does not
    compile it.

    Args:
        loss_fn: (params, key) -> (scalar loss, aux), differentiated in params.
        optimizer: the optax optimizer.
        params, opt_state: the parameters and the optimizer state to start from.
        keys: (n,) random keys, one per step.

    Returns:
        (params, opt_state, losses, aux): the state after the n steps, the (n,)
        losses and the aux outputs stacked along a leading axis of length n (each
        at the parameters before its step).
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def body(carry, key):
        p, state = carry
        (loss, aux), g = grad_fn(p, key)
        updates, state = optimizer.update(g, state, p)
        return (optax.apply_updates(p, updates), state), (loss, aux)

    (params, opt_state), (losses, aux) = jax.lax.scan(body, (params, opt_state), keys)
    return params, opt_state, losses, aux


def gaussian_proposal(
    key: jax.Array, n: int, dim: int, center: Any, width: float
) -> tuple[jax.Array, jax.Array]:
    """n samples of N(center, width^2 I) on R^dim with their log density.

    The proposal of importance-sampled integrals: the integral of g is estimated
    by the mean of g(y) / p(y) = exp(log g(y) - log_p).

    Args:
        key: random key.
        n: number of samples.
        dim: dimension.
        center: (dim,) mean (or a scalar).
        width: standard deviation of every coordinate.

    Returns:
        (y, log_p): (n, dim) samples and their (n,) log densities.

    Examples:
        >>> y, log_p = gaussian_proposal(jax.random.key(0), 200_000, 2, 1.0, 0.8)
        >>> integral = jnp.mean(jnp.exp(-jnp.sum((y - 1.0) ** 2, -1) - log_p))
        >>> print(round(float(integral), 2))  # pi
        3.14
    """
    y = center + width * jax.random.normal(key, (n, dim))
    log_p = -0.5 * jnp.sum(((y - center) / width) ** 2, -1) - dim * jnp.log(
        width * jnp.sqrt(2 * jnp.pi)
    )
    return y, log_p
