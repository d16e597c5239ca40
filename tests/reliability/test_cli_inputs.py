"""Bad input through the command line: every case ends with exit code 2 and a
one-line message naming the argument, never a traceback, before any long solve.

Run folders: a damaged results file, or one written by another config, is
refused with exit code 2 (damaged and foreign checkpoints of `qflow run`:
tests/cli/test_cli.py, on the session's default run).
"""

import pytest
import yaml

from tests.helpers import assert_refused, qflow

_RUN_BASE = {
    "name": "q",
    "model": {"kind": "damped_modes", "modes": 1, "omega": 1.0, "gamma": 1.0},
    "initial": {"kind": "coherent", "alpha": [[2.0, 0.0]]},
}


def run_cfg(**sections) -> str:
    """A `qflow run` config: the damped mode with `sections` replaced."""
    return yaml.safe_dump({**_RUN_BASE, **sections})


QUBIT = "model: {kind: qubit_decay}\n"
NET3 = "network: {n: 3, k: 1.0, initial: ['0', '1', '0'], "

# name: (arguments, config text or None, expected part of the message); {cfg} is
# the config file, {tmp} an empty folder, {file} a regular file
CASES = {
    # qflow run
    "run: infinite t_end": (
        ["run", "{cfg}"],
        run_cfg(times={"t_end": float("inf")}),
        "`times.t_end` must be finite",
    ),
    "run: NaN initial alpha": (
        ["run", "{cfg}"],
        run_cfg(initial={"kind": "coherent", "alpha": [[float("nan"), 0.0]]}),
        "`initial.alpha[0][0]` must be finite",
    ),
    "run: NaN omega": (
        ["run", "{cfg}"],
        run_cfg(model={"kind": "damped_modes", "modes": 1, "omega": float("nan")}),
        "`model.omega` must be finite",
    ),
    "run: negative gamma": (
        ["run", "{cfg}"],
        run_cfg(model={"kind": "damped_modes", "modes": 1, "gamma": -1.0}),
        "`model.gamma` must be > 0",
    ),
    "run: float seed": (
        ["run", "{cfg}"],
        run_cfg(seed=1.5),
        "`seed` must be an integer, got float 1.5",
    ),
    "run: unknown method": (
        ["run", "{cfg}"],
        run_cfg(method="sgd"),
        "`method` must be one of",
    ),
    "run: zero TDVP step": (
        ["run", "{cfg}"],
        run_cfg(tdvp={"dt": 0}),
        "`tdvp.dt` must be > 0",
    ),
    "run: negative TDVP rtol": (
        ["run", "{cfg}"],
        run_cfg(tdvp={"rtol": -1e-6}),
        "`tdvp.rtol` must be > 0",
    ),
    "run: NaN TDVP rcond": (
        ["run", "{cfg}"],
        run_cfg(tdvp={"rcond": float("nan")}),
        "`tdvp.rcond` must be finite",
    ),
    "run: one save time": (
        ["run", "{cfg}"],
        run_cfg(times={"n_save": 1}),
        "`times.n_save` must be >= 2",
    ),
    "run: negative flow layers": (
        ["run", "{cfg}"],
        run_cfg(flow={"layers": -2}),
        "`flow.layers` must be > 0",
    ),
    "run: metrics of a mode that does not exist": (
        ["run", "{cfg}"],
        run_cfg(metrics={"mode": 3}),
        "`metrics.mode` must be a mode index below 1",
    ),
    "run: zero eval samples": (
        ["run", "{cfg}"],
        run_cfg(eval_samples=0),
        "`eval_samples` must be > 0",
    ),
    "run: duplicate key": (
        ["run", "{cfg}"],
        "name: q\nseed: 1\nseed: 2\n",
        "duplicate key 'seed' on line 3 (first on line 2)",
    ),
    "run: unknown key": (
        ["run", "{cfg}"],
        run_cfg(gamma=1.0),
        "unknown key `gamma`",
    ),
    "run: unknown operator in an expression": (
        ["run", "{cfg}"],
        run_cfg(
            model={
                "kind": "expression",
                "modes": 1,
                "hamiltonian": "adag(0) @ b(0)",
                "jump_ops": [],
            }
        ),
        "`model.hamiltonian`: only a(j), adag(j)",
    ),
    "run: mode index beyond the modes": (
        ["run", "{cfg}"],
        run_cfg(
            model={
                "kind": "expression",
                "modes": 1,
                "hamiltonian": "adag(1) @ a(1)",
                "jump_ops": [],
            }
        ),
        "`model.hamiltonian`: mode index 1 out of range",
    ),
    "run: a list instead of a mapping": (
        ["run", "{cfg}"],
        "- 1\n- 2\n",
        "must hold a mapping at the top level",
    ),
    "run: config is a folder": (["run", "{tmp}"], None, "config file not found"),
    "run: --out under a regular file": (
        ["run", "--out", "{file}/sub"],
        None,
        "cannot create the output folder",
    ),
    "run: --out under /proc": (
        ["run", "--out", "/proc/qflow_out"],
        None,
        "cannot create the output folder /proc/qflow_out",
    ),
    "run: half the distributed flags": (
        ["run", "--coordinator", "localhost:1234"],
        None,
        "--num-processes",
    ),
    # qflow lindblad
    "lindblad: Kerr oscillator truncated at N = 5": (
        ["lindblad", "{cfg}"],
        "model: {kind: kerr_oscillator, N: 5}\n",
        "`model.N` = 5 is too small: the highest Fock level holds",
    ),
    "lindblad: thermal cavity truncated at N = 10": (
        ["lindblad", "{cfg}"],
        "model: {kind: damped_cavity, N: 10, n_thermal: 5}\n",
        "`model.N` = 10 is too small for the initial state",
    ),
    "lindblad: NaN omega": (
        ["lindblad", "{cfg}"],
        "model: {kind: damped_cavity, omega: .nan}\n",
        "`model.omega` must be finite",
    ),
    "lindblad: NaN alpha0": (
        ["lindblad", "{cfg}"],
        "model: {kind: damped_cavity, alpha0: [.nan, 0]}\n",
        "`model.alpha0[0]` must be finite",
    ),
    "lindblad: infinite t_end": (
        ["lindblad", "{cfg}"],
        QUBIT + "times: {t_end: .inf}\n",
        "`times.t_end` must be finite",
    ),
    "lindblad: negative rtol": (
        ["lindblad", "{cfg}"],
        QUBIT + "solver: {rtol: -1.0e-6}\n",
        "`solver.rtol` must be > 0",
    ),
    "lindblad: zero atol": (
        ["lindblad", "{cfg}"],
        QUBIT + "solver: {atol: 0}\n",
        "`solver.atol` must be > 0",
    ),
    "lindblad: zero truncation threshold": (
        ["lindblad", "{cfg}"],
        QUBIT + "truncation: {max_top_population: 0}\n",
        "`truncation.max_top_population` must be > 0",
    ),
    "lindblad: negative decay rate": (
        ["lindblad", "{cfg}"],
        "model: {kind: qubit_decay, gamma: -0.5}\n",
        "`model.gamma` must be >= 0",
    ),
    "lindblad: string N": (
        ["lindblad", "{cfg}"],
        "model: {kind: damped_cavity, N: ten}\n",
        "`model.N` must be an integer",
    ),
    # qflow blended
    "blended: float qubit indices": (
        ["blended", "{cfg}"],
        NET3 + "graph: custom, edges: [[0.7, 1.9, 1.0]]}\n",
        "`edges[0]` names qubit 0.7; qubit indices are integers",
    ),
    "blended: NaN swap gain": (
        ["blended", "{cfg}"],
        "network: {n: 3, k: .nan, initial: ['0', '1', '0']}\n",
        "`network.k` must be finite",
    ),
    "blended: NaN coupling strength": (
        ["blended", "{cfg}"],
        NET3 + "couplings: [[0, 1, ZZ, .nan]]}\n",
        "`network.couplings[0][3]` must be finite",
    ),
    "blended: NaN local field": (
        ["blended", "{cfg}"],
        NET3 + "fields: [[.nan, 0, 1], [0, 0, 1], [0, 0, 1]]}\n",
        "`network.fields[0][0]` must be finite",
    ),
    "blended: unknown graph": (
        ["blended", "{cfg}"],
        NET3 + "graph: torus}\n",
        "`network.graph` must be one of",
    ),
    "blended: too few initial states": (
        ["blended", "{cfg}"],
        "network: {n: 3, k: 1.0, initial: ['0', '1']}\n",
        "`network.initial` must hold n=3 states, got 2",
    ),
    "blended: Dicke mode truncated at 2 levels": (
        ["blended", "{cfg}"],
        "network: {n: 2, k: 1.0, initial: ['1', '1']}\n"
        "dicke: {enabled: true, n_levels: 2, g: 2.0}\n"
        "times: {t_end: 2.0, n_save: 11}\nsweep: {ks: [1.0, 2.0]}\n",
        "`dicke.n_levels` = 2 is too small",
    ),
    "blended: IMEX method with the Dicke mode": (
        ["blended", "{cfg}"],
        "network: {n: 2, k: 1.0, initial: ['1', '1']}\n"
        "dicke: {enabled: true}\nsolver: {method: kencarp4}\n",
        "`solver.method` 'kencarp4' needs the network engine's stiff swap part",
    ),
    # qflow bench
    "bench: NaN time budget": (
        ["bench", "dims", "--time-budget", "nan"],
        None,
        "argument --time-budget: must be a finite number > 0, got 'nan'",
    ),
    "bench: negative time budget": (
        ["bench", "dims", "--time-budget", "-5"],
        None,
        "argument --time-budget: must be a finite number > 0",
    ),
    "bench: infinite memory budget": (
        ["bench", "dims", "--memory-budget", "inf"],
        None,
        "argument --memory-budget: must be a finite number > 0",
    ),
    "bench: unknown suite": (["bench", "nosuch"], None, "no suite 'nosuch'"),
    "bench: unknown method": (
        ["bench", "dims", "--methods", "magic"],
        None,
        "`--methods` ['magic'] not in the suite",
    ),
    # qflow pinn
    "pinn: NaN learning rate": (
        ["pinn", "{cfg}"],
        "pinn: {learning_rate: .nan}\n",
        "`pinn.learning_rate` must be finite",
    ),
    "pinn: unknown key": (
        ["pinn", "{cfg}"],
        "pinn: {epochs: 3}\n",
        "unknown key `pinn.epochs`",
    ),
    # qflow collect
    "collect: unfinished run folder": (
        ["collect", "{tmp}"],
        None,
        "has no summary.json",
    ),
}


def case_args(case: str, tmp_path) -> list[str]:
    """The command line of `case` with its files in `tmp_path` (also used by
    scripts/reliability_table.py)."""
    argv, text, _ = CASES[case]
    cfg, file = tmp_path / "config.yaml", tmp_path / "file"
    if text is not None:
        cfg.write_text(text)
    file.write_text("not a folder")
    (tmp_path / "empty").mkdir()
    args = [a.format(cfg=cfg, tmp=tmp_path / "empty", file=file) for a in argv]
    if args[0] != "collect" and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    return args


@pytest.mark.filterwarnings("ignore:a coherent state")
@pytest.mark.parametrize("case", list(CASES))
def test_bad_cli_input_exits_2_naming_the_argument(case, tmp_path):
    assert_refused(case_args(case, tmp_path), CASES[case][2])


# ------------------------------------------------------------ run folders: resume


def test_bench_resume_refuses_damaged_and_foreign_results(tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    results = out / "results.json"
    args = ["bench", "dims", "--quick", "--out", str(out), "--resume"]
    results.write_text('{"rows": [')
    assert_refused(args, "results.json is damaged (JSONDecodeError")
    # a finished run of a one-method suite, resumed with another problem seed
    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "sizes: [2]\n"
        "problem: {model: {kind: damped_modes}, initial: {alpha: [1.0, 0.0]},\n"
        "          times: {t_end: 0.2, n_save: 2}}\n"
        "methods: {exact: {kind: exact}}\n"
    )
    args = ["bench", str(suite), "--out", str(out)]
    code, err = qflow(args)
    assert code == 0, err
    text = suite.read_text().replace("n_save: 2}", "n_save: 2}, seed: 5")
    suite.write_text(text)
    assert_refused([*args, "--resume"], "config.problem.seed is 0 there, 5 now")
