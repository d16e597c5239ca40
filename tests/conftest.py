"""Shared test set-up: float64 everywhere, fixed random keys, and the one run of
the README's main job that every test of its results shares."""

import os

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
# the CLI's persistent compilation cache stays off in tests (one test turns it on
# in a temporary folder for its subprocess)
os.environ["QFLOW_JAX_COMPILE_CACHE"] = "off"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """The README's main job, `qflow run` on its built-in problem, run once for the
    whole session (its results, its resumption after kill -9, its checkpoints)."""
    from qflow_jax.cli import main

    out = tmp_path_factory.mktemp("default_run")
    assert main(["run", "--out", str(out)]) == 0
    return out


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's compiled programs after every test module: each CPU executable
    holds memory maps, and the whole suite's thousands of them reach the kernel's
    limit of 65530 maps per process (vm.max_map_count), where XLA's next
    compilation crashes with a segmentation fault."""
    yield
    jax.clear_caches()
