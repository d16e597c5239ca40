"""UnrolledTsit5 against diffrax.Tsit5 and an exact linear solution."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from qflow_jax.network import network_mesolve
from qflow_jax.network.tsit5 import UnrolledTsit5
from tests.helpers import random_network

pytestmark = pytest.mark.filterwarnings("ignore:Complex dtype support")


def _solve(solver, M, y0, ts, rtol, atol):
    return dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: M @ y),
        solver,
        ts[0],
        ts[-1],
        None,
        y0,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
    )


def test_same_steps_and_solution_as_diffrax_tsit5():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 6)) + 1j * rng.normal(size=(6, 6))
    M = jnp.asarray(A - 3.0 * np.eye(6))
    y0 = jnp.asarray(rng.normal(size=6) + 0j)
    ts = jnp.linspace(0.0, 2.0, 17)  # saves between steps: dense output
    ref = _solve(dfx.Tsit5(), M, y0, ts, 1e-6, 1e-8)
    got = _solve(UnrolledTsit5(), M, y0, ts, 1e-6, 1e-8)
    for key in ("num_accepted_steps", "num_rejected_steps"):
        assert int(got.stats[key]) == int(ref.stats[key]) > 0
    assert float(jnp.abs(got.ys - ref.ys).max()) < 1e-12


def test_dense_output_converges_to_exact_solution():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(5, 5)) + 1j * rng.normal(size=(5, 5))
    M = A - A.conj().T - 0.5 * np.eye(5)  # oscillating and decaying
    y0 = rng.normal(size=5) + 0j
    ts = np.linspace(0.0, 3.0, 31)
    exact = np.stack([scipy.linalg.expm(M * t) @ y0 for t in ts])
    errs = []
    for tol in (1e-5, 1e-8):
        sol = _solve(UnrolledTsit5(), jnp.asarray(M), jnp.asarray(y0), ts, tol, tol)
        errs.append(np.abs(np.asarray(sol.ys) - exact).max())
    # global error follows the tolerance (within the usual factor of 10-100)
    assert errs[0] < 1e-3 and errs[1] < 1e-6 and errs[1] < 1e-2 * errs[0]


def test_network_default_is_unrolled_and_matches_diffrax():
    net = random_network(3, seed=7)
    rho0 = np.eye(8) / 8
    ts = np.linspace(0.0, 1.0, 6)
    got = network_mesolve(net, rho0, ts, rtol=1e-8, atol=1e-10)
    ref = network_mesolve(net, rho0, ts, method=dfx.Tsit5(), rtol=1e-8, atol=1e-10)
    assert int(got.stats["num_steps"]) == int(ref.stats["num_steps"])
    assert float(jnp.abs(got.states - ref.states).max()) < 1e-12


def test_single_step_with_python_times_and_nan_step():
    solver = UnrolledTsit5()
    term = dfx.ODETerm(lambda t, y, args: -y)
    y0 = jnp.ones(3)
    f0 = solver.init(term, 0.0, 0.1, y0, None)
    y1, err, _, f1, _ = solver.step(term, 0.0, 0.1, y0, None, f0, False)
    np.testing.assert_allclose(np.asarray(y1), np.exp(-0.1), rtol=1e-7)
    np.testing.assert_allclose(np.asarray(f1), -np.asarray(y1), rtol=1e-12)
    assert float(jnp.abs(err).max()) < 1e-6
    # a NaN step gives NaN, never a silent value
    y_nan = jax.jit(solver.step, static_argnums=0)(
        term, 0.0, jnp.nan, y0, None, f0, False
    )[0]
    assert bool(jnp.all(jnp.isnan(y_nan)))
