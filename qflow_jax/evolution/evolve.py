"""One time loop for every evolution method of a flow through the Husimi PDE.

An evolution method (`TDVP`, `EulerKL`) knows how to carry the flow's parameters
over one save interval; `evolve` owns everything around it: the intervals, the
random keys, the rollback-and-retry of an interval that went non-finite or failed
(redone with the method's step halved), the callback after every interval, and the
result.

Examples:
    >>> import numpy as np
    >>> from qflow_jax.evolution import TDVP
    >>> from qflow_jax.flows import NormalizingFlow
    >>> from qflow_jax.husimi import a, adag, compile_qpde
    >>> pde = compile_qpde(adag(0) @ a(0), [a(0)])
    >>> flow = NormalizingFlow(dim=2, n_layers=0, init_mean=(1.0, 0.0),
    ...                        init_scale=float(np.sqrt(0.5)))
    >>> params = flow.init(jax.random.key(0), jnp.zeros((1, 2)))
    >>> res = evolve(pde, flow, params, [0.0, 0.1], key=jax.random.key(1),
    ...              method=TDVP(batch_size=256, dt=0.05))
    >>> res.method, res.stats["retries"].tolist()
    ('tdvp', [0])
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import flax.linen as nn
import jax
import numpy as np

from qflow_jax.core.checks import check_tsave
from qflow_jax.evolution._flowfns import is_finite_tree
from qflow_jax.evolution.result import EvolutionResult, evolution_result
from qflow_jax.husimi import QPDE

__all__ = ["EvolutionMethod", "evolve"]


class EvolutionMethod(eqx.Module):
    """How a flow's parameters follow the Q-PDE over one save interval.

    Subclasses set `name`, hold their numerics as fields (among them `dt`, the
    largest time step, and `max_retries`) and implement `advance`.
    """

    name: ClassVar[str]
    dt: eqx.AbstractVar[float]
    max_retries: eqx.AbstractVar[int]

    @abc.abstractmethod
    def advance(
        self,
        flow: nn.Module,
        pde: QPDE,
        params: Any,
        t0: float,
        t1: float,
        key: jax.Array,
    ) -> tuple[Any, dict[str, Any], str | None]:
        """Carries `params` from t0 to t1.

        Returns:
            (new params, info, failure): info holds the interval's numbers (Python
            scalars); failure is None, or a sentence saying what went wrong (the
            interval is then redone by `evolve` with a halved step).
        """

    def refined(self) -> EvolutionMethod:
        """The same method with half the time step (the retry of a failed interval)."""
        return dataclasses.replace(self, dt=self.dt / 2)


def evolve(
    pde: QPDE,
    flow: nn.Module,
    params: Any,
    tsave: Any,
    *,
    method: EvolutionMethod,
    key: jax.Array,
    callback: Callable[[int, Any, dict], None] | None = None,
) -> EvolutionResult:
    """Evolves the flow's parameters through `tsave` by `method`.

    Every save interval [t_i, t_{i+1}] is one call of `method.advance` with its own
    key (split from `key`). An interval that fails (non-finite parameters, a failed
    ODE solve, an Euler weight <= 0) is rolled back and redone with the method's
    step halved, the same key, up to `method.max_retries` times; the retries are
    counted in the interval's stats.

    Args:
        pde: the compiled Q-PDE (the generator).
        flow, params: the flow and its parameters at tsave[0] (the initial state).
        tsave: (nt,) increasing save times.
        method: an `EvolutionMethod`: `TDVP(...)` or `EulerKL(...)`.
        key: random key of the samples.
        callback: called as callback(i, params, info) after save interval i - 1.

    Returns:
        `EvolutionResult`: the parameters at every save time and per interval its
        diagnostics (TDVP: residual, ODE steps; Euler-KL: loss, steps, inner
        steps) and retries.

    Raises:
        TypeError: when `method` is not an `EvolutionMethod`.
        FloatingPointError: when an interval still fails after its retries.
    """
    if not isinstance(method, EvolutionMethod):
        raise TypeError(
            "`method` must be an EvolutionMethod (qf.TDVP(...) or qf.EulerKL(...)), "
            f"got {type(method).__name__}"
        )
    ts = np.asarray(check_tsave(tsave, float))
    out, infos = [params], []
    for i in range(len(ts) - 1):
        key, sub = jax.random.split(key)
        current, retries = method, 0
        while True:
            new, info, failure = current.advance(
                flow, pde, params, ts[i], ts[i + 1], sub
            )
            if failure is None and not bool(is_finite_tree(new)):
                failure = "non-finite parameters"
            if failure is None or retries == method.max_retries:
                break
            retries += 1
            current = current.refined()
        if failure is not None:
            raise FloatingPointError(
                f"{method.name} failed on [{ts[i]:.6g}, {ts[i + 1]:.6g}] after "
                f"{retries} retries with halved steps (dt = {current.dt:.3g}): "
                f"{failure}"
            )
        params = new
        info = {"t": float(ts[i + 1]), **info, "retries": retries}
        infos.append(info)
        out.append(params)
        if callback is not None:
            callback(i + 1, params, info)
    return evolution_result(ts, out, infos, method.name)
