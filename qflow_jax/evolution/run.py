"""`qflow run`: a Q-Flow simulation from a validated config, with checkpoints.

The default problem is a damped single-mode oscillator from a coherent state,
evolved by TDVP to t = 2/gamma and compared with its exact solution.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sla
from tqdm import tqdm

from qflow_jax.config import (
    ConfigError,
    Field,
    at_least_two,
    non_negative,
    positive,
    validate,
)
from qflow_jax.evolution.euler_kl import EulerKLSettings, euler_kl_evolve
from qflow_jax.evolution.observables import normalization, sample_observables
from qflow_jax.evolution.tdvp import LINEAR_SOLVERS, TDVPSettings, tdvp_evolve
from qflow_jax.flows import NormalizingFlow
from qflow_jax.husimi import a, adag, compile_qpde
from qflow_jax.runs import RunFolder, pyplot, to_jsonable, versions

__all__ = ["DEFAULT_QFLOW_CONFIG", "QFLOW_SCHEMA", "run_qflow"]


def _pairs(value: Any) -> str | None:
    ok = isinstance(value, list) and all(
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in v)
        for v in value
    )
    return (
        None if ok and value else "must be a list of [real, imag] pairs, one per mode"
    )


def _widths(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, int) and v > 0 for v in value)
    return None if ok else "must be a list of positive integers"


QFLOW_SCHEMA: dict[str, Any] = {
    "name": Field(str, "qflow", doc="run name (default output folder runs/NAME)"),
    "model": {
        "kind": Field(
            str, "damped_modes", choices=("damped_modes",), doc="model family"
        ),
        "modes": Field(int, 1, check=positive, doc="number of modes N"),
        "omega": Field(float, 1.0, doc="mode frequency"),
        "gamma": Field(float, 1.0, check=positive, doc="energy decay rate per mode"),
        "hopping": Field(float, 0.0, doc="nearest-neighbour hopping J on a chain"),
    },
    "initial": {
        "kind": Field(str, "coherent", choices=("coherent",)),
        "alpha": Field(list, [[2.0, 0.0]], check=_pairs, doc="amplitude per mode"),
    },
    "flow": {
        "layers": Field(int, 2, check=positive),
        "coupling": Field(str, "affine", choices=("affine", "spline")),
        "hidden": Field(list, [8], check=_widths),
        "bins": Field(int, 8, check=positive),
        "lu_mixing": Field(bool, False),
    },
    "method": Field(str, "tdvp", choices=("tdvp", "euler-kl")),
    "tdvp": {
        "batch_size": Field(int, 1024, check=positive),
        "s_builder": Field(str, "dense", choices=("dense", "matrix_free")),
        "linear_solver": Field(str, "pinv", choices=tuple(LINEAR_SOLVERS)),
        "diag_shift": Field(float, 1e-6, check=non_negative),
        "rcond": Field(float, 1e-10, check=non_negative),
        "snr_cutoff": Field(float, 2.0, check=non_negative),
        "cg_maxiter": Field(int, 200, check=positive),
        "ode_solver": Field(str, "rk4", choices=("heun", "rk4", "tsit5")),
        "dt": Field(float, 0.02, check=positive),
        "rtol": Field(float, 1e-4, check=positive),
        "atol": Field(float, 1e-6, check=positive),
    },
    "euler_kl": {
        "dt": Field(float, 0.02, check=positive),
        "batch_size": Field(int, 512, check=positive),
        "learning_rate": Field(float, 3e-3, check=positive),
        "schedule": Field(str, "cosine", choices=("constant", "cosine")),
        "max_inner_steps": Field(int, 50, check=positive),
        "min_inner_steps": Field(int, 50, check=positive),
        "window": Field(int, 10, check=positive),
        "loss_tol": Field(float, 1e-6, check=positive),
        "objective": Field(str, "reverse", choices=("forward", "reverse")),
        "scheme": Field(str, "midpoint", choices=("euler", "midpoint")),
    },
    "times": {
        "t_end": Field(float, 2.0, check=positive, doc="final time"),
        "n_save": Field(int, 11, check=at_least_two),
    },
    "seed": Field(int, 0),
    "eval_samples": Field(
        int,
        400_000,
        check=positive,
        doc="samples per observable estimate (error ~ 1/sqrt)",
    ),
    "checkpoint_every": Field(int, 1, check=positive, doc="intervals per checkpoint"),
    "output": {"dir": Field(str, None, doc="output folder (default runs/NAME)")},
}

DEFAULT_QFLOW_CONFIG: dict[str, Any] = {
    "name": "damped_1mode",
    "model": {"kind": "damped_modes", "modes": 1, "omega": 1.0, "gamma": 1.0},
    "initial": {"kind": "coherent", "alpha": [[2.0, 0.0]]},
    "method": "tdvp",
    "times": {"t_end": 2.0, "n_save": 11},
}


class _DampedModes:
    """H = sum_j omega a_j^dag a_j + J sum_j (a_j^dag a_j+1 + h.c.), L_j = sqrt(g) a_j,
    coherent start: exact coherent product alpha(t) = expm(-(iM + g/2) t) alpha0."""

    def __init__(self, cfg: dict[str, Any], alpha0: np.ndarray):
        N, w, g, J = cfg["modes"], cfg["omega"], cfg["gamma"], cfg["hopping"]
        self.M = w * np.eye(N) + J * (np.eye(N, k=1) + np.eye(N, k=-1))
        self.g, self.alpha0, self.N = g, alpha0, N
        H = sum((w * adag(j) @ a(j) for j in range(N)), start=0.0 * a(0))
        H = H + sum(
            (J * (adag(j) @ a(j + 1) + adag(j + 1) @ a(j)) for j in range(N - 1)),
            start=0.0 * a(0),
        )
        self.pde = compile_qpde(H, [np.sqrt(g) * a(j) for j in range(N)], n_modes=N)

    def alpha(self, t: float) -> np.ndarray:
        return (
            sla.expm(-(1j * self.M + 0.5 * self.g * np.eye(self.N)) * t) @ self.alpha0
        )

    def exact_samples(self, key: jax.Array, t: float, n: int) -> jax.Array:
        mean = _to_real(self.alpha(t))
        return mean + jnp.sqrt(0.5) * jax.random.normal(key, (n, 2 * self.N))

    def exact_logq(self, t: float) -> Any:
        mean = _to_real(self.alpha(t))
        return lambda y: -jnp.sum((y - mean) ** 2, -1) - self.N * jnp.log(jnp.pi)


def _to_real(alpha: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(np.stack([alpha.real, alpha.imag], -1).reshape(-1))


def _settings(cfg: dict[str, Any]) -> EulerKLSettings | TDVPSettings:
    if cfg["method"] == "tdvp":
        return TDVPSettings(**cfg["tdvp"])
    return EulerKLSettings(**cfg["euler_kl"])


def _evaluate(flow, params, model, t, key, n) -> dict[str, Any]:
    k1, k2 = jax.random.split(key)
    x, _ = flow.apply(params, k1, n, method=NormalizingFlow.sample_and_log_prob)
    obs = sample_observables(x)
    y = model.exact_samples(k2, t, n)
    kl = jnp.mean(model.exact_logq(t)(y) - flow.apply(params, y))
    n_exact = np.abs(model.alpha(t)) ** 2
    return {
        "t": float(t),
        "n": np.asarray(obs["n"]).tolist(),
        "n_err": np.asarray(obs["n_err"]).tolist(),
        "n_exact": n_exact.tolist(),
        "a": to_jsonable(np.asarray(obs["a"])),
        # relative error over the modes holding at least 0.05 quanta
        "max_rel_error_n": float(
            np.max(
                np.where(
                    n_exact >= 0.05,
                    np.abs(np.asarray(obs["n"]) - n_exact) / np.maximum(n_exact, 0.05),
                    0.0,
                )
            )
        ),
        "max_abs_error_n": float(np.max(np.abs(np.asarray(obs["n"]) - n_exact))),
        "kl_exact_flow": float(kl),
    }


def _save_checkpoint(
    run: RunFolder,
    interval: int,
    params: Any,
    records: list[dict[str, Any]],
    infos: list[dict[str, Any]],
) -> None:
    blob = np.frombuffer(flax.serialization.to_bytes(params), dtype=np.uint8)
    run.save_arrays(
        "checkpoint.npz",
        interval=np.asarray(interval),
        params=blob,
        records=np.asarray(
            json.dumps(to_jsonable({"records": records, "infos": infos}))
        ),
    )


def _load_checkpoint(path: Path, template: Any) -> tuple[int, Any, list, list]:
    with np.load(path) as data:
        params = flax.serialization.from_bytes(template, data["params"].tobytes())
        state = json.loads(str(data["records"]))
        return int(data["interval"]), params, state["records"], state["infos"]


def validate_qflow_config(data: dict[str, Any]) -> dict[str, Any]:
    cfg = validate(copy.deepcopy(data), QFLOW_SCHEMA)
    if len(cfg["initial"]["alpha"]) != cfg["model"]["modes"]:
        raise ConfigError(
            f"`initial.alpha` has {len(cfg['initial']['alpha'])} entries but "
            f"`model.modes` is {cfg['model']['modes']}"
        )
    return cfg


def run_qflow(
    config: dict[str, Any],
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs Q-Flow on the configured problem; writes summary.json, observables.npz,
    checkpoint.npz and PNG plots. With `resume`, continues from checkpoint.npz to
    the same final result as an uninterrupted run with the same seed (every interval
    draws its randomness from fold_in(seed, interval)).
    """
    cfg = validate_qflow_config(config)
    run = RunFolder(out_dir or cfg["output"]["dir"] or Path("runs") / cfg["name"])
    alpha0 = np.array([complex(*p) for p in cfg["initial"]["alpha"]])
    model = _DampedModes(cfg["model"], alpha0)
    fcfg = cfg["flow"]
    flow = NormalizingFlow(
        dim=2 * model.N,
        n_layers=fcfg["layers"],
        coupling=fcfg["coupling"],
        hidden=tuple(fcfg["hidden"]),
        n_bins=fcfg["bins"],
        lu_mixing=fcfg["lu_mixing"],
        init_mean=tuple(np.asarray(_to_real(alpha0))),
        init_scale=float(np.sqrt(0.5)),
    )
    # Q(0) of a coherent product is N(alpha0, I/2): the new flow is exactly Q(0).
    params = flow.init(jax.random.key(cfg["seed"]), jnp.zeros((1, flow.dim)))
    tsave = np.linspace(0.0, cfg["times"]["t_end"], cfg["times"]["n_save"])
    settings = _settings(cfg)
    evolve = tdvp_evolve if cfg["method"] == "tdvp" else euler_kl_evolve
    base = jax.random.key(cfg["seed"] + 1)
    eval_key = jax.random.key(cfg["seed"] + 2)
    start, records, infos = 0, [], []
    ckpt = run.path / "checkpoint.npz"
    if resume and ckpt.exists():
        start, params, records, infos = _load_checkpoint(ckpt, params)
    if start == 0:
        records = [_evaluate(flow, params, model, 0.0, eval_key, cfg["eval_samples"])]
    started = time.perf_counter()
    bar = tqdm(
        range(start, len(tsave) - 1),
        disable=not progress,
        desc=cfg["name"],
        initial=start,
        total=len(tsave) - 1,
    )
    for i in bar:
        out, info = evolve(
            flow,
            model.pde,
            params,
            tsave[i : i + 2],
            jax.random.fold_in(base, i),
            settings,
        )
        params = out[-1]
        infos.append(info[0])
        records.append(
            _evaluate(
                flow,
                params,
                model,
                tsave[i + 1],
                jax.random.fold_in(eval_key, i + 1),
                cfg["eval_samples"],
            )
        )
        bar.set_postfix(
            t=f"{tsave[i + 1]:.3g}",
            rel_err_n=f"{records[-1]['max_rel_error_n']:.2e}",
            kl=f"{records[-1]['kl_exact_flow']:.1e}",
        )
        if (i + 1) % cfg["checkpoint_every"] == 0 or i + 2 == len(tsave):
            _save_checkpoint(run, i + 1, params, records, infos)
    wall = time.perf_counter() - started

    # proposal: a Gaussian 25% wider than the flow's samples in every direction
    xs, _ = flow.apply(
        params,
        jax.random.key(cfg["seed"] + 3),
        10_000,
        method=NormalizingFlow.sample_and_log_prob,
    )
    norm, norm_err = normalization(
        lambda y: flow.apply(params, y),
        jax.random.key(cfg["seed"] + 4),
        flow.dim,
        xs.mean(0),
        1.25 * float(xs.std(0).max()),
    )
    summary = {
        "command": "run",
        "config": cfg,
        "versions": versions(),
        "timings_s": {"evolution_wall_this_session": wall},
        "metrics": {
            "max_rel_error_n": max(r["max_rel_error_n"] for r in records),
            "max_abs_error_n": max(r["max_abs_error_n"] for r in records),
            "final_kl_exact_flow": records[-1]["kl_exact_flow"],
            "normalization": float(norm),
            "normalization_stderr": float(norm_err),
        },
        "records": records,
        "intervals": infos,
    }
    t = np.array([r["t"] for r in records])
    n_flow = np.array([r["n"] for r in records])
    n_exact = np.array([r["n_exact"] for r in records])
    run.save_arrays(
        "observables.npz",
        t=t,
        n=n_flow,
        n_exact=n_exact,
        n_err=np.array([r["n_err"] for r in records]),
    )
    shown = range(min(model.N, 6))
    run.plot_curves(
        "observables.png",
        t,
        {f"<n_{j}> flow": n_flow[:, j] for j in shown},
        {f"<n_{j}> exact": n_exact[:, j] for j in shown},
        ylabel="<a^dag a>",
        title=f"{cfg['name']}: Q-Flow ({cfg['method']}) vs exact",
    )
    _plot_snapshots(run, flow, params, model, tsave[-1], cfg)
    run.write_json("summary.json", summary)
    summary["folder"] = str(run.path)
    return summary


def _plot_snapshots(run: RunFolder, flow, params, model, t, cfg) -> None:
    """Marginal of (x_0, p_0) at the final time: flow samples next to the exact Q."""
    x, _ = flow.apply(
        params, jax.random.key(7), 50_000, method=NormalizingFlow.sample_and_log_prob
    )
    y = model.exact_samples(jax.random.key(8), t, 50_000)
    fig, axes = pyplot().subplots(
        1, 2, figsize=(8, 3.8), dpi=110, sharex=True, sharey=True
    )
    for ax, pts, title in ((axes[0], x, "flow"), (axes[1], y, "exact")):
        ax.hist2d(
            np.asarray(pts[:, 0]),
            np.asarray(pts[:, 1]),
            bins=60,
            range=[[-4, 4], [-4, 4]],
            density=True,
        )
        ax.set_title(f"{title}: Q marginal (x_0, p_0), t = {t:.3g}")
        ax.set_xlabel("x_0")
    axes[0].set_ylabel("p_0")
    run.save_figure("q_snapshot.png", fig)
