"""Why spline couplings bias the Q-PDE: a measurement.

For a smooth normalized density q, the integral of (L q) vanishes for every
Lindbladian's Q-PDE operator L (it conserves probability), so E_q[(L q)/q] = 0. The
kernels evaluate (L q)/q pointwise from derivatives of log q
(`qflow_jax.husimi.dlogq_dt`). Rational-quadratic splines are only C^1: their second
derivatives jump at the knots, and the delta terms there are invisible to pointwise
derivatives. A spline flow then has E_q[(L q)/q] != 0, so TDVP and Euler-KL follow a
biased PDE. This script estimates E_q[(L q)/q] with its standard error for affine and
spline flows whose parameters are moved off the identity, on the damped oscillator
(L_j = a, a second-order PDE).

    python benchmarks/spline_smoothness.py [--samples 2000000]
"""

from __future__ import annotations

import argparse
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qflow_jax.evolution._flowfns import logq_fn, sample_and_log_prob
from qflow_jax.flows import NormalizingFlow, perturb_params
from qflow_jax.husimi import a, adag, compile_qpde, dlogq_dt


def moved_flow(coupling: str, scale: float, seed: int = 0):
    """A 2-D flow whose parameters are moved by N(0, scale^2) off the start."""
    flow = NormalizingFlow(dim=2, coupling=coupling, n_bins=6, hidden=(32, 32))
    params = flow.init(jax.random.key(seed), jnp.zeros((1, 2)))
    return flow, perturb_params(params, jax.random.key(seed + 1), scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=2_000_000, help="a multiple of 200000"
    )
    args = parser.parse_args()
    pde = compile_qpde(adag(0) @ a(0), [a(0)])
    kernel = eqx.filter_jit(dlogq_dt)
    rows = []
    for coupling in ("affine", "spline"):
        for scale in (0.01, 0.03):
            flow, params = moved_flow(coupling, scale)
            x, _ = sample_and_log_prob(flow, params, jax.random.key(1), args.samples)
            s = np.concatenate(  # in chunks: spline derivatives take memory
                [
                    np.asarray(kernel(pde, logq_fn(flow, params), chunk))
                    for chunk in jnp.split(x, args.samples // 200_000)
                ]
            )
            mean, err = float(s.mean()), float(s.std() / np.sqrt(s.size))
            rows.append(
                {"coupling": coupling, "scale": scale, "mean": mean, "stderr": err}
            )
            print(
                f"{coupling:6s} moved by {scale}: E_q[(L q)/q] = {mean:+.2e} "
                f"+- {err:.1e} ({abs(mean) / err:.1f} standard errors)"
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
