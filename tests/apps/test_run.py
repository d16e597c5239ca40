"""`qflow run` (`run_qflow`): config checks, a short Kerr run against its Fock-space
reference, and resumption."""

import contextlib
import io
import json

import numpy as np
import pytest

from qflow_jax.apps import run as run_module
from qflow_jax.apps.run import run_qflow, validate_qflow_config
from qflow_jax.cli import main
from qflow_jax.config import ConfigError

KERR = {
    "kind": "expression",
    "modes": 1,
    "hamiltonian": "U/2 * adag(0)**2 @ a(0)**2",
    "jump_ops": ["sqrt(gamma) * a(0)"],
    "constants": {"U": 0.5, "gamma": 1.0},
}


def tiny(**over):
    """A Kerr run small enough for the fast suite: 2 intervals, a 1-layer flow."""
    cfg = {
        "name": "tiny_kerr",
        "model": dict(KERR),
        "initial": {"kind": "coherent", "alpha": [[1.0, 0.0]]},
        "flow": {"layers": 2, "coupling": "affine", "hidden": [4]},
        "tdvp": {"batch_size": 128, "rcond": 1e-4, "dt": 0.05},
        "pretrain": {"max_steps": 100, "check_every": 50, "check_samples": 2000},
        "reference": {"cutoff": 12},
        "metrics": {"grid_points": 25, "snapshots": 3},
        "times": {"t_end": 0.2, "n_save": 4},
        "eval_samples": 4000,
    }
    for key, value in over.items():  # `initial` is replaced, other sections merged
        merge = isinstance(value, dict) and key != "initial"
        cfg[key] = {**cfg[key], **value} if merge else value
    return cfg


@pytest.mark.parametrize(
    ("model", "key", "token"),
    [
        ({"hamiltonian": "__import__('os')"}, "model.hamiltonian", "__import__"),
        ({"hamiltonian": "a(0).dag()"}, "model.hamiltonian", "a(0).dag"),
        ({"hamiltonian": "adag(2) @ a(2)"}, "model.hamiltonian", "mode index 2"),
        ({"hamiltonian": "adag(0.5) @ a(0)"}, "model.hamiltonian", "adag(0.5)"),
        ({"hamiltonian": "b * adag(0) @ a(0)"}, "model.hamiltonian", "`b`"),
        ({"hamiltonian": "U * a(0)"}, "model.hamiltonian", "Hermitian"),
        ({"hamiltonian": "[a(0)]"}, "model.hamiltonian", "[a(0)]"),
        ({"hamiltonian": "'n'"}, "model.hamiltonian", "'n'"),
        ({"hamiltonian": "a(j=0)"}, "model.hamiltonian", "a(j=0)"),
        ({"hamiltonian": "adag(0)**40 @ a(0)**40"}, "model.hamiltonian", "a(0)**40"),
        ({"hamiltonian": "adag(0) @ a(0) / a(0)"}, "model.hamiltonian", "divisor"),
        ({"jump_ops": ["a(0) +"]}, "model.jump_ops[0]", "not a valid expression"),
        ({"jump_ops": ["a(0)", "gamma"]}, "model.jump_ops[1]", "`gamma`"),
        ({"constants": {"a": 1.0}}, "model.constants", "reserved"),
        ({"constants": {"U": "big"}}, "model.constants.U", "must be a number"),
    ],
)
def test_bad_expressions_name_the_key_and_the_token(model, key, token):
    with pytest.raises(ConfigError) as err:
        validate_qflow_config({"model": {**KERR, **model}})
    assert f"`{key}" in str(err.value) and token in str(err.value)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"model": {"omega": 1.0}}, "unknown key `model.omega`; allowed"),
        ({"initial": {"kind": "fock", "n": [1], "alpha": [[1, 0]]}}, "initial.alpha"),
        ({"initial": {"kind": "fock"}}, "missing required key `initial.n`"),
        ({"initial": {"kind": "thermal", "nth": [1, 2]}}, "`initial.nth` has 2"),
        ({"model": {"modes": 2}, "initial": {"kind": "cat"}}, "one mode"),
        ({"reference": {"cutoff": 60}, "model": {"modes": 2}}, "at most"),
        ({"metrics": {"mode": 1}}, "`metrics.mode`"),
    ],
)
def test_bad_run_configs(over, message):
    cfg = tiny(**over)
    if "modes" in over.get("model", {}):  # give every mode an entry
        cfg["initial"]["alpha"] = [[1.0, 0.0]] * over["model"]["modes"]
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate_qflow_config(cfg)


def test_bad_expression_exits_2_through_the_cli(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model: {kind: expression, hamiltonian: 'adag(0) @ a(1)', modes: 1}\n"
        "initial: {alpha: [[1, 0]]}\n"
    )
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "`model.hamiltonian`" in err and "mode index 1" in err


FOCK_START = {"kind": "fock", "n": [1]}  # a ring: pre-trained by maximum likelihood


_STRAIGHT_STDERR = io.StringIO()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    # --resume into an empty folder: a fresh run, said so on stderr
    out = tmp_path_factory.mktemp("straight")
    with contextlib.redirect_stderr(_STRAIGHT_STDERR):
        return out, run_qflow(
            tiny(initial=FOCK_START), out, resume=True, progress=False
        )


def test_resume_with_nothing_to_resume_says_so(straight):
    out, _ = straight
    assert (
        f"nothing to resume in {out} (no checkpoint in checkpoints/)"
        in _STRAIGHT_STDERR.getvalue()
    )


@pytest.mark.e2e
def test_short_kerr_run_follows_its_fock_reference(straight):
    out, summary = straight
    m = summary["metrics"]
    # a 2-layer flow of width 4 pre-trained for 100 steps on the Fock ring (KL 0.1)
    # measured 0.108, 0.33 and 0.045; a wrong sign or term of the Kerr PDE gives
    # errors of order one
    assert m["max_rel_error_n"] < 0.15
    assert m["max_l1_q"] < 0.4
    assert m["final_kl_grid"] < 0.08
    assert abs(m["normalization"] - 1) < 5 * m["normalization_stderr"]
    assert summary["pretrain"]["steps"] > 0
    assert m["pretrain_kl"] == summary["pretrain"]["kl"]
    assert summary["reference"]["max_top_population"] < 1e-4
    # the reference at t = 0 is the Fock state itself: <n> = 1
    assert summary["records"][0]["n_ref"] == pytest.approx([1.0], abs=1e-12)
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved["metric_definitions"]) >= {"l1_q", "kl_grid", "max_rel_error_n"}
    arrays = np.load(out / "observables.npz")
    assert arrays["q_flow"].shape == arrays["q_ref"].shape == (4, 25, 25)
    for png in ("observables.png", "q_snapshot.png", "errors.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Interrupt(Exception):
    pass


def test_resume_after_pretraining_and_an_interrupted_interval(
    straight, tmp_path, monkeypatch
):
    out, summary = straight
    real_evolve = run_module.evolve
    calls = []

    def evolve_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # dies in the second interval, after checkpoint 1
            raise _Interrupt
        return real_evolve(*args, **kwargs)

    monkeypatch.setattr(run_module, "evolve", evolve_then_stop)
    with pytest.raises(_Interrupt):
        run_qflow(tiny(initial=FOCK_START), tmp_path, progress=False)
    monkeypatch.setattr(run_module, "evolve", real_evolve)

    def no_pretraining(*args, **kwargs):
        raise AssertionError("a resumed run must not pre-train again")

    monkeypatch.setattr(run_module, "pretrain", no_pretraining)
    resumed = run_qflow(tiny(initial=FOCK_START), tmp_path, resume=True, progress=False)
    a = np.load(out / "observables.npz")
    b = np.load(tmp_path / "observables.npz")
    for key in ("n", "l1_q", "kl_grid", "q_flow"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-12)
    assert resumed["pretrain"] == summary["pretrain"]


def test_every_shipped_qflow_config_is_valid():
    from pathlib import Path

    from qflow_jax.config import load_yaml

    configs = Path(__file__).resolve().parents[2] / "configs"
    checked = []
    for path in sorted(configs.glob("*.yaml")):
        data = load_yaml(path)
        if data.get("method") in ("tdvp", "euler-kl"):
            cfg = validate_qflow_config(data)  # expressions are parsed here too
            assert cfg["name"] == path.stem
            checked.append(path.stem)
    assert {"damped_1mode", "kerr_1mode", "cat_state_damping"} <= set(checked)
    assert "bose_hubbard_dissipative_3modes" in checked


def test_yaml_reads_exponent_numbers_as_floats(tmp_path):
    from qflow_jax.config import load_yaml

    path = tmp_path / "c.yaml"
    path.write_text('a: 1e-3\nb: -3E4\nc: 2\nd: "1e-3"\ne: .5\n')
    assert load_yaml(path) == {"a": 1e-3, "b": -3e4, "c": 2, "d": "1e-3", "e": 0.5}


def test_a_non_finite_residual_stops_the_run(tmp_path, monkeypatch):
    # the residual is recorded at every save time; NaN there is a failure, not a value
    def nan_residual(*args, **kwargs):
        return {"residual": np.nan, "residual_test": 0.5}

    monkeypatch.setattr(run_module, "tdvp_residual", nan_residual)
    cfg = tiny(times={"t_end": 0.05, "n_save": 2}, pretrain={"max_steps": 1})
    with pytest.raises(RuntimeError, match=r"TDVP residual of the flow at t = 0 is"):
        run_qflow(cfg, tmp_path, progress=False)


@pytest.mark.e2e
def test_run_against_a_trajectory_reference(tmp_path):
    # two interacting sites scored against mcsolve in the basis of <= 8 quanta
    model = {
        "kind": "expression",
        "modes": 2,
        "hamiltonian": "U/2 * (adag(0)**2 @ a(0)**2 + adag(1)**2 @ a(1)**2)"
        " - J * (adag(0) @ a(1) + adag(1) @ a(0))",
        "jump_ops": ["sqrt(gamma) * a(0)", "sqrt(gamma) * a(1)"],
        "constants": {"U": 0.2, "J": 0.5, "gamma": 0.5},
    }
    cfg = tiny(
        model=model,
        initial={"kind": "coherent", "alpha": [[1.0, 0.0], [0.5, 0.0]]},
        flow={"layers": 2, "hidden": [8]},
        tdvp={"batch_size": 512},
        eval_samples=20000,
    )
    cfg["reference"] = {
        "kind": "trajectories",
        "max_excitations": 8,
        "ntraj": 200,
        "kl_samples": 400,
    }
    summary = run_qflow(cfg, tmp_path, progress=False)
    ref = summary["reference"]
    # 1.25 quanta: the Poisson tail beyond 8 quanta
    assert 1e-6 < ref["truncated_weight"] < 1e-5
    assert ref["dimension"] == 45 and ref["ntraj"] == 200
    assert (tmp_path / "reference.npz").is_file()  # what a resume reads back
    m = summary["metrics"]
    # the flow is scored net of the reference's 2 standard errors; 20k evaluation
    # samples give <n> a standard error of ~1%
    assert m["max_scaled_error_n_net"] <= m["max_scaled_error_n"]
    assert m["max_scaled_error_n_net"] < 0.03  # measured 0.021
    assert m["max_centroid_error"] < 0.03  # measured 0.014
    # KL(q || Q) on 400 flow samples at t_end, Q from the 200 final kets
    assert abs(m["final_kl_flow_ref"]) < 0.05 + 3 * m["final_kl_flow_ref_stderr"]
    assert 0 < m["final_kl_flow_ref_stderr"] < 0.02
