"""One method on one problem size of the comparison suite, measured the same way
for every method.

`run_method(spec)` solves the problem of a `qflow run` config (`spec["qflow"]`: the
model, initial state, save times and the reference) by one method and compares it
with that reference through the metrics of `qflow run` (`compare_marginal`,
`problem.kl_exact`), so that flows, grids and PINNs are scored by one definition:

- `max_rel_error_n`, `max_abs_error_n`: <n_j> over all save times and modes;
- `final_l1_q`, `final_l2_rel_q`: the single-mode Q marginal of `metrics.mode` on
  the `MarginalGrid` at t_end (a histogram of samples where the model's marginal
  is not available in closed form; grid solvers on their own nodes);
- `final_kl_exact`: KL(exact || model) over all 2N coordinates at t_end, Monte Carlo
  on exact samples, where the exact density is known (damped modes).

Methods (`spec["kind"]`): "tdvp" and "euler-kl" (Q-Flow through `run_qflow`), "fd"
and "spectral" (`solve_fd` / `solve_spectral` on a box sized from the reference),
"pinn" (`train_pinn`), "exact" (the reference itself: its cost).

`python -m qflow_jax.apps.bench.methods SPEC.json RESULT.json` runs one spec in a fresh
process (the suite's way to apply time budgets and to measure peak memory).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.apps.run import QFlowSetup, run_qflow, setup_qflow
from qflow_jax.config import ConfigError
from qflow_jax.husimi.grid import Grid, estimate_grid_memory, solve_grid
from qflow_jax.metrics import (
    MarginalGrid,
    centroid_errors,
    compare_marginal,
    n_errors,
)
from qflow_jax.pinn.train import PINNSettings, train_pinn
from qflow_jax.runs import to_jsonable

__all__ = ["METHOD_KINDS", "run_method"]

METHOD_KINDS = ("exact", "tdvp", "euler-kl", "fd", "spectral", "pinn")
# half-width of boxes around the reference: sqrt(max <n_j>) + this (Q has standard
# deviation >= 1/sqrt(2) per coordinate: 4.5 is >= 6 of them)
_BOX_MARGIN = 4.5
# importance samples of the PINN's relative PDE residual at each save time
_RESIDUAL_POINTS = 20_000


class OutOfReach(Exception):
    """The method cannot run at this size within the budgets (the message says why)."""


def _box_half_width(setup: QFlowSetup) -> float:
    return float(np.sqrt(setup.problem.n_ref.max()) + _BOX_MARGIN)


# the curves of every method against time (the `paper` suite's figure)
_CURVES = (
    "centroid",
    "centroid_ref",
    "centroid_error",
    "l1_q",
    "l1_q_noise_floor",
    "pde_residual",
)


def _summarize(setup: QFlowSetup, n_model: np.ndarray, records: list[dict]) -> dict:
    """Suite metrics from <n_j> at every save time and the per-time records
    (`compare_marginal` and `centroid_errors` of each save time, `kl_exact` at
    t_end), and the records as curves against time."""
    last = records[-1]
    curves = {k: [r.get(k) for r in records] for k in _CURVES}
    curves["t"] = setup.tsave.tolist()
    return {
        "metrics": {
            **n_errors(np.asarray(n_model), setup.problem.n_ref),
            "max_centroid_error": max(curves["centroid_error"]),
            "max_l1_q": max(curves["l1_q"]),
            "final_l1_q": last["l1_q"],
            "final_l1_q_noise_floor": last["l1_q_noise_floor"],
            "final_l2_rel_q": last["l2_rel_q"],
            "final_kl_exact": last.get("kl_exact"),
        },
        "curves": curves,
    }


# ------------------------------------------------------------------------ methods


def _flow(setup: QFlowSetup, spec: dict[str, Any]) -> dict[str, Any]:
    settings = spec["settings"]
    section = "tdvp" if spec["kind"] == "tdvp" else "euler_kl"
    cfg = {
        **spec["qflow"],
        "method": spec["kind"],
        "flow": settings.get("flow", {}),
        section: settings.get("settings", {}),
    }
    if "pretrain" in settings:
        cfg["pretrain"] = settings["pretrain"]
    summary = run_qflow(cfg, Path(spec["folder"]), progress=False)
    records = [
        {
            **r,
            "kl_exact": r.get("kl_exact_flow"),
            # out of sample: the in-sample residual of minSR is 0 by construction
            "pde_residual": r.get("pde_residual_test"),
        }
        for r in summary["records"]
    ]
    n_model = np.array([r["n"] for r in records])
    tm = summary["timings_s"]
    return {
        "method_s": tm["pretrain_s"] + tm["evolution_s"],
        **_summarize(setup, n_model, records),
        "n": n_model,
        "details": {
            "evaluation_s": tm["evaluation_s"],
            "normalization": summary["metrics"]["normalization"],
            "pretrain_kl": summary["metrics"].get("pretrain_kl"),
        },
    }


def _grid_solver(setup: QFlowSetup, spec: dict[str, Any]) -> dict[str, Any]:
    st, kind = spec["settings"], spec["kind"]
    problem, tsave = setup.problem, setup.tsave
    dim = problem.pde.dim
    L = st.get("half_width") or _box_half_width(setup)
    points = max(4, math.ceil(2 * L / st.get("spacing", 0.35)))
    grid = Grid(dim=dim, points=points, half_width=L)
    stabilize = bool(st.get("stabilize", False))
    need = estimate_grid_memory(grid, kind, len(tsave), stabilize=stabilize)
    budget = spec["memory_budget_bytes"]
    if need > budget:
        raise OutOfReach(
            f"estimated memory {need / 2**30:.3g} GiB for {points}^{dim} = "
            f"{grid.n_points:.3g} points > budget {budget / 2**30:.3g} GiB"
        )
    logq0 = setup.initial.log_q
    began = time.perf_counter()
    sol = solve_grid(
        problem.pde,
        lambda y: jnp.exp(logq0(y)),
        tsave,
        grid=grid,
        scheme=kind,
        rtol=st.get("rtol", 1e-6),
        atol=st.get("atol", 1e-9),
        max_memory=budget,
        stabilize=stabilize,
    )
    Q = np.asarray(jax.block_until_ready(sol.Q))
    method_s = time.perf_counter() - began
    axes = [np.asarray(ax) for ax in grid.axes()]
    dV = grid.cell_volume
    mass = Q.reshape(len(tsave), -1).sum(-1) * dV
    n_model = np.empty((len(tsave), dim // 2))
    a_model = np.empty((len(tsave), dim // 2), complex)
    for j in range(dim // 2):
        alpha = axes[2 * j][:, None] + 1j * axes[2 * j + 1][None, :]
        Qj = _marginal(Q, 2 * j, dim) * dV / mass[:, None, None]  # E over Q / mass
        n_model[:, j] = np.sum(Qj * np.abs(alpha) ** 2, (-2, -1)) - 1
        a_model[:, j] = np.sum(Qj * alpha, (-2, -1))
    m = setup.grid.mode
    # the marginal is compared on the solver's own (x_m, p_m) nodes (interpolating
    # it to another grid would add an error that is not the solver's)
    mg = MarginalGrid(axes[2 * m], m)
    cell = math.prod(grid.spacing[2 * m : 2 * m + 2])
    margs = _marginal(Q / mass.reshape(-1, *[1] * dim), 2 * m, dim) * dV / cell
    records = [
        {
            **compare_marginal(
                mg,
                problem.q_marginal(i, m, mg.alphas),
                margs[i],
                problem.n_ref[i],
                n_model[i],
            ),
            **centroid_errors(a_model[i], problem.a_ref[i]),
            "pde_residual": None,  # the semi-discrete PDE is solved to rtol
        }
        for i in range(len(tsave))
    ]
    i = len(tsave) - 1
    Qn = Q[i] / mass[i]  # the normalised density at t_end
    # central differences leave small negative Q in the far tails: the log of the
    # interpolated Q is floored at 1e-12 of its peak there (1e-300 would let a few
    # samples dominate the KL); details.nonpositive_fraction says how much that is
    floor = 1e-12 * float(Qn.max())
    kl = problem.kl_exact(
        i,
        lambda y: jnp.log(jnp.maximum(_interpolate(Qn, axes, y), floor)),
        jax.random.key(spec["qflow"].get("seed", 0) + 7),
        spec["qflow"].get("eval_samples", 400_000),
    )
    records[-1]["kl_exact"] = kl
    return {
        "method_s": method_s,
        **_summarize(setup, n_model, records),
        "n": n_model,
        "details": {
            "points_per_axis": points,
            "n_points": grid.n_points,
            "half_width": L,
            "memory_estimate_MiB": need / 2**20,
            "steps": int(sol.stats["num_steps"]),
            "mass_drift": float(np.max(np.abs(mass - mass[0]))),
            "nonpositive_fraction": float(np.mean(Q[i] <= 0)),
        },
    }


def _marginal(Q: np.ndarray, axis: int, dim: int) -> np.ndarray:
    """Sum of Q (nt, *grid) over every coordinate but `axis`, `axis + 1`."""
    others = tuple(1 + k for k in range(dim) if k not in (axis, axis + 1))
    return Q.sum(axis=others) if others else Q


def _interpolate(values: Any, axes: list[np.ndarray], y: Any) -> jax.Array:
    """Multilinear interpolation of grid values at points y (..., d); 0 outside."""
    y = jnp.asarray(y)
    coords = [
        (y[..., k] - float(ax[0])) / float(ax[1] - ax[0]) for k, ax in enumerate(axes)
    ]
    return jax.scipy.ndimage.map_coordinates(
        jnp.asarray(values), coords, order=1, mode="constant", cval=0.0
    )


def _pinn(setup: QFlowSetup, spec: dict[str, Any]) -> dict[str, Any]:
    problem, tsave = setup.problem, setup.tsave
    dim, N = problem.pde.dim, problem.n_modes
    st = dict(spec["settings"])
    n_grid = st.pop("n_grid", 256)
    n_samples = st.pop("n_samples", 200_000)
    st.setdefault("box_half_width", _box_half_width(setup))
    if "hidden" in st:
        st["hidden"] = tuple(st["hidden"])
    settings = PINNSettings(**st, t_end=float(tsave[-1]))
    seed = spec["qflow"].get("seed", 0)
    sol = train_pinn(
        problem.pde,
        settings=settings,
        key=jax.random.key(seed),
        logQ0=setup.initial.log_q,
    )
    method_s = float(sol.history["train_wall_s"])
    obs = sol.observables(
        tsave, n_grid=n_grid, n_samples=n_samples, key=jax.random.key(seed + 1)
    )
    norms = np.asarray(obs["norm"])
    if not np.all(np.isfinite(norms) & (norms > 0)):
        raise RuntimeError(
            f"the PINN's Q integrates to {norms.min():.3g} on its quadrature "
            f"(importance sampling from N(0, (L/2)^2 I) in {dim} dimensions): no "
            "moments or density to compare"
        )
    m, mg = setup.grid.mode, setup.grid
    # importance samples from the PINN's own quadrature proposal: the histogram of
    # the marginal (several modes) and the expectations of the residual
    width = 0.5 * settings.box_half_width
    x = width * jax.random.normal(jax.random.key(seed + 2), (n_samples, dim))
    records = []
    for i, t in enumerate(tsave):
        Q = problem.q_marginal(i, m, mg.alphas)
        logw = sol.log_q(x, t) + 0.5 * jnp.sum((x / width) ** 2, -1)
        w = np.asarray(jnp.exp(logw - logw.max()))
        if N == 1:
            q = np.asarray(sol.q(mg.points, t)).reshape(mg.shape) / norms[i]
            extra: dict[str, float] = {}
        else:
            q, extra = mg.histogram(np.asarray(x[:, 2 * m : 2 * m + 2]), Q, weights=w)
        records.append(
            {
                **compare_marginal(mg, Q, q, problem.n_ref[i], obs["n"][i], **extra),
                **centroid_errors(obs["a"][i], problem.a_ref[i]),
                "pde_residual": sol.relative_residual(
                    x[:_RESIDUAL_POINTS], t, w[:_RESIDUAL_POINTS]
                ),
            }
        )
    i = len(tsave) - 1
    records[-1]["kl_exact"] = problem.kl_exact(
        i,
        lambda y: sol.log_q(y, tsave[i]) - math.log(float(norms[i])),
        jax.random.key(seed + 3),
        spec["qflow"].get("eval_samples", 400_000),
    )
    return {
        "method_s": method_s,
        **_summarize(setup, obs["n"], records),
        "n": obs["n"],
        "details": {
            "max_norm_error": float(np.max(np.abs(obs["norm"] - 1))),
            "box_half_width": settings.box_half_width,
            "steps": settings.steps,
        },
    }


def _exact(setup: QFlowSetup, spec: dict[str, Any]) -> dict[str, Any]:
    problem = setup.problem
    info = problem.info
    centroid = [float(np.linalg.norm(a)) for a in problem.a_ref]
    return {
        "method_s": float(info.get("solve_s", spec["setup_s"])),
        "metrics": {},
        "curves": {"t": setup.tsave, "centroid": centroid, "centroid_ref": centroid},
        "n": problem.n_ref,
        "details": {"reference": setup.problem.description, **info},
    }


_METHODS = {
    "exact": _exact,
    "tdvp": _flow,
    "euler-kl": _flow,
    "fd": _grid_solver,
    "spectral": _grid_solver,
    "pinn": _pinn,
}


def _peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process and, off the CPU, of the device."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    device = None
    if jax.default_backend() != "cpu":
        stats = jax.local_devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            device = stats["peak_bytes_in_use"] / 2**20
    return {"peak_rss_MiB": rss, "peak_device_MiB": device}


def run_method(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one method on one problem and measures it (module docstring).

    Args:
        spec: "kind" (one of METHOD_KINDS), "qflow" (a `qflow run` config without
            the method sections: model, initial, times, reference, metrics, seed),
            "settings" (the method's settings from the suite config),
            "memory_budget_bytes", "folder" (for the method's own outputs).

    Returns:
        "status" ("ok", "out of reach" or "failed"), "reason", "method_s" (the
        method's wall time, compilation included, metrics evaluation excluded),
        "metrics", "t", "n" (<n_j> per save time), "details", peak memory.
    """
    kind = spec["kind"]
    if kind not in _METHODS:
        raise ValueError(f"`kind` must be one of {METHOD_KINDS}, got {kind!r}")
    began = time.perf_counter()
    try:
        setup = setup_qflow(spec["qflow"])
    except ConfigError as err:
        return {"status": "out of reach", "reason": f"reference: {err}"}
    spec = {**spec, "setup_s": time.perf_counter() - began}
    try:
        out = _METHODS[kind](setup, spec)
    except (OutOfReach, MemoryError) as err:
        return {"status": "out of reach", "reason": str(err), **_peak_memory()}
    except (RuntimeError, FloatingPointError, ValueError, ConfigError) as err:
        return {
            "status": "failed",
            "reason": f"{type(err).__name__}: {err}",
            **_peak_memory(),
        }
    return {
        "status": "ok",
        "reason": None,
        "t": setup.tsave,
        **out,
        **_peak_memory(),
    }


def main(argv: list[str] | None = None) -> int:
    spec_path, out_path = argv if argv is not None else sys.argv[1:]
    spec = json.loads(Path(spec_path).read_text())
    result = run_method(spec)
    Path(out_path).write_text(json.dumps(to_jsonable(result), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
