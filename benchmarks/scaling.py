"""Benchmark: samples per second of an Euler-KL step and of a TDVP step vs devices.

Problem: four damped modes with hopping (8 real dimensions), a 4-layer affine flow,
4096 samples per batch. Euler-KL: inner optimizer steps of the default (reverse,
midpoint) objective; TDVP: theta_dot from S theta_dot = F, with the matrix-free S
and conjugate gradients ("tdvp", the per-sample work) and with the dense S and its
pseudo-inverse ("tdvp_dense", bound by the replicated P x P eigendecomposition).
On the CPU backend the script runs itself once per forced device count (1, 2, 4:
XLA_FLAGS --xla_force_host_platform_device_count) in fresh processes; on an
accelerator it measures the devices it has. Samples are split over devices by
qflow_jax.parallel.

Note: forced CPU devices share the machine's cores, so on a 2-core machine more than
two devices cannot add throughput; the numbers show the overhead of the split.

Run: python benchmarks/scaling.py  (writes benchmarks/results/scaling[_gpu].json)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from _common import print_table, write_json

from qflow_jax.evolution import EulerKLSettings, TDVPSettings, tdvp_theta_dot
from qflow_jax.evolution._flowfns import flatten
from qflow_jax.evolution.euler_kl import euler_kl_step
from qflow_jax.flows import NormalizingFlow
from qflow_jax.husimi import a, adag, compile_qpde

MODES, BATCH, INNER = 4, 4096, 20


def problem():
    H = sum((adag(j) @ a(j) for j in range(MODES)), start=0.0 * a(0))
    H = H + sum(
        (0.5 * (adag(j) @ a(j + 1) + adag(j + 1) @ a(j)) for j in range(MODES - 1)),
        start=0.0 * a(0),
    )
    pde = compile_qpde(H, [a(j) for j in range(MODES)], n_modes=MODES)
    flow = NormalizingFlow(dim=2 * MODES, n_layers=4, hidden=(32,))
    params = flow.init(jax.random.key(0), jnp.zeros((1, 2 * MODES)))
    return pde, flow, params


def measure() -> dict[str, float]:
    pde, flow, params = problem()
    st = EulerKLSettings(batch_size=BATCH, max_inner_steps=INNER, min_inner_steps=INNER)
    euler_kl_step(flow, pde, params, jax.random.key(1), st)  # compile
    t0 = time.perf_counter()
    new, _ = euler_kl_step(flow, pde, params, jax.random.key(2), st)
    jax.block_until_ready(new)
    euler = time.perf_counter() - t0

    theta, unravel = flatten(params)
    z = jax.random.normal(jax.random.key(3), (BATCH, 2 * MODES))
    out = {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        # two fits per midpoint step
        "euler_kl_samples_per_s": 2 * INNER * BATCH / euler,
    }
    # matrix-free S (Jacobian-vector products) with CG: the per-sample work that the
    # devices split; dense S with the pseudo-inverse: its eigendecomposition of the
    # P x P matrix (P = 3344 here) is replicated on every device and dominates
    for name, builder, solver, reps in (
        ("tdvp", "matrix_free", "cg", 5),
        ("tdvp_dense", "dense", "pinv", 1),
    ):
        tst = TDVPSettings(batch_size=BATCH, s_builder=builder, linear_solver=solver)
        fn = jax.jit(
            lambda th, z, tst=tst: tdvp_theta_dot(flow, pde, th, unravel, z, tst)[0]
        )
        fn(theta, z).block_until_ready()
        t0 = time.perf_counter()
        for _ in range(reps):
            res = fn(theta, z)
        res.block_until_ready()
        out[f"{name}_samples_per_s"] = BATCH * reps / (time.perf_counter() - t0)
    out["parameters"] = int(theta.size)
    return out


def main() -> None:
    if jax.default_backend() != "cpu":
        rows = [measure()]
    else:
        rows = []
        for n in (1, 2, 4):
            env = dict(os.environ)
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
            out = subprocess.run(
                [sys.executable, __file__, "--single"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows:
        for m in ("euler_kl", "tdvp", "tdvp_dense"):
            r[f"{m}_speedup"] = r[f"{m}_samples_per_s"] / base[f"{m}_samples_per_s"]
    print(
        f"{MODES} damped modes ({2 * MODES} dims), batch {BATCH}, "
        f"{os.cpu_count()} CPU cores"
    )
    print_table(
        rows,
        [
            "backend",
            "devices",
            "euler_kl_samples_per_s",
            "euler_kl_speedup",
            "tdvp_samples_per_s",
            "tdvp_speedup",
            "tdvp_dense_samples_per_s",
            "tdvp_dense_speedup",
        ],
    )
    path = write_json("scaling", {"rows": rows, "modes": MODES, "batch": BATCH})
    print(f"wrote {path}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--single"]:
        print(json.dumps(measure()))
    else:
        main()
