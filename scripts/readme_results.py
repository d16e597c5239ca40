"""Rewrites the README's generated results block from benchmarks/results/*.json.

Run after the benchmarks: python scripts/readme_results.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _bosonic(data: dict) -> list[str]:
    p = data["problem"]
    v = data["versions"]
    lines = [
        f"Driven Kerr oscillator, Fock basis N={p['N']}, t in [0, {p['t_end']}], "
        f"{p['n_save']} saves, rtol {p['rtol']}, atol {p['atol']} "
        f"(`python benchmarks/lindblad_bosonic.py`; {v['platform']}, "
        f"backend {v['jax_backend']}, jax {v['jax']}):",
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


RENDERERS = {"lindblad_bosonic": _bosonic}


def main() -> None:
    blocks = []
    for name, render in RENDERERS.items():
        path = ROOT / "benchmarks" / "results" / f"{name}.json"
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
