"""`LogQNet`: a Flax MLP on (x, t) that returns log Q(x, t), normalisable by design.

    log Q(x, t) = log G(x, t) + MLP(z, tau),
    z = (x - center) / scale,   tau = t / t_scale,

where G is a Gaussian envelope and the MLP has smooth activations and a linear last
layer. A tanh MLP is bounded and a gelu / silu / softplus one grows at most linearly
in |x|, so the quadratic decay of log G dominates and Q is integrable for every
parameter value: positivity is exact (Q = exp(log Q)) and normalisability holds by
construction; the value of the integral is learned (PINN normalization penalty).

Envelopes:
    "isotropic": G = N(mu, w^2 I), a learnable constant mean mu and width w.
    "gaussian":  G = N(mu(t), P(t)^-1), mean and precision Cholesky factor from a
        small MLP of tau (full covariance, time-dependent). It can represent any
        Gaussian Q(t) on its own, the MLP adds the non-Gaussian part.

The MLP's last layer (and the envelope net's) starts at zero, so a new network is its
envelope's initial Gaussian N(init_mean, init_width^2 I), normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "ENVELOPES", "LogQNet"]

# Smooth activations only: the PDE needs second (or higher) derivatives in x.
ACTIVATIONS = {
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "softplus": nn.softplus,
}
ENVELOPES = ("isotropic", "gaussian")


def _mlp(h: jax.Array, hidden: Sequence[int], act: Any, n_out: int) -> jax.Array:
    for width in hidden:
        h = act(nn.Dense(width)(h))
    return nn.Dense(
        n_out, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros
    )(h)


class LogQNet(nn.Module):
    """log Q(x, t) on R^dim x [0, t_scale].

    Attributes:
        dim: number of real coordinates 2N.
        hidden: widths of the hidden layers (also used by the "gaussian" envelope's
            time network).
        activation: one of `ACTIVATIONS` ("tanh", "gelu", "silu", "softplus").
        envelope: "isotropic" or "gaussian" (module docstring).
        center, scale: input standardisation z = (x - center) / scale; `center` a
            float or a tuple of dim floats (module fields must hash).
        t_scale: time standardisation tau = t / t_scale (the final time).
        init_mean, init_width: the initial envelope N(init_mean, init_width^2 I).

    Examples:
        >>> net = LogQNet(dim=2)
        >>> params = net.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros(1))
        >>> net.apply(params, jnp.ones((5, 2)), jnp.full(5, 0.5)).shape
        (5,)
    """

    dim: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    envelope: str = "isotropic"
    center: Any = 0.0
    scale: float = 1.0
    t_scale: float = 1.0
    init_mean: Any = 0.0
    init_width: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x (..., dim) and t (...), broadcast together -> log Q (...)."""
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {tuple(ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )
        act = ACTIVATIONS[self.activation]
        t = jnp.asarray(t, x.dtype)
        batch = jnp.broadcast_shapes(x.shape[:-1], t.shape)
        x = jnp.broadcast_to(x, (*batch, self.dim))
        t = jnp.broadcast_to(t, batch)
        center = jnp.broadcast_to(jnp.asarray(self.center, x.dtype), (self.dim,))
        tau = (t / self.t_scale)[..., None]
        z = (x - center) / self.scale
        correction = _mlp(jnp.concatenate([z, tau], -1), self.hidden, act, 1)[..., 0]
        return self._log_envelope(x, tau, act) + correction

    def _log_envelope(self, x: jax.Array, tau: jax.Array, act: Any) -> jax.Array:
        d = self.dim
        mean0 = jnp.broadcast_to(jnp.asarray(self.init_mean, x.dtype), (d,))
        log_w0 = jnp.log(self.init_width)
        if self.envelope == "isotropic":
            mu = self.param("env_mean", lambda key: mean0)
            log_w = self.param("env_log_width", lambda key: jnp.asarray(log_w0))
            r2 = jnp.sum((x - mu) ** 2, -1) * jnp.exp(-2 * log_w)
            return -0.5 * r2 - d * log_w - 0.5 * d * jnp.log(2 * jnp.pi)
        if self.envelope != "gaussian":
            raise ValueError(
                f"`envelope` must be one of {ENVELOPES}, got {self.envelope!r}"
            )
        # precision P = L L^T with L lower triangular, diag(L) = exp(-log width)
        rows, cols = jnp.tril_indices(d, -1)
        n_off = rows.shape[0]
        out = _mlp(tau, self.hidden, act, 2 * d + n_off)
        mu = mean0 + out[..., :d]
        log_diag = -log_w0 + out[..., d : 2 * d]
        L = jnp.zeros((*tau.shape[:-1], d, d), x.dtype)
        L = L.at[..., rows, cols].set(out[..., 2 * d :])
        L = L + jnp.exp(log_diag)[..., None] * jnp.eye(d, dtype=x.dtype)
        u = jnp.einsum("...ji,...j->...i", L, x - mu)  # L^T (x - mu)
        return (
            -0.5 * jnp.sum(u**2, -1)
            + jnp.sum(log_diag, -1)
            - 0.5 * d * jnp.log(2 * jnp.pi)
        )
