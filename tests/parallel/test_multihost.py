"""Two processes on localhost (CPU collectives through gloo) run a short Euler-KL
`qflow run` that matches the single-process run; only process 0 writes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

CONFIG = {
    "name": "two_process",
    "model": {"kind": "damped_modes", "modes": 1, "omega": 1.0, "gamma": 1.0},
    "initial": {"kind": "coherent", "alpha": [[2.0, 0.0]]},
    "method": "euler-kl",
    "euler_kl": {
        "dt": 0.05,
        "batch_size": 64,
        "max_inner_steps": 10,
        "min_inner_steps": 10,
        "scheme": "euler",
    },
    "times": {"t_end": 0.1, "n_save": 2},
    "eval_samples": 20_000,
}


def qflow_run(config, out, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "qflow_jax.cli", "run", str(config), "--out", str(out)]
        + list(extra),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    port = free_port()
    # process 1 is pointed at its own folder to see that it writes nothing
    procs = [
        qflow_run(
            config,
            root / ("two" if i == 0 else "two_process_1"),
            "--coordinator",
            f"localhost:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(i),
        )
        for i in range(2)
    ]
    procs.append(qflow_run(config, root / "one"))
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    return root, outs


# three concurrent `qflow run` processes (about 40 s): `python -m pytest -m slow`
@pytest.mark.slow
def test_two_processes_match_one(runs):
    root, _ = runs
    one = json.loads((root / "one" / "summary.json").read_text())
    two = json.loads((root / "two" / "summary.json").read_text())
    for key in ("max_rel_error_n", "final_kl_exact_flow"):
        np.testing.assert_allclose(
            two["metrics"][key], one["metrics"][key], rtol=1e-4, atol=1e-9
        )


@pytest.mark.slow
def test_only_process_zero_writes(runs):
    root, outs = runs
    assert (root / "two" / "checkpoints").is_dir()
    assert not (root / "two_process_1").exists()
    assert '"metrics"' in outs[1][0]  # process 1 finished the same run
