"""Rewrites the README's generated results block from benchmarks/results/*.json.

Run after the benchmarks: python scripts/readme_results.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _machine(data: dict) -> str:
    v = data["versions"]
    where = data.get("device", v["platform"])
    host = "" if v["jax_backend"] == "cpu" else "; QuTiP on that machine's host CPU"
    return f"{where}, backend {v['jax_backend']}, jax {v['jax']}{host}"


def _bosonic(data: dict) -> list[str]:
    p = data["problem"]
    lines = [
        f"Driven Kerr oscillator, Fock basis N={p['N']}, t in [0, {p['t_end']}], "
        f"{p['n_save']} saves, rtol {p['rtol']}, atol {p['atol']} "
        f"(`python benchmarks/lindblad_bosonic.py`; {_machine(data)}):",
        "",
        "| solver | first call (s) | warm (s) | peer time / qflow time "
        "| max abs diff of <n> vs QuTiP |",
        "|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        diff = r["max|dn| vs qutip"]
        lines.append(
            f"| {r['solver']} | {r['first_s']:.3g} | {r['warm_s']:.3g} | "
            f"{r['speedup_of_qflow']:.2f} | {'-' if diff is None else f'{diff:.1e}'} |"
        )
    return lines


def _network(data: dict) -> list[str]:
    lines = [
        "Ring of n qubits with swap coupling k = 5 (`python benchmarks/network.py`; "
        f"{_machine(data)}):",
        "",
        "| n | qflow_jax (s) | QuTiP (s) | dynamiqs (s) | QuTiP / qflow | "
        "dynamiqs / qflow | max diff <sigmaz_0> vs QuTiP | RHS time / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["compare"]:
        lines.append(
            f"| {r['n']} | {r['qflow_s']:.3g} | {r['qutip_s']:.3g} | "
            f"{r['dynamiqs_s']:.3g} | {r['qutip_s'] / r['qflow_s']:.1f} | "
            f"{r['dynamiqs_s'] / r['qflow_s']:.1f} | {r['err_vs_qutip']:.1e} | "
            f"{r['rhs_s'] * r['rhs_evals'] / r['floor_terms_s']:.2f} |"
        )
    for r in data["large"]:
        lines.append(
            f"| {r['n']} | {r['qflow_s']:.3g} | - | - | - | - | - | "
            f"{r['rhs_s'] * r['rhs_evals'] / r['floor_terms_s']:.2f} |"
        )
    lines.append("")
    lines.append(
        "Peak memory: "
        + ", ".join(f"n = {r['n']}: {r['peak_MiB']:.0f} MiB" for r in data["large"])
        + "."
    )
    return lines


RENDERERS = {"lindblad_bosonic": _bosonic, "network": _network}


def main() -> None:
    blocks = []
    for name, render in RENDERERS.items():
        for suffix in ("", "_gpu"):  # this machine's CPU, then a GPU if one ran it
            path = ROOT / "benchmarks" / "results" / f"{name}{suffix}.json"
            if path.exists():
                blocks += render(json.loads(path.read_text())) + [""]
    readme = ROOT / "README.md"
    text = readme.read_text()
    body = "\n".join([START, "", *blocks, END])
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), body, text, flags=re.S)
    readme.write_text(text)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
