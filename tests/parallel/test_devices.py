"""Sample and batch parallelism: 1 device and 4 (forced CPU) devices agree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("_worker.py")

# two worker processes that compile every sharded program (28 s of the default
# suite's 8-minute budget): run on purpose, `python -m pytest -m slow`
pytestmark = pytest.mark.slow


def start(devices: int) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen(
        [sys.executable, str(WORKER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    # both workers at once: each is mostly single-threaded compilation
    procs = start(1), start(4)
    return tuple(result(p) for p in procs)


def test_four_devices_split_the_samples(results):
    one, four = results
    assert (one["devices"], one["sample_shards"]) == (1, 1)
    assert (four["devices"], four["sample_shards"]) == (4, 4)


# Sums are taken in another order on 4 devices. Ten Adam steps amplify those ulps
# (euler_kl). theta_dot is a pseudo-inverse solve of 64 samples for 128 parameters:
# its small singular values amplify them to ~1e-5 relative (measured 5.6e-5 at most),
# while the fit it makes, the TDVP residual, agrees to 1e-9.
@pytest.mark.parametrize(
    ("what", "rtol", "atol"),
    [
        ("euler_kl", 1e-5, 1e-7),
        ("theta_dot", 2e-4, 1e-8),
        ("tdvp_residual", 1e-9, 1e-12),
        ("mesolve_n", 1e-9, 1e-12),
        ("mcsolve_n", 1e-9, 1e-12),
        ("mcsolve_jump_times", 1e-9, 1e-12),
        ("sweep", 1e-9, 1e-12),
    ],
)
def test_one_and_four_devices_agree(results, what, rtol, atol):
    one, four = results
    np.testing.assert_allclose(four[what], one[what], rtol=rtol, atol=atol)
