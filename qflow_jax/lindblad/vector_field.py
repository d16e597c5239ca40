"""The Lindblad right-hand side as a diffrax vector field on a real view of rho."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from qflow_jax._convert import dag
from qflow_jax.lindblad._ops import DenseOp, DiaOp

Coefficient = Callable[[jax.Array], jax.Array]


def _materialize(x: jax.Array, t: jax.Array) -> jax.Array:
    """x, computed once: without the cond, XLA fuses the n exponentials into each of
    the n^2 products and recomputes them (20x slower at n = 50)."""
    return jax.lax.cond(
        jnp.isfinite(t), lambda x: x, lambda x: jnp.full_like(x, jnp.nan), x
    )


def to_real(rho: jax.Array) -> jax.Array:
    """(n, n) complex -> (2, n, n) real, the state diffrax integrates."""
    return jnp.stack([rho.real, rho.imag])


def to_complex(y: jax.Array) -> jax.Array:
    return y[0] + 1j * y[1]


class LindbladVectorField(eqx.Module):
    r"""d rho/dt = -i(Heff rho - rho Heff^dag) + sum_k L_k rho L_k^dag.

    Heff = H - (i/2) sum_k L_k^dag L_k is a sum of terms c(t) A, with A dense or
    DIA and c(t) a scalar coefficient (None for 1); `heff_fns` and `jump_fns` hold
    fully time-dependent operators t -> (n, n). Only left products are formed:
    rho Heff^dag = (Heff rho)^dag and L rho L^dag = (L (L rho)^dag)^dag for Hermitian
    rho.

    With `frame_energies` E (the static diagonal of H, removed from Heff) the state
    is rho_I = exp(iH0 t) rho exp(-iH0 t), H0 = diag(E): the fast phases of large
    diagonal energies (Kerr, detunings) leave the equation, so explicit steps are
    limited by the couplings instead of the spectral width of H.
    """

    heff_terms: Sequence[tuple[Coefficient | None, DenseOp | DiaOp]]
    jump_terms: Sequence[tuple[Coefficient | None, DenseOp | DiaOp]]
    heff_fns: Sequence[Callable[[jax.Array], jax.Array]]
    jump_fns: Sequence[Callable[[jax.Array], jax.Array]]
    frame_energies: jax.Array | None

    def phases(self, t: jax.Array) -> jax.Array | None:
        """exp(-i(E_m - E_n) t), which maps rho_I to the lab-frame rho."""
        if self.frame_energies is None:
            return None
        p = _materialize(jnp.exp(-1j * self.frame_energies * t), t)
        return p[:, None] * jnp.conj(p)[None, :]

    def to_lab(self, t: jax.Array, y: jax.Array) -> jax.Array:
        rho = to_complex(y)
        ph = self.phases(t)
        return rho if ph is None else rho * ph

    def lindbladian(self, t: jax.Array, rho: jax.Array) -> jax.Array:
        """L(rho) in the lab frame, with the frame energies left out of H."""
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
        ph = self.phases(t)
        rho = to_complex(y)
        if ph is None:
            return to_real(self.lindbladian(t, rho))
        return to_real(self.lindbladian(t, rho * ph) * jnp.conj(ph))
