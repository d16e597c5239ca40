"""What the evolution functions return."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from qflow_jax.core.result import SolveResult

__all__ = ["EvolutionResult", "deprecated_evolve"]


class EvolutionResult(SolveResult):
    """What `evolve_tdvp` and `evolve_euler_kl` return (`SolveResult`).

    Attributes:
        states: the flow parameters at every save time, one pytree whose leaves carry
            a leading (nt,) axis.
        final_state: the parameters at tsave[-1].
        stats: per save interval (nt - 1,) arrays: "retries" (rolled-back steps),
            and for TDVP "residual" (at the end of the interval) and "ode_steps",
            for Euler-KL "loss", "steps" and "inner_steps".
        method: "tdvp" or "euler-kl".
    """

    def params_at(self, i: int) -> Any:
        """The parameters at tsave[i]."""
        return jax.tree.map(lambda x: x[i], self.states)

    @property
    def infos(self) -> list[dict[str, Any]]:
        """One dict per save interval: t (its end) and the stats, as Python numbers."""
        t = np.asarray(self.tsave)
        return [
            {"t": float(t[i + 1])}
            | {k: np.asarray(v)[i].item() for k, v in self.stats.items()}
            for i in range(len(t) - 1)
        ]


def evolution_result(
    tsave: Any, params: list[Any], infos: list[dict[str, Any]], method: str
) -> EvolutionResult:
    """The result from the parameters at every save time and per-interval infos."""
    keys = [k for k in infos[0] if k != "t"] if infos else []
    return EvolutionResult(
        tsave=jax.numpy.asarray(tsave),
        states=jax.tree.map(lambda *xs: jax.numpy.stack(xs), *params),
        expects=None,
        final_state=params[-1],
        stats={k: np.asarray([info[k] for info in infos]) for k in keys},
        method=method,
    )


def deprecated_evolve(old: str, new: Callable[..., EvolutionResult]) -> Callable:
    """The old-style alias `old(flow, pde, params, tsave, key, settings, callback)`
    of `new(pde, flow, params, tsave, *, key, settings, callback)`, returning
    (parameters at every save time, per-interval infos); kept for one release."""

    @functools.wraps(new)
    def alias(flow, pde, params, tsave, key, settings, callback=None):
        warnings.warn(
            f"{old}(flow, pde, ...) is deprecated; use "
            f"{new.__name__}(pde, flow, params, tsave, key=..., settings=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        res = new(
            pde, flow, params, tsave, key=key, settings=settings, callback=callback
        )
        return [res.params_at(i) for i in range(len(res.tsave))], res.infos

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated: `{new.__name__}`; returns (params list, infos)."
    return alias
