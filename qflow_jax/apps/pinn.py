"""`run_pinn`: the PINN baseline on a damped-modes problem from a validated config.

Writes summary.json (settings, accuracy against the exact coherent solution, wall
time), arrays.npz (loss history, observables) and PNG plots (loss terms, <n>(t)).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import model_validator

from qflow_jax._deprecated import renamed
from qflow_jax.apps.run import DampedModesModel, OutputConfig, TimesConfig
from qflow_jax.config import ComplexPair, Int, PositiveInt, Section, validate_model
from qflow_jax.husimi import coherent_q
from qflow_jax.husimi.initial import CoherentState
from qflow_jax.husimi.models import DampedChain
from qflow_jax.metrics import MarginalGrid, compare_marginal, n_errors, record_metrics
from qflow_jax.pinn.train import PINNSettings, train_pinn
from qflow_jax.plots import plot_curves
from qflow_jax.references import ExactDampedChain
from qflow_jax.runs import RunFolder

__all__ = ["PINNConfig", "run_pinn", "validate_pinn_config"]


class PINNInitial(Section):
    """The coherent product the PINN starts from (its exact solution is known)."""

    kind: Literal["coherent"] = "coherent"
    alpha: list[ComplexPair] = [[2.0, 0.0]]


class EvalConfig(Section):
    """Quadrature of the PINN's observables."""

    n_grid: PositiveInt = 256  # grid points per axis (one mode)
    n_samples: PositiveInt = 200_000  # importance samples (several modes)


class PINNConfig(Section):
    """A `qflow pinn` config; its `pinn` section is `PINNSettings` (less `t_end`
    and `seed`, which come from `times` and `seed`)."""

    name: str = "pinn"
    model: DampedModesModel = DampedModesModel()
    initial: PINNInitial = PINNInitial()
    pinn: PINNSettings = PINNSettings()
    times: TimesConfig = TimesConfig()
    seed: Int = 0
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="before")
    @classmethod
    def _times_and_seed_once(cls, data: Any) -> Any:
        section = data.get("pinn") if isinstance(data, dict) else None
        for key, where in (("t_end", "times.t_end"), ("seed", "seed")):
            if isinstance(section, dict) and key in section:
                raise ValueError(f"`pinn.{key}` is set by `{where}`; remove it")
        return data

    @model_validator(mode="after")
    def _per_mode(self) -> PINNConfig:
        n = self.model.modes
        if len(self.initial.alpha) != n:
            raise ValueError(
                f"`initial.alpha` has {len(self.initial.alpha)} entries but "
                f"`model.modes` is {n}"
            )
        center = self.pinn.box_center
        if center is not None and len(center) != 2 * n:
            raise ValueError(
                f"`pinn.box_center` must be a list of {2 * n} numbers (x_0, p_0, "
                f"...), got {list(center)!r}"
            )
        return self


def validate_pinn_config(data: dict[str, Any]) -> dict[str, Any]:
    """A PINN run config checked against `PINNConfig`, as a dict with every
    default filled in."""
    return validate_model(data, PINNConfig).model_dump()


def run_pinn(
    config: dict[str, Any],
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the PINN on the configured problem and compares it with the exact
    coherent solution alpha(t) = expm(-(iM + gamma/2) t) alpha0 (Q stays
    N(alpha(t), I/2), <n_j> = |alpha_j(t)|^2)."""
    cfg = validate_pinn_config(config)
    run = RunFolder(out_dir or cfg["output"]["dir"] or Path("runs") / cfg["name"])
    m = cfg["model"]
    chain = DampedChain(m["modes"], m["omega"], m["gamma"], m["hopping"])
    N = m["modes"]
    initial = CoherentState([complex(*p) for p in cfg["initial"]["alpha"]])
    tsave = np.linspace(0.0, cfg["times"]["t_end"], cfg["times"]["n_save"])
    exact = ExactDampedChain(chain, initial, tsave)
    settings = PINNSettings(
        **{**cfg["pinn"], "t_end": cfg["times"]["t_end"], "seed": cfg["seed"]}
    )
    sol = train_pinn(
        exact.pde,
        coherent_q(initial.alpha),
        settings,
        jax.random.key(cfg["seed"]),
        progress=progress,
    )
    obs = sol.observables(
        tsave,
        n_grid=cfg["eval"]["n_grid"],
        n_samples=cfg["eval"]["n_samples"],
        key=jax.random.key(cfg["seed"] + 1),
    )
    n_exact = exact.n_ref
    grid = MarginalGrid.around(exact.n_ref[:, 0], cfg["eval"]["n_grid"])
    records = []
    for k, t in enumerate(tsave):
        rec = {"t": float(t), "n": obs["n"][k].tolist(), "norm": float(obs["norm"][k])}
        if N == 1:  # the PINN's density on the grid against the exact Q
            q = np.asarray(sol.q(jnp.asarray(grid.points), t)).reshape(grid.shape)
            Q = exact.q_marginal(k, 0, grid.alphas)
            rec.update(compare_marginal(grid, Q, q, n_exact[k], obs["n"][k]))
        else:
            rec.update(n_ref=n_exact[k].tolist(), **n_errors(obs["n"][k], n_exact[k]))
        records.append(rec)
    h = sol.history
    tail = max(1, settings.steps // 20)
    metrics = {
        **record_metrics(records),
        "max_norm_error": float(np.max(np.abs(obs["norm"] - 1))),
        "final_residual": float(np.mean(h["residual"][-tail:])),
        "final_initial": float(np.mean(h["initial"][-tail:])),
    }
    run.save_arrays(
        "arrays.npz",
        t=tsave,
        n=obs["n"],
        n_exact=n_exact,
        norm=obs["norm"],
        **{f"history_{k}": np.asarray(v) for k, v in h.items()},
    )
    plot_curves(
        run,
        "loss.png",
        np.arange(settings.steps),
        {k: h[k] for k in ("norm", "initial", "residual", "loss")},  # noisy first
        xlabel="optimizer step",
        ylabel="loss term",
        title=f"{cfg['name']}: PINN training",
        logy=True,
    )
    shown = range(min(N, 6))
    plot_curves(
        run,
        "observables.png",
        tsave,
        {f"<n_{j}> PINN": obs["n"][:, j] for j in shown},
        {f"<n_{j}> exact": n_exact[:, j] for j in shown},
        ylabel="<a^dag a>",
        title=f"{cfg['name']}: PINN vs exact",
    )
    timings_s = {"train_wall": h["train_wall_s"]}
    return run.write_summary("pinn", cfg, metrics, timings_s, records=records)


# deprecated: the schema is the pydantic model
__getattr__ = renamed(__name__, {"PINN_SCHEMA": "PINNConfig"}, globals())
