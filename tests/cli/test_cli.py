"""The `qflow` command line: the default run, Lindblad configs, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qflow_jax.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_default_run_writes_checked_results(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["model"]["kind"] == "damped_cavity"
    # rtol = 1e-8 over ~900 entries: observables to ~1e-7 of the exact solution
    assert max(summary["metrics"]["max_abs_error"].values()) < 1e-6
    assert summary["metrics"]["max_trace_error"] < 1e-6
    assert summary["metrics"]["min_eigenvalue"] > -1e-8
    arrays = np.load(tmp_path / "arrays.npz")
    assert arrays["t"].shape == (101,)
    assert arrays["expect_n"][0] == pytest.approx(4.0, abs=1e-10)
    for png in ("expectations.png", "errors.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["qubit_decay", "damped_cavity"])
def test_shipped_configs_run(name, tmp_path):
    assert main(["lindblad", str(REPO / "configs" / f"{name}.yaml"),
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert max(summary["metrics"]["max_abs_error"].values()) < 1e-5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {kind: damped_cavity, bogus: 1}", "unknown key `model.bogus`"),
        ("model: {kind: damped_cavity, N: ten}", "`model.N` must be int"),
        ("model: {kind: nope}", "`model.kind` must be one of"),
        ("model: {kind: qubit_decay}\nsolver: {method: rk4}", "`solver.method`"),
        ("model: {kind: qubit_decay}\ntimes: {t_end: -1}", "`times.t_end` must be > 0"),
        ("model: {kind: qubit_decay}\nextra: 1", "unknown key `extra`"),
        ("model: {kind: damped_cavity, alpha0: 2}", "`model.alpha0`"),
        ("name: x", "missing `model.kind`"),
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
        [sys.executable, "-m", "qflow_jax.cli", "lindblad", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "config file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_blended_command_runs_the_path_config(tmp_path):
    assert main(["blended", str(REPO / "configs" / "network_path3.yaml"),
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert abs(summary["sweep"]["slope"] + 1.0) < 0.1
    assert (tmp_path / "error_vs_k.png").exists()
