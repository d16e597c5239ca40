"""What the evolution functions return."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from qflow_jax.core.result import SolveResult

__all__ = ["EvolutionResult"]


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
