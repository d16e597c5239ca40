"""`qflow run`: a Q-Flow simulation from a validated config, with checkpoints.

A config chooses the model, the initial state, the flow, the method (TDVP or
Euler-KL) and its settings, the save times, the seed and the output folder. Two
model kinds share one run loop through a small interface (`Reference`): the compiled
Q-PDE, the reference <n_j>(t) and <a_j>(t) at the save times, and the reference
single-mode marginal Q of one chosen mode on a grid.

- `damped_modes`: damped modes on a chain with hopping from a coherent product; the
  reference is the exact coherent solution (exact samples and log Q as well).
- `expression`: H and the jump operators written as strings in the operator algebra
  (`"U/2 * adag(0)**2 @ a(0)**2"`, `"sqrt(gamma) * a(0)"`) with named constants;
  the reference is the Lindblad equation solved by `mesolve` in a truncated Fock
  basis built from the same expressions (`BosonOp.to_matrix`).

Initial states: coherent (the new flow is exactly Q(0)), cat (one mode), Fock and
thermal products. The last three are pre-trained, by maximum likelihood on exact
samples of Q(0) (the default; cat samples by rejection from the two coherent
Gaussians) or by the reverse KL to the analytic log Q(0).

The default problem is a damped single-mode oscillator from a coherent state,
evolved by TDVP to t = 2/gamma and compared with its exact solution.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from annotated_types import Ge, Len
from pydantic import Strict, StrictBool, field_validator, model_validator
from tqdm import tqdm

from qflow_jax._deprecated import renamed
from qflow_jax.checkpoints import Checkpoints
from qflow_jax.config import (
    ConfigError,
    Float,
    Int,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Section,
    kinds,
    validate_model,
)
from qflow_jax.evolution._flowfns import logq_fn, sample_and_log_prob
from qflow_jax.evolution.euler_kl import EulerKLSettings
from qflow_jax.evolution.evolve import evolve
from qflow_jax.evolution.observables import normalization, sample_observables
from qflow_jax.evolution.pretrain import PretrainSettings, pretrain
from qflow_jax.evolution.tdvp import TDVP, TDVPSettings, tdvp_residual
from qflow_jax.flows import NormalizingFlow
from qflow_jax.husimi.expressions import RESERVED, model_operators
from qflow_jax.husimi.initial import (
    CatState,
    CoherentState,
    FockState,
    InitialState,
    ThermalState,
)
from qflow_jax.husimi.models import DampedChain
from qflow_jax.lindblad.mesolve import TruncationError
from qflow_jax.metrics import (
    METRIC_DEFINITIONS,
    MarginalGrid,
    centroid_errors,
    compare_marginal,
    record_metrics,
)
from qflow_jax.plots import plot_curves, plot_q_snapshots
from qflow_jax.references import (
    ExactDampedChain,
    FockReference,
    Reference,
    TrajectoryReference,
)
from qflow_jax.runs import (
    RunFolder,
    fingerprint,
    to_jsonable,
)

__all__ = [
    "DEFAULT_QFLOW_CONFIG",
    "QFlowConfig",
    "QFlowSetup",
    "run_qflow",
    "setup_qflow",
    "validate_qflow_config",
]

# ------------------------------------------------------------------ config schema

_MAX_FOCK_DIM = 2048
ComplexPair = Annotated[list[Float], Len(2, 2)]


class DampedModesModel(Section):
    """N damped modes on a chain with hopping J (`DampedChain`): exact reference."""

    kind: Literal["damped_modes"] = "damped_modes"
    modes: PositiveInt = 1
    omega: Float = 1.0
    gamma: PositiveFloat = 1.0
    hopping: Float = 0.0


class ExpressionModel(Section):
    """H and the jump operators as operator expressions with named constants; the
    reference solves the Lindblad equation in a truncated Fock basis."""

    kind: Literal["expression"]
    modes: PositiveInt = 1
    hamiltonian: str
    jump_ops: list[str] = []
    constants: dict[str, Float] = {}

    @field_validator("constants")
    @classmethod
    def _names(cls, constants: dict[str, float]) -> dict[str, float]:
        for name in constants:
            if not name.isidentifier():
                raise ValueError(f"names must be identifiers, got {name!r}")
            if name in RESERVED:
                reserved = ", ".join(sorted(RESERVED))
                raise ValueError(f"name {name!r} is reserved ({reserved})")
        return constants

    @model_validator(mode="after")
    def _parse(self) -> ExpressionModel:
        _operators(self.hamiltonian, self.jump_ops, self.constants, self.modes)
        return self


@functools.lru_cache(maxsize=8)
def _parsed(hamiltonian, jump_ops, constants, modes):
    return model_operators(hamiltonian, list(jump_ops), dict(constants), modes)


def _operators(hamiltonian: str, jump_ops, constants, modes: int):
    """H and the jump operators of an expression model, parsed once per process
    (validation and the reference share them)."""
    return _parsed(hamiltonian, tuple(jump_ops), tuple(constants.items()), modes)


class CoherentInitial(Section):
    """A coherent product: the new flow is exactly Q(0) (no pre-training)."""

    kind: Literal["coherent"] = "coherent"
    alpha: list[ComplexPair]

    def state(self) -> InitialState:
        return CoherentState([complex(*p) for p in self.alpha])


class CatInitial(Section):
    """The one-mode cat |alpha> + sign |-alpha>."""

    kind: Literal["cat"]
    alpha: list[ComplexPair]  # one mode
    sign: Literal[1, -1] = 1

    def state(self) -> InitialState:
        return CatState([complex(*self.alpha[0])], self.sign)


class FockInitial(Section):
    """A Fock product |n_0> x |n_1> ..."""

    kind: Literal["fock"]
    n: list[NonNegativeInt]

    def state(self) -> InitialState:
        return FockState(self.n)


class ThermalInitial(Section):
    """A product of thermal states with occupations nth_j."""

    kind: Literal["thermal"]
    nth: list[NonNegativeFloat]

    def state(self) -> InitialState:
        return ThermalState(self.nth)


class FlowConfig(Section):
    """The normalizing flow (`NormalizingFlow`)."""

    layers: PositiveInt = 2
    coupling: Literal["affine", "spline"] = "affine"
    hidden: Annotated[list[PositiveInt], Len(1)] = [8]
    bins: PositiveInt = 8
    lu_mixing: StrictBool = False
    scale: Literal["cholesky", "diagonal"] = "cholesky"


class ReferenceConfig(Section):
    """The Fock-space reference of expression models (`FockReference`)."""

    kind: Literal["fock"] = "fock"
    cutoff: PositiveInt = 30  # Fock levels per mode
    rtol: PositiveFloat = 1e-8
    atol: PositiveFloat = 1e-10
    max_top_population: PositiveFloat = 1e-4


class TrajectoryReferenceConfig(Section):
    """The quantum-trajectory reference of expression models
    (`TrajectoryReference`): `mcsolve` in the basis of at most `max_excitations`
    quanta, for many modes; the Q marginal of `metrics.mode` is averaged."""

    kind: Literal["trajectories"]
    max_excitations: PositiveInt
    ntraj: PositiveInt = 1000
    rtol: PositiveFloat = 1e-6
    atol: PositiveFloat = 1e-8
    max_truncated_weight: PositiveFloat = 1e-4
    # KL(q || Q) at t_end on this many flow samples (0: not measured); keeps the
    # trajectories' final kets in memory (ntraj x D complex values)
    kl_samples: NonNegativeInt = 0


class MetricsConfig(Section):
    """Where Q marginals are compared: mode, grid, snapshots."""

    mode: NonNegativeInt = 0
    grid_points: Annotated[int, Strict(), Ge(2)] = 101
    grid_half_width: PositiveFloat | None = None  # default sqrt(max <n> + 1) + 4
    snapshots: Annotated[int, Strict(), Ge(2)] = 5


class TimesConfig(Section):
    t_end: PositiveFloat = 2.0
    n_save: Annotated[int, Strict(), Ge(2)] = 11


class OutputConfig(Section):
    dir: str | None = None  # default runs/NAME


class QFlowConfig(Section):
    """A `qflow run` config: the schema, with every default.

    Examples:
        >>> cfg = QFlowConfig.model_validate(DEFAULT_QFLOW_CONFIG)
        >>> cfg.model.gamma, cfg.tdvp.batch_size, cfg.euler_kl.dt
        (1.0, 1024, 0.02)
    """

    name: str = "qflow"
    model: kinds(DampedModesModel, ExpressionModel, default="damped_modes") = (
        DampedModesModel()
    )
    initial: kinds(
        CoherentInitial, CatInitial, FockInitial, ThermalInitial, default="coherent"
    )
    pretrain: PretrainSettings = PretrainSettings()
    flow: FlowConfig = FlowConfig()
    method: Literal["tdvp", "euler-kl"] = "tdvp"
    tdvp: TDVPSettings = TDVPSettings()
    euler_kl: EulerKLSettings = EulerKLSettings()
    reference: kinds(ReferenceConfig, TrajectoryReferenceConfig, default="fock") = (
        ReferenceConfig()
    )
    metrics: MetricsConfig = MetricsConfig()
    times: TimesConfig = TimesConfig()
    seed: Int = 0
    eval_samples: PositiveInt = 400_000  # samples per estimate (error ~ 1/sqrt)
    checkpoint_every: PositiveInt = 1  # save intervals per checkpoint
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _across(self) -> QFlowConfig:
        model, init, N = self.model, self.initial, self.model.modes
        if model.kind == "damped_modes" and init.kind != "coherent":
            raise ValueError(
                "model kind 'damped_modes' has an exact reference only for "
                f"`initial.kind: coherent`, got {init.kind!r}; write the model as "
                "kind 'expression' (Fock-space reference) instead"
            )
        if init.kind == "cat" and N != 1:
            raise ValueError(
                f"`initial.kind: cat` is implemented for one mode, got "
                f"`model.modes` = {N}"
            )
        key = {"fock": "n", "thermal": "nth"}.get(init.kind, "alpha")
        if len(getattr(init, key)) != N:
            raise ValueError(
                f"`initial.{key}` has {len(getattr(init, key))} entries but "
                f"`model.modes` is {N}"
            )
        if init.kind == "cat" and init.alpha == [[0.0, 0.0]] and init.sign < 0:
            raise ValueError("`initial.alpha` must be nonzero for an odd cat state")
        if self.metrics.mode >= N:
            raise ValueError(
                f"`metrics.mode` must be a mode index below {N}, got "
                f"{self.metrics.mode}"
            )
        if self.reference.kind == "trajectories":
            if init.kind not in ("coherent", "fock"):
                raise ValueError(
                    "`reference.kind` = trajectories needs a pure product start: "
                    f"`initial.kind` coherent or fock, got {init.kind}"
                )
            return self
        D = self.reference.cutoff**N
        if model.kind == "expression" and D > _MAX_FOCK_DIM:
            raise ValueError(
                f"`reference.cutoff` = {self.reference.cutoff} gives a Fock space of "
                f"dimension {D} for {N} modes; the dense reference allows at most "
                f"{_MAX_FOCK_DIM}"
            )
        return self


DEFAULT_QFLOW_CONFIG: dict[str, Any] = {
    "name": "damped_1mode",
    "model": {"kind": "damped_modes", "modes": 1, "omega": 1.0, "gamma": 1.0},
    "initial": {"kind": "coherent", "alpha": [[2.0, 0.0]]},
    "method": "tdvp",
    # as configs/damped_1mode.yaml (TDVPSettings' defaults: 2048 samples, dt 0.01)
    "tdvp": {"batch_size": 1024, "dt": 0.02},
    "times": {"t_end": 2.0, "n_save": 11},
}

# ------------------------------------------------------------------------ metrics


def _evaluate(
    flow, params, setup: QFlowSetup, i: int, t: float, key
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of the flow at save time i against the reference; also the flow's
    Q marginal on the grid."""
    cfg, problem, grid = setup.cfg, setup.problem, setup.grid
    stderr = getattr(problem, "n_stderr", None)  # a statistical reference
    n_samples, m = cfg["eval_samples"], grid.mode
    k1, k2, k3 = jax.random.split(key, 3)
    x, log_q = sample_and_log_prob(flow, params, k1, n_samples)
    obs = sample_observables(x)
    n_flow = np.asarray(obs["n"])
    Q = problem.q_marginal(i, m, grid.alphas)
    nonfinite = 0
    if problem.n_modes == 1:
        q = np.exp(np.asarray(flow.apply(params, jnp.asarray(grid.points))))
        # an affine coupling may overflow far out on the grid; such points count
        # as q = 0 (the reference mass there then adds to the L1 distance)
        nonfinite = int(np.sum(~np.isfinite(q)))
        q = np.where(np.isfinite(q), q, 0.0).reshape(grid.shape)
        histogram = {}
    else:
        q, histogram = grid.histogram(np.asarray(x[:, 2 * m : 2 * m + 2]), Q)
    record = {
        "t": float(t),
        "n": n_flow.tolist(),
        "n_err": np.asarray(obs["n_err"]).tolist(),
        "a": to_jsonable(np.asarray(obs["a"])),
        "a_ref": to_jsonable(problem.a_ref[i]),
        **centroid_errors(np.asarray(obs["a"]), problem.a_ref[i]),
        **compare_marginal(
            grid,
            Q,
            q,
            problem.n_ref[i],
            n_flow,
            n_ref_stderr=stderr[i] if stderr is not None else None,
            **histogram,
        ),
        "grid_nonfinite_points": nonfinite,
    }
    kl = problem.kl_exact(i, logq_fn(flow, params), k2, n_samples)
    if kl is not None:
        record["kl_exact_flow"] = kl
    m_kl = cfg["reference"].get("kl_samples", 0)
    kl = problem.kl_flow(i, x[:m_kl], log_q[:m_kl]) if m_kl else None
    if kl is not None:
        record["kl_flow_ref"], record["kl_flow_ref_stderr"] = kl
    record.update(_residuals(flow, params, setup, k3, t))
    return record, q


def _residual_method(cfg: dict[str, Any]) -> TDVP:
    """The TDVP of the residual measurement: the run's own, or for an Euler-KL run
    TDVP's defaults with its batch size."""
    if cfg["method"] == "tdvp":
        return _settings(cfg).method()
    return TDVPSettings(batch_size=cfg["euler_kl"]["batch_size"]).method()


def _residuals(flow, params, setup: QFlowSetup, key, t: float) -> dict[str, float]:
    """The TDVP residual of the flow at time t, in and out of sample
    (`tdvp_residual`): how much of the PDE's motion the flow misses. A non-finite
    residual raises: the flow's scores or the PDE's s are non-finite on its own
    samples."""
    method = setup.residual_method
    z = jax.random.normal(key, (2, method.batch_size, flow.dim))
    res = tdvp_residual(flow, setup.problem.pde, params, z[0], z[1], method)
    out = {
        "pde_residual": float(res["residual"]),
        "pde_residual_test": float(res["residual_test"]),
    }
    if not all(np.isfinite(v) for v in out.values()):
        raise RuntimeError(
            f"the TDVP residual of the flow at t = {t:.4g} is non-finite ({out}): "
            "its scores or d log Q/dt are non-finite on its own samples"
        )
    return out


# --------------------------------------------------------------------- checkpoints


# what only says where and how often a run writes: not part of its fingerprint
_NOT_FINGERPRINTED = ("name", "output", "checkpoint_every")


def _save_checkpoint(
    ckpts: Checkpoints, interval: int, params: Any, state: dict, q_flow: list, cfg
) -> None:
    """Step `interval`: the flow parameters, the flow's Q marginals so far (in an
    array of all save times, so that its shape is known before a restore) and the
    records, with the run's fingerprint."""
    q_all = np.zeros((cfg["times"]["n_save"], *np.shape(q_flow[0])))
    q_all[: len(q_flow)] = np.stack(q_flow)
    meta = {
        "fingerprint": fingerprint(cfg, _NOT_FINGERPRINTED),
        "interval": interval,
        "state": to_jsonable(state),
    }
    ckpts.save(interval, {"params": params, "q_flow": q_all}, meta)


def _read_checkpoint(ckpts: Checkpoints, cfg: dict, flow) -> dict[str, Any] | None:
    """The latest checkpoint (None when there is none), after checking that it was
    written by this run and holds this run's arrays (`ResumeError` otherwise)."""
    if ckpts.latest_step() is None:
        return None
    g = cfg["metrics"]["grid_points"]
    template = {
        "params": jax.eval_shape(
            flow.init, jax.random.key(cfg["seed"]), jnp.zeros((1, flow.dim))
        ),
        "q_flow": np.zeros((cfg["times"]["n_save"], g, g)),
    }
    _, tree, meta = ckpts.restore(template, fingerprint(cfg, _NOT_FINGERPRINTED))
    interval = int(meta["interval"])
    return {
        "interval": interval,
        "params": tree["params"],
        "state": meta["state"],
        "q_flow": list(tree["q_flow"][: interval + 1]),
    }


# ---------------------------------------------------------------------- validation


def validate_qflow_config(data: dict[str, Any]) -> dict[str, Any]:
    """A `qflow run` config checked against `QFlowConfig` (keys, types, ranges,
    the kinds' own keys, one entry per mode, parseable expressions), as a dict
    with every default filled in."""
    return validate_model(data, QFlowConfig).model_dump()


# ---------------------------------------------------------------------------- run


def _initial(cfg: dict[str, Any]) -> InitialState:
    """The configured initial state (a validated config's `initial` section)."""
    init = cfg["initial"]
    return {"coherent": CoherentInitial, "cat": CatInitial, "fock": FockInitial}.get(
        init["kind"], ThermalInitial
    )(**init).state()


def _settings(cfg: dict[str, Any]) -> EulerKLSettings | TDVPSettings:
    if cfg["method"] == "tdvp":
        return TDVPSettings(**cfg["tdvp"])
    return EulerKLSettings(**cfg["euler_kl"])


def _problem(
    cfg: dict[str, Any],
    initial: InitialState,
    tsave: np.ndarray,
    reference_cache: Path | None = None,
    progress: bool = False,
) -> Reference:
    model = cfg["model"]
    if model["kind"] == "damped_modes":
        chain = DampedChain(
            model["modes"], model["omega"], model["gamma"], model["hopping"]
        )
        return ExactDampedChain(chain, initial, tsave)
    H, jumps = _operators(
        model["hamiltonian"], model["jump_ops"], model["constants"], model["modes"]
    )
    ref = cfg["reference"]
    if ref["kind"] == "trajectories":
        try:
            return TrajectoryReference(
                H,
                jumps,
                initial,
                tsave,
                max_excitations=ref["max_excitations"],
                ntraj=ref["ntraj"],
                key=jax.random.key(cfg["seed"] + 5),
                marginal_modes=(cfg["metrics"]["mode"],),
                rtol=ref["rtol"],
                atol=ref["atol"],
                max_truncated_weight=ref["max_truncated_weight"],
                cache=reference_cache,
                keep_final_states=ref["kl_samples"] > 0,
                progress=progress,
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"`reference`: {err}") from None
    try:
        return FockReference(
            H,
            jumps,
            initial,
            tsave,
            cutoff=ref["cutoff"],
            rtol=ref["rtol"],
            atol=ref["atol"],
            max_top_population=ref["max_top_population"],
        )
    except TruncationError as err:
        raise ConfigError(
            f"`reference.cutoff` = {ref['cutoff']} is too small: the top Fock "
            f"level of mode {err.mode} holds {err.population:.2e} at t = "
            f"{err.t:.3g} (allowed: `reference.max_top_population` = {err.limit:g})"
        ) from None


def _grid(cfg: dict[str, Any], problem: Reference) -> MarginalGrid:
    m = cfg["metrics"]
    return MarginalGrid.around(
        problem.n_ref[:, m["mode"]], m["grid_points"], m["mode"], m["grid_half_width"]
    )


def _flow(cfg: dict[str, Any], initial: InitialState) -> NormalizingFlow:
    """The configured flow, starting as the Gaussian of the initial state's mean
    and width."""
    fcfg = cfg["flow"]
    return NormalizingFlow(
        dim=2 * cfg["model"]["modes"],
        n_layers=fcfg["layers"],
        coupling=fcfg["coupling"],
        hidden=tuple(fcfg["hidden"]),
        n_bins=fcfg["bins"],
        lu_mixing=fcfg["lu_mixing"],
        scale=fcfg["scale"],
        init_mean=tuple(float(v) for v in initial.mean()),
        init_scale=initial.scale(),
    )


def _pretrain_flow(flow, params, initial: InitialState, cfg: dict) -> dict[str, Any]:
    """Fits the flow to Q(0); returns the parameters and what was measured."""
    settings = PretrainSettings(**cfg["pretrain"])
    ml = settings.objective == "max_likelihood"
    params, info = pretrain(
        flow,
        params,
        jax.random.key(cfg["seed"] + 5),
        initial.log_q,
        initial.sample,
        settings,
    )
    return {
        **info,
        "params": params,
        "objective": "maximum likelihood on exact samples of Q(0)"
        if ml
        else "reverse KL to the analytic log Q(0)",
        "kl_kind": "KL(Q0 || q) on exact samples"
        if ml
        else "KL(q || Q0) on flow samples",
    }


@dataclass(frozen=True)
class QFlowSetup:
    """A validated `qflow run` config with its problem: the compiled Q-PDE and the
    reference at the save times, and the grid where Q marginals are compared.

    Attributes:
        cfg: the config with defaults filled in.
        initial: the initial state.
        problem: PDE (`problem.pde`), reference <n_j> (`problem.n_ref`) and <a_j>,
            reference marginals (`problem.q_marginal`), exact KL where known.
        tsave: save times.
        grid: the `MarginalGrid` of `metrics.mode`.
        residual_method: the `TDVP` whose residual is recorded at every save time.
    """

    cfg: dict[str, Any]
    initial: InitialState
    problem: Reference
    tsave: np.ndarray
    grid: MarginalGrid
    residual_method: TDVP


def setup_qflow(config: dict[str, Any]) -> QFlowSetup:
    """Validates a `qflow run` config and builds its problem and reference (for the
    `expression` models this solves the Fock-space reference).

    Examples:
        >>> setup = setup_qflow(DEFAULT_QFLOW_CONFIG)
        >>> print(np.round(setup.problem.n_ref[-1], 4))  # exact <n>(t_end) = 4 e^-2
        [0.5413]
    """
    return _setup(validate_qflow_config(config))


def _setup(
    cfg: dict[str, Any], reference_cache: Path | None = None, progress: bool = False
) -> QFlowSetup:
    tsave = np.linspace(0.0, cfg["times"]["t_end"], cfg["times"]["n_save"])
    initial = _initial(cfg)
    problem = _problem(cfg, initial, tsave, reference_cache, progress)
    return QFlowSetup(
        cfg, initial, problem, tsave, _grid(cfg, problem), _residual_method(cfg)
    )


def run_qflow(
    config: dict[str, Any],
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs Q-Flow on the configured problem; writes summary.json, observables.npz,
    checkpoints/ (orbax, one folder per step, the last two kept) and PNG plots
    (observables, Q snapshots, errors).

    With `resume`, continues from the latest checkpoint (written after pre-training
    and after every `checkpoint_every` save intervals) to the same final result as an
    uninterrupted run with the same seed: pre-training draws from the seed, every
    interval from fold_in(seed, interval).
    """
    started = time.perf_counter()
    cfg = validate_qflow_config(config)
    run = RunFolder(out_dir or cfg["output"]["dir"] or Path("runs") / cfg["name"])
    ckpts = Checkpoints(run.path / "checkpoints")
    flow = _flow(cfg, _initial(cfg))
    saved = _read_checkpoint(ckpts, cfg, flow) if resume else None
    if resume and saved is None:
        print(
            f"qflow run: nothing to resume in {run.path} (no checkpoint in "
            "checkpoints/); starting from the beginning",
            file=sys.stderr,
        )
    # a trajectory reference is kept in the run folder: a resume reads it
    setup = _setup(cfg, run.path / "reference.npz", progress)
    initial, problem, tsave, grid = (
        setup.initial,
        setup.problem,
        setup.tsave,
        setup.grid,
    )
    reference_s = time.perf_counter() - started
    N, fcfg = cfg["model"]["modes"], cfg["flow"]
    params = flow.init(jax.random.key(cfg["seed"]), jnp.zeros((1, flow.dim)))
    method = _settings(cfg).method()
    base = jax.random.key(cfg["seed"] + 1)
    eval_key = jax.random.key(cfg["seed"] + 2)
    if saved is not None:
        start, state = saved["interval"], saved["state"]
        params, q_flow = saved["params"], saved["q_flow"]
    else:
        start, state = 0, {"records": [], "infos": [], "pretrain": None}
        state["timings"] = {"pretrain_s": 0.0, "evolution_s": 0.0, "evaluation_s": 0.0}
        if not initial.exact_gaussian:
            began = time.perf_counter()
            state["pretrain"] = _pretrain_flow(flow, params, initial, cfg)
            params = state["pretrain"].pop("params")
            state["timings"]["pretrain_s"] = time.perf_counter() - began
        began = time.perf_counter()
        record, q0 = _evaluate(flow, params, setup, 0, 0.0, eval_key)
        state["timings"]["evaluation_s"] += time.perf_counter() - began
        state["records"], q_flow = [record], [q0]
        _save_checkpoint(ckpts, 0, params, state, q_flow, cfg)
    timings = state["timings"]
    bar = tqdm(
        range(start, len(tsave) - 1),
        disable=not progress,
        desc=cfg["name"],
        initial=start,
        total=len(tsave) - 1,
    )
    for i in bar:
        began = time.perf_counter()
        try:
            res = evolve(
                problem.pde,
                flow,
                params,
                tsave[i : i + 2],
                method=method,
                key=jax.random.fold_in(base, i),
            )
        except FloatingPointError as err:
            raise RuntimeError(
                f"{cfg['method']} failed on save interval {i} "
                f"[{tsave[i]:.4g}, {tsave[i + 1]:.4g}]: {err}; checkpoints/ holds "
                "the last good state"
            ) from err
        timings["evolution_s"] += time.perf_counter() - began
        params = res.final_state
        state["infos"].append(res.infos[0])
        began = time.perf_counter()
        record, q = _evaluate(
            flow,
            params,
            setup,
            i + 1,
            tsave[i + 1],
            jax.random.fold_in(eval_key, i + 1),
        )
        timings["evaluation_s"] += time.perf_counter() - began
        if not np.isfinite(record["max_abs_error_n"]):
            raise RuntimeError(
                f"{cfg['method']} gave a non-finite flow at t = {tsave[i + 1]:.4g} "
                f"(interval info: {res.infos[0]}); checkpoints/ holds the last good "
                "state"
            )
        state["records"].append(record)
        q_flow.append(q)
        bar.set_postfix(
            t=f"{tsave[i + 1]:.3g}",
            residual=f"{record['pde_residual_test']:.2e}",
            scaled_err_n=f"{record['max_scaled_error_n']:.2e}",
            centroid_err=f"{record['centroid_error']:.2e}",
            l1_q=f"{record['l1_q']:.2e}",
        )
        if (i + 1) % cfg["checkpoint_every"] == 0 or i + 2 == len(tsave):
            _save_checkpoint(ckpts, i + 1, params, state, q_flow, cfg)

    records = state["records"]
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
    metrics = {
        **record_metrics(records),
        "normalization": float(norm),
        "normalization_stderr": float(norm_err),
    }
    if state["pretrain"] is not None:
        metrics["pretrain_kl"] = state["pretrain"]["kl"]
    notes = []
    if fcfg["coupling"] == "spline" and problem.pde.max_order >= 2:
        notes.append(
            "rational-quadratic splines are only C^1: grad log q jumps at the "
            "knots, so the pointwise second derivatives in d log Q/dt miss the "
            "knots' delta terms (E_q[Lap Q / Q] != 0) and TDVP/Euler-KL follow a "
            "biased PDE; prefer affine couplings for second-order Q-PDEs"
        )
    if any(r["grid_nonfinite_points"] for r in records):
        notes.append(
            "the flow density overflowed at some far grid points, counted as q = 0"
        )
    extra = {
        "reference": {"kind": problem.description, **problem.info},
        "metric_definitions": {
            "marginal_mode": cfg["metrics"]["mode"],
            "grid": f"[-{grid.axis[-1]:.4g}, {grid.axis[-1]:.4g}]^2, "
            f"{len(grid.axis)} x {len(grid.axis)} points",
            **METRIC_DEFINITIONS,
        },
        "pretrain": state["pretrain"],
        "notes": notes,
        "records": records,
        "intervals": state["infos"],
    }
    t = np.array([r["t"] for r in records])
    n_flow = np.array([r["n"] for r in records])
    n_ref = np.array([r["n_ref"] for r in records])
    q_ref = np.stack(
        [
            problem.q_marginal(i, cfg["metrics"]["mode"], grid.alphas)
            for i in range(len(t))
        ]
    )
    run.save_arrays(
        "observables.npz",
        t=t,
        n=n_flow,
        n_ref=n_ref,
        n_err=np.array([r["n_err"] for r in records]),
        a=np.array(
            [np.add(r["a"]["real"], 1j * np.array(r["a"]["imag"])) for r in records]
        ),
        a_ref=problem.a_ref,
        l1_q=np.array([r["l1_q"] for r in records]),
        kl_grid=np.array([r["kl_grid"] for r in records]),
        grid=grid.axis,
        q_flow=np.stack(q_flow),
        q_ref=q_ref,
    )
    _plot(run, cfg, t, n_flow, n_ref, records, grid, np.stack(q_flow), q_ref, N)
    timings_s = {
        "reference_this_session": reference_s,
        **timings,
        "wall_this_session": time.perf_counter() - started,
    }
    return run.write_summary("run", cfg, metrics, timings_s, **extra)


def _plot(run, cfg, t, n_flow, n_ref, records, grid, q_flow, q_ref, N) -> None:
    shown = range(min(N, 6))
    n_err = np.array([r["n_err"] for r in records])
    title = f"{cfg['name']}: Q-Flow ({cfg['method']})"
    plot_curves(
        run,
        "observables.png",
        t,
        {f"<n_{j}> flow": n_flow[:, j] for j in shown},
        {f"<n_{j}> reference": n_ref[:, j] for j in shown},
        bands={f"<n_{j}> flow": n_err[:, j] for j in shown},
        ylabel="<a^dag a> (band: +-1 standard error)",
        title=f"{title} vs reference",
    )
    later = records[1:]
    mode = cfg["metrics"]["mode"]
    errors = {
        "max |<n_j> error| / max(<n_j>, 1)": [r["max_scaled_error_n"] for r in later],
        "centroid error |E_q[alpha] - <a>|": [r["centroid_error"] for r in later],
        f"L1 of Q marginal (mode {mode})": [r["l1_q"] for r in later],
        "KL(Q_ref || q) on the grid": [r["kl_grid"] for r in later],
        "TDVP residual, out of sample": [r["pde_residual_test"] for r in later],
    }
    if "kl_exact_flow" in records[-1]:
        errors["KL(Q || q), all modes"] = [r["kl_exact_flow"] for r in later]
    floor = [r["l1_q_noise_floor"] for r in later]
    plot_curves(
        run,
        "errors.png",
        t[1:],
        errors,
        {"L1 sampling floor": floor} if any(floor) else None,
        ylabel="error",
        title=f"{title}: errors against the reference",
        logy=True,
    )
    plot_q_snapshots(
        run,
        "q_snapshot.png",
        t,
        grid,
        q_flow,
        q_ref,
        count=cfg["metrics"]["snapshots"],
        flow_label="flow density" if N == 1 else "flow (histogram)",
        title=f"{cfg['name']}: Q marginal of mode {grid.mode}",
    )


# deprecated: the schema is the pydantic model
__getattr__ = renamed(__name__, {"QFLOW_SCHEMA": "QFlowConfig"}, globals())
