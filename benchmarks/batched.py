"""Batched driven-Kerr sweeps: qflow_jax vs dynamiqs, warm, in one process.

    H_b = Delta_b a^dag a + K a^dag a^dag a a + F (a + a^dag),   L = sqrt(kappa) a,
    rho0 = |0><0|, K = 0.5, F = 2, kappa = 1, Delta_b in linspace(-1, 1, B),

in a Fock basis of 30, t in [0, 10] with 101 saves, <n> only, rtol 1e-6, atol 1e-8
(the same norm for both: diffrax's RMS norm), for B in {4, 16, 64, 512}; the
gradient of the summed final <n> with respect to (K, kappa); and the small case
(Fock 12, B = 4, t in [0, 2], 21 saves). qflow_jax runs with its default
batch_mode ("auto": "map" on CPU) and with batch_mode="vmap" (what accelerators
use); dynamiqs with its Tsit5 on its own sparse operators (both a stack of sparse
Hamiltonians and one dense batched array are timed; the faster counts).

Every time is the median of 3 warm calls (1 at B = 512) after one call that
compiles. Gradients are timed up to B = 64, dynamiqs' dense layout up to B = 16 (it
is 2-3x slower than its sparse one there). Each row also gives the mean number of
steps per batch element and the time per step and element, to tell per-step cost
from step count; the per-call overhead is the small case's business.

Run: python benchmarks/batched.py [--quick] [--out FILE]
(peers: pip install ".[bench]")
--quick: B in {4, 16}, 1 warm run.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _common import engine_versions, print_table, run_engine, time_warm, write_json

import qflow_jax as qf

KERR, DRIVE, KAPPA = 0.5, 2.0, 1.0
RTOL, ATOL = 1e-6, 1e-8


def deltas(B: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, B)


def qflow_solve(N, B, t_end, n_save, batch_mode, repeats, grad):
    a = qf.destroy(N)
    n_op = qf.number(N)
    Hk = qf.create(N) @ qf.create(N) @ a @ a
    drive = DRIVE * (a + qf.create(N))
    d = jnp.asarray(deltas(B))
    t = jnp.linspace(0.0, t_end, n_save)
    rho0 = qf.fock_dm(N, 0)

    def solve(kerr, kappa):
        H = d[:, None, None] * n_op + kerr * Hk + drive
        return qf.mesolve(
            H,
            [jnp.sqrt(kappa) * a],
            rho0,
            t,
            exp_ops=[n_op],
            save_states=False,
            rtol=RTOL,
            atol=ATOL,
            batch_mode=batch_mode,
        )

    def run():
        res = solve(KERR, KAPPA)
        return jax.block_until_ready(res.expects), res.stats["num_steps"]

    def loss(p):
        return jnp.sum(solve(p[0], p[1]).expects[:, 0, -1].real)

    return _timed(run, loss, repeats, grad)


def _timed(run, loss, repeats, grad):
    """((first, warm, expects, mean steps), (first, warm, gradient) or None)."""
    first, warm, (ex, steps) = time_warm(run, repeats)
    out = (first, warm, ex, float(np.mean(np.asarray(steps))))
    if not grad:
        return out, None
    g = jax.grad(loss)
    p0 = jnp.array([KERR, KAPPA])
    return out, time_warm(lambda: jax.block_until_ready(g(p0)), repeats)


def dynamiqs_solve(N, B, t_end, n_save, layout, repeats, grad):
    import dynamiqs as dq

    a = dq.destroy(N)
    ad = dq.dag(a)
    n_op = ad @ a
    Hk = ad @ ad @ a @ a
    drive = DRIVE * (a + ad)
    d = deltas(B)
    t = jnp.linspace(0.0, t_end, n_save)
    rho0 = dq.fock_dm(N, 0)
    method = dq.method.Tsit5(rtol=RTOL, atol=ATOL, max_steps=10**6)

    def solve(kerr, kappa, gradient=None):
        if layout == "sparse":
            H = dq.stack([float(x) * n_op + kerr * Hk + drive for x in d])
        else:
            H = (
                jnp.asarray(d)[:, None, None] * n_op.to_jax()
                + (kerr * Hk + drive).to_jax()
            )
        return dq.mesolve(
            H,
            [jnp.sqrt(kappa) * a],
            rho0,
            t,
            exp_ops=[n_op],
            method=method,
            gradient=gradient,
            save_states=False,
            progress_meter=False,
        )

    def run():
        res = solve(KERR, KAPPA)
        return jax.block_until_ready(res.expects), res.infos.nsteps

    def loss(p):
        res = solve(p[0], p[1], dq.gradient.BackwardCheckpointed())
        return jnp.sum(res.expects[:, 0, -1].real)

    return _timed(run, loss, repeats, grad)


def case_rows(label, N, B, t_end, n_save, repeats):
    rows, ref = [], None
    grad = B <= 64
    for name, fn, arg in (
        ("qflow_jax (auto)", qflow_solve, "auto"),
        ("qflow_jax (vmap)", qflow_solve, "vmap"),
        ("dynamiqs (sparse)", dynamiqs_solve, "sparse"),
        ("dynamiqs (dense)", dynamiqs_solve, "dense"),
    ):
        if arg == "dense" and B > 16:
            continue
        out, status, reason = run_engine(fn, N, B, t_end, n_save, arg, repeats, grad)
        if status != "ok":
            print(f"{name}: {status} ({reason})")
            rows.append({"case": label, "solver": name, "status": status})
            continue
        (first, warm, ex, steps), g = out
        n = np.asarray(ex).reshape(B, -1).real
        ref = n if ref is None else ref
        row = {
            "case": label,
            "solver": name,
            "status": "ok",
            "first_s": first,
            "warm_s": warm,
            "steps_per_element": steps,
            "us_per_step_element": 1e6 * warm / (steps * B),
            "max|dn| vs qflow": float(np.abs(n - ref).max()),
        }
        if g is not None:
            row |= {
                "grad_first_s": g[0],
                "grad_warm_s": g[1],
                "grad": [float(x) for x in np.asarray(g[2])],
            }
        rows.append(row)
    ok = {r["solver"]: r for r in rows if r["status"] == "ok"}
    dq_rows = [r for k, r in ok.items() if k.startswith("dynamiqs")]
    if dq_rows:
        best = min(r["warm_s"] for r in dq_rows)
        gbest = min(
            (r["grad_warm_s"] for r in dq_rows if "grad_warm_s" in r), default=None
        )
        for r in ok.values():
            if r["solver"].startswith("qflow_jax"):
                r["speedup_vs_dynamiqs"] = best / r["warm_s"]
                if gbest is not None:
                    r["grad_speedup_vs_dynamiqs"] = gbest / r["grad_warm_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B in {4, 16}, 1 run")
    parser.add_argument("--out", default=None, help="JSON file")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    sizes = (4, 16) if args.quick else (4, 16, 64, 512)
    cases = [("small N=12 B=4 t=2", 12, 4, 2.0, 21)]
    cases += [(f"kerr N=30 B={B}", 30, B, 10.0, 101) for B in sizes]
    rows = []
    for label, N, B, t_end, n_save in cases:
        rows += case_rows(label, N, B, t_end, n_save, repeats)
        print_table(
            [r for r in rows if r["case"] == label],
            [
                "case",
                "solver",
                "warm_s",
                "steps_per_element",
                "us_per_step_element",
                "grad_warm_s",
                "speedup_vs_dynamiqs",
                "grad_speedup_vs_dynamiqs",
                "max|dn| vs qflow",
            ],
        )
    path = write_json(
        "batched",
        {
            "quick": args.quick,
            "problem": {
                "kerr": KERR,
                "drive": DRIVE,
                "kappa": KAPPA,
                "rtol": RTOL,
                "atol": ATOL,
                "warm_repeats": "3 (1 at B = 512; 1 with --quick)",
            },
            "engine_versions": engine_versions(),
            "rows": rows,
        },
        path=args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
