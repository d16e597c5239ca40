"""`run_pinn`: the PINN baseline on a damped-modes problem from a validated config.

Writes summary.json (settings, accuracy against the exact coherent solution, wall
time), arrays.npz (loss history, observables) and PNG plots (loss terms, <n>(t)).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.config import (
    ConfigError,
    Field,
    at_least_two,
    complex_pairs,
    non_negative,
    positive,
    positive_ints,
    unit_interval,
    validate,
)
from qflow_jax.husimi import coherent_q
from qflow_jax.husimi.initial import CoherentState
from qflow_jax.husimi.models import DampedChain
from qflow_jax.metrics import MarginalGrid, compare_marginal, n_errors, record_metrics
from qflow_jax.pinn.network import ACTIVATIONS, ENVELOPES
from qflow_jax.pinn.train import PINNSettings, train_pinn
from qflow_jax.plots import plot_curves
from qflow_jax.references import ExactDampedChain
from qflow_jax.runs import RunFolder

__all__ = ["PINN_SCHEMA", "run_pinn", "validate_pinn_config"]


_DEFAULTS = PINNSettings()

PINN_SCHEMA: dict[str, Any] = {
    "name": Field(str, "pinn", doc="run name (default output folder runs/NAME)"),
    "model": {
        "kind": Field(
            str, "damped_modes", choices=("damped_modes",), doc="model family"
        ),
        "modes": Field(int, 1, check=positive, doc="number of modes N"),
        "omega": Field(float, 1.0, doc="mode frequency"),
        "gamma": Field(float, 1.0, check=positive, doc="energy decay rate per mode"),
        "hopping": Field(float, 0.0, doc="nearest-neighbour hopping J on a chain"),
    },
    "initial": {
        "kind": Field(str, "coherent", choices=("coherent",)),
        "alpha": Field(
            list, [[2.0, 0.0]], check=complex_pairs, doc="amplitude per mode"
        ),
    },
    "pinn": {
        "hidden": Field(list, list(_DEFAULTS.hidden), check=positive_ints),
        "activation": Field(str, _DEFAULTS.activation, choices=tuple(ACTIVATIONS)),
        "envelope": Field(str, _DEFAULTS.envelope, choices=ENVELOPES),
        "sampler": Field(str, _DEFAULTS.sampler, choices=("box", "initial")),
        "box_half_width": Field(float, _DEFAULTS.box_half_width, check=positive),
        "box_center": Field(list, None, doc="one float per coordinate (None: 0)"),
        "initial_spread": Field(float, _DEFAULTS.initial_spread, check=positive),
        "n_collocation": Field(int, _DEFAULTS.n_collocation, check=positive),
        "n_initial": Field(int, _DEFAULTS.n_initial, check=positive),
        "n_norm": Field(int, _DEFAULTS.n_norm, check=positive),
        "n_norm_times": Field(int, _DEFAULTS.n_norm_times, check=positive),
        "steps": Field(int, _DEFAULTS.steps, check=positive),
        "learning_rate": Field(float, _DEFAULTS.learning_rate, check=positive),
        "schedule": Field(
            str, _DEFAULTS.schedule, choices=("constant", "cosine", "warmup_cosine")
        ),
        "weighting": Field(str, _DEFAULTS.weighting, choices=("none", "q")),
        "weight_floor": Field(float, _DEFAULTS.weight_floor, check=unit_interval),
        "weight_residual": Field(float, _DEFAULTS.weight_residual, check=non_negative),
        "weight_initial": Field(float, _DEFAULTS.weight_initial, check=non_negative),
        "weight_norm": Field(float, _DEFAULTS.weight_norm, check=non_negative),
        "causal_eps": Field(float, _DEFAULTS.causal_eps, check=non_negative),
        "causal_bins": Field(int, _DEFAULTS.causal_bins, check=positive),
        "log_every": Field(int, _DEFAULTS.log_every, check=positive),
    },
    "times": {
        "t_end": Field(float, 2.0, check=positive, doc="final time"),
        "n_save": Field(int, 11, check=at_least_two),
    },
    "seed": Field(int, 0),
    "eval": {
        "n_grid": Field(int, 256, check=positive, doc="grid points per axis (1 mode)"),
        "n_samples": Field(
            int, 200_000, check=positive, doc="importance samples (several modes)"
        ),
    },
    "output": {"dir": Field(str, None, doc="output folder (default runs/NAME)")},
}


def validate_pinn_config(data: dict[str, Any]) -> dict[str, Any]:
    """Checks a PINN run config against `PINN_SCHEMA`; returns it with defaults."""
    cfg = validate(copy.deepcopy(data), PINN_SCHEMA)
    n = cfg["model"]["modes"]
    if len(cfg["initial"]["alpha"]) != n:
        raise ConfigError(
            f"`initial.alpha` has {len(cfg['initial']['alpha'])} entries but "
            f"`model.modes` is {n}"
        )
    center = cfg["pinn"]["box_center"]
    if center is not None and (
        len(center) != 2 * n
        or not all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in center
        )
    ):
        raise ConfigError(
            f"`pinn.box_center` must be a list of {2 * n} numbers (x_0, p_0, ...), "
            f"got {center!r}"
        )
    return cfg


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
    pc = dict(cfg["pinn"])
    pc["hidden"] = tuple(pc["hidden"])
    if pc["box_center"] is not None:
        pc["box_center"] = tuple(float(c) for c in pc["box_center"])
    settings = PINNSettings(**pc, t_end=cfg["times"]["t_end"], seed=cfg["seed"])
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
