"""Time-dependent operators as pytrees.

`constant(A)`, `modulated(f, A)` (f(t) A) and `timecallable(f)` (any t -> (n, n))
are equinox Modules: their arrays are traced, their functions are static and
compared by identity. Solvers hold them (never fresh closures around them), so
repeated calls with the same function objects and shapes compile once.

QuTiP-style inputs are converted to them: an array is `constant`, a pair `[A, f]`
is `modulated(f, A)`, a callable is `timecallable`, a list is a sum of terms.

Examples:
    >>> import jax.numpy as jnp, qflow_jax as qf
    >>> H = qf.modulated(jnp.cos, qf.sigmax())
    >>> H(0.0).real.tolist()
    [[0.0, 1.0], [1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from qflow_jax.core.checks import dag, to_array

__all__ = [
    "AbstractTimeOperator",
    "CallableOperator",
    "ConstantOperator",
    "ModulatedOperator",
    "constant",
    "modulated",
    "timecallable",
]


class AbstractTimeOperator(eqx.Module):
    """An operator A(t); `__call__(t)` gives its (..., n, n) value."""

    def __call__(self, t: Any) -> jax.Array:
        raise NotImplementedError


class ConstantOperator(AbstractTimeOperator):
    """A(t) = mat, (..., n, n)."""

    mat: jax.Array

    def __call__(self, t: Any) -> jax.Array:
        return self.mat


class ModulatedOperator(AbstractTimeOperator):
    """A(t) = f(t) mat, f a scalar function of t."""

    mat: jax.Array
    f: Callable[[jax.Array], jax.Array]

    def __call__(self, t: Any) -> jax.Array:
        return self.f(t) * self.mat


class CallableOperator(AbstractTimeOperator):
    """A(t) = f(t), an (n, n) matrix of dtype `dtype`."""

    f: Callable[[jax.Array], jax.Array]
    dtype: Any = eqx.field(static=True, default=None)

    def __call__(self, t: Any) -> jax.Array:
        return jnp.asarray(self.f(t), dtype=self.dtype)


def constant(A: Any) -> ConstantOperator:
    """The constant operator A (array or QuTiP Qobj, (..., n, n))."""
    return ConstantOperator(to_array(A, "A"))


def modulated(f: Callable[[jax.Array], jax.Array], A: Any) -> ModulatedOperator:
    """f(t) A, with f a scalar function of t (rate |f(t)|^2 for a jump operator)."""
    if not callable(f):
        raise TypeError(f"`f` must be a callable of t, got {type(f).__name__}")
    return ModulatedOperator(to_array(A, "A"), f)


def timecallable(f: Callable[[jax.Array], jax.Array]) -> CallableOperator:
    """The operator f(t), with f a callable t -> (n, n)."""
    if not callable(f):
        raise TypeError(f"`f` must be a callable of t, got {type(f).__name__}")
    return CallableOperator(f)


class AbsSquared(eqx.Module):
    """t -> |f(t)|^2: the rate of a modulated jump operator."""

    f: Callable[[jax.Array], jax.Array]

    def __call__(self, t: Any) -> jax.Array:
        return jnp.abs(self.f(t)) ** 2


class JumpDecay(eqx.Module):
    """t -> -i/2 L(t)^dag L(t): the jump operator's share of Heff."""

    L: Callable[[jax.Array], jax.Array]

    def __call__(self, t: Any) -> jax.Array:
        L = self.L(t)
        return -0.5j * dag(L) @ L
