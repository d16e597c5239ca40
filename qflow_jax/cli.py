"""The `qflow` command line.

    qflow --version | --help           (neither imports JAX)
    qflow run [CONFIG] [--out DIR] [--resume]   Q-Flow (built-in default problem)
        [--coordinator HOST:PORT --num-processes N --process-id I]  several processes
    qflow pinn CONFIG [--out DIR]       the PINN baseline on a damped problem
    qflow collect FOLDER... [--out DIR]  one table from several runs' summaries
    qflow bench SUITE [--quick] [--out DIR]  comparison suite (dims, bosonic, ...)
    qflow lindblad CONFIG [--out DIR]   a Lindblad problem from a YAML config
    qflow blended CONFIG [--out DIR]    a qubit network against its blended dynamics

Bad input (unknown config key, wrong type, invalid value, a checkpoint that is
damaged or belongs to another run) ends with exit code 2 and a one-line message,
never a traceback; a failed solve with exit code 1.

Compiled programs are kept in JAX's persistent compilation cache (a folder in
$QFLOW_JAX_COMPILE_CACHE, default ~/.cache/qflow_jax/jax; "off" or
--no-compile-cache to go without), so a resumed job compiles in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from qflow_jax import __version__
from qflow_jax.config import ConfigError, load_yaml
from qflow_jax.runs import compilation_cache_dir, enable_compilation_cache, to_jsonable


def _positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (argparse turns the error into exit 2)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from qflow_jax.parallel import initialize_distributed, is_main_process

    config = load_yaml(args.config) if args.config else None
    initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from qflow_jax.apps.run import DEFAULT_QFLOW_CONFIG, run_qflow

    return run_qflow(
        config or DEFAULT_QFLOW_CONFIG,
        args.out,
        resume=args.resume,
        progress=is_main_process(),
    )


def _cmd_pinn(args: argparse.Namespace) -> dict[str, Any]:
    from qflow_jax.apps.pinn import run_pinn

    return run_pinn(load_yaml(args.config), args.out)


def _cmd_collect(args: argparse.Namespace) -> dict[str, Any]:
    from qflow_jax.runs import collect_runs

    return collect_runs(args.folders, args.out)


def _cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from qflow_jax.apps.bench import run_suite

    return run_suite(
        args.suite,
        args.out,
        quick=args.quick,
        resume=args.resume,
        time_budget=args.time_budget,
        memory_budget_gib=args.memory_budget,
        sizes=args.sizes,
        methods=args.methods,
    )


def _cmd_lindblad(args: argparse.Namespace) -> dict[str, Any]:
    from qflow_jax.apps.lindblad import run_lindblad

    return run_lindblad(load_yaml(args.config), args.out)


def _cmd_blended(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from qflow_jax.apps.blended import run_blended

    out = args.out or Path("runs") / Path(args.config).stem
    summary = run_blended(load_yaml(args.config), out)
    return {**summary, "folder": str(out)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qflow",
        description="qflow_jax: JAX simulator of open quantum dynamics.",
    )
    parser.add_argument(
        "--version", action="version", version=f"qflow_jax {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (default: on, in "
        "$QFLOW_JAX_COMPILE_CACHE or ~/.cache/qflow_jax/jax)",
    )
    run = sub.add_parser(
        "run",
        parents=[common],
        help="Q-Flow: a normalizing flow evolved through the Husimi PDE",
        description="Run Q-Flow. Without CONFIG: a damped single-mode oscillator "
        "(omega = gamma = 1) from the coherent state |2>, evolved by TDVP to "
        "t = 2/gamma and checked against its exact solution.",
    )
    run.add_argument(
        "config", nargs="?", help="YAML config, e.g. configs/damped_1mode.yaml"
    )
    run.add_argument("--out", help="output folder (default runs/NAME)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the output folder's latest checkpoint (checkpoints/)",
    )
    dist = run.add_argument_group(
        "several processes (inside a SLURM job of several tasks these are read "
        "from SLURM's variables)"
    )
    dist.add_argument("--coordinator", help="HOST:PORT of process 0")
    dist.add_argument("--num-processes", type=int, help="number of processes")
    dist.add_argument("--process-id", type=int, help="this process's index")
    run.set_defaults(func=_cmd_run)
    pinn = sub.add_parser(
        "pinn",
        parents=[common],
        help="the PINN baseline: a network for log Q(x, t) trained on the Q-PDE",
        description="Train a physics-informed network for log Q(x, t) of a damped "
        "multimode problem and compare it with the exact solution.",
    )
    pinn.add_argument("config", help="YAML config, e.g. configs/pinn_damped_1mode.yaml")
    pinn.add_argument("--out", help="output folder (default runs/NAME)")
    pinn.set_defaults(func=_cmd_pinn)
    collect = sub.add_parser(
        "collect",
        help="gather the summaries of several runs into one table",
        description="Read FOLDER/summary.json of every run folder (e.g. the tasks "
        "of a job array) and write one table as collect.json and collect.md.",
    )
    collect.add_argument("folders", nargs="+", help="run folders")
    collect.add_argument("--out", default=".", help="where to write the table")
    collect.set_defaults(func=_cmd_collect)
    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="the comparison suite (Q-Flow vs grids, PINN, exact; engines vs peers)",
        description="Run a comparison suite (dims, bosonic, engines, paper: "
        "shipped with the package; or a path to a suite YAML): every method at "
        "every size within the same budgets; writes results.json, results.md, "
        "log-log plots and the curves against time.",
    )
    bench.add_argument(
        "suite", help="dims, bosonic, engines, paper, or a suite YAML path"
    )
    bench.add_argument("--out", help="results folder (default runs/bench_SUITE)")
    bench.add_argument(
        "--quick", action="store_true", help="small sizes and few steps (minutes)"
    )
    bench.add_argument(
        "--resume", action="store_true", help="keep the finished rows of results.json"
    )
    bench.add_argument(
        "--time-budget",
        type=_positive_number,
        help="seconds per method and size (overrides)",
    )
    bench.add_argument(
        "--memory-budget",
        type=_positive_number,
        help="GiB per method and size (overrides)",
    )
    bench.add_argument("--sizes", type=int, nargs="+", help="only these dimensions")
    bench.add_argument("--methods", nargs="+", help="only these methods")
    bench.set_defaults(func=_cmd_bench)
    lind = sub.add_parser(
        "lindblad",
        parents=[common],
        help="solve a Lindblad problem from a YAML config",
        description="Solve a named Lindblad model from a YAML config and write "
        "summary.json, arrays.npz and PNG plots.",
    )
    lind.add_argument("config", help="YAML config, e.g. configs/kerr_oscillator.yaml")
    lind.add_argument("--out", help="output folder (default runs/NAME)")
    lind.set_defaults(func=_cmd_lindblad)
    blended = sub.add_parser(
        "blended",
        parents=[common],
        help="a qubit network, its blended dynamics and a k-sweep",
        description="Integrate a qubit network with swap coupling, compare every "
        "qubit with the blended trajectory, sweep the gain k and write "
        "summary.json plus plots.",
    )
    blended.add_argument("config", help="YAML config, e.g. configs/network_path3.yaml")
    blended.add_argument(
        "--out", help="output folder (default runs/STEM, STEM the config file's name)"
    )
    blended.set_defaults(func=_cmd_blended)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `qflow` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], dict[str, Any]] = args.func
    cache = compilation_cache_dir()
    if not getattr(args, "no_compile_cache", True) and cache is not None:
        enable_compilation_cache(cache)
    try:
        summary = func(args)
    except (ConfigError, ValueError) as err:
        print(f"qflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:  # a failed solve; a full disk
        print(f"qflow {args.command}: failed: {err}", file=sys.stderr)
        return 1
    shown = ("folder", "metrics", "timings_s", "sweep", "clusters", "notes", "table")
    if args.command == "bench":
        shown = ("folder", "suite", "suite_wall_s")
    print(
        json.dumps(
            to_jsonable({k: summary[k] for k in shown if k in summary}), indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
