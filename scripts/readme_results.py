"""Rewrites the README's generated results blocks: the comparison suite from
benchmarks/results/suite_*/ (`qflow bench`), the Lindblad engines from
benchmarks/results/*.json, the large Q-Flow runs from
benchmarks/results/scale/NAME/summary.json (`qflow run configs/NAME.yaml`).

Run after the benchmarks: python scripts/readme_results.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
SUITE_START, SUITE_END = "<!-- suite:start -->", "<!-- suite:end -->"
SCALE_START, SCALE_END = "<!-- scale:start -->", "<!-- scale:end -->"
SUITES = ("dims", "bosonic", "engines", "paper")
PLOTS = ("curves", "error_vs_dim", "kl_vs_dim", "time_vs_dim", "memory_vs_dim")


def _machine(data: dict) -> str:
    v = data["versions"]
    # on CPU the device kind is just "cpu": the platform says more
    cpu = v["jax_backend"] == "cpu"
    where = v["platform"] if cpu else data.get("device", v["platform"])
    host = "" if cpu else "; QuTiP on that machine's host CPU"
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
        "dynamiqs / qflow | max diff <sigmaz_0> vs QuTiP | kernel | "
        "RHS time / floor | XLA kernel: RHS time / floor | qflow_jax, XLA kernel (s) "
        "| qflow_jax with diffrax.Tsit5 (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def floor(r: dict, key: str) -> str:
        # keys absent from runs made before they existed
        return (
            "-"
            if key not in r
            else f"{r[key] * r['rhs_evals'] / r['floor_terms_s']:.2f}"
        )

    def opt(r: dict, key: str) -> str:
        return "-" if r.get(key) is None else f"{r[key]:.3g}"

    for r in data["compare"]:
        lines.append(
            f"| {r['n']} | {r['qflow_s']:.3g} | {r['qutip_s']:.3g} | "
            f"{r['dynamiqs_s']:.3g} | {r['qutip_s'] / r['qflow_s']:.1f} | "
            f"{r['dynamiqs_s'] / r['qflow_s']:.1f} | {r['err_vs_qutip']:.1e} | "
            f"{r.get('kernel', 'xla')} | {floor(r, 'rhs_s')} | "
            f"{floor(r, 'rhs_xla_s')} | {opt(r, 'qflow_xla_s')} | "
            f"{opt(r, 'qflow_diffrax_tsit5_s')} |"
        )
    for r in data["large"]:
        lines.append(
            f"| {r['n']} | {r['qflow_s']:.3g} | - | - | - | - | - | "
            f"{r.get('kernel', 'xla')} | {floor(r, 'rhs_s')} | "
            f"{floor(r, 'rhs_xla_s')} | - | - |"
        )
    lines.append("")
    lines.append(
        "Peak memory: "
        + ", ".join(f"n = {r['n']}: {r['peak_MiB']:.0f} MiB" for r in data["large"])
        + "."
    )
    return lines


def _batched(data: dict) -> list[str]:
    p = data["problem"]
    lines = [
        "Batched driven-Kerr sweeps (Kerr {kerr}, drive {drive}, loss {kappa}, B "
        "detunings in [-1, 1]), rtol {rtol}, atol {atol}, <n> only; the gradient is "
        "of the summed final <n> with respect to (Kerr, loss) "
        "(`python benchmarks/batched.py`; {machine}):".format(
            **p, machine=_machine(data)
        ),
        "",
        "| case | solver | warm (s) | steps per element | us per step and element "
        "| gradient (s) | dynamiqs / qflow | gradient: dynamiqs / qflow |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def f(r: dict, key: str, fmt: str) -> str:
        return "-" if r.get(key) is None else format(r[key], fmt)

    for r in data["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['case']} | {r['solver']} | {r['status']} | | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['solver']} | {r['warm_s']:.3g} | "
            f"{r['steps_per_element']:.0f} | {r['us_per_step_element']:.0f} | "
            f"{f(r, 'grad_warm_s', '.3g')} | {f(r, 'speedup_vs_dynamiqs', '.2f')} | "
            f"{f(r, 'grad_speedup_vs_dynamiqs', '.2f')} |"
        )
    return lines


RENDERERS = {"lindblad_bosonic": _bosonic, "batched": _batched, "network": _network}


def _suite(folder: Path) -> list[str]:
    """The suite's own results.md (its title one level down) and its plots."""
    md = (folder / "results.md").read_text().strip().splitlines()
    lines = ["#" + md[0], *md[1:], ""]
    pngs = [p for p in PLOTS if (folder / f"{p}.png").exists()]
    if pngs:
        rel = folder.relative_to(ROOT).as_posix()
        lines.append(" ".join(f"![{p}]({rel}/{p}.png)" for p in pngs))
        lines.append("")
    return lines


def _scale(folders: list[Path]) -> list[str]:
    """One row per large `qflow run` (its summary.json), with its figures."""
    lines = [
        "| config | method | real dims | t_end | wall (s) | evolution (s) | "
        "max err <n_j> / max(<n_j>, 1) | max centroid error | max KL(Q, q) | "
        "max residual (out of sample) | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for folder in folders:
        s = json.loads((folder / "summary.json").read_text())
        cfg, m, tm, v = s["config"], s["metrics"], s["timings_s"], s["versions"]
        n_err = f"{m['max_scaled_error_n']:.2e}"
        if "max_scaled_error_n_net" in m:  # against trajectories: net of 2 stderr
            n_err += (
                f" (net of the reference's 2 stderr: {m['max_scaled_error_n_net']:.2e})"
            )
        kl = m.get("max_kl_exact_flow")  # only exact references have samples
        lines.append(
            f"| `configs/{cfg['name']}.yaml` | {cfg['method']} | "
            f"{2 * cfg['model']['modes']} | {cfg['times']['t_end']:g} | "
            f"{tm['wall_this_session']:.0f} | {tm['evolution_s']:.0f} | "
            f"{n_err} | {m['max_centroid_error']:.2e} | "
            f"{'-' if kl is None else f'{kl:.1e}'} | "
            f"{m['max_pde_residual_test']:.1e} | {v['jax_backend']}, jax {v['jax']} |"
        )
    lines.append("")
    for folder in folders:
        rel = folder.relative_to(ROOT).as_posix()
        lines.append(f"![{folder.name}]({rel}/observables.png)")
    return [*lines, ""]


def _replace(text: str, start: str, end: str, blocks: list[str]) -> str:
    body = "\n".join([start, "", *blocks, end])
    return re.sub(re.escape(start) + ".*?" + re.escape(end), body, text, flags=re.S)


def main() -> None:
    results = ROOT / "benchmarks" / "results"
    suites = []
    for name in SUITES:
        for suffix in ("", "_gpu"):
            folder = results / f"suite_{name}{suffix}"
            if (folder / "results.md").exists():
                suites += _suite(folder)
    blocks = []
    for name, render in RENDERERS.items():
        for suffix in ("", "_gpu"):  # this machine's CPU, then a GPU if one ran it
            path = results / f"{name}{suffix}.json"
            if path.exists():
                blocks += render(json.loads(path.read_text())) + [""]
    scale = sorted(p.parent for p in (results / "scale").glob("*/summary.json"))
    readme = ROOT / "README.md"
    text = _replace(readme.read_text(), SUITE_START, SUITE_END, suites)
    text = _replace(text, SCALE_START, SCALE_END, _scale(scale))
    readme.write_text(_replace(text, START, END, blocks))
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
