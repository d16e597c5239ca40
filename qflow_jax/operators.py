"""Operators, states and state functions, in QuTiP conventions.

`sigmaz = diag(1, -1)`, `sigmam = [[0, 0], [1, 0]]` lowers `basis(2, 0)` to
`basis(2, 1)`, `destroy(N)|n> = sqrt(n)|n-1>`, and `tensor` orders its factors most
significant first. Every function returns a JAX array of dtype complex128 unless
`dtype` says otherwise, and accepts JAX arrays, NumPy arrays or QuTiP `Qobj`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import reduce
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import scipy.special

from qflow_jax.core.checks import (
    check_density,
    check_square,
    complex_dtype_of,
    dag,
    is_concrete,
    to_array,
)

DEFAULT_DTYPE = jnp.complex128

__all__ = [
    "PAULI",
    "basis",
    "coherent",
    "coherent_dm",
    "create",
    "destroy",
    "expect",
    "eye",
    "fidelity",
    "fock",
    "fock_dm",
    "ket2dm",
    "number",
    "ptrace",
    "sigmam",
    "sigmap",
    "sigmax",
    "sigmay",
    "sigmaz",
    "tensor",
    "thermal_dm",
    "trace_distance",
]


def _check_dim(N: Any, name: str = "N") -> int:
    if isinstance(N, bool) or not isinstance(N, int | jnp.integer) or N < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {N!r}")
    return int(N)


def destroy(N: int, dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Annihilation operator on a Fock space truncated to N levels.

    Examples:
        >>> a = destroy(3)
        >>> print(round(float((a @ fock(3, 2))[1, 0].real), 6))  # sqrt(2)
        1.414214
    """
    N = _check_dim(N)
    return jnp.diag(jnp.sqrt(jnp.arange(1, N, dtype=jnp.float64)), 1).astype(dtype)


def create(N: int, dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Creation operator a^dag on N Fock levels."""
    return dag(destroy(N, dtype))


def number(N: int, dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Number operator a^dag a = diag(0, 1, ..., N-1)."""
    N = _check_dim(N)
    return jnp.diag(jnp.arange(N, dtype=jnp.float64)).astype(dtype)


def eye(*dims: int, dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Identity on a space of dimension prod(dims), e.g. `eye(2, 2)` is 4 x 4."""
    if not dims:
        raise ValueError("`eye` needs at least one dimension")
    n = 1
    for d in dims:
        n *= _check_dim(d, "dims")
    return jnp.eye(n, dtype=dtype)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


PAULI: Mapping[str, np.ndarray] = MappingProxyType(
    {
        "I": _read_only(np.eye(2, dtype=complex)),
        "X": _read_only(np.array([[0, 1], [1, 0]], dtype=complex)),
        "Y": _read_only(np.array([[0, -1j], [1j, 0]], dtype=complex)),
        "Z": _read_only(np.array([[1, 0], [0, -1]], dtype=complex)),
    }
)
"""The identity and the Pauli matrices as read-only NumPy complex128 arrays in a
read-only mapping, keyed "I", "X", "Y", "Z" (Z = diag(1, -1)): the one definition
behind `sigmax`, `sigmay`, `sigmaz` and the NumPy-level qubit code
(`qflow_jax.network`)."""


def _pauli(name: str, dtype: Any) -> jax.Array:
    m = PAULI[name]
    if not m.imag.any():  # X and Z convert to real dtypes too
        m = m.real
    elif dtype is not None and not jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"Pauli {name} is complex: `dtype` must be complex, got {dtype}"
        )
    return jnp.array(m, dtype=dtype)


def sigmax(dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Pauli X (`PAULI["X"]`)."""
    return _pauli("X", dtype)


def sigmay(dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Pauli Y = [[0, -i], [i, 0]] (`PAULI["Y"]`).

    Examples:
        >>> bool(jnp.array_equal(sigmax() @ sigmay(), 1j * sigmaz()))
        True
        >>> PAULI["X"] @ PAULI["Y"]  # the NumPy constants
        array([[0.+1.j, 0.+0.j],
               [0.+0.j, 0.-1.j]])
    """
    return _pauli("Y", dtype)


def sigmaz(dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Pauli Z = diag(1, -1) (`PAULI["Z"]`; QuTiP convention: basis(2, 0) is the +1
    state)."""
    return _pauli("Z", dtype)


def sigmam(dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Lowering operator [[0, 0], [1, 0]]: basis(2, 0) -> basis(2, 1)."""
    return jnp.array([[0, 0], [1, 0]], dtype=dtype)


def sigmap(dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Raising operator [[0, 1], [0, 0]]."""
    return jnp.array([[0, 1], [0, 0]], dtype=dtype)


def tensor(*ops: Any) -> jax.Array:
    """Kronecker product, first factor most significant (QuTiP order).

    Accepts operators, kets (column vectors) or a single sequence of them.

    Examples:
        >>> tensor(sigmaz(), eye(2)).shape
        (4, 4)
    """
    if len(ops) == 1 and isinstance(ops[0], list | tuple):
        ops = tuple(ops[0])
    if not ops:
        raise ValueError("`tensor` needs at least one operator")
    arrays = [to_array(op, f"ops[{i}]") for i, op in enumerate(ops)]
    for i, arr in enumerate(arrays):
        if arr.ndim != 2:
            raise ValueError(
                f"`ops[{i}]` must be 2-D (operator or column ket), got shape "
                f"{tuple(arr.shape)}"
            )
    return reduce(jnp.kron, arrays)


def basis(N: int, n: int, dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Fock ket |n> as an (N, 1) column."""
    N = _check_dim(N)
    if not 0 <= n < N:
        raise ValueError(f"`n` must lie in [0, {N - 1}], got {n}")
    return jnp.zeros((N, 1), dtype=dtype).at[n, 0].set(1.0)


fock = basis


def fock_dm(N: int, n: int, dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Fock density matrix |n><n|."""
    return ket2dm(basis(N, n, dtype))


def coherent(
    N: int, alpha: complex, method: str = "operator", dtype: Any = DEFAULT_DTYPE
) -> jax.Array:
    """Coherent ket |alpha> on N Fock levels.

    Args:
        method: "operator" (QuTiP's default) applies the truncated displacement
            expm(alpha a^dag - alpha* a) to |0>; "analytic" uses the Poisson
            amplitudes exp(-|alpha|^2/2) alpha^n / sqrt(n!) truncated at N levels.

    Warns (UserWarning) when more than `COHERENT_TRUNCATION_TOL` = 1e-6 of the
    Poisson weight lies at or above level N: <n> and everything else then come out
    wrong.
    """
    N = _check_dim(N)
    if method not in ("operator", "analytic"):
        raise ValueError(f"`method` must be 'operator' or 'analytic', got {method!r}")
    alpha = jnp.asarray(alpha, dtype=dtype)
    _warn_truncation(N, alpha)
    if method == "operator":
        a = destroy(N, dtype)
        D = jsl.expm(alpha * dag(a) - jnp.conj(alpha) * a)
        return D[:, :1]
    if method == "analytic":
        n = jnp.arange(N)
        log_fact = jax.scipy.special.gammaln(n + 1.0)
        amp = jnp.exp(-0.5 * jnp.abs(alpha) ** 2 - 0.5 * log_fact) * alpha**n
        return amp.astype(dtype)[:, None]
    raise AssertionError(method)


COHERENT_TRUNCATION_TOL = 1e-6


def _warn_truncation(N: int, alpha: jax.Array) -> None:
    """Warns when more than COHERENT_TRUNCATION_TOL of the Poisson weight of
    |alpha> lies at or above level N (concrete alpha only)."""
    if not is_concrete(alpha):
        return
    a2 = float(np.max(np.abs(np.asarray(alpha)) ** 2))
    if not np.isfinite(a2):
        raise ValueError(f"`alpha` must be finite, got {alpha}")
    lost = float(scipy.special.gammainc(N, a2)) if a2 > 0 else 0.0
    if lost > COHERENT_TRUNCATION_TOL:
        warnings.warn(
            f"a coherent state with |alpha|^2 = {a2:.4g} on N = {N} levels loses "
            f"{lost:.3g} of its weight above the cut-off (<n> comes out too small); "
            "raise N",
            UserWarning,
            stacklevel=3,
        )


def coherent_dm(
    N: int, alpha: complex, method: str = "operator", dtype: Any = DEFAULT_DTYPE
) -> jax.Array:
    """Coherent density matrix |alpha><alpha| (see `coherent` for `method`)."""
    return ket2dm(coherent(N, alpha, method, dtype))


def thermal_dm(N: int, n: float, dtype: Any = DEFAULT_DTYPE) -> jax.Array:
    """Thermal state of mean occupation `n`, truncated to N levels, renormalized."""
    N = _check_dim(N)
    if n < 0:
        raise ValueError(f"`n` (mean occupation) must be >= 0, got {n}")
    if n == 0:
        return fock_dm(N, 0, dtype)
    k = jnp.arange(N, dtype=jnp.float64)
    p = (n / (1.0 + n)) ** k
    return jnp.diag(p / p.sum()).astype(dtype)


def ket2dm(psi: Any) -> jax.Array:
    """|psi><psi| for a ket of shape (..., n, 1) or (n,).

    A NumPy ket is multiplied out by NumPy (the numbers of `np.outer(psi,
    psi.conj())`), any other by JAX; the result is a JAX array either way.

    Examples:
        >>> ket2dm(np.array([1.0, 1.0j]) / np.sqrt(2))
        Array([[0.5+0.j , 0. -0.5j],
               [0. +0.5j, 0.5+0.j ]], dtype=complex128)
    """
    if isinstance(psi, np.ndarray):
        xp, psi = np, psi.astype(complex_dtype_of(psi))
    else:
        xp, psi = jnp, to_array(psi, "psi")
    if psi.ndim == 1:
        psi = psi[:, None]
    if psi.shape[-1] != 1:
        raise ValueError(f"`psi` must be a ket of shape (..., n, 1), got {psi.shape}")
    # the outer product as a broadcast product: in JAX the same numbers as psi @
    # dag(psi), in NumPy those of np.outer
    return jnp.asarray(psi * xp.conj(xp.swapaxes(psi, -1, -2)))


def _as_dm(x: Any, name: str) -> jax.Array:
    x = to_array(x, name)
    if x.ndim >= 2 and x.shape[-1] == 1 and x.shape[-2] != 1:
        return ket2dm(x)
    check_square(x, name)
    return x


def expect(O: Any, state: Any) -> jax.Array:
    """Expectation value <O> = Tr(O rho) (or <psi|O|psi> for a ket), batched.

    Args:
        O: (..., n, n) operator.
        state: (..., n, n) density matrix or (..., n, 1) ket.

    Returns:
        Complex array of the broadcast batch shape; take `.real` for Hermitian O.
    """
    O = to_array(O, "O")
    check_square(O, "O")
    rho = _as_dm(state, "state")
    if O.shape[-1] != rho.shape[-1]:
        raise ValueError(
            f"`O` has dimension {O.shape[-1]} but `state` has {rho.shape[-1]}"
        )
    return jnp.einsum("...ij,...ji->...", O, rho)


def trace_distance(A: Any, B: Any) -> jax.Array:
    """Trace distance 0.5 Tr|A - B| between density matrices (or kets); both are
    checked to be states (Hermitian, trace 1, positive)."""
    A = check_density(_as_dm(A, "A"), "A")
    B = check_density(_as_dm(B, "B"), "B")
    return 0.5 * jnp.sum(jnp.abs(jnp.linalg.eigvalsh(A - B)), axis=-1)


def _psd_sqrt(A: jax.Array) -> jax.Array:
    w, V = jnp.linalg.eigh(A)
    return (V * jnp.sqrt(jnp.clip(w, 0.0))[..., None, :]) @ dag(V)


def fidelity(A: Any, B: Any) -> jax.Array:
    """Uhlmann fidelity as in QuTiP: Tr sqrt(sqrt(A) B sqrt(A)), not squared; both
    are checked to be states (Hermitian, trace 1, positive)."""
    A = check_density(_as_dm(A, "A"), "A")
    B = check_density(_as_dm(B, "B"), "B")
    sA = _psd_sqrt(A)
    w = jnp.linalg.eigvalsh(sA @ B @ sA)
    return jnp.sum(jnp.sqrt(jnp.clip(w, 0.0)), axis=-1)


def ptrace(rho: Any, keep: int | Sequence[int], dims: Sequence[int]) -> jax.Array:
    """Partial trace keeping the subsystems `keep` of a (..., n, n) state.

    Args:
        rho: density matrix (..., n, n) or ket (..., n, 1), n = prod(dims).
        keep: index or indices of the subsystems to keep (in increasing order
            in the result, like QuTiP).
        dims: dimensions of all subsystems, most significant first.

    Examples:
        >>> rho = ptrace(tensor(fock_dm(2, 0), fock_dm(3, 1)), 1, [2, 3])
        >>> bool(jnp.allclose(rho, fock_dm(3, 1)))
        True
    """
    rho = _as_dm(rho, "rho")
    dims = [int(d) for d in dims]
    n = 1
    for d in dims:
        n *= d
    if rho.shape[-1] != n:
        raise ValueError(
            f"`dims` {dims} multiply to {n} but `rho` has dimension {rho.shape[-1]}"
        )
    keep = sorted({keep} if isinstance(keep, int) else set(keep))
    if not keep or any(not 0 <= k < len(dims) for k in keep):
        raise ValueError(f"`keep` must be indices in [0, {len(dims) - 1}], got {keep}")
    batch = rho.shape[:-2]
    m = len(dims)
    t = rho.reshape(*batch, *dims, *dims)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    row = [letters[i] for i in range(m)]
    col = [letters[m + i] if i in keep else letters[i] for i in range(m)]
    out = [row[k] for k in keep] + [col[k] for k in keep]
    expr = f"...{''.join(row)}{''.join(col)}->...{''.join(out)}"
    dk = 1
    for k in keep:
        dk *= dims[k]
    return jnp.einsum(expr, t).reshape(*batch, dk, dk)
