"""The result every solver of qflow_jax returns: an equinox Module with the same
core fields, extended per engine."""

from __future__ import annotations

import equinox as eqx
import jax

__all__ = ["SolveResult"]


class SolveResult(eqx.Module):
    """Core fields of every result; batch axes of the inputs lead every array.

    Attributes:
        tsave: (nt,) save times.
        states: (..., nt, *state_shape) states at tsave, or None when not saved.
        expects: (..., len(exp_ops), nt) complex expectation values, or None.
        final_state: (..., *state_shape) state at tsave[-1].
        stats: diffrax counts: num_steps, num_accepted_steps, num_rejected_steps,
            and num_rhs (right-hand-side evaluations) for explicit methods.
        method: name of the method that ran.
    """

    tsave: jax.Array
    states: jax.Array | None
    expects: jax.Array | None
    final_state: jax.Array
    stats: dict[str, jax.Array]
    method: str = eqx.field(static=True)
