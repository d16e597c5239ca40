"""Shared test set-up: float64 everywhere, fixed random keys, and the one run of
the README's main job that every test of its results shares."""

import os

# The suite is bound by XLA compilation, and its programs are small: LLVM's
# optimizations cost more than they save, so tests (and the CLI subprocesses they
# start) compile at backend optimization level 0: the suite took 658 s instead of
# 829 s on 2 CPU cores (compile-bound files 20-40% faster, run-bound ones slower).
# No level enables fast-math, and the suite passes at both levels; a level set in
# XLA_FLAGS by the caller is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

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
    """Drops JAX's compiled programs after a test module once this process holds
    many memory maps: each CPU executable holds some, and the whole suite's
    thousands of them would reach the kernel's limit of 65530 maps per process
    (vm.max_map_count), where XLA's next compilation crashes with a segmentation
    fault. Below the threshold the programs stay: later modules reuse them."""
    yield
    try:
        with open("/proc/self/maps") as maps:
            n_maps = sum(1 for _ in maps)
    except OSError:  # not Linux: no count, always release
        n_maps = _MAX_MAPS
    if n_maps >= _MAX_MAPS:
        jax.clear_caches()


# release at 40% of the kernel's default limit (a module adds at most a few thousand)
_MAX_MAPS = 26_000
