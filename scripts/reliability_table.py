"""Classifies how the installed qflow_jax answers the bad inputs of
tests/reliability (the CLI table and the API table) and prints a markdown table.

Each case is one of: "refused, names it" (exit 2 / the expected exception with the
argument in the message), "refused, other message", "traceback" (an exception
escaped the CLI), "failed later" (exit 1), "accepted" (no error), "over 20 s"
(still computing), "n/a" (the API does not exist in this version).

    python scripts/reliability_table.py > table.md
    # the same cases against another checkout's package:
    PYTHONPATH=/path/to/checkout python scripts/reliability_table.py
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from test_bad_inputs import CASES as API_CASES  # noqa: E402
from test_cli_inputs import CASES as CLI_CASES  # noqa: E402
from test_cli_inputs import case_args  # noqa: E402

LIMIT_S = 20


class _Late(Exception):
    pass


def _alarm(signum, frame):
    raise _Late


def cli_outcome(case: str) -> str:
    from qflow_jax.cli import main

    args = case_args(case, Path(tempfile.mkdtemp()))
    message = CLI_CASES[case][2]
    err = io.StringIO()
    signal.alarm(LIMIT_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    except _Late:
        return "over 20 s"
    except Exception as exc:  # what the console script shows as a traceback
        return f"traceback ({type(exc).__name__})"
    finally:
        signal.alarm(0)
    lines = err.getvalue().strip().splitlines()
    if code == 2:
        named = bool(lines) and message in lines[-1]
        return "refused, names it" if named else "refused, other message"
    return "accepted" if code == 0 else f"failed later (exit {code})"


def api_outcome(call, error, match) -> str:
    signal.alarm(LIMIT_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except _Late:
        return "over 20 s"
    except AttributeError as exc:
        if "qflow_jax" in str(exc):
            return "n/a"
        return f"raises {type(exc).__name__}, other message"
    except Exception as exc:
        if isinstance(exc, error) and re.search(match, str(exc)):
            return "refused, names it"
        return f"raises {type(exc).__name__}, other message"
    finally:
        signal.alarm(0)
    return "accepted"


def main() -> None:
    signal.signal(signal.SIGALRM, _alarm)
    rows = [("CLI", k, cli_outcome(k)) for k in CLI_CASES]
    rows += [("API", k, api_outcome(*v)) for k, v in API_CASES.items()]
    print("| via | case | outcome |\n|---|---|---|")
    for via, case, outcome in rows:
        print(f"| {via} | {case} | {outcome} |")
    counts: dict[str, int] = {}
    for *_, outcome in rows:
        counts[outcome] = counts.get(outcome, 0) + 1
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
