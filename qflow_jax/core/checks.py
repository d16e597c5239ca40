"""Input conversion and checks shared by every public entry point.

One tolerance policy (`state_tol`) and one rule for traced values: a check on
concrete values runs on the host and raises ValueError naming the argument; the
same check on a traced value (inside `jax.jit`, `jax.vmap`, `jax.grad`) never
copies it to the host but is attached to it with `equinox.error_if`, so it raises
when the compiled program runs. Positivity needs an eigendecomposition and is
checked on concrete values only.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_density",
    "check_finite",
    "check_hermitian",
    "check_positive",
    "check_positive_number",
    "check_square",
    "check_tolerances",
    "check_tsave",
    "complex_dtype_of",
    "dag",
    "is_concrete",
    "state_tol",
    "to_array",
]


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
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def state_tol(dtype: Any) -> float:
    """The tolerance of every density-matrix check (Hermiticity, trace, smallest
    eigenvalue): 1e-6 in double precision, 1e-4 in single precision."""
    single = jnp.dtype(dtype) in (jnp.dtype(jnp.complex64), jnp.dtype(jnp.float32))
    return 1e-4 if single else 1e-6


def dag(x: jax.Array) -> jax.Array:
    """Conjugate transpose over the last two axes."""
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def check_square(arr: jax.Array, name: str) -> None:
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(
            f"`{name}` must be a square matrix of shape (..., n, n), got shape "
            f"{tuple(arr.shape)}"
        )


def check_finite(
    arr: jax.Array, name: str, attach_to: Any = None, where: str = ""
) -> Any:
    """Checks `arr` for nan and inf; returns `attach_to` (default `arr`), carrying the
    runtime check when `arr` is traced (see `check_hermitian`)."""
    out = arr if attach_to is None else attach_to
    msg = f"`{name}` contains non-finite values (nan or inf){where}"
    if is_concrete(arr):
        if not bool(np.all(np.isfinite(np.asarray(arr)))):
            raise ValueError(msg)
        return out
    return eqx.error_if(out, ~jnp.all(jnp.isfinite(arr)), msg)


def check_hermitian(
    arr: jax.Array,
    name: str,
    rtol: float = 1e-8,
    attach_to: Any = None,
    where: str = "",
) -> Any:
    """Checks `arr` (..., n, n) Hermitian to `rtol` relative to its largest entry.

    Returns `attach_to` (default `arr`); for a traced `arr` the runtime check is
    attached to it, so pass the value the computation goes on with when `arr` is
    derived (e.g. H(t) at a probe time)."""
    out = arr if attach_to is None else attach_to
    msg = f"`{name}` must be Hermitian{where}"
    if is_concrete(arr):
        a = np.asarray(arr)
        dev = np.abs(a - np.conj(np.swapaxes(a, -1, -2))).max(initial=0.0)
        if dev > rtol * max(1.0, float(np.abs(a).max(initial=0.0))):
            raise ValueError(f"{msg}, got max |{name} - {name}^dag| = {dev:.3g}")
        return out
    dev = jnp.max(jnp.abs(arr - dag(arr)))
    return eqx.error_if(out, dev > rtol * jnp.maximum(1.0, jnp.max(jnp.abs(arr))), msg)


def check_density(rho: jax.Array, name: str = "rho0", tol: float | None = None):
    """`rho` (..., n, n), checked to be a density matrix: finite, Hermitian, trace 1
    and (concrete values only) positive semidefinite, each to `state_tol`."""
    tol = state_tol(rho.dtype) if tol is None else tol
    rho = check_finite(rho, name)
    if not is_concrete(rho):
        herm = jnp.max(jnp.abs(rho - dag(rho)))
        tr = jnp.trace(rho, axis1=-2, axis2=-1)
        rho = eqx.error_if(rho, herm > tol, f"`{name}` must be Hermitian")
        return eqx.error_if(
            rho, jnp.max(jnp.abs(tr - 1)) > tol, f"`{name}` must have trace 1"
        )
    r = np.asarray(rho)
    herm = np.abs(r - np.conj(np.swapaxes(r, -1, -2))).max()
    if herm > tol:
        raise ValueError(
            f"`{name}` must be Hermitian, got max |{name} - {name}^dag| = {herm:.3g}"
        )
    tr = np.trace(r, axis1=-2, axis2=-1)
    if np.abs(tr - 1).max() > tol:
        worst = np.asarray(tr).reshape(-1)[np.argmax(np.abs(tr - 1))]
        raise ValueError(f"`{name}` must have trace 1, got trace {worst:.6g}")
    check_positive(r, name, tol)
    return rho


def check_positive(r: np.ndarray, name: str, tol: float) -> None:
    """Raises unless the concrete Hermitian (..., n, n) `r` has eigenvalues >= -tol."""
    emin = np.linalg.eigvalsh(0.5 * (r + np.conj(np.swapaxes(r, -1, -2)))).min()
    if emin < -tol:
        raise ValueError(
            f"`{name}` must be positive semidefinite, got smallest eigenvalue "
            f"{emin:.3g}"
        )


def check_tsave(tsave: Any, dtype: Any = None) -> jax.Array:
    """`tsave` as a 1-D array of at least 2 finite, strictly increasing times."""
    t = jnp.asarray(tsave, dtype=dtype)
    if t.ndim != 1 or t.shape[0] < 2:
        raise ValueError(
            f"`tsave` must be a 1-D array of at least 2 times, got shape "
            f"{tuple(t.shape)}"
        )
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(float)
    if is_concrete(t):
        tn = np.asarray(t)
        if not np.all(np.isfinite(tn)):
            raise ValueError("`tsave` contains non-finite values")
        if not np.all(np.diff(tn) > 0):
            raise ValueError("`tsave` must be strictly increasing")
        return t
    bad = ~jnp.all(jnp.isfinite(t)) | ~jnp.all(jnp.diff(t) > 0)
    return eqx.error_if(t, bad, "`tsave` must be finite and strictly increasing")


def check_positive_number(value: Any, name: str, integer: bool = False) -> None:
    """`value` is a finite number > 0 (with `integer`: an integer >= 1); a
    TypeError or ValueError naming `name` otherwise.

    Examples:
        >>> check_positive_number(-0.1, "dt")
        Traceback (most recent call last):
        ...
        ValueError: `dt` must be finite and > 0, got -0.1
    """
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    what = "a positive integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"`{name}` must be {what}, got {type(value).__name__}")
    if integer and value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be finite and > 0, got {value}")


def check_tolerances(rtol: Any, atol: Any, max_steps: Any) -> None:
    """rtol, atol finite and > 0; max_steps a positive integer."""
    check_positive_number(rtol, "rtol")
    check_positive_number(atol, "atol")
    check_positive_number(max_steps, "max_steps", integer=True)
