"""The Lindblad right-hand side as a diffrax vector field on a real view of rho."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from qflow_jax.core.checks import dag
from qflow_jax.lindblad._ops import DenseOp, DiaOp

Coefficient = Callable[[jax.Array], jax.Array]


def to_real(rho: jax.Array) -> jax.Array:
    """(n, n) complex -> (2, n, n) real, the state diffrax integrates."""
    return jnp.stack([rho.real, rho.imag])


def to_complex(y: jax.Array) -> jax.Array:
    return y[0] + 1j * y[1]


@jax.custom_batching.custom_vmap
def _materialize_impl(x: jax.Array) -> jax.Array:
    return jax.lax.cond(
        jnp.isfinite(x.ravel()[0]), lambda x: x, lambda x: jnp.full_like(x, jnp.nan), x
    )


@_materialize_impl.def_vmap
def _materialize_vmap(axis_size, in_batched, x):
    # Keep the predicate unbatched: a batched cond becomes a select, which XLA fuses.
    return _materialize_impl(x), in_batched[0]


@jax.custom_jvp
def _materialize(x: jax.Array) -> jax.Array:
    """x, computed once: without the cond, XLA fuses the n exponentials into each of
    the n^2 products that use them and recomputes them (20x slower at n = 50). An
    identity for autodiff."""
    return _materialize_impl(x)


@_materialize.defjvp
def _materialize_jvp(primals, tangents):
    return _materialize(primals[0]), tangents[0]


class LindbladVectorField(eqx.Module):
    r"""d rho/dt = -i(Heff rho - rho Heff^dag) + sum_k L_k rho L_k^dag.

    Heff = H - (i/2) sum_k L_k^dag L_k is held as `diag` (the diagonal of its static
    part, or None) plus a sum of terms c(t) A, A dense or DIA (with that diagonal
    removed), c(t) a scalar coefficient or None for 1; `heff_fns` and `jump_fns` are
    fully time-dependent operators t -> (n, n). Only left products are formed:
    rho Heff^dag = (Heff rho)^dag and L rho L^dag = (L (L rho)^dag)^dag.

    The diagonal part acts elementwise, (Lambda rho)_mn = -i(d_m - d_n^*) rho_mn, so
    exp(Lambda s) is exact and cheap: `Lawson` solvers integrate it exactly and step
    only the `remainder` explicitly.
    """

    heff_terms: Sequence[tuple[Coefficient | None, DenseOp | DiaOp]]
    jump_terms: Sequence[tuple[Coefficient | None, DenseOp | DiaOp]]
    heff_fns: Sequence[Callable[[jax.Array], jax.Array]]
    jump_fns: Sequence[Callable[[jax.Array], jax.Array]]
    diag: jax.Array | None

    def linear_flow(self, s: jax.Array, y: jax.Array) -> jax.Array:
        """exp(Lambda s) applied to the real view y."""
        if self.diag is None:
            return y
        p = _materialize(jnp.exp(-1j * self.diag * s))
        return to_real(p[:, None] * to_complex(y) * jnp.conj(p)[None, :])

    def remainder(self, t: jax.Array, rho: jax.Array) -> jax.Array:
        """L(rho) - Lambda rho, complex in and out."""
        G = None
        for coeff, op in self.heff_terms:
            term = op.left(rho) if coeff is None else coeff(t) * op.left(rho)
            G = term if G is None else G + term
        for fn in self.heff_fns:
            term = fn(t) @ rho
            G = term if G is None else G + term
        out = jnp.zeros_like(rho) if G is None else -1j * G
        out = out + dag(out)
        for coeff, op in self.jump_terms:
            term = dag(op.left(dag(op.left(rho))))
            out = out + (term if coeff is None else jnp.abs(coeff(t)) ** 2 * term)
        for fn in self.jump_fns:
            L = fn(t)
            out = out + L @ rho @ dag(L)
        return out

    def __call__(self, t: jax.Array, y: jax.Array, args: object) -> jax.Array:
        rho = to_complex(y)
        out = self.remainder(t, rho)
        if self.diag is not None:
            out = out - 1j * (self.diag[:, None] - jnp.conj(self.diag)[None, :]) * rho
        return to_real(out)
