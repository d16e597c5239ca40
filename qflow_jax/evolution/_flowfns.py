"""Log-density closures of a flow for the PDE kernels; finiteness of a pytree."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp


def _log_prob_point(flow: nn.Module, params: Any, y: jax.Array) -> jax.Array:
    return flow.apply(params, y)


def logq_fn(flow: nn.Module, params: Any) -> eqx.Partial:
    """y (dim,) -> log q_params(y), as a pytree so jitted kernels do not recompile."""
    return eqx.Partial(_log_prob_point, flow, params)


@eqx.filter_jit
def sample_and_log_prob(
    flow: nn.Module, params: Any, key: jax.Array, n: int
) -> tuple[jax.Array, jax.Array]:
    """n samples of the flow and their log-density, compiled (n static)."""
    return flow.apply(params, key, n, method=type(flow).sample_and_log_prob)


def is_finite_tree(tree: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
