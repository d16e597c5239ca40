"""Conversion of user inputs (JAX, NumPy, QuTiP) to JAX arrays, and shared checks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def to_array(x: Any, name: str = "input", dtype: Any = None) -> jax.Array:
    """Returns `x` as a complex JAX array; accepts JAX/NumPy arrays and QuTiP `Qobj`."""
    if type(x).__name__ == "Qobj" and hasattr(x, "full"):
        x = x.full()
    try:
        arr = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(
            f"`{name}` must be an array or a QuTiP Qobj, got {type(x).__name__}"
        ) from err
    if dtype is None:
        dtype = complex_dtype_of(arr)
    return arr.astype(dtype)


def complex_dtype_of(arr: Any) -> jnp.dtype:
    """complex64 for single-precision inputs, complex128 otherwise."""
    dt = jnp.asarray(arr).dtype
    if dt in (jnp.float32, jnp.complex64, jnp.float16, jnp.bfloat16):
        return jnp.dtype(jnp.complex64)
    return jnp.dtype(jnp.complex128)


def is_concrete(x: Any) -> bool:
    """True when `x` holds values (not an abstract tracer inside jit/grad/vmap)."""
    try:
        np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    return True


def check_square(arr: jax.Array, name: str) -> None:
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(
            f"`{name}` must be a square matrix of shape (..., n, n), got shape "
            f"{tuple(arr.shape)}"
        )


def check_finite(arr: jax.Array, name: str) -> None:
    if is_concrete(arr) and not bool(np.all(np.isfinite(np.asarray(arr)))):
        raise ValueError(f"`{name}` contains non-finite values (nan or inf)")


def dag(x: jax.Array) -> jax.Array:
    """Conjugate transpose over the last two axes."""
    return jnp.conj(jnp.swapaxes(x, -1, -2))
