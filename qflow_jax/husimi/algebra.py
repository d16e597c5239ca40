"""Symbolic, normal-ordered polynomials in multimode boson operators.

An operator is stored as `{key: coeff}` where `key` lists, for every mode with a
nonzero exponent, `(mode, m, n)` for the normal-ordered factor a_mode^dag^m a_mode^n
(modes sorted), and the empty key is the identity. Products are normal-ordered with
Wick's rule a^n a^dag^k = sum_r r! C(n, r) C(k, r) a^dag^(k-r) a^(n-r).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from functools import reduce
from math import comb, factorial
from typing import Any

import numpy as np

__all__ = ["BosonOp", "a", "adag"]

Key = tuple[tuple[int, int, int], ...]


def _scalar(x: Any, name: str) -> complex:
    if isinstance(x, numbers.Number) or (hasattr(x, "shape") and x.shape == ()):
        try:
            return complex(x)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"`{name}` must be a concrete number (not a traced value), got {x!r}"
            ) from err
    raise TypeError(f"`{name}` must be a number or a BosonOp, got {type(x).__name__}")


def _mode_product(
    left: tuple[int, int], right: tuple[int, int]
) -> list[tuple[int, int, int]]:
    """(a^dag^m a^n)(a^dag^k a^l) as [(weight, creation, annihilation)]."""
    (m, n), (k, ll) = left, right
    return [
        (factorial(r) * comb(n, r) * comb(k, r), m + k - r, n + ll - r)
        for r in range(min(n, k) + 1)
    ]


def _key_product(k1: Key, k2: Key) -> list[tuple[int, Key]]:
    d1 = {j: (m, n) for j, m, n in k1}
    d2 = {j: (m, n) for j, m, n in k2}
    out: list[tuple[int, Key]] = [(1, ())]
    for j in sorted(set(d1) | set(d2)):
        factors = _mode_product(d1.get(j, (0, 0)), d2.get(j, (0, 0)))
        out = [
            (w * v, key + (((j, m, n),) if m or n else ()))
            for w, key in out
            for v, m, n in factors
        ]
    return out


class BosonOp:
    """A normal-ordered polynomial in boson operators a_j, a_j^dag with complex
    coefficients.

    Build operators from `a(j)`, `adag(j)`, numbers, `+`, `-`, `*` (by a number, or
    between operators), `@` (operator product), `/` (by a number), `**` (integer
    power) and `.dag()`. A plain number stands for that multiple of the identity.

    Examples:
        >>> w, U, J = 1.0, 0.5, 0.2
        >>> H = (w * adag(0) @ a(0) + U / 2 * adag(0) @ adag(0) @ a(0) @ a(0)
        ...      + J * (adag(0) @ a(1) + adag(1) @ a(0)))
        >>> print(a(0) @ adag(0))
        1 + a0^dag a0
    """

    __slots__ = ("_terms",)
    __array_ufunc__ = None  # numpy scalars defer to our reflected operators

    def __init__(self, terms: Mapping[Key, complex] | None = None):
        summed: dict[Key, complex] = {}
        for key, c in (terms or {}).items():
            key = tuple(sorted(key))
            summed[key] = summed.get(key, 0) + complex(c)
        self._terms = {k: c for k, c in summed.items() if c != 0}

    @property
    def terms(self) -> dict[Key, complex]:
        """Copy of `{((mode, m, n), ...): coeff}` for a^dag^m a^n factors."""
        return dict(self._terms)

    @property
    def n_modes(self) -> int:
        """1 + the largest mode index that appears (0 for a multiple of identity)."""
        return 1 + max((j for key in self._terms for j, _, _ in key), default=-1)

    @staticmethod
    def _lift(x: Any, name: str = "operand") -> BosonOp:
        if isinstance(x, BosonOp):
            return x
        return BosonOp({(): _scalar(x, name)})

    def __add__(self, other: Any) -> BosonOp:
        other = self._lift(other)
        out = dict(self._terms)
        for key, c in other._terms.items():
            out[key] = out.get(key, 0) + c
        return BosonOp(out)

    __radd__ = __add__

    def __neg__(self) -> BosonOp:
        return BosonOp({k: -c for k, c in self._terms.items()})

    def __sub__(self, other: Any) -> BosonOp:
        return self + (-self._lift(other))

    def __rsub__(self, other: Any) -> BosonOp:
        return self._lift(other) + (-self)

    def __matmul__(self, other: Any) -> BosonOp:
        other = self._lift(other)
        out: dict[Key, complex] = {}
        for k1, c1 in self._terms.items():
            for k2, c2 in other._terms.items():
                for w, key in _key_product(k1, k2):
                    out[key] = out.get(key, 0) + w * c1 * c2
        return BosonOp(out)

    def __rmatmul__(self, other: Any) -> BosonOp:
        return self._lift(other) @ self

    __mul__ = __matmul__
    __rmul__ = __rmatmul__

    def __truediv__(self, other: Any) -> BosonOp:
        return self * (1.0 / _scalar(other, "divisor"))

    def __pow__(self, n: int) -> BosonOp:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"the exponent must be a non-negative integer, got {n!r}")
        out = BosonOp({(): 1.0})
        for _ in range(n):
            out = out @ self
        return out

    def dag(self) -> BosonOp:
        """Hermitian conjugate: (c a^dag^m a^n)^dag = c* a^dag^n a^m."""
        return BosonOp(
            {
                tuple((j, n, m) for j, m, n in key): np.conj(c)
                for key, c in self._terms.items()
            }
        )

    def is_hermitian(self, tol: float = 1e-12) -> bool:
        """Whether the operator equals its conjugate up to `tol` per coefficient."""
        diff = (self - self.dag())._terms
        return all(abs(c) <= tol for c in diff.values())

    def to_matrix(self, cutoffs: Sequence[int]) -> np.ndarray:
        """The operator in the truncated Fock basis of modes with these cut-offs
        (first mode most significant, as `qflow_jax.tensor`).

        Examples:
            >>> (adag(0) @ a(1)).to_matrix([3, 3]).shape
            (9, 9)
        """
        cutoffs = [int(d) for d in cutoffs]
        if len(cutoffs) < self.n_modes or any(d < 1 for d in cutoffs):
            raise ValueError(
                f"`cutoffs` must give a positive cut-off for each of the "
                f"{self.n_modes} modes, got {cutoffs}"
            )
        lowers = [np.diag(np.sqrt(np.arange(1.0, d)), 1) for d in cutoffs]
        out = np.zeros((int(np.prod(cutoffs)),) * 2, complex)
        for key, c in self._terms.items():
            powers = {j: (m, n) for j, m, n in key}
            mats = []
            for j, low in enumerate(lowers):
                m, n = powers.get(j, (0, 0))
                mats.append(
                    np.linalg.matrix_power(low.T, m) @ np.linalg.matrix_power(low, n)
                )
            out += c * reduce(np.kron, mats)
        return out

    def __repr__(self) -> str:
        return f"BosonOp({self})"

    def __str__(self) -> str:
        if not self._terms:
            return "0"
        parts = []
        for key in sorted(self._terms, key=lambda k: (sum(m + n for _, m, n in k), k)):
            c = self._terms[key]
            factors = []
            for j, m, n in key:
                factors += [f"a{j}^dag" + (f"^{m}" if m > 1 else "")] if m else []
                factors += [f"a{j}" + (f"^{n}" if n > 1 else "")] if n else []
            parts.append(_format_coeff(c, bool(factors)) + " ".join(factors))
        return " + ".join(parts).replace("+ -", "- ")


def _format_coeff(c: complex, has_factors: bool) -> str:
    if c.imag == 0:
        text = f"{c.real:.6g}"
    elif c.real == 0:
        text = f"{c.imag:.6g}i"
    else:
        text = f"({c.real:.6g}{c.imag:+.6g}i)"
    if has_factors and text in ("1", "-1"):
        return text[:-1]
    return text + (" " if has_factors else "")


def _check_mode(j: Any) -> int:
    if isinstance(j, bool) or not isinstance(j, numbers.Integral) or j < 0:
        raise ValueError(f"`j` (mode index) must be a non-negative integer, got {j!r}")
    return int(j)


def a(j: int = 0) -> BosonOp:
    """Annihilation operator of mode `j`."""
    return BosonOp({((_check_mode(j), 0, 1),): 1.0})


def adag(j: int = 0) -> BosonOp:
    """Creation operator of mode `j`."""
    return BosonOp({((_check_mode(j), 1, 0),): 1.0})
