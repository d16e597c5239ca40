"""The `qflow` command line: the default run (its results, its resumption after
kill -9, its damaged and foreign checkpoints), Lindblad configs, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from qflow_jax.checkpoints import Checkpoints
from qflow_jax.cli import main
from tests.helpers import assert_refused

REPO = Path(__file__).resolve().parents[2]
RUN_FORMAT = ("command", "status", "config", "versions", "metrics", "timings_s")


def assert_run_format(summary: dict, command: str) -> None:
    """The one summary.json format of every command."""
    assert list(summary)[: len(RUN_FORMAT)] == list(RUN_FORMAT)
    assert (summary["command"], summary["status"]) == (command, "ok")


@pytest.mark.e2e
def test_default_run_is_qflow_on_the_damped_oscillator(default_run):
    summary = json.loads((default_run / "summary.json").read_text())
    assert_run_format(summary, "run")
    assert summary["config"]["name"] == "damped_1mode"
    assert summary["config"]["method"] == "tdvp"
    m = summary["metrics"]
    # the Gaussian family holds the exact state: KL ~ 0; <n> from 400k samples has a
    # standard error of ~0.3% at the smallest <n> (0.54)
    assert m["final_kl_exact_flow"] < 1e-3
    assert m["max_rel_error_n"] < 0.02
    assert abs(m["normalization"] - 1.0) < 5 * m["normalization_stderr"] + 1e-3
    arrays = np.load(default_run / "observables.npz")
    assert arrays["t"].shape == (11,)
    for png in ("observables.png", "q_snapshot.png"):
        assert (default_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_lindblad_default_config_writes_checked_results(tmp_path):
    assert (
        main(
            [
                "lindblad",
                str(REPO / "configs" / "damped_cavity.yaml"),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert_run_format(summary, "lindblad")
    # rtol = 1e-9 in the RMS norm over 1800 entries: observables to ~1e-7 of the
    # exact solution
    assert max(summary["metrics"]["max_abs_error"].values()) < 1e-6
    assert summary["metrics"]["max_trace_error"] < 1e-6
    assert summary["metrics"]["min_eigenvalue"] > -1e-8
    arrays = np.load(tmp_path / "arrays.npz")
    assert arrays["t"].shape == (101,)
    assert arrays["expect_n"][0] == pytest.approx(4.0, abs=1e-10)
    for png in ("expectations.png", "errors.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_run_resumes_after_kill_9_to_the_same_result(default_run, tmp_path, capsys):
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "qflow_jax.cli", "run", "--out", str(killed)]
    # the killed run fills a persistent compilation cache
    cache = tmp_path / "cache"
    env = {**os.environ, "QFLOW_JAX_COMPILE_CACHE": str(cache)}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    ckpts = Checkpoints(killed / "checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (ckpts.latest_step() or 0) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interval = ckpts.latest_step()
    assert 3 <= interval < 10, "the run must be killed part-way"
    # TDVP's interval solve holds no host callbacks: the cache stores it
    assert list(cache.glob("jit__evolve_interval-*"))
    assert main(["run", "--out", str(killed), "--resume"]) == 0
    a = np.load(default_run / "observables.npz")
    b = np.load(killed / "observables.npz")
    np.testing.assert_allclose(b["n"], a["n"], rtol=1e-10, atol=1e-12)
    # a finished folder resumed with another config is refused, naming the key
    from qflow_jax.apps.run import DEFAULT_QFLOW_CONFIG

    other = tmp_path / "other.yaml"
    config = json.loads(json.dumps(DEFAULT_QFLOW_CONFIG))
    config["model"]["gamma"] = 0.5
    other.write_text(json.dumps(config))  # JSON is YAML
    capsys.readouterr()
    assert main(["run", str(other), "--out", str(killed), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "config.model.gamma is 1.0 there, 0.5 now" in err
    assert "Traceback" not in err
    assert np.load(killed / "observables.npz")["n"].tolist() == b["n"].tolist()


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["qubit_decay", "damped_cavity"])
def test_shipped_configs_run(name, tmp_path):
    assert (
        main(
            ["lindblad", str(REPO / "configs" / f"{name}.yaml"), "--out", str(tmp_path)]
        )
        == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert max(summary["metrics"]["max_abs_error"].values()) < 1e-5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {kind: damped_cavity, bogus: 1}", "unknown key `model.bogus`"),
        ("model: {kind: damped_cavity, N: ten}", "`model.N` must be an integer"),
        ("model: {kind: nope}", "`model.kind` must be one of"),
        ("model: {kind: qubit_decay}\nsolver: {method: rk4}", "`solver.method`"),
        ("model: {kind: qubit_decay}\ntimes: {t_end: -1}", "`times.t_end` must be > 0"),
        ("model: {kind: qubit_decay}\nextra: 1", "unknown key `extra`"),
        ("model: {kind: damped_cavity, alpha0: 2}", "`model.alpha0`"),
        ("name: x", "missing required key `model`"),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_bad_configs_exit_2_with_message(text, message, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["lindblad", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_console_script_never_shows_a_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qflow_jax.cli",
            "lindblad",
            str(tmp_path / "missing.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "config file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_blended_command_runs_the_path_config(tmp_path):
    cfg = yaml.safe_load((REPO / "configs" / "network_path3.yaml").read_text())
    cfg["times"] = {"t_end": 6.0, "n_save": 61}
    cfg["sweep"] = {"ks": [30.0, 100.0, 300.0]}
    path = tmp_path / "path3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["blended", str(path), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert_run_format(summary, "blended")
    assert summary["clusters"] == [[0, 1, 2]]
    assert abs(summary["sweep"]["slope"] + 1.0) < 0.1
    assert summary["metrics"]["sweep_slope"] == summary["sweep"]["slope"]
    assert summary["laplacian"]["kernel_dim"] == 20
    # the whole state sits within O(1/k) of the network-level blended orbit
    assert summary["metrics"]["orbit_attraction_late"] < 0.05
    # ... and its distance to that orbit falls as 1/k (orbit_sweep)
    assert summary["orbit"]["ks"] == [30.0, 100.0, 300.0]
    assert abs(summary["metrics"]["orbit_slope"] + 1.0) < 0.1
    for png in (
        "orbit_vs_k.png",
        "bloch_x.png",
        "bloch_z.png",
        "error_vs_k.png",
        "laplacian_spectrum.png",
    ):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # qflow collect tabulates it like any other run
    assert main(["collect", str(out), "--out", str(tmp_path / "table")]) == 0
    row = json.loads((tmp_path / "table" / "collect.json").read_text())["rows"][0]
    assert row["command"] == "blended"
    assert (
        row["max_trace_distance_late"] == summary["metrics"]["max_trace_distance_late"]
    )


def test_collect_gathers_run_summaries_into_one_table(tmp_path, capsys):
    for name, err in (("a", 0.01), ("b", 0.02)):
        (tmp_path / name).mkdir()
        summary = {
            "command": "run",
            "config": {"name": name},
            "metrics": {"max_rel_error_n": err, "note": "text is left out"},
            "timings_s": {"evolution_wall_this_session": 3.0},
        }
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    folders = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main(["collect", *folders, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "collect.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["a", "b"]
    assert [r["max_rel_error_n"] for r in rows] == [0.01, 0.02]
    assert "note" not in rows[0]
    table = (tmp_path / "collect.md").read_text().splitlines()
    assert table[0].startswith("| folder | name | command | max_rel_error_n")
    assert len(table) == 4
    (tmp_path / "c").mkdir()
    assert main(["collect", str(tmp_path / "c")]) == 2
    assert "has no summary.json" in capsys.readouterr().err


def test_distributed_flags_must_come_together(capsys):
    assert main(["run", "--coordinator", "localhost:1234"]) == 2
    assert "must be given together" in capsys.readouterr().err


def test_compilation_cache_folder_follows_the_environment(
    monkeypatch, tmp_path, capsys
):
    from qflow_jax.runs import compilation_cache_dir

    monkeypatch.setenv("QFLOW_JAX_COMPILE_CACHE", "off")
    assert compilation_cache_dir() is None
    monkeypatch.setenv("QFLOW_JAX_COMPILE_CACHE", str(tmp_path / "c"))
    assert compilation_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("QFLOW_JAX_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache_dir() == tmp_path / "qflow_jax" / "jax"
    # --no-compile-cache is accepted by every solving command
    assert main(["lindblad", str(tmp_path / "x.yaml"), "--no-compile-cache"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_version_and_help_do_not_import_jax():
    code = (
        "import sys\n"
        "from qflow_jax.cli import main\n"
        "for flag in ('--version', '--help'):\n"
        "    try:\n"
        "        main([flag])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0\n"
        "assert 'jax' not in sys.modules, 'jax imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("qflow_jax 0.1.0\n")
    assert "usage: qflow" in proc.stdout


# ------------------------------------------------- damaged and foreign checkpoints


def _meta(step) -> tuple:
    path = step / "meta" / "metadata"
    return path, json.loads(path.read_text())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "checkpoints (step 10) is damaged ("),
        ("garbled meta", "checkpoints (step 10) is damaged (JSONDecodeError"),
        ("no fingerprint", "carries no run fingerprint"),
        ("other version", "qflow_jax is '0.0.1' there, '"),
        ("other gamma", "config.model.gamma is 1.0 there, 0.5 now"),
        ("other seed", "config.seed is 0 there, 7 now"),
        ("not a folder", "is not a checkpoints folder"),
    ],
)
def test_resume_refuses_damaged_and_foreign_checkpoints(
    default_run, tmp_path, damage, message
):
    """The checkpoints of the session's default run (conftest), copied, damaged
    or resumed with another config."""
    from qflow_jax.apps.run import DEFAULT_QFLOW_CONFIG

    out = tmp_path / "out"
    shutil.copytree(default_run, out)
    config = tmp_path / "run.yaml"
    other = json.loads(json.dumps(DEFAULT_QFLOW_CONFIG))
    step = out / "checkpoints" / "10"  # the last step
    meta_file, meta = _meta(step)
    if damage == "truncated":
        data = max(step.rglob("d/*"), key=lambda p: p.stat().st_size)
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "garbled meta":
        meta_file.write_text('{"fingerprint": ')
    elif damage == "no fingerprint":
        meta.pop("fingerprint")
    elif damage == "other version":
        meta["fingerprint"]["qflow_jax"] = "0.0.1"
    elif damage == "other gamma":
        other["model"]["gamma"] = 0.5
    elif damage == "other seed":
        other["seed"] = 7
    else:
        shutil.rmtree(out / "checkpoints")
        (out / "checkpoints").write_text("not a folder")
    if damage in ("no fingerprint", "other version"):
        meta_file.write_text(json.dumps(meta))
    config.write_text(yaml.safe_dump(other))
    assert_refused(["run", str(config), "--out", str(out), "--resume"], message)
