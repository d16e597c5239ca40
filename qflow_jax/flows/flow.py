"""`NormalizingFlow`: a Flax linen module wrapping a chain of distrax bijectors.

    x = mu + L f_K(... f_1(z)),   z ~ N(0, I_d),

with f_k masked coupling layers (affine RealNVP or rational-quadratic splines) on
alternating halves of the coordinates, optional LU mixing layers between them, and a
learnable mean mu and lower-triangular Cholesky factor L (positive diagonal; or a
diagonal L, `scale="diagonal"`, with 2 dim instead of dim (dim + 3) / 2 parameters).
Every conditioner's last layer starts at zero and every LU layer at the identity, so a
new flow is exactly the Gaussian N(mu, L L^T) (initially N(init_mean, init_scale^2 I)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["NormalizingFlow"]


class _Conditioner(nn.Module):
    """MLP from the kept coordinates to per-coordinate bijector parameters."""

    dim: int
    n_params: int
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # the flow's one parameter dtype: JAX's default float (float64 under x64,
        # like the mean and the Cholesky factor)
        dtype = jnp.result_type(float)
        h = x
        for width in self.hidden:
            h = nn.gelu(nn.Dense(width, param_dtype=dtype)(h))
        out = nn.Dense(
            self.dim * self.n_params,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            param_dtype=dtype,
        )(h)
        return out.reshape(*x.shape[:-1], self.dim, self.n_params)


class NormalizingFlow(nn.Module):
    """A normalizing flow on R^dim.

    Attributes:
        dim: number of real coordinates (2N for N modes), at least 2.
        n_layers: number of coupling layers.
        coupling: "affine" (RealNVP shift and log-scale) or "spline"
            (rational-quadratic, `n_bins` bins on [-spline_range, spline_range],
            identity outside).
        hidden: widths of each conditioner's hidden layers.
        lu_mixing: insert a learnable LU-factorized linear layer after each
            coupling layer.
        init_mean, init_scale: the initial Gaussian N(init_mean, init_scale^2 I);
            init_mean a float or a tuple of dim floats (module fields must hash).
        scale: the last affine layer's L: "cholesky" (lower-triangular) or
            "diagonal" (for many dimensions: TDVP needs more samples than the flow
            has parameters that matter, and a Cholesky factor has d^2 / 2).

    Examples:
        >>> flow = NormalizingFlow(dim=2)
        >>> params = flow.init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> x, logq = flow.apply(params, jax.random.key(1), 128,
        ...                      method=NormalizingFlow.sample_and_log_prob)
    """

    dim: int
    n_layers: int = 4
    coupling: str = "affine"
    hidden: Sequence[int] = (64, 64)
    n_bins: int = 8
    spline_range: float = 5.0
    lu_mixing: bool = False
    init_mean: Any = 0.0
    init_scale: float = 1.0
    scale: str = "cholesky"

    def setup(self) -> None:
        if self.dim < 2:
            raise ValueError(f"`dim` must be >= 2, got {self.dim}")
        if isinstance(self.n_layers, bool) or not isinstance(self.n_layers, int):
            raise TypeError(f"`n_layers` must be an integer, got {self.n_layers!r}")
        if self.n_layers < 0:
            raise ValueError(f"`n_layers` must be >= 0, got {self.n_layers}")
        scale = np.asarray(self.init_scale, dtype=float)
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError(
                f"`init_scale` must be finite and > 0, got {self.init_scale!r}"
            )
        if not np.all(np.isfinite(np.asarray(self.init_mean, dtype=float))):
            raise ValueError(f"`init_mean` must be finite, got {self.init_mean!r}")
        if self.coupling not in ("affine", "spline"):
            raise ValueError(
                f"`coupling` must be 'affine' or 'spline', got {self.coupling!r}"
            )
        if self.scale not in ("cholesky", "diagonal"):
            raise ValueError(
                f"`scale` must be 'cholesky' or 'diagonal', got {self.scale!r}"
            )
        n_params = 2 if self.coupling == "affine" else 3 * self.n_bins + 1
        self.conditioners = [
            _Conditioner(self.dim, n_params, tuple(self.hidden))
            for _ in range(self.n_layers)
        ]
        if self.lu_mixing:
            self.lu = [
                self.param(f"lu_{k}", lambda key, d: jnp.eye(d), self.dim)
                for k in range(self.n_layers)
            ]
        mean = jnp.broadcast_to(jnp.asarray(self.init_mean, float), (self.dim,))
        self.mean = self.param("mean", lambda key: mean)
        if self.scale == "cholesky":
            self.chol_offdiag = self.param(
                "chol_offdiag", nn.initializers.zeros, (self.dim, self.dim)
            )
        self.log_chol_diag = self.param(
            "log_chol_diag",
            # one strong dtype (a weak-typed leaf would compile evolutions twice)
            lambda key, d: jnp.full(
                (d,), np.log(self.init_scale), jnp.result_type(float)
            ),
            self.dim,
        )

    def _inner_bijector(self, params: jax.Array) -> distrax.Bijector:
        if self.coupling == "affine":
            return distrax.ScalarAffine(shift=params[..., 0], log_scale=params[..., 1])
        return distrax.RationalQuadraticSpline(
            params, -self.spline_range, self.spline_range, boundary_slopes="identity"
        )

    def cholesky(self) -> jax.Array:
        """Lower-triangular L of the last affine layer (positive diagonal)."""
        diag = jnp.diag(jnp.exp(self.log_chol_diag))
        if self.scale == "diagonal":
            return diag
        return jnp.tril(self.chol_offdiag, -1) + diag

    def bijector(self) -> distrax.Bijector:
        """The distrax bijector z -> x."""
        mask = jnp.arange(self.dim) % 2 == 0
        layers: list[distrax.Bijector] = []
        for k, cond in enumerate(self.conditioners):
            layers.append(
                distrax.MaskedCoupling(
                    mask=mask if k % 2 == 0 else ~mask,
                    conditioner=cond,
                    bijector=self._inner_bijector,
                )
            )
            if self.lu_mixing:
                layers.append(
                    distrax.LowerUpperTriangularAffine(self.lu[k], jnp.zeros(self.dim))
                )
        if self.scale == "diagonal":
            affine = distrax.Block(
                distrax.ScalarAffine(shift=self.mean, log_scale=self.log_chol_diag), 1
            )
        else:
            affine = distrax.UnconstrainedAffine(self.cholesky(), self.mean)
        # distrax.Chain applies its last element first.
        return distrax.Chain([affine, *reversed(layers)])

    def distribution(self) -> distrax.Transformed:
        base = distrax.MultivariateNormalDiag(jnp.zeros(self.dim), jnp.ones(self.dim))
        return distrax.Transformed(base, self.bijector())

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.log_prob(x)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log q(x) for x of shape (..., dim)."""
        return self.distribution().log_prob(x)

    def forward_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x = f(z) and log|det df/dz| for z of shape (..., dim)."""
        return self.bijector().forward_and_log_det(z)

    def inverse_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """z = f^-1(x) and log|det df^-1/dx|."""
        return self.bijector().inverse_and_log_det(x)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n samples, shape (n, dim)."""
        return self.distribution().sample(seed=key, sample_shape=(n,))

    def sample_and_log_prob(
        self, key: jax.Array, n: int
    ) -> tuple[jax.Array, jax.Array]:
        """n samples and their log q, shapes (n, dim) and (n,)."""
        return self.distribution().sample_and_log_prob(seed=key, sample_shape=(n,))


def perturb_params(params: Any, key: jax.Array, scale: float) -> Any:
    """`params` with every entry moved by independent N(0, scale^2) noise: a flow
    away from its Gaussian start, for tests and measurements of the flow's contract.

    Examples:
        >>> flow = NormalizingFlow(dim=2, n_layers=1, hidden=(4,))
        >>> params = flow.init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> moved = perturb_params(params, jax.random.key(1), 0.1)
        >>> jax.tree.structure(moved) == jax.tree.structure(params)
        True
    """
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    moved = [
        p + scale * jax.random.normal(k, p.shape, p.dtype)
        for p, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, moved)
