"""`qflow bench SUITE`: the comparison suite, one command for the whole table.

A suite config (YAML; the shipped ones, `dims`, `bosonic`, `engines`, `paper`, are
package data in `qflow_jax/apps/bench/suites/`, so `qflow bench NAME` works from any
folder) names the problem family, the sizes
(real dimensions 2N), the budgets and the methods with their settings; nothing about
a method's settings lives in code. Two suite kinds:

- `methods` (suites `dims`, `bosonic`, `paper`): for every size, every method runs
  in a fresh process (`qflow_jax.apps.bench.methods`) with the same time budget, so
  that a method over the budget is stopped and its peak memory is its own. A method
  that cannot run at a size is recorded as out of reach with the reason: the memory
  estimate over the budget (grids, before anything is allocated), the Fock reference
  too large, the time budget exceeded (measured: the process was stopped; or
  estimated: it was already over the budget at a smaller size). Nothing is skipped
  silently.
- `engines`: the Lindblad benchmarks (`benchmarks/lindblad_bosonic.py`,
  `benchmarks/network.py`) against QuTiP and dynamiqs, run as scripts; their rows
  join the same report. The scripts are part of the source tree, not of the
  installed package: they are found relative to the current folder or to the
  source checkout the package runs from.

Outputs in the results folder: results.json (every row, the machine, the config),
results.md (the tables), and log-log plots of error, time and memory against the
dimension. results.json is rewritten after every row; `--resume` keeps the finished
rows and runs the rest, after checking that they were computed with the same suite
settings and qflow_jax version (`--sizes` and `--methods` may differ: rows are per
size and method).

Examples:
    qflow bench dims --quick --out runs/bench_dims_quick
    python benchmarks/run.py bosonic --time-budget 600
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Ge, Len, MultipleOf
from pydantic import ConfigDict, Strict, StrictBool, model_validator

from qflow_jax.apps.run import FlowConfig, TimesConfig, validate_qflow_config
from qflow_jax.config import (
    ComplexPair,
    ConfigError,
    Float,
    Int,
    PositiveFloat,
    PositiveInt,
    Section,
    kinds,
    load_yaml,
    validate_model,
)
from qflow_jax.evolution.euler_kl import EulerKLSettings
from qflow_jax.evolution.pretrain import PretrainSettings
from qflow_jax.evolution.tdvp import TDVPSettings
from qflow_jax.pinn.train import PINNSettings
from qflow_jax.plots import plot_suite, plot_suite_curves
from qflow_jax.runs import (
    ResumeError,
    RunFolder,
    check_fingerprint,
    fingerprint,
    to_jsonable,
    versions,
)

__all__ = ["add_comparisons", "load_suite", "problem_config", "run_suite"]

EvenDimension = Annotated[int, Strict(), Ge(2), MultipleOf(2)]  # 2 per mode


class Budgets(Section):
    """Per method and size: wall time and memory (grid solvers' estimate); the
    process may take `overhead_s` more (start-up, metrics)."""

    time_s: PositiveFloat = 600.0
    memory_gib: PositiveFloat = 4.0
    overhead_s: PositiveFloat = 120.0


class _Method(Section):
    compare_to: str | None = None  # another method: max |<n_j> - <n_j>_other|


class ExactMethod(_Method):
    kind: Literal["exact"]


class TDVPMethod(_Method):
    kind: Literal["tdvp"]
    flow: FlowConfig = FlowConfig()
    settings: TDVPSettings = TDVPSettings()
    pretrain: PretrainSettings | None = None


class EulerKLMethod(_Method):
    kind: Literal["euler-kl"]
    flow: FlowConfig = FlowConfig()
    settings: EulerKLSettings = EulerKLSettings()
    pretrain: PretrainSettings | None = None


class FDMethod(_Method):
    """A grid solver: `spacing` between points, on [-half_width, half_width]^d
    (default from the reference: sqrt(max <n>) + 4.5)."""

    kind: Literal["fd"]
    spacing: PositiveFloat = 0.35
    half_width: PositiveFloat | None = None
    rtol: PositiveFloat = 1e-6
    atol: PositiveFloat = 1e-9
    stabilize: StrictBool = False


class SpectralMethod(FDMethod):
    kind: Literal["spectral"]


class PINNMethod(_Method):
    """`n_grid`, `n_samples` of the quadrature, and any `PINNSettings` key but
    `t_end` and `seed` (the problem's)."""

    model_config = ConfigDict(extra="allow")
    kind: Literal["pinn"]
    n_grid: PositiveInt = 256
    n_samples: PositiveInt = 200_000

    @model_validator(mode="after")
    def _settings(self) -> PINNMethod:
        extra = dict(self.model_extra or {})
        for key in ("t_end", "seed"):
            if key in extra:
                raise ValueError(f"`{key}` of a PINN is the problem's; remove it")
        PINNSettings(**extra)  # a ConfigError naming the key
        return self


METHODS = kinds(
    ExactMethod, TDVPMethod, EulerKLMethod, FDMethod, SpectralMethod, PINNMethod
)


class DampedModesProblem(Section):
    kind: Literal["damped_modes"]
    omega: Float = 1.0
    gamma: PositiveFloat = 1.0
    hopping: Float = 0.0


class BoseHubbardProblem(Section):
    kind: Literal["bose_hubbard"]
    U: Float
    J: Float
    gamma: PositiveFloat


class ProblemInitial(Section):
    alpha: ComplexPair  # the same coherent amplitude in every mode


class ProblemConfig(Section):
    """The problem family at every size (`problem_config`)."""

    model: kinds(DampedModesProblem, BoseHubbardProblem)
    initial: ProblemInitial
    times: TimesConfig = TimesConfig()
    eval_samples: PositiveInt = 400_000
    seed: Int = 0
    reference_cutoff: dict[int, PositiveInt] = {}  # Fock levels per size


class MethodsSuite(Section):
    """Methods against a reference across sizes (real dimensions 2N)."""

    kind: Literal["methods"] = "methods"
    suite: str
    title: str = ""
    quick: StrictBool = False
    sizes: Annotated[list[EvenDimension], Len(1)]
    problem: ProblemConfig
    budgets: Budgets = Budgets()
    methods: Annotated[dict[str, METHODS], Len(1)]

    @model_validator(mode="after")
    def _compared(self) -> MethodsSuite:
        for name, method in self.methods.items():
            if method.compare_to is not None and method.compare_to not in self.methods:
                raise ValueError(
                    f"`methods.{name}.compare_to` must name another method, got "
                    f"{method.compare_to!r}"
                )
        return self


class EnginesSuite(Section):
    """The Lindblad engines' benchmark scripts, run with their peers."""

    kind: Literal["engines"]
    suite: str
    title: str = ""
    quick: StrictBool = False
    budgets: Budgets = Budgets()
    scripts: Annotated[list[str], Len(1)]


SuiteConfig = kinds(MethodsSuite, EnginesSuite, default="methods")


# table columns: (row key or metric, header, format)
_COLUMNS = (
    ("method_s", "time (s)", "{:.3g}"),
    ("max_rel_error_n", "max rel err <n>", "{:.2e}"),
    ("max_centroid_error", "max centroid err", "{:.2e}"),
    ("max_l1_q", "max L1 Q", "{:.2e}"),
    ("final_kl_exact", "KL(exact, model)", "{:.2e}"),
    ("final_l2_rel_q", "rel L2 Q", "{:.2e}"),
    ("final_l1_q", "L1 Q", "{:.2e}"),
    ("final_l1_q_noise_floor", "L1 floor", "{:.1e}"),
    ("peak_rss_MiB", "peak RSS (MiB)", "{:.0f}"),
)


# ------------------------------------------------------------------------- config


def _merge(base: Any, over: Any) -> Any:
    """Deep merge of mappings (`over` wins); other values are replaced."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


# the shipped suite configs (package data)
SUITES = Path(__file__).resolve().parent / "suites"


def _resolve(suite: str | Path) -> Path:
    path = Path(suite)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"suite config {str(path)!r} does not exist")
        return path
    named = SUITES / f"{suite}.yaml"
    if not named.is_file():
        have = sorted(p.stem for p in SUITES.glob("*.yaml"))
        raise ConfigError(
            f"no suite {str(suite)!r}: the shipped suites are {', '.join(have)}; "
            "or give a path to a suite YAML"
        )
    return named


def _script(script: str) -> Path:
    """A benchmark script of an `engines` suite: relative to the current folder, or
    to the source checkout this package runs from."""
    for path in (Path(script), Path(__file__).resolve().parents[2] / script):
        if path.is_file():
            return path
    raise ConfigError(
        f"benchmark script {script!r} not found: the engines suite runs the "
        "benchmark scripts of a qflow_jax source checkout (run it from there)"
    )


def load_suite(
    suite: str | Path,
    quick: bool = False,
    time_budget: float | None = None,
    memory_budget_gib: float | None = None,
    sizes: list[int] | None = None,
    methods: list[str] | None = None,
) -> dict[str, Any]:
    """Reads a suite config, applies its `quick` overrides and the command-line
    budgets, and checks it against `SuiteConfig`; then selects `sizes` and
    `methods` (which must be the suite's)."""
    path = _resolve(suite)
    raw = load_yaml(path)
    overrides = raw.pop("quick", None) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: `quick` must be a mapping of overrides")
    if quick:
        raw = _merge(raw, overrides)
    raw = {"suite": path.stem, **raw, "quick": quick}
    budgets = dict(raw.get("budgets") or {})
    if time_budget is not None:
        budgets["time_s"] = time_budget
    if memory_budget_gib is not None:
        budgets["memory_gib"] = memory_budget_gib
    raw["budgets"] = budgets
    try:
        cfg = validate_model(raw, SuiteConfig).model_dump(exclude_none=True)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if cfg["kind"] == "engines":
        return cfg
    if sizes is not None:
        bad = [d for d in sizes if d not in cfg["sizes"]]
        if bad:
            raise ConfigError(
                f"`--sizes` {bad} not in the suite's sizes {cfg['sizes']}"
            )
        cfg["sizes"] = list(sizes)
    if methods is not None:
        bad = [m for m in methods if m not in cfg["methods"]]
        if bad:
            raise ConfigError(
                f"`--methods` {bad} not in the suite: {list(cfg['methods'])}"
            )
        cfg["methods"] = {m: cfg["methods"][m] for m in methods}
    for dim in cfg["sizes"]:  # the problem at every size is a valid qflow run
        try:
            validate_qflow_config(problem_config(cfg, dim))
        except ConfigError as err:
            raise ConfigError(f"{path}: `problem` at size {dim}: {err}") from None
    return cfg


def problem_config(cfg: dict[str, Any], dim: int) -> dict[str, Any]:
    """The `qflow run` config (model, initial state, times, reference) of one size.

    Problem families (`problem.model.kind`):
      - `damped_modes`: N = dim/2 damped modes on a chain with hopping (exact).
      - `bose_hubbard`: H = sum_j U/2 a_j^dag^2 a_j^2 + J sum_j (a_j^dag a_j+1 + h.c.),
        L_j = sqrt(gamma) a_j, with a Fock-space reference of `reference_cutoff[dim]`
        levels per mode.
    The initial state is the same coherent amplitude `initial.alpha` in every mode.
    """
    prob = cfg["problem"]
    N = dim // 2
    model = dict(prob["model"])
    kind = model.pop("kind")
    out: dict[str, Any] = {
        "name": f"{cfg['suite']}_d{dim}",
        "times": prob.get("times", {}),
        "seed": prob.get("seed", 0),
        "initial": {"kind": "coherent", "alpha": [prob["initial"]["alpha"]] * N},
    }
    if "eval_samples" in prob:
        out["eval_samples"] = prob["eval_samples"]
    if kind == "damped_modes":
        out["model"] = {"kind": "damped_modes", "modes": N, **model}
    else:  # bose_hubbard
        hop = " + ".join(
            f"J * (adag({j}) @ a({j + 1}) + adag({j + 1}) @ a({j}))"
            for j in range(N - 1)
        )
        kerr = " + ".join(f"U/2 * adag({j})**2 @ a({j})**2" for j in range(N))
        out["model"] = {
            "kind": "expression",
            "modes": N,
            "hamiltonian": kerr + (f" + {hop}" if hop else ""),
            "jump_ops": [f"sqrt(gamma) * a({j})" for j in range(N)],
            "constants": model,
        }
        cutoffs = prob.get("reference_cutoff") or {}
        if dim in cutoffs:
            out["reference"] = {"cutoff": cutoffs[dim]}
    return out


# ------------------------------------------------------------------------ running


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # the worker imports qflow_jax like this process does
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _run_worker(spec: dict[str, Any], timeout: float) -> tuple[dict, float]:
    """Runs one method in a fresh process; returns (result, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(to_jsonable(spec)))
        began = time.perf_counter()
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "qflow_jax.apps.bench.methods",
                    str(spec_path),
                    str(out_path),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_worker_env(),
            )
        except subprocess.TimeoutExpired:
            wall = time.perf_counter() - began
            return {
                "status": "out of reach",
                "reason": f"over the time budget: stopped after {wall:.0f} s",
                "over_time": True,
            }, wall
        wall = time.perf_counter() - began
        if proc.returncode != 0 or not out_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            if proc.returncode < 0 or proc.returncode == 137:
                why = f"killed by signal {-proc.returncode} (out of memory?)"
                return {"status": "out of reach", "reason": why}, wall
            return {
                "status": "failed",
                "reason": f"exit code {proc.returncode}: {' | '.join(tail)}",
            }, wall
        return json.loads(out_path.read_text()), wall


def _method_row(
    cfg: dict[str, Any], dim: int, name: str, folder: Path, over_at: dict
) -> dict[str, Any]:
    st = cfg["methods"][name]
    budget = float(cfg["budgets"]["time_s"])
    row: dict[str, Any] = {"dim": dim, "method": name, "kind": st["kind"]}
    if name in over_at:
        return {
            **row,
            "status": "out of reach",
            "reason": f"estimated: already over the time budget of {budget:g} s at "
            f"dimension {over_at[name]}, and its cost grows with the dimension",
        }
    settings = {k: v for k, v in st.items() if k not in ("kind", "compare_to")}
    spec = {
        "kind": st["kind"],
        "qflow": problem_config(cfg, dim),
        "settings": settings,
        "memory_budget_bytes": int(cfg["budgets"]["memory_gib"] * 2**30),
        "folder": str(folder / "methods" / f"d{dim}_{name}"),
    }
    # the process may take `overhead_s` beyond the budget: interpreter and JAX
    # start-up and the evaluation of the metrics, which the budget does not count
    result, wall = _run_worker(spec, budget + cfg["budgets"]["overhead_s"])
    row.update(result)
    row["process_wall_s"] = wall
    if result.get("over_time") or (result.get("method_s") or 0.0) > budget:
        if row["status"] == "ok":
            row["status"] = "out of reach"
            row["reason"] = (
                f"over the time budget: took {row['method_s']:.0f} s > {budget:g} s "
                "(metrics kept)"
            )
        over_at[name] = dim
        row.pop("over_time", None)
    return row


def add_comparisons(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    """`compare_to`: max |<n_j> - <n_j>_other| against another method (e.g. a
    refinement of itself: smaller dt, more samples) at the same size."""
    by_key = {(r["dim"], r["method"]): r for r in rows}
    for r in rows:
        other = cfg["methods"].get(r["method"], {}).get("compare_to")
        o = by_key.get((r["dim"], other))
        if other and o and r.get("n") is not None and o.get("n") is not None:
            diff = np.max(np.abs(np.asarray(r["n"]) - np.asarray(o["n"])))
            r.setdefault("metrics", {})[f"max_abs_diff_n_vs_{other}"] = float(diff)


def _machine() -> dict[str, Any]:
    import jax

    return {
        **versions(),
        "device": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
    }


def run_suite(
    suite: str | Path,
    out_dir: str | Path | None = None,
    *,
    quick: bool = False,
    resume: bool = False,
    time_budget: float | None = None,
    memory_budget_gib: float | None = None,
    sizes: list[int] | None = None,
    methods: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs a suite and writes results.json, results.md and plots (module docstring).

    Returns the results (also in results.json) with "folder" added.
    """
    cfg = load_suite(suite, quick, time_budget, memory_budget_gib, sizes, methods)
    name = cfg["suite"] + ("_quick" if quick else "")
    run = RunFolder(out_dir or Path("runs") / f"bench_{name}")
    done: list[dict[str, Any]] = []
    earlier_s = 0.0  # wall time of the interrupted runs this one resumes
    results_path = run.path / "results.json"
    if resume and results_path.exists():
        done, earlier_s = _finished_rows(results_path, cfg)
    results = {
        "fingerprint": _fingerprint(cfg, cfg.get("methods", {})),
        "command": "bench",
        "invocation": _invocation(
            suite, run.path, quick, time_budget, memory_budget_gib, sizes, methods
        ),
        "suite": cfg["suite"],
        "quick": quick,
        "config": cfg,
        "machine": _machine(),
        "rows": done,
    }
    began = time.perf_counter()
    if cfg["kind"] == "engines":
        _run_engines(cfg, run, results, progress)
    else:
        _run_methods(cfg, run, results, progress)
    results["suite_wall_s"] = earlier_s + time.perf_counter() - began
    if cfg["kind"] == "methods":
        add_comparisons(results["rows"], cfg)
        plot_suite(run, results)
        plot_suite_curves(run, results)
    run.write_json("results.json", results)
    run.write_text("results.md", markdown(results))
    return {**results, "folder": str(run.path)}


def _fingerprint(cfg: dict, methods: Mapping[str, Any]) -> dict[str, Any]:
    """The suite settings that determine its rows; `sizes` and the selection of
    `methods` may change between a run and its resume (rows are per size and
    method), the settings of a method may not."""
    fp = fingerprint(cfg, ("sizes", "methods"))
    return {**fp, "methods": to_jsonable(methods)}


def _finished_rows(path: Path, cfg: dict) -> tuple[list[dict], float]:
    """The rows and wall time of an interrupted run of the same suite settings
    (`ResumeError` for a damaged results.json or one of other settings)."""
    try:
        previous = json.loads(path.read_text())
        rows, wall = list(previous["rows"]), float(previous.get("suite_wall_s", 0.0))
        stored = previous.get("fingerprint")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ResumeError(
            f"{path} is damaged ({type(err).__name__}: {err}); run without --resume "
            "to start again"
        ) from None
    methods = cfg.get("methods", {})
    if isinstance(stored, Mapping) and isinstance(stored.get("methods"), Mapping):
        held = stored["methods"]
        both = [m for m in methods if m in held]
        stored = {**stored, "methods": {m: held[m] for m in both}}
        methods = {m: methods[m] for m in both}
    check_fingerprint(stored, _fingerprint(cfg, methods), path)
    return rows, wall


def _invocation(suite, out, quick, time_budget, memory_gib, sizes, methods) -> str:
    """The `qflow bench` command line that reproduces this run."""
    parts = ["qflow", "bench", str(suite), "--out", str(out)]
    if quick:
        parts.append("--quick")
    if time_budget is not None:
        parts += ["--time-budget", f"{time_budget:g}"]
    if memory_gib is not None:
        parts += ["--memory-budget", f"{memory_gib:g}"]
    if sizes:
        parts += ["--sizes", *map(str, sizes)]
    if methods:
        parts += ["--methods", *methods]
    return " ".join(parts)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _run_methods(cfg: dict, run: RunFolder, results: dict, progress: bool) -> None:
    rows = results["rows"]
    finished = {(r["dim"], r["method"]) for r in rows}
    over_at = {
        r["method"]: r["dim"]
        for r in sorted(rows, key=lambda r: -r["dim"])
        if "over the time budget" in (r.get("reason") or "")
        and not r["reason"].startswith("estimated")
    }
    total = len(cfg["sizes"]) * len(cfg["methods"])
    for dim in cfg["sizes"]:
        for name in cfg["methods"]:
            if (dim, name) in finished:
                continue
            _say(progress, f"[{len(rows) + 1}/{total}] d = {dim}: {name} ...")
            row = _method_row(cfg, dim, name, run.path, over_at)
            rows.append(row)
            _say(progress, "    " + _row_summary(row))
            run.write_json("results.json", results)


def _row_summary(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('reason')}"
    m = row.get("metrics") or {}
    err = m.get("max_rel_error_n")
    return (
        f"ok in {row['method_s']:.1f} s"
        + (f", max rel err <n> {err:.2e}" if err is not None else "")
        + (
            f", KL {m['final_kl_exact']:.2e}"
            if m.get("final_kl_exact") is not None
            else ""
        )
    )


def _run_engines(cfg: dict, run: RunFolder, results: dict, progress: bool) -> None:
    rows = results["rows"]
    finished = {r.get("script") for r in rows}
    for script in cfg["scripts"]:
        if script in finished:
            continue
        path = _script(script)
        _say(progress, f"{script} ...")
        out = run.path / "engines" / f"{path.stem}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(path), "--out", str(out)]
        if cfg["quick"]:
            cmd.append("--quick")
        began = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=cfg["budgets"]["time_s"],
                env=_worker_env(),
            )
            failed = proc.returncode != 0
            why = " | ".join(proc.stderr.strip().splitlines()[-3:]) if failed else None
        except subprocess.TimeoutExpired:
            failed = True
            why = f"over the time budget of {cfg['budgets']['time_s']:.0f} s"
        wall = time.perf_counter() - began
        if failed or not out.exists():
            rows.append(
                {"script": script, "status": "failed", "reason": why, "wall_s": wall}
            )
        else:
            data = json.loads(out.read_text())
            for r in data["engine_rows"]:
                rows.append({"script": script, **r})
        _say(progress, f"    done in {wall:.0f} s")
        run.write_json("results.json", results)


# ------------------------------------------------------------------------ reports


def _fmt(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def markdown(results: dict[str, Any]) -> str:
    """The suite's tables as markdown (results.md); an optional `results["note"]`
    (how the run was made) follows the command."""
    cfg, machine = results["config"], results["machine"]
    lines = [
        f"# Suite `{results['suite']}`" + (" (quick)" if results["quick"] else ""),
        "",
        cfg.get("title", ""),
        "",
        f"Machine: {machine['device']} ({machine['jax_backend']}, "
        f"{machine['device_count']} device(s), {machine['cpu_count']} CPU cores), "
        f"jax {machine['jax']}. Budgets per method and size: "
        f"{cfg['budgets']['time_s']:.0f} s, {cfg['budgets']['memory_gib']:g} GiB.",
        "",
        f"Command: `{results['invocation']}`"
        + (f" ({results['note']})" if results.get("note") else ""),
        "",
    ]
    rows = results["rows"]
    if cfg["kind"] == "engines":
        cols = (
            "suite_case",
            "engine",
            "time_s",
            "speedup_of_qflow",
            "max_abs_diff_vs_qutip",
            "status",
        )
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
        return "\n".join(lines) + "\n"
    header = ["d", "method", *(h for _, h, _ in _COLUMNS), "status"]
    lines += [
        "The Q columns compare the mode-0 marginal at t_end; where it comes from a "
        "histogram of samples (flows and PINN in several modes) the L1 floor is the "
        "L1 distance a histogram of exact samples would show.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    notes = []
    for r in rows:
        m = r.get("metrics") or {}
        cells = [str(r["dim"]), r["method"]]
        for key, _, fmt in _COLUMNS:
            # a row stopped before its method ran has nothing measured
            measured = "method_s" in r
            cells.append(_fmt(r.get(key, m.get(key)) if measured else None, fmt))
        status = r["status"]
        if r["status"] != "ok":
            notes.append(f"- d = {r['dim']}, {r['method']}: {r.get('reason')}")
            status += f" [{len(notes)}]"
        cells.append(status)
        lines.append("| " + " | ".join(cells) + " |")
    extra = [
        (r, k, v)
        for r in rows
        for k, v in (r.get("metrics") or {}).items()
        if k.startswith("max_abs_diff_n_vs_")
    ]
    if extra:
        lines += ["", "Against refinements (max |<n_j> - <n_j>_refined|):", ""]
        lines += [
            f"- d = {r['dim']}, {r['method']} vs "
            f"{k.removeprefix('max_abs_diff_n_vs_')}: {v:.2e}"
            for r, k, v in extra
        ]
    if notes:
        lines += [
            "",
            "Not ok:",
            "",
            *(f"{i + 1}. {n[2:]}" for i, n in enumerate(notes)),
        ]
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "-" if v is None else str(v)
