"""Every figure of qflow_jax: line plots of curves against time, Q-marginal
snapshots, and the comparison suite's figures; PNG files written atomically into a
run folder (`RunFolder.save_figure`), on matplotlib's non-interactive Agg backend.

Examples:
    >>> from qflow_jax.runs import RunFolder
    >>> run = RunFolder("runs/plots")
    >>> plot_curves(run, "n.png", [0, 1, 2], {"<n>": [1.0, 0.5, 0.25]}, logy=True)
    PosixPath('runs/plots/n.png')
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qflow_jax.metrics import MarginalGrid
from qflow_jax.runs import RunFolder

__all__ = [
    "plot_axes",
    "plot_curves",
    "plot_q_snapshots",
    "plot_suite",
    "plot_suite_curves",
    "pyplot",
]


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    run: RunFolder,
    name: str,
    t: Any,
    curves: Mapping[str, Any],
    references: Mapping[str, Any] | None = None,
    *,
    bands: Mapping[str, Any] | None = None,
    xlabel: str = "t",
    ylabel: str = "expectation value",
    title: str = "",
    logy: bool = False,
) -> Path:
    """Line plot of named curves vs `t` into `run`'s folder as `name`;
    `references` are drawn dashed in black, `bands` (standard errors of curves, by
    name) as shaded +-1 sigma bands.

    With `logy`, values <= 0 are not drawn, and the legend says how many of a
    curve were left out (nothing is clipped to a floor)."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.0), dpi=120)
    t = np.asarray(t)

    def shown(label: str, y: Any) -> tuple[str, np.ndarray]:
        y = np.asarray(y, dtype=float)
        if not logy:
            return label, y
        out = int(np.sum(np.isfinite(y) & (y <= 0)))
        y = np.where(y > 0, y, np.nan)
        what = f"{out} value{'s' * (out != 1)} <= 0 not drawn"
        return (f"{label} ({what})" if out else label), y

    for label, y in curves.items():
        text, y = shown(label, y)
        (line,) = ax.plot(t, y, label=text, lw=1.8)
        if bands is not None and label in bands:
            err = np.asarray(bands[label], dtype=float)
            ax.fill_between(
                t, y - err, y + err, color=line.get_color(), alpha=0.25, lw=0
            )
    for label, y in (references or {}).items():
        text, y = shown(label, y)
        ax.plot(t, y, "k--", lw=1.0, label=text)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(textwrap.fill(title, 70), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return run.save_figure(name, fig)


def plot_axes(run: RunFolder, name: str, draw: Callable[[Any], None]) -> str:
    """One axes drawn by `draw(ax)`, with a grid and a legend; returns `name`."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.0), dpi=120)
    draw(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    run.save_figure(name, fig)
    return name


def plot_q_snapshots(
    run: RunFolder,
    name: str,
    t: Any,
    grid: MarginalGrid,
    q_model: np.ndarray,
    q_ref: np.ndarray,
    *,
    count: int = 5,
    flow_label: str = "model",
    title: str = "",
) -> Path:
    """`count` snapshots of a single-mode Q marginal on `grid`: the model (top row)
    above the reference (bottom row), one colour scale and colorbar per time,
    zoomed on the square that holds the reference.

    Args:
        t: (nt,) save times; q_model, q_ref: (nt, G, G) marginals on the grid.
    """
    m, q_flow = grid.mode, q_model
    picks = np.unique(np.round(np.linspace(0, len(t) - 1, count)))
    # zoom on the square that holds every reference value above 1e-3 of the peak
    seen = np.max(q_ref, 0) > 1e-3 * q_ref.max()
    w = float(np.max(np.abs(grid.axis[np.nonzero(seen.any(0) | seen.any(1))])))
    w = min(w + 0.5, float(grid.axis[-1]))
    fig, axes = pyplot().subplots(
        2,
        len(picks),
        figsize=(3.0 * len(picks), 5.4),
        dpi=110,
        squeeze=False,
        layout="constrained",
    )
    for col, i in enumerate(picks.astype(int)):
        vmax = float(max(q_flow[i].max(), q_ref[i].max()))
        for row, (q, label) in enumerate(
            ((q_flow[i], flow_label), (q_ref[i], "reference"))
        ):
            ax = axes[row, col]
            edge = float(grid.axis[-1])
            image = ax.imshow(
                q.T,
                origin="lower",
                extent=(-edge, edge, -edge, edge),
                vmin=0,
                vmax=vmax,
                cmap="viridis",
            )
            ax.set_xlim(-w, w)
            ax.set_ylim(-w, w)
            ax.set_title(f"{label}, t = {t[i]:.3g}", fontsize=8)
            ax.set_xlabel(f"x_{m}", fontsize=8)
            ax.set_ylabel(f"p_{m}", fontsize=8)
            ax.tick_params(labelsize=7)
        bar = fig.colorbar(image, ax=axes[:, col], shrink=0.8)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return run.save_figure(name, fig)


def plot_suite(run: RunFolder, results: dict[str, Any]) -> None:
    """A comparison suite's figures: error, KL, time and memory against the real
    dimension, log-log, one line per method."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt = pyplot()
    rows = [r for r in results["rows"] if r.get("metrics") is not None]
    methods = list(dict.fromkeys(r["method"] for r in results["rows"]))
    panels = (
        ("error_vs_dim.png", "max_rel_error_n", "max relative error of <n_j>"),
        ("kl_vs_dim.png", "final_kl_exact", "KL(exact || model) at t_end"),
        ("time_vs_dim.png", "method_s", "wall time (s)"),
        ("memory_vs_dim.png", "peak_rss_MiB", "peak resident memory (MiB)"),
    )
    for fname, key, label in panels:
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
        drawn = False
        for k, name in enumerate(methods):
            pts = [
                (r["dim"], r.get(key, (r.get("metrics") or {}).get(key)))
                for r in rows
                if r["method"] == name
            ]
            pts = [(d, v) for d, v in pts if v is not None and v > 0]
            if pts:
                d, v = zip(*pts, strict=True)
                ax.loglog(d, v, "o-", label=name, color=f"C{k}")
                drawn = True
        ax.set_xticks(sorted({r["dim"] for r in results["rows"]}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("real dimension 2N")
        ax.set_ylabel(label)
        ax.set_title(f"suite {results['suite']}", fontsize=9)
        if drawn:
            ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        run.save_figure(fname, fig)


def plot_suite_curves(run: RunFolder, results: dict[str, Any]) -> Path | None:
    """A suite's curves against time (the Q-Flow paper's figure), `curves.png`: one
    column per size, rows: the centroid distance |E_Q[alpha]| of every method
    with the exact curve (dashed black), the relative PDE residual, and the L1
    distance of a mode's Q marginal with each method's sampling floor (dotted:
    a histogram of exact samples would show it). Methods without a row's curve
    (grids have no residual) or out of reach at a size are absent from that
    panel, and the panel says which. None when no row has curves."""
    plt = pyplot()
    rows = [r for r in results["rows"] if r.get("curves")]
    if not rows:
        return None
    sizes = sorted({r["dim"] for r in results["rows"]})
    methods = list(dict.fromkeys(r["method"] for r in results["rows"]))
    color = {m: f"C{k}" for k, m in enumerate(m for m in methods if m != "exact")}
    panels = (
        ("centroid", "|E_Q[alpha]|", False),
        ("pde_residual", "relative PDE residual", True),
        ("l1_q", "L1 distance of Q (mode marginal)", True),
    )
    fig, axes = plt.subplots(
        len(panels),
        len(sizes),
        figsize=(3.6 * len(sizes), 2.9 * len(panels)),
        dpi=110,
        squeeze=False,
        layout="constrained",
    )
    for col, dim in enumerate(sizes):
        at = {r["method"]: r for r in rows if r["dim"] == dim}
        missing = [
            f"{r['method']} ({r.get('status')})"
            for r in results["rows"]
            if r["dim"] == dim and r["method"] != "exact" and r["method"] not in at
        ]
        for row, (key, label, logy) in enumerate(panels):
            ax = axes[row, col]
            for name, r in at.items():
                c = r["curves"]
                t = np.asarray(c["t"], float)
                y = np.asarray([np.nan if v is None else v for v in c.get(key, [])])
                if name == "exact":
                    if key == "centroid":
                        ax.plot(t, y, "k--", lw=1.2, label="exact")
                    continue
                if y.size == 0 or not np.any(np.isfinite(y) & (~logy | (y > 0))):
                    continue
                if logy:
                    y = np.where(y > 0, y, np.nan)
                ax.plot(t, y, lw=1.5, color=color[name], label=name)
                floor = np.asarray(
                    [
                        np.nan if v is None else v
                        for v in c.get(f"{key}_noise_floor", [])
                    ]
                )
                if floor.size and np.any(floor > 0):
                    ax.plot(t, floor, ":", lw=1.0, color=color[name])
            if logy:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if row == 0:
                title = f"{dim // 2} site{'s' * (dim > 2)} (d = {dim})"
                if missing:
                    title += "\nno curve: " + ", ".join(missing)
                ax.set_title(title, fontsize=8)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == len(panels) - 1:
                ax.set_xlabel("t", fontsize=8)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
    fig.suptitle(
        f"suite {results['suite']}: dotted lines in the L1 row are sampling floors",
        fontsize=9,
    )
    return run.save_figure("curves.png", fig)
