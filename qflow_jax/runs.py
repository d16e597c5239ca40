"""Run folders: summary.json, arrays (.npz) and PNG plots, written atomically."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunFolder", "pyplot", "to_jsonable", "versions"]

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


class RunFolder:
    """A results folder; every file is written to a temporary name then renamed.

    In a run of several processes only process 0 writes (the others skip every
    write and return the path the file has), so that all can read its checkpoints.

    Example:
        >>> run = RunFolder("runs/demo")
        >>> run.write_json("summary.json", {"metrics": {"err": 1e-7}})
    """

    def __init__(self, path: str | Path):
        from qflow_jax.parallel import is_main_process

        self.path = Path(path)
        if is_main_process():
            self.path.mkdir(parents=True, exist_ok=True)
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

    def write_text(self, name: str, text: str) -> Path:
        return self._atomic(name, lambda p: Path(p).write_text(text), Path(name).suffix)

    def save_arrays(self, name: str, **arrays: Any) -> Path:
        def write(p: str) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})

        return self._atomic(name, write, ".npz")

    def plot_curves(
        self,
        name: str,
        t: Any,
        curves: Mapping[str, Any],
        references: Mapping[str, Any] | None = None,
        *,
        xlabel: str = "t",
        ylabel: str = "expectation value",
        title: str = "",
        logy: bool = False,
    ) -> Path:
        """Line plot of named curves vs `t`; `references` are drawn dashed in black."""
        fig, ax = pyplot().subplots(figsize=(6.4, 4.0), dpi=120)
        for label, y in curves.items():
            ax.plot(np.asarray(t), np.asarray(y), label=label, lw=1.8)
        for label, y in (references or {}).items():
            ax.plot(np.asarray(t), np.asarray(y), "k--", lw=1.0, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return self.save_figure(name, fig)

    def save_figure(self, name: str, fig: Any) -> Path:
        """Writes a matplotlib figure as PNG (atomically) and closes it."""
        fig.tight_layout()
        path = self._atomic(name, lambda p: fig.savefig(p, format="png"), ".png")
        pyplot().close(fig)
        return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def collect_runs(folders: list[str | Path], out: str | Path = ".") -> dict[str, Any]:
    """One table from several run folders (e.g. the tasks of a job array).

    Reads FOLDER/summary.json of each, keeps the run's name, command, scalar
    metrics and timings, and writes collect.json and collect.md (a markdown
    table) into `out`.

    Raises:
        ValueError: naming a folder without summary.json (an unfinished run).

    Example:
        >>> collect_runs(["runs/a", "runs/b"], "runs")["table"][0]["name"]
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
