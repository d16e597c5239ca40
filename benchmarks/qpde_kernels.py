"""Cost of the Q-PDE kernels and grid solvers against dimension.

1. `dlogq_dt` per point for a damped multimode oscillator (linear chain, diagonal
   diffusion) with a small MLP log-density, 2N = 2, 4, ..., 40 real dimensions, exact
   Hessian diagonal and Hutchinson (4 probes).
2. FD and spectral grid solvers: time and estimated memory per Tsit5 step in 2, 4, 6
   dimensions, up to the first grid refused for memory.

Prints a table and the fitted growth exponents (log time vs log dimension), and
writes benchmarks/results/qpde_kernels.json.

    python benchmarks/qpde_kernels.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import write_json

import qflow_jax  # noqa: F401  (enables float64)
from qflow_jax.husimi import (
    Grid,
    a,
    adag,
    coherent_q,
    compile_qpde,
    estimate_grid_memory,
    solve_fd,
    solve_spectral,
)


def damped_chain(n_modes: int):
    H = sum(1.0 * adag(j) @ a(j) for j in range(n_modes))
    H = H + sum(
        0.3 * (adag(j) @ a(j + 1) + adag(j + 1) @ a(j)) for j in range(n_modes - 1)
    )
    return compile_qpde(H, [0.5 * a(j) for j in range(n_modes)])


class MLP(eqx.Module):
    layers: list

    def __init__(self, dim: int, width: int, key: jax.Array):
        keys = jax.random.split(key, 3)
        self.layers = [
            eqx.nn.Linear(dim, width, key=keys[0]),
            eqx.nn.Linear(width, width, key=keys[1]),
            eqx.nn.Linear(width, "scalar", key=keys[2]),
        ]

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.tanh(self.layers[0](x))
        h = jnp.tanh(self.layers[1](h))
        return self.layers[2](h) - 0.5 * jnp.sum(x**2)


def best_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def exponent(dims, times) -> float:
    return float(np.polyfit(np.log(dims), np.log(times), 1)[0])


def bench_kernels(dims, n_points: int, width: int, repeats: int) -> list[dict]:
    rows = []
    for dim in dims:
        pde = damped_chain(dim // 2)
        logq = MLP(dim, width, jax.random.PRNGKey(0))
        x = jax.random.normal(jax.random.PRNGKey(1), (n_points, dim))
        key = jax.random.PRNGKey(2)
        t_exact = best_time(functools.partial(pde.dlogq_dt, logq, x), repeats)
        hutchinson = functools.partial(
            pde.dlogq_dt, logq, x, trace_estimator="hutchinson", num_probes=4, key=key
        )
        t_hutch = best_time(hutchinson, repeats)
        rows.append(
            {
                "dim": dim,
                "exact_us_per_point": 1e6 * t_exact / n_points,
                "hutchinson4_us_per_point": 1e6 * t_hutch / n_points,
            }
        )
        print(
            f"  dim {dim:3d}: exact {rows[-1]['exact_us_per_point']:9.2f} us/pt   "
            f"hutchinson(4) {rows[-1]['hutchinson4_us_per_point']:9.2f} us/pt"
        )
    return rows


def bench_grids(points_by_dim: dict[int, list[int]], n_steps: int, max_memory: float):
    rows = []
    for dim, points in points_by_dim.items():
        pde = damped_chain(dim // 2)
        for method, solve in (("fd", solve_fd), ("spectral", solve_spectral)):
            for G in points:
                grid = Grid(dim, G, 5.0)
                dt = 1e-3
                tsave = jnp.array([0.0, n_steps * dt])

                run = functools.partial(
                    solve,
                    pde,
                    coherent_q([0.5] * (dim // 2)),
                    grid,
                    tsave,
                    stepsize_controller=dfx.ConstantStepSize(),
                    dt0=dt,
                    max_memory=max_memory,
                )

                try:
                    t = best_time(run, 1)
                except MemoryError as err:
                    rows.append(
                        {"dim": dim, "method": method, "points": G, "refused": str(err)}
                    )
                    print(f"  {method:8s} {dim}-D G={G:3d}: refused ({err})")
                    break
                mem = estimate_grid_memory(grid, method, 2)
                rows.append(
                    {
                        "dim": dim,
                        "method": method,
                        "points": G,
                        "n_points": grid.n_points,
                        "ms_per_step": 1e3 * t / n_steps,
                        "memory_MiB": mem / 2**20,
                    }
                )
                print(
                    f"  {method:8s} {dim}-D G={G:3d} ({grid.n_points:.2e} pts): "
                    f"{rows[-1]['ms_per_step']:9.3f} ms/step, {mem / 2**20:9.1f} MiB"
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer dims and repeats")
    args = parser.parse_args()
    dims = [2, 4, 8, 16] if args.quick else list(range(2, 42, 2))
    print(f"dlogq_dt, damped chain, MLP log-density (2 x 32 tanh), {jax.devices()[0]}")
    krows = bench_kernels(dims, n_points=2048, width=32, repeats=2 if args.quick else 5)
    big = [r for r in krows if r["dim"] >= 8] or krows
    e_exact = exponent([r["dim"] for r in big], [r["exact_us_per_point"] for r in big])
    e_hutch = exponent(
        [r["dim"] for r in big], [r["hutchinson4_us_per_point"] for r in big]
    )
    print(f"growth exponent (dim >= 8): exact {e_exact:.2f}, hutchinson {e_hutch:.2f}")
    points = {2: [32, 64, 128, 256], 4: [12, 16, 24, 32], 6: [8, 12, 16, 24, 32]}
    if args.quick:
        points = {2: [32, 64], 4: [12, 16], 6: [8, 12]}
    print("grid solvers, Tsit5 constant step, memory limit 4 GiB")
    grows = bench_grids(points, n_steps=10, max_memory=4 * 2**30)
    for method in ("fd", "spectral"):
        done = [r for r in grows if r["method"] == method and "ms_per_step" in r]
        e = exponent([r["n_points"] for r in done], [r["ms_per_step"] for r in done])
        print(f"{method}: time per step ~ n_points^{e:.2f}")
    out = write_json(
        "qpde_kernels",
        {
            "kernels": krows,
            "grids": grows,
            "exponents": {"exact": e_exact, "hutchinson": e_hutch},
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
