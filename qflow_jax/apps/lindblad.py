"""`qflow lindblad CONFIG`: a named Lindblad problem solved, checked and reported."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import numpy as np
from annotated_types import Ge
from pydantic import Strict

from qflow_jax.apps import run as run_app
from qflow_jax.config import (
    ConfigError,
    PositiveFloat,
    PositiveInt,
    Section,
    kinds,
    validate_model,
)
from qflow_jax.core.methods import ADAPTIVE_NAMES
from qflow_jax.lindblad.mesolve import MESOLVE_METHODS, TruncationError, mesolve
from qflow_jax.lindblad.models import MODELS, build_model
from qflow_jax.plots import plot_curves
from qflow_jax.runs import RunFolder

__all__ = [
    "DEFAULT_LINDBLAD_CONFIG",
    "LindbladConfig",
    "run_lindblad",
    "validate_lindblad_config",
]

DEFAULT_LINDBLAD_CONFIG: dict[str, Any] = {
    "name": "damped_cavity",
    "model": {
        "kind": "damped_cavity",
        "N": 30,
        "omega": 1.0,
        "gamma": 0.5,
        "alpha0": [2.0, 0.0],
    },
    "times": {"t_end": 10.0, "n_save": 101},
    "solver": {"method": "auto", "rtol": 1e-9, "atol": 1e-11},
}


class SolverConfig(Section):
    """`mesolve`'s adaptive method and tolerances."""

    method: Literal[tuple(m for m in MESOLVE_METHODS if m in ADAPTIVE_NAMES)] = "auto"
    rtol: PositiveFloat = 1e-6
    atol: PositiveFloat = 1e-8
    max_steps: PositiveInt = 1_000_000


class TruncationConfig(Section):
    """Largest allowed population of the highest Fock level (bosonic models):
    above it the run is refused."""

    max_top_population: PositiveFloat = 1e-4


class TimesConfig(run_app.TimesConfig):
    t_end: PositiveFloat = 10.0
    n_save: Annotated[int, Strict(), Ge(2)] = 101


class LindbladConfig(Section):
    """A `qflow lindblad` config: a named model (`MODELS`) and the solve."""

    name: str = "lindblad"
    model: kinds(*MODELS.values())
    times: TimesConfig = TimesConfig()
    solver: SolverConfig = SolverConfig()
    truncation: TruncationConfig = TruncationConfig()
    output: run_app.OutputConfig = run_app.OutputConfig()


def validate_lindblad_config(data: dict[str, Any]) -> dict[str, Any]:
    """A Lindblad run config checked against `LindbladConfig` (the model section
    by its `kind`), as a dict with every default filled in."""
    return validate_model(data, LindbladConfig).model_dump()


def run_lindblad(
    config: dict[str, Any], out_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Solves the configured problem with `mesolve` and writes a run folder.

    Files: summary.json (settings, versions, timings, metrics against the exact
    solution where one exists, invariants), arrays.npz (t, expectation values,
    final state), expectations.png (observables vs t, exact dashed) and, with an
    exact solution, errors.png.

    Bosonic models are checked for their Fock truncation: an initial state that
    loses more than `truncation.max_top_population` above the cut-off, or a solve
    whose highest level holds more than that at a save time, is refused with a
    `ConfigError` naming `model.N` (exit code 2 from the CLI); summary.json reports
    the largest top-level population as `metrics.max_top_population`.

    Returns:
        The summary dict.
    """
    cfg = validate_lindblad_config(config)
    folder = RunFolder(out_dir or cfg["output"]["dir"] or Path("runs") / cfg["name"])
    model = cfg["model"]
    problem = build_model(model["kind"], model)
    t = np.linspace(0.0, cfg["times"]["t_end"], cfg["times"]["n_save"])
    names = list(problem.exp_ops)
    solver = cfg["solver"]

    # a truncated initial state that loses at most the allowed top population is
    # renormalized; one that loses more is refused
    limit = cfg["truncation"]["max_top_population"]
    rho0 = np.asarray(problem.rho0)
    kept = float(np.trace(rho0).real)
    if problem.fock_dims is not None and 1.0 - kept > limit:
        raise ConfigError(
            f"`model.N` = {model['N']} is too small for the initial state: it loses "
            f"{1.0 - kept:.3g} of its weight above the cut-off (allowed: "
            f"`truncation.max_top_population` = {limit:g}); raise `model.N`"
        )
    t0 = time.perf_counter()
    try:
        res = mesolve(
            problem.H,
            problem.jump_ops,
            rho0 / kept,
            t,
            exp_ops=[problem.exp_ops[k] for k in names],
            method=solver["method"],
            rtol=solver["rtol"],
            atol=solver["atol"],
            max_steps=solver["max_steps"],
            progress=progress,
            fock_dims=problem.fock_dims,
            max_top_population=limit,
        )
    except TruncationError as err:
        raise ConfigError(
            f"`model.N` = {model['N']} is too small: the highest Fock level holds "
            f"{err.population:.3g} at t = {err.t:.4g} (allowed: "
            f"`truncation.max_top_population` = {err.limit:g}); raise `model.N`"
        ) from None
    res = jax.block_until_ready(res)
    elapsed = time.perf_counter() - t0

    states = np.asarray(res.states)
    expects = {k: np.asarray(res.expects[i].real) for i, k in enumerate(names)}
    herm = np.conj(np.swapaxes(states, -1, -2))
    metrics: dict[str, Any] = {
        "max_trace_error": float(np.abs(np.trace(states, axis1=1, axis2=2) - 1).max()),
        "max_hermiticity_error": float(np.abs(states - herm).max()),
        "min_eigenvalue": float(np.linalg.eigvalsh(0.5 * (states + herm)).min()),
    }
    if res.top_population is not None:
        metrics["max_top_population"] = float(np.max(res.top_population))
    exact = problem.exact(t) if problem.exact is not None else None
    if exact is not None:
        metrics["max_abs_error"] = {
            k: float(np.abs(expects[k] - exact[k]).max()) for k in names
        }
    folder.save_arrays(
        "arrays.npz",
        t=t,
        final_state=np.asarray(res.final_state),
        **{f"expect_{k}": v for k, v in expects.items()},
    )
    plot_curves(
        folder,
        "expectations.png",
        t,
        {f"<{k}>": v for k, v in expects.items()},
        {f"exact <{k}>": v for k, v in (exact or {}).items()},
        title=f"{cfg['name']}: {res.method}",
    )
    if exact is not None:
        plot_curves(
            folder,
            "errors.png",
            t,
            {f"|<{k}> - exact|": np.abs(expects[k] - exact[k]) for k in names},
            ylabel="absolute error",
            logy=True,
            title=f"{cfg['name']}: error vs exact",
        )
    return folder.write_summary(
        "lindblad",
        cfg,
        metrics,
        {"solve_including_compile": elapsed},
        method=res.method,
        stats={k: int(v) for k, v in res.stats.items()},
        files=["summary.json", "arrays.npz", "expectations.png"]
        + (["errors.png"] if exact is not None else []),
    )
