"""Shared helpers of the benchmark scripts: timing, tables and JSON output."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
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


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Writes results/NAME.json (NAME_gpu.json etc. off the CPU backend), with the
    package versions and the device the run used."""
    import jax

    backend = jax.default_backend()
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / (
        f"{name}.json" if backend == "cpu" else f"{name}_{backend}.json"
    )
    device = {"backend": backend, "device": jax.devices()[0].device_kind}
    path.write_text(
        json.dumps({"versions": versions(), **device, **data}, indent=2) + "\n"
    )
    return path
