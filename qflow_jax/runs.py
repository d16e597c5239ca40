"""Run folders: summary.json, arrays (.npz) and PNG plots, written atomically."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from qflow_jax._deprecated import moved

__all__ = [
    "ResumeError",
    "RunFolder",
    "check_fingerprint",
    "compilation_cache_dir",
    "enable_compilation_cache",
    "fingerprint",
    "to_jsonable",
    "versions",
]

_PACKAGES = ("qflow_jax", "jax", "jaxlib", "diffrax", "equinox", "flax", "optax")


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the numerical packages in use."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    import jax

    out["jax_backend"] = jax.default_backend()
    return out


def to_jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "__array__") and not isinstance(x, str | bytes):
        arr = np.asarray(x)
        if np.iscomplexobj(arr):
            return {"real": arr.real.tolist(), "imag": arr.imag.tolist()}
        return arr.tolist()
    if isinstance(x, complex):
        return {"real": x.real, "imag": x.imag}
    if isinstance(x, Path):
        return str(x)
    return x


_OFF = ("", "0", "off", "no", "false")


def compilation_cache_dir() -> Path | None:
    """Where the CLI keeps JAX's persistent compilation cache: the folder in the
    environment variable `QFLOW_JAX_COMPILE_CACHE` (None when it is "off" or "0"),
    else `$XDG_CACHE_HOME/qflow_jax/jax` (default `~/.cache/qflow_jax/jax`)."""
    env = os.environ.get("QFLOW_JAX_COMPILE_CACHE")
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qflow_jax" / "jax"


def enable_compilation_cache(folder: str | Path) -> bool:
    """Stores every compiled program in `folder` and loads it from there in later
    processes (JAX's persistent compilation cache), so that a resumed or repeated
    run spends seconds, not minutes, compiling. The folder grows with every new
    program (a few MB per run configuration) and may be deleted at any time.
    Programs with host callbacks (run-time `equinox` checks on traced values) are
    not stored; TDVP's interval solve has none.

    Returns False, after a notice on stderr, when `folder` cannot be written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        print(
            f"qflow: the compilation cache {folder} is not writable; compiling "
            "without it",
            file=sys.stderr,
        )
        return False
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.set_cache_dir(str(folder))
    # the cache is set up at the first compilation: start again, in case an
    # import compiled something already
    compilation_cache.reset_cache()
    return True


class ResumeError(ValueError):
    """A run folder that cannot be resumed: its checkpoint is damaged or was written
    by a different run (another config, seed or package version)."""


def fingerprint(config: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> dict:
    """What determines a run's result: its config after defaults (less the top-level
    keys in `ignore` that only say where and how often to write) and the qflow_jax
    version. Stored with every checkpoint; `check_fingerprint` compares.

    Examples:
        >>> fp = fingerprint({"seed": 0, "output": {"dir": "a"}}, ignore=("output",))
        >>> fp["config"], sorted(fp)
        ({'seed': 0}, ['config', 'qflow_jax'])
    """
    from qflow_jax import __version__

    kept = {k: v for k, v in config.items() if k not in ignore}
    return {"config": to_jsonable(kept), "qflow_jax": __version__}


def _flat(x: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(x, Mapping):
        out: dict[str, Any] = {}
        for k, v in x.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: x}


def check_fingerprint(stored: Any, current: Mapping[str, Any], where: Path) -> None:
    """Raises `ResumeError` naming every key whose value differs between the
    fingerprint stored in the checkpoint `where` and the current run's.

    Examples:
        >>> try:
        ...     check_fingerprint({"config": {"seed": 0}, "qflow_jax": "0.1.0"},
        ...                       {"config": {"seed": 1}, "qflow_jax": "0.1.0"},
        ...                       Path("a.npz"))
        ... except ResumeError as err:
        ...     print(str(err).split(". ")[0])
        a.npz was written by a different run: config.seed is 0 there, 1 now
    """
    if not isinstance(stored, Mapping):
        raise ResumeError(
            f"{where} carries no run fingerprint (written by an older qflow_jax); "
            "run without --resume to start again"
        )
    old, new = _flat(stored), _flat(to_jsonable(current))

    def show(values: dict[str, Any], key: str) -> str:
        return repr(values[key]) if key in values else "absent"

    diffs = [
        f"{k} is {show(old, k)} there, {show(new, k)} now"
        for k in sorted(set(old) | set(new))
        if k not in old or k not in new or old[k] != new[k]
    ]
    if diffs:
        more = f"; and {len(diffs) - 8} more" if len(diffs) > 8 else ""
        raise ResumeError(
            f"{where} was written by a different run: {'; '.join(diffs[:8])}{more}. "
            "Resume with the config (and qflow_jax version) that wrote it, or "
            "choose another --out"
        )


class RunFolder:
    """A results folder; every file is written to a temporary name then renamed.

    In a run of several processes only process 0 writes (the others skip every
    write and return the path the file has), so that all can read its checkpoints.

    Raises:
        ValueError: when the folder cannot be created (under a file, no permission)
            or is not writable.

    Examples:
        >>> run = RunFolder("runs/demo")
        >>> run.write_json("summary.json", {"metrics": {"err": 1e-7}})
        PosixPath('runs/demo/summary.json')
    """

    def __init__(self, path: str | Path):
        from qflow_jax.parallel import is_main_process

        self.path = Path(path)
        if is_main_process():
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ValueError(
                    f"cannot create the output folder {self.path}: {err.strerror}"
                ) from None
            if not os.access(self.path, os.W_OK | os.X_OK):
                raise ValueError(f"the output folder {self.path} is not writable")
            # temporaries of writes that a killed run never finished (only process 0
            # of a run writes into its folder)
            for stale in self.path.glob(".tmp-*"):
                stale.unlink(missing_ok=True)

    def _atomic(self, name: str, write: Any, suffix: str) -> Path:
        from qflow_jax.parallel import is_main_process

        target = self.path / name
        if not is_main_process():
            return target
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-", suffix=suffix)
        os.close(fd)
        try:
            write(tmp)
            # mkstemp makes 0600 files: give the result the mode of any new file
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return target

    def write_json(self, name: str, data: Mapping[str, Any]) -> Path:
        text = json.dumps(to_jsonable(data), indent=2, sort_keys=False)
        return self.write_text(name, text + "\n")

    def write_summary(
        self,
        command: str,
        config: Mapping[str, Any],
        metrics: Mapping[str, Any],
        timings_s: Mapping[str, float],
        **extra: Any,
    ) -> dict[str, Any]:
        """Writes summary.json in the one run format of every command: `command`,
        `status` ("ok": only a finished run writes one; a failed run exits with
        code 1 and writes none), `config` (after defaults), `versions`, `metrics`
        (scalars where possible, as `qflow collect` tabulates them), `timings_s`,
        then the command's own keys. Returns the summary with "folder" added."""
        summary = {
            "command": command,
            "status": "ok",
            "config": config,
            "versions": versions(),
            "metrics": metrics,
            "timings_s": timings_s,
            **extra,
        }
        self.write_json("summary.json", summary)
        return {**summary, "folder": str(self.path)}

    def write_text(self, name: str, text: str) -> Path:
        return self._atomic(name, lambda p: Path(p).write_text(text), Path(name).suffix)

    def save_arrays(self, name: str, **arrays: Any) -> Path:
        def write(p: str) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})

        return self._atomic(name, write, ".npz")

    def save_figure(self, name: str, fig: Any) -> Path:
        """Writes a matplotlib figure as PNG (atomically) and closes it; figures
        without a layout engine of their own get a tight layout."""
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        path = self._atomic(name, lambda p: fig.savefig(p, format="png"), ".png")
        from qflow_jax.plots import pyplot

        pyplot().close(fig)
        return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def collect_runs(folders: list[str | Path], out: str | Path = ".") -> dict[str, Any]:
    """One table from several run folders (e.g. the tasks of a job array).

    Reads FOLDER/summary.json of each, keeps the run's name, command, scalar
    metrics and timings, and writes collect.json and collect.md (a markdown
    table) into `out`.

    Raises:
        ValueError: naming a folder without summary.json (an unfinished run).

    Examples:
        >>> for name in ("a", "b"):
        ...     _ = RunFolder(f"runs/{name}").write_summary(
        ...         "lindblad", {"name": name}, {"err": 1e-7}, {"wall": 1.0})
        >>> [row["name"] for row in collect_runs(["runs/a", "runs/b"], "runs")["table"]]
        ['a', 'b']
    """
    rows = []
    for folder in folders:
        path = Path(folder) / "summary.json"
        if not path.is_file():
            raise ValueError(
                f"`{folder}` has no summary.json: not a finished run folder"
            )
        summary = json.loads(path.read_text())
        row: dict[str, Any] = {
            "folder": str(folder),
            "name": summary.get("config", {}).get("name", Path(folder).name),
            "command": summary.get("command", ""),
        }
        for group in ("metrics", "timings_s"):
            for key, value in summary.get(group, {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    row[key] = value
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        lines.append(
            "| "
            + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells)
            + " |"
        )
    folder = RunFolder(out)
    folder.write_json("collect.json", {"rows": rows})
    folder.write_text("collect.md", "\n".join(lines) + "\n")
    return {"folder": str(folder.path), "table": rows}


def __getattr__(name: str) -> Any:
    if name == "pyplot":  # deprecated: every figure moved to qflow_jax.plots
        return moved("qflow_jax.runs", "qflow_jax.plots")(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
