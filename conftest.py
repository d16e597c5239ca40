"""Doctests of the package (`python -m pytest qflow_jax`, part of the default run):
the names every example may use, and a temporary working folder for examples that
write run folders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pytest.doctest import DoctestItem

import qflow_jax as qf

# scripts the tests start as subprocesses: they compute at import
collect_ignore_glob = ["tests/parallel/_*.py"]


@pytest.fixture(autouse=True)
def _doctest_setup(request, doctest_namespace, tmp_path, monkeypatch):
    if isinstance(request.node, DoctestItem):
        doctest_namespace.update(qf=qf, jax=jax, jnp=jnp, np=np)
        monkeypatch.chdir(tmp_path)
