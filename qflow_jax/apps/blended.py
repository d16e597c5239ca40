"""`run_blended`: a network, its blended comparison and a k-sweep, from a config.

Backs the CLI command `qflow blended CONFIG`. Writes summary.json, arrays.npz and
plots (Bloch components of every qubit against the blended trajectory, log-log
error vs k with the fitted slope, the Laplacian spectrum) into `out_dir`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import jax.numpy as jnp
import numpy as np
from annotated_types import Ge, Len
from pydantic import Strict, StrictBool, model_validator

from qflow_jax._deprecated import renamed
from qflow_jax.apps import run as run_app
from qflow_jax.config import (
    ConfigError,
    Float,
    Int,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Section,
    load_yaml,
    validate_model,
)
from qflow_jax.lindblad.mesolve import MESOLVE_METHODS
from qflow_jax.network.blended import (
    blended_network_mesolve,
    blended_trajectories,
    laplacian_spectrum,
)
from qflow_jax.network.diagnostics import (
    bloch_vectors,
    detect_clusters,
    frobenius_distances,
    k_sweep,
    network_trajectories,
    orbit_sweep,
    trace_distances,
)
from qflow_jax.network.dicke import dicke_operators
from qflow_jax.network.model import (
    GRAPHS,
    NAMED_COUPLINGS,
    QubitNetwork,
    collective_couplings,
)
from qflow_jax.network.solve import METHODS, network_mesolve, product_state
from qflow_jax.operators import PAULI, ket2dm
from qflow_jax.plots import plot_axes, plot_curves
from qflow_jax.runs import RunFolder

__all__ = [
    "BlendedConfig",
    "build_network",
    "initial_states",
    "run_blended",
    "validate_blended_config",
]

_STATES = ("0", "1", "+", "-", "+i", "-i")


Rates = NonNegativeFloat | list[NonNegativeFloat]  # one for all qubits, or per qubit
QubitState = Literal[_STATES] | Annotated[list[Float], Len(2, 2)]  # or [theta, phi]


class NetworkConfig(Section):
    """The qubit network: graph, swap gain k, local terms, couplings, start."""

    n: PositiveInt  # number of qubits
    graph: Literal[(*GRAPHS, "custom")] = "path"
    edges: list[list[Int | Float]] | None = None  # [[j, l, weight]...], custom graph
    p: Float = 0.5  # edge probability of the random graph
    seed: Int = 0  # seed of the random graph
    k: NonNegativeFloat  # swap gain
    fields: list[Annotated[list[Float], Len(3, 3)]] | None = None  # [hx, hy, hz]
    decay: Rates = 0.0  # L = sqrt(g) sigma_-
    pumping: Rates = 0.0  # L = sqrt(g) sigma_+
    dephasing: Rates = 0.0  # L = sqrt(g / 2) sigma_z
    couplings: list[tuple[Int, Int, Literal[NAMED_COUPLINGS], Float]] = []
    collective: list[tuple[Literal[NAMED_COUPLINGS], Float]] = []  # on all pairs
    initial: list[QubitState]  # per qubit: 0, 1, +, -, +i, -i or [theta, phi]


class DickeConfig(Section):
    """One bosonic mode coupled to all qubits (dense engine)."""

    enabled: StrictBool = False
    n_levels: PositiveInt = 6  # Fock truncation of the mode
    omega: Float = 1.0
    g: Float = 0.5  # collective coupling
    kappa: NonNegativeFloat = 0.2  # mode decay rate
    max_top_population: PositiveFloat = 1e-4


class TimesConfig(run_app.TimesConfig):
    t_end: PositiveFloat = 10.0
    n_save: Annotated[int, Strict(), Ge(2)] = 201


class SolverConfig(Section):
    method: Literal[METHODS] = "tsit5"
    rtol: PositiveFloat = 1e-8
    atol: PositiveFloat = 1e-10


class SweepConfig(Section):
    ks: Annotated[list[PositiveFloat], Len(2)] = [10.0, 30.0, 100.0, 300.0]
    t_skip: Float | None = None  # errors measured for t >= t_skip


class OrbitConfig(Section):
    """The whole state against the network-level blended orbit, vs k (`orbit_sweep`):
    connected graphs without the Dicke mode, n <= `max_n` (full states)."""

    enabled: StrictBool = True
    ks: Annotated[list[PositiveFloat], Len(2)] | None = None  # default: sweep.ks
    n_save: Annotated[int, Strict(), Ge(2)] = 11  # compared times, 0 .. t_end
    max_n: PositiveInt = 12  # keeps n_save full states of 16 4^n bytes each


class BlendedConfig(Section):
    """A `qflow blended` config."""

    name: str = "network"
    network: NetworkConfig
    dicke: DickeConfig = DickeConfig()
    times: TimesConfig = TimesConfig()
    solver: SolverConfig = SolverConfig()
    sweep: SweepConfig = SweepConfig()
    orbit: OrbitConfig = OrbitConfig()
    cluster_tol: PositiveFloat = 0.02  # trace-distance tolerance of clusters

    @model_validator(mode="after")
    def _across(self) -> BlendedConfig:
        if self.dicke.enabled and self.solver.method not in MESOLVE_METHODS:
            raise ValueError(
                f"`solver.method` {self.solver.method!r} needs the network engine's "
                "stiff swap part; with `dicke.enabled` (dense engine) choose one of "
                + ", ".join(m for m in METHODS if m in MESOLVE_METHODS)
            )
        return self


def validate_blended_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A `qflow blended` config checked against `BlendedConfig`, as a dict with
    every default filled in."""
    return validate_model(data, BlendedConfig).model_dump()


def _rates(value: Any, n: int, key: str) -> list[float]:
    vals = value if isinstance(value, list) else [value] * n
    if len(vals) != n:
        raise ConfigError(f"`network.{key}` must hold n={n} rates, got {len(vals)}")
    return [float(v) for v in vals]


def initial_states(spec: list[Any], n: int) -> np.ndarray:
    """(n, 2, 2) product-state factors from names (0, 1, +, -, +i, -i) or angles."""
    if len(spec) != n:
        raise ConfigError(f"`network.initial` must hold n={n} states, got {len(spec)}")
    out = []
    for j, s in enumerate(spec):
        if isinstance(s, str):
            if s not in _STATES:
                raise ConfigError(
                    f"`network.initial[{j}]` must be one of {_STATES}, got {s!r}"
                )
            theta, phi = {
                "0": (0, 0),
                "1": (math.pi, 0),
                "+": (math.pi / 2, 0),
                "-": (math.pi / 2, math.pi),
                "+i": (math.pi / 2, math.pi / 2),
                "-i": (math.pi / 2, -math.pi / 2),
            }[s]
        elif isinstance(s, list) and len(s) == 2:
            theta, phi = float(s[0]), float(s[1])
        else:
            raise ConfigError(
                f"`network.initial[{j}]` must be a name or [theta, phi], got {s!r}"
            )
        psi = np.array([math.cos(theta / 2), np.exp(1j * phi) * math.sin(theta / 2)])
        out.append(np.asarray(ket2dm(psi)))
    return np.stack(out)


def build_network(cfg: Mapping[str, Any]) -> QubitNetwork:
    """The `QubitNetwork` of a validated `network` config section."""
    n = cfg["n"]
    if cfg["graph"] == "custom":
        if cfg["edges"] is None:
            raise ConfigError(
                "`network.edges` is required when `network.graph` is custom"
            )
        edges = cfg["edges"]
    else:
        edges = cfg["graph"]
    X, Y, Z = PAULI["X"], PAULI["Y"], PAULI["Z"]
    fields = cfg["fields"] if cfg["fields"] is not None else [[0.0, 0.0, 0.0]] * n
    if len(fields) != n or any(len(f) != 3 for f in fields):
        raise ConfigError(f"`network.fields` must hold n={n} triples [hx, hy, hz]")
    H = [f[0] * X + f[1] * Y + f[2] * Z for f in fields]
    sm = np.array([[0, 0], [1, 0]], dtype=complex)
    jumps = [[] for _ in range(n)]
    for key, op, scale in (
        ("decay", sm, 1.0),
        ("pumping", sm.T, 1.0),
        ("dephasing", Z, 0.5),
    ):
        for j, g in enumerate(_rates(cfg[key], n, key)):
            if g > 0:
                jumps[j].append(math.sqrt(scale * g) * op)
    couplings = [tuple(c) for c in cfg["couplings"]]
    for name, strength in cfg["collective"]:
        couplings += collective_couplings(n, name, float(strength))
    try:
        return QubitNetwork(
            n,
            edges,
            cfg["k"],
            H=H,
            jump_ops=jumps,
            couplings=couplings,
            graph_p=cfg["p"],
            graph_seed=cfg["seed"],
        )
    except ValueError as err:
        raise ConfigError(f"`network`: {err}") from err


def _dicke_reduced(net, ks, rho0s, tsave, dcfg, scfg) -> tuple[np.ndarray, float]:
    """(len(ks), nt, n, 2, 2) qubit reduced states of the Dicke-type model of `net`
    at every swap gain in `ks`, and the largest population of the mode's highest
    Fock level (refused above `dicke.max_top_population`): one batched dense
    solve. The gain enters only the
    jump operators, which are stacked along a batch axis that `mesolve` splits over
    devices; the Hamiltonian is shared."""
    from qflow_jax.lindblad import TruncationError, mesolve
    from qflow_jax.operators import ptrace

    ops = [
        dicke_operators(
            net.with_k(k), dcfg["n_levels"], dcfg["omega"], dcfg["g"], dcfg["kappa"]
        )
        for k in ks
    ]
    H = ops[0][0]
    jumps = [
        jnp.stack([jnp.asarray(o[1][m]) for o in ops]) for m in range(len(ops[0][1]))
    ]
    vac = np.zeros((dcfg["n_levels"],) * 2)
    vac[0, 0] = 1.0
    rho0 = np.kron(vac, np.asarray(product_state(rho0s)))
    try:
        res = mesolve(
            jnp.asarray(H),
            jumps,
            jnp.asarray(rho0),
            jnp.asarray(tsave),
            method=scfg["method"],
            rtol=scfg["rtol"],
            atol=scfg["atol"],
            max_steps=1_000_000,
            batch_mode="map",
            fock_dims=(dcfg["n_levels"], *([2] * net.n)),
            fock_modes=(0,),
            max_top_population=dcfg["max_top_population"],
        )
    except TruncationError as err:
        raise ConfigError(
            f"`dicke.n_levels` = {dcfg['n_levels']} is too small: the mode's highest "
            f"Fock level holds {err.population:.3g} at t = {err.t:.4g} (allowed: "
            f"`dicke.max_top_population` = {err.limit:g}); raise `dicke.n_levels`"
        ) from None
    states = res.states.reshape(len(ks), *res.states.shape[-3:])
    dims = [dcfg["n_levels"]] + [2] * net.n
    reduced = np.stack(
        [np.asarray(ptrace(states, j + 1, dims)) for j in range(net.n)], axis=2
    )
    return reduced, float(np.max(res.top_population))


def run_blended(
    config: Mapping[str, Any] | str | Path, out_dir: str | Path
) -> dict[str, Any]:
    r"""Runs a qubit network against its blended dynamics and sweeps the gain k.

    The network (docs/physics.md, section 2) is integrated from a product state; each
    qubit's reduced state rho_j(t) is compared with the blended trajectory
    rhobar(t) of its connected component (d rhobar/dt = B rhobar, B the average
    local generator), clusters are detected, and a k-sweep fits
    max_j ||rho_j - rhobar||_1 ~ k^slope. For a connected graph (pair couplings
    allowed) the whole state is compared with the network-level blended orbit at
    `orbit.n_save` times for each gain (`orbit_sweep`): its distance ~ k^slope
    (metrics `orbit_slope`, `orbit_distance_max_k`; plot orbit_vs_k.png). With
    `dicke.enabled` the qubits also couple to one bosonic mode (dense engine) and
    are compared with their mean.

    Args:
        config: a mapping or a YAML path following `BlendedConfig`.
        out_dir: folder for summary.json, arrays.npz and the plots.

    Returns:
        The summary dict written to summary.json.

    Examples:
        >>> config = {"network": {"n": 2, "k": 30.0, "decay": 0.5,
        ...     "fields": [[0.3, 0, 0.5], [0.3, 0, 1.5]], "initial": ["0", "1"]},
        ...     "times": {"t_end": 6.0, "n_save": 31}, "sweep": {"ks": [30.0, 300.0]}}
        >>> summary = run_blended(config, "runs/path3")
        >>> print(round(summary["metrics"]["sweep_slope"], 1))  # error ~ 1/k
        -1.0
    """
    raw = load_yaml(config) if isinstance(config, str | Path) else config
    cfg = validate_blended_config(raw)
    run = RunFolder(out_dir)
    started = time.perf_counter()
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        net = build_network(cfg["network"])
    notes += [str(w.message) for w in caught if "disconnected" in str(w.message)]
    n = net.n
    rho0s = initial_states(cfg["network"]["initial"], n)
    tsave = np.linspace(0.0, cfg["times"]["t_end"], cfg["times"]["n_save"])
    scfg, dcfg = cfg["solver"], cfg["dicke"]
    opts = {"method": scfg["method"], "rtol": scfg["rtol"], "atol": scfg["atol"]}

    if dcfg["enabled"]:
        reduced, top = _dicke_reduced(net, [net.k], rho0s, tsave, dcfg, scfg)
        reduced = reduced[0]
        # the mode couples all qubits: the reference is their mean reduced state
        blended = np.broadcast_to(reduced.mean(axis=1, keepdims=True), reduced.shape)
        reference = "mean reduced state of the qubits (collective mode: no closed B)"
    else:
        reduced = network_trajectories(net, rho0s, tsave, **opts)
        blended = blended_trajectories(net, rho0s, tsave)
        reference = "blended trajectory exp(B t) rhobar(0) of each component"
    tdist = trace_distances(reduced, blended)
    fdist = frobenius_distances(reduced, blended)
    tail = tsave >= 0.5 * tsave[-1]
    clusters = detect_clusters(reduced[tail], cfg["cluster_tol"])
    if len(net.components) > 1:
        notes.append(
            f"disconnected graph: clusters form per component {net.components}; "
            f"found {clusters}"
        )

    summary: dict[str, Any] = {
        "name": cfg["name"],
        "n": n,
        "edges": [
            [j, q, float(w)] for (j, q), w in zip(net.edges, net.weights, strict=True)
        ],
        "components": net.components,
        "engine": "dense mesolve (Dicke)"
        if dcfg["enabled"]
        else ("reduced-state system" if net.is_local else "structured network engine"),
        "reference": reference,
        "clusters": clusters,
        "notes": notes,
    }
    metrics: dict[str, float] = {
        "max_trace_distance_late": float(tdist[tail].max()),
        "max_frobenius_distance_late": float(fdist[tail].max()),
        "lambda2": net.algebraic_connectivity(),
    }

    if dcfg["enabled"]:
        sweep_k = [float(k) for k in cfg["sweep"]["ks"]]
        sweep_err = []
        reduced_k, top_k = _dicke_reduced(net, sweep_k, rho0s, tsave, dcfg, scfg)
        metrics["dicke_max_top_population"] = max(top, top_k)
        for red_k in reduced_k:
            dev = trace_distances(red_k, red_k.mean(axis=1, keepdims=True))
            sweep_err.append(float(dev[tail].max()))
        slope, intercept = np.polyfit(np.log(sweep_k), np.log(sweep_err), 1)
        sweep = {
            "ks": np.asarray(sweep_k),
            "max_error": np.asarray(sweep_err),
            "k_times_error": np.asarray(sweep_k) * np.asarray(sweep_err),
            "slope": float(slope),
            "intercept": float(intercept),
        }
    else:
        sweep = k_sweep(
            net, rho0s, tsave, cfg["sweep"]["ks"], t_skip=cfg["sweep"]["t_skip"], **opts
        )
    summary["sweep"] = sweep
    metrics["sweep_slope"] = sweep["slope"]

    if n <= 5:
        spec = laplacian_spectrum(net)
        eig, label = spec["eigenvalues"], "quantum Laplacian L_Q"
        summary["laplacian"] = {k: v for k, v in spec.items() if k != "eigenvalues"}
    else:
        eig, label = np.linalg.eigvalsh(net.graph_laplacian()), "graph Laplacian L_G"
        summary["laplacian"] = {
            "kernel_dim_expected": math.prod(
                math.comb(len(c) + 3, 3) for c in net.components
            ),
            "lambda2_graph": net.algebraic_connectivity(),
            "note": "dense L_Q spectrum only for n <= 5; graph Laplacian plotted",
        }
    if not dcfg["enabled"] and n <= 6 and len(net.components) == 1:
        full = network_mesolve(
            net, product_state(rho0s), tsave, save_states=True, **opts
        )
        blend = blended_network_mesolve(net, product_state(rho0s), tsave, **opts)
        orbit = trace_distances(np.asarray(full.states), np.asarray(blend.states))
        metrics["orbit_attraction_late"] = float(orbit[tail].max())

    ocfg = cfg["orbit"]
    orbit = None
    if ocfg["enabled"] and not dcfg["enabled"] and len(net.components) == 1:
        if n > ocfg["max_n"]:
            notes.append(
                f"orbit attraction not measured: n={n} > orbit.max_n={ocfg['max_n']} "
                "(full states)"
            )
        else:
            orbit = orbit_sweep(
                net,
                list(rho0s),
                np.linspace(0.0, cfg["times"]["t_end"], ocfg["n_save"]),
                ocfg["ks"] or cfg["sweep"]["ks"],
                t_skip=cfg["sweep"]["t_skip"],
                **opts,
            )
            summary["orbit"] = {
                k: v
                for k, v in orbit.items()
                if k not in ("distances", "blended_reduced")
            }
            metrics["orbit_slope"] = orbit["slope"]
            metrics["orbit_distance_max_k"] = float(orbit["max_distance"][-1])

    bloch = bloch_vectors(reduced)
    bloch_bar = bloch_vectors(blended)
    plots = []
    for c, axis in enumerate("xyz"):
        plots.append(
            plot_curves(
                run,
                f"bloch_{axis}.png",
                tsave,
                {f"qubit {j}": bloch[:, j, c] for j in range(n)},
                {"blended" if not dcfg["enabled"] else "mean": bloch_bar[:, 0, c]},
                ylabel=f"<sigma_{axis}>",
                title=f"Bloch {axis} of every qubit vs blended",
            ).name
        )

    def draw_fit(fit, key, label, ylabel):
        """log-log `fit[key]` vs k with the fitted power law."""

        def draw(ax):
            ks = np.asarray(fit["ks"])
            ax.loglog(ks, np.asarray(fit[key]), "o-", label=label)
            ax.loglog(
                ks,
                np.exp(fit["intercept"]) * ks ** fit["slope"],
                "k--",
                label=f"fit: slope {fit['slope']:.3f}",
            )
            ax.set_xlabel("k")
            ax.set_ylabel(ylabel)

        return draw

    def draw_spectrum(ax):
        ax.plot(np.arange(eig.size), np.sort(eig), ".", label=label)
        ax.axhline(
            net.algebraic_connectivity(),
            color="k",
            ls="--",
            lw=0.8,
            label="lambda_2(G)",
        )
        ax.set_xlabel("index")
        ax.set_ylabel("eigenvalue")

    draw_sweep = draw_fit(
        sweep, "max_error", "max_j ||rho_j - rhobar||_1 / 2", "max error"
    )
    plots.append(plot_axes(run, "error_vs_k.png", draw_sweep))
    if orbit is not None:
        draw_orbit = draw_fit(
            orbit,
            "max_distance",
            "max_t ||rho(t) - rhobar(t)||_F",
            "distance to the blended orbit",
        )
        plots.append(plot_axes(run, "orbit_vs_k.png", draw_orbit))
    plots.append(plot_axes(run, "laplacian_spectrum.png", draw_spectrum))
    plots.append(
        plot_curves(
            run,
            "distances.png",
            tsave,
            {f"qubit {j}": tdist[:, j] for j in range(n)},
            ylabel="trace distance to blended",
            logy=True,
        ).name
    )
    run.save_arrays(
        "arrays.npz",
        tsave=tsave,
        reduced=reduced,
        blended=blended,
        trace_distance=tdist,
        frobenius_distance=fdist,
        bloch=bloch,
        **(
            {}
            if orbit is None
            else {"orbit_distances": orbit["distances"], "orbit_ks": orbit["ks"]}
        ),
    )
    summary["plots"] = plots
    timings_s = {"wall": time.perf_counter() - started}
    return run.write_summary("blended", cfg, metrics, timings_s, **summary)


# deprecated: the schema is the pydantic model
__getattr__ = renamed(__name__, {"BLENDED_SCHEMA": "BlendedConfig"}, globals())
