"""Shared test set-up: float64 everywhere, fixed random keys."""

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
