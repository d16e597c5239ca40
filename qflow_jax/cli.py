"""The `qflow` command line.

    qflow run [CONFIG] [--out DIR]      the main job (built-in default problem)
    qflow lindblad CONFIG [--out DIR]   a Lindblad problem from a YAML config

Bad input (unknown config key, wrong type, invalid value) ends with exit code 2
and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from qflow_jax.config import ConfigError, load_yaml


def _cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from qflow_jax.lindblad.run import DEFAULT_LINDBLAD_CONFIG, run_lindblad

    config = load_yaml(args.config) if args.config else DEFAULT_LINDBLAD_CONFIG
    return run_lindblad(config, args.out)


def _cmd_lindblad(args: argparse.Namespace) -> dict[str, Any]:
    from qflow_jax.lindblad.run import run_lindblad

    return run_lindblad(load_yaml(args.config), args.out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qflow",
        description="qflow_jax: JAX simulator of open quantum dynamics.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="the main job; without CONFIG, the built-in damped-cavity problem",
        description="Run the main job. Without CONFIG: a damped coherent cavity "
        "(N=30, omega=1, gamma=0.5, alpha0=2) solved to t=10 and checked against "
        "its exact solution.",
    )
    run.add_argument("config", nargs="?", help="YAML config (see configs/)")
    run.add_argument("--out", help="output folder (default runs/NAME)")
    run.set_defaults(func=_cmd_run)
    lind = sub.add_parser(
        "lindblad", help="solve a Lindblad problem from a YAML config",
        description="Solve a named Lindblad model from a YAML config and write "
        "summary.json, arrays.npz and PNG plots.",
    )
    lind.add_argument("config", help="YAML config, e.g. configs/kerr_oscillator.yaml")
    lind.add_argument("--out", help="output folder (default runs/NAME)")
    lind.set_defaults(func=_cmd_lindblad)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `qflow` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], dict[str, Any]] = args.func
    try:
        summary = func(args)
    except (ConfigError, ValueError) as err:
        print(f"qflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"qflow {args.command}: failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"folder": summary["folder"], "metrics": summary["metrics"],
                      "timings_s": summary["timings_s"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
