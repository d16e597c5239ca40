"""Shared helpers of the benchmark scripts: timing, tables and JSON output."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from qflow_jax.runs import versions

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def time_warm(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, float, Any]:
    """(first-call time, median warm time, last output) of `fn`, which must block."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "-" if x is None else str(x)


def write_json(name: str, data: dict[str, Any], path: str | Path | None = None) -> Path:
    """Writes results/NAME.json (NAME_gpu.json etc. off the CPU backend), or `path`
    when given, with the package versions and the device the run used."""
    import jax

    backend = jax.default_backend()
    if path is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / (
            f"{name}.json" if backend == "cpu" else f"{name}_{backend}.json"
        )
    else:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    device = {"backend": backend, "device": jax.devices()[0].device_kind}
    path.write_text(
        json.dumps({"versions": versions(), **device, **data}, indent=2) + "\n"
    )
    return path


# --- engine comparison rows (qflow_jax vs peer solvers) -----------------------

ENGINES = ("qflow_jax", "qutip", "dynamiqs")
ENGINE_ROW_COLUMNS = [
    "suite_case",
    "engine",
    "time_s",
    "first_s",
    "speedup_of_qflow",
    "max_abs_diff_vs_qutip",
    "status",
    "reason",
]


def engine_versions() -> dict[str, str]:
    """Installed versions of the engines compared (without importing them)."""
    out = {}
    for name in ENGINES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_engine(fn: Callable[..., Any], *args: Any) -> tuple[Any, str, str | None]:
    """(output, status, reason) of a peer solver call: status "ok", "not installed"
    (ImportError) or "failed" (any other exception); output None unless "ok"."""
    try:
        return fn(*args), "ok", None
    except ImportError as err:
        return None, "not installed", _short(err)
    except Exception as err:  # a peer failing must not stop the benchmark
        return None, "failed", _short(err)


def _short(err: BaseException, limit: int = 200) -> str:
    msg = f"{type(err).__name__}: {err}".splitlines()[0]
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def engine_row(
    suite_case: str,
    engine: str,
    *,
    time_s: float | None = None,
    first_s: float | None = None,
    qflow_s: float | None = None,
    max_abs_diff_vs_qutip: float | None = None,
    status: str = "ok",
    reason: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One row of `engine_rows`: `speedup_of_qflow` is time_s / qflow_s (how many
    times faster qflow_jax is than this engine), 1.0 for qflow_jax itself."""
    if status != "ok":
        time_s = first_s = max_abs_diff_vs_qutip = None
    if engine == "qflow_jax":
        speedup = 1.0 if status == "ok" else None
    elif time_s is not None and qflow_s:
        speedup = time_s / qflow_s
    else:
        speedup = None
    row = {
        "suite_case": suite_case,
        "engine": engine,
        "time_s": time_s,
        "first_s": first_s,
        "speedup_of_qflow": speedup,
        "max_abs_diff_vs_qutip": max_abs_diff_vs_qutip,
        "status": status,
        "reason": reason,
    }
    row.update(extra)
    return row
