"""Left multiplication by constant operators, dense or in sparse diagonal (DIA) form."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.core.checks import is_concrete


class DenseOp(eqx.Module):
    """A @ X for a dense (..., n, n) matrix."""

    mat: jax.Array

    def left(self, X: jax.Array) -> jax.Array:
        return self.mat @ X


class DiaOp(eqx.Module):
    """A @ X for a matrix stored by its nonzero diagonals: diags[d, i] = A[i, i + k_d].

    Costs O(n_diag n^2) instead of O(n^3): destroy, number, drives and Kerr terms
    of a bosonic mode have 1 to 3 diagonals.
    """

    diags: jax.Array
    offsets: tuple[int, ...] = eqx.field(static=True)

    def left(self, X: jax.Array) -> jax.Array:
        n = X.shape[-2]
        pad = max(abs(k) for k in self.offsets)
        Xp = jnp.pad(X, ((pad, pad), (0, 0)))
        out = None
        for d, k in enumerate(self.offsets):
            term = self.diags[..., d, :, None] * Xp[pad + k : pad + k + n]
            out = term if out is None else out + term
        return out


def _diag_values(mat: Any, k: int) -> Any:
    """Diagonal k of (..., n, n) as values[i] = mat[i, i + k] (0 outside); NumPy in,
    NumPy out."""
    xp = np if isinstance(mat, np.ndarray) else jnp
    n = mat.shape[-1]
    d = xp.diagonal(mat, offset=k, axis1=-2, axis2=-1)
    pad = [(0, 0)] * (d.ndim - 1) + ([(0, k)] if k >= 0 else [(-k, 0)])
    return xp.pad(d, pad)[..., :n]


def make_op(mat: Any, sparse: bool | None = None) -> DenseOp | DiaOp:
    """Chooses the representation of a (..., n, n) operator stack (JAX or NumPy).

    `sparse=None` picks DIA when the matrices are concrete and at most n/8 of the
    2n-1 diagonals (union over the stack) hold nonzeros; traced values stay dense.
    """
    n = mat.shape[-1]
    if sparse is False or not is_concrete(mat):
        return DenseOp(mat)
    m = np.abs(np.asarray(mat)).reshape(-1, n, n).max(axis=0)
    offsets = tuple(
        k for k in range(-n + 1, n) if np.any(np.diagonal(m, offset=k) != 0.0)
    )
    if not offsets:
        offsets = (0,)
    if sparse is None and 8 * len(offsets) > n:
        return DenseOp(mat)
    xp = np if isinstance(mat, np.ndarray) else jnp
    diags = xp.stack([_diag_values(mat, k) for k in offsets], axis=-2)
    return DiaOp(diags, offsets)
