"""Benchmark: ring of n qubits, qflow_jax structured engine vs QuTiP and dynamiqs.

Model: H_j = (j+1)/2 sigmaz + 0.3 sigmax, L_j = sqrt(0.1) sigmam, swap gain k = 5 on
a ring, product initial state (|0> on even, |+> on odd qubits), t in [0, 5], 51
saves, rtol 1e-6, atol 1e-8. n = 4, 6, 8 with all three solvers (second, warm
call timed), then qflow_jax alone at n = 10 and 11, each in a fresh process (time
and peak memory: host RSS on CPU, device peak on an accelerator).

Floor: a right-hand side must at least read rho and write d rho/dt
(2 x 16 x 4^n bytes); the per-term model reads rho once per term and writes the
result once ((terms + 1) x 16 x 4^n bytes). Each is divided by the copy bandwidth
measured here at the same array size and multiplied by the number of right-hand-side
evaluations (Tsit5: 6 per step). Copy and right-hand side are timed inside one jitted
loop, so that per-call dispatch (tens of microseconds, as long as a whole pass at
n = 8) does not count as memory traffic. `floor_vs_10x` compares the per-term floor
with a tenth of the QuTiP time: above 1, no kernel of this term count and step count
can be 10x faster than QuTiP. `solver_s` is the solve time left after the
right-hand sides (qflow time - rhs_s x rhs_evals): the integrator's own work per step
(`UnrolledTsit5`: stage combinations, error norm, dense output; diffrax's step loop
and saves). Each n <= 8 row also times the engine with diffrax's own `Tsit5`
(`qflow_diffrax_tsit5_s`), whose stage buffer the default `UnrolledTsit5` avoids.

The right-hand side runs on the compiled CPU kernel where it builds
(`network_mesolve(kernel="auto")`; `kernel` in the JSON says which ran); `rhs_xla_s`
and `qflow_xla_s` time the XLA kernel (the fallback) in the same run.

`row_pass_s` times one fused pass with the right-hand side's term count in which
every term reads rho with flipped row bits (contiguous rows): the same traffic,
without the column permutations (flips and swaps of column bits are gathers).

--quick: n = 4 and 6 only, one warm call per solver, no n = 10/11 runs (well under
a minute on one CPU core). --out FILE: write the JSON there instead of
benchmarks/results/network.json. A peer that is not installed or fails gets rows
with that status and a reason; the run goes on.

Run: python benchmarks/network.py [--quick] [--out FILE]
(`--single N` is the internal fresh-process run of the large cases; peers: pip
install ".[bench]")
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
from _common import engine_row, engine_versions, run_engine, write_json

import qflow_jax as qf
from qflow_jax.network import (
    NetworkVectorField,
    QubitNetwork,
    network_mesolve,
    product_state,
)
from qflow_jax.network.vector_field import _flip_rows

K, GAMMA, T_END, N_SAVE, RTOL, ATOL = 5.0, 0.1, 5.0, 51, 1e-6, 1e-8


def ring(n: int, k: float = K) -> QubitNetwork:
    return QubitNetwork(
        n,
        "ring",
        k=k,
        H=[(j + 1) / 2 * qf.sigmaz() + 0.3 * qf.sigmax() for j in range(n)],
        jump_ops=[[math.sqrt(GAMMA) * qf.sigmam()] for _ in range(n)],
    )


def initial_factors(n: int) -> list[np.ndarray]:
    plus = np.full((2, 2), 0.5, dtype=complex)
    return [np.asarray(qf.fock_dm(2, 0)) if j % 2 == 0 else plus for j in range(n)]


def z0(n: int) -> np.ndarray:
    return np.kron(np.diag([1.0, -1.0]), np.eye(2 ** (n - 1))).astype(complex)


def timed(fn, repeat: int = 1):
    _, best, out = timed_first(fn, repeat)
    return best, out


def timed_first(fn, repeat: int = 1):
    """(first-call time, best of `repeat` later calls, last output)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return first, best, out


def run_qflow(
    n: int, warm: bool = True, repeat: int = 3, method="tsit5", kernel="auto"
):
    net, tsave = ring(n), np.linspace(0.0, T_END, N_SAVE)

    def solve():
        res = network_mesolve(
            net,
            initial_factors(n),
            tsave,
            method=method,
            rtol=RTOL,
            atol=ATOL,
            save_states=False,
            kernel=kernel,
        )
        res.reduced.block_until_ready()
        return res

    if warm:
        first, t, res = timed_first(solve, repeat)
    else:
        t0 = time.perf_counter()
        res = solve()
        first = t = time.perf_counter() - t0
    z = np.asarray(res.reduced[:, 0, 0, 0] - res.reduced[:, 0, 1, 1]).real
    return first, t, z, int(res.stats["num_steps"])


def run_qutip(n: int, repeat: int = 3):
    import qutip

    H, jumps = ring(n).dense_operators()
    rho0 = qutip.Qobj(np.asarray(product_state(initial_factors(n))), dims=[[2] * n] * 2)
    # sparse (CSR) operators, as QuTiP users build them with tensor()
    Hq = qutip.Qobj(H, dims=[[2] * n] * 2).to("CSR")
    cq = [qutip.Qobj(L, dims=[[2] * n] * 2).to("CSR") for L in jumps]
    ez = qutip.Qobj(z0(n), dims=[[2] * n] * 2)
    tsave = np.linspace(0.0, T_END, N_SAVE)

    def solve():
        return qutip.mesolve(
            Hq, rho0, tsave, cq, e_ops=[ez], options={"rtol": RTOL, "atol": ATOL}
        )

    first, t, res = timed_first(solve, repeat)
    # untimed: the same solve with a counting coefficient, for QuTiP's number of
    # right-hand-side evaluations (its Adams method takes one or two per step)
    calls = []
    counted = qutip.QobjEvo(
        [qutip.liouvillian(Hq, cq), lambda t: calls.append(t) or 1.0]
    )
    qutip.mesolve(
        counted, rho0, tsave, e_ops=[ez], options={"rtol": RTOL, "atol": ATOL}
    )
    return first, t, np.asarray(res.expect[0]).real, len(calls)


def run_dynamiqs(n: int):
    import dynamiqs as dq

    H, jumps = ring(n).dense_operators()
    rho0 = jnp.asarray(product_state(initial_factors(n)))
    tsave = jnp.linspace(0.0, T_END, N_SAVE)
    method = dq.method.Tsit5(rtol=RTOL, atol=ATOL, max_steps=1_000_000)
    Hd = dq.asqarray(jnp.asarray(H), dims=(2,) * n)
    Ld = [dq.asqarray(jnp.asarray(L), dims=(2,) * n) for L in jumps]
    rho0 = dq.asqarray(rho0, dims=(2,) * n)
    ez = dq.asqarray(jnp.asarray(z0(n)), dims=(2,) * n)

    def solve():
        res = dq.mesolve(
            Hd,
            Ld,
            rho0,
            tsave,
            exp_ops=[ez],
            method=method,
            save_states=False,
            progress_meter=False,
        )
        res.expects.block_until_ready()
        return res

    first, t, res = timed_first(solve)  # one warm call: over a minute at n = 8
    return first, t, np.asarray(res.expects[0]).real


def pass_time(step, x: jax.Array) -> float:
    """Seconds per application of `step` to x, iterated in one jitted loop."""
    reps = max(3, int(2e8 // x.nbytes))
    f = jax.jit(lambda x: jax.lax.fori_loop(0, reps, lambda i, y: step(y), x))
    t, _ = timed(lambda: f(x).block_until_ready(), 5)
    return t / reps


def copy_bandwidth(n: int) -> float:
    """Bytes per second of a read + write pass over a 2^n x 2^n complex128 array."""
    x = jnp.ones((2**n, 2**n), dtype=jnp.complex128)
    return 2 * x.nbytes / pass_time(lambda y: y * 0.9999999, x)


def rhs_time(n: int, kernel: str = "auto") -> float:
    """Seconds per right-hand side (an Euler update, fused into the same pass)."""
    vf = NetworkVectorField.build(ring(n), kernel=kernel)
    rho = jnp.asarray(product_state(initial_factors(n)))
    return pass_time(lambda r: r + 1e-3 * vf(0.0, r, None), rho)


def row_pass_time(n: int, terms: int) -> float:
    """Seconds per fused pass of `terms` reads of rho with flipped row bits (scalar
    coefficients, output written once): the same traffic as the right-hand side with
    only contiguous-row permutations, i.e. what this term count costs when no term
    permutes columns."""
    rho = jnp.asarray(product_state(initial_factors(n)))

    def step(y):
        out = -0.5 * y
        for i in range(terms):
            out = out + (1e-3 / terms) * _flip_rows(y, (i % n,))
        return y + out

    return pass_time(step, rho)


def floors(n: int, steps: int) -> dict[str, float]:
    vf = NetworkVectorField.build(ring(n), kernel="auto")
    terms = 1 + 2 * len(vf.flip_patterns) + len(vf.jump_patterns) + len(vf.edges)
    evals = 6 * steps + 1
    bw = copy_bandwidth(n)
    entry = 16 * 4**n
    return {
        "terms": terms,
        "rhs_evals": evals,
        "copy_GBps": bw / 1e9,
        "kernel": vf.kernel,
        "rhs_s": rhs_time(n),
        "rhs_xla_s": rhs_time(n, "xla"),
        "row_pass_s": row_pass_time(n, terms),
        "floor_min_s": evals * 2 * entry / bw,
        "floor_terms_s": evals * (terms + 1) * entry / bw,
    }


def single(n: int) -> dict[str, float]:
    _, t, z, steps = run_qflow(n, warm=False)  # one call, compilation included
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:  # accelerator memory
        peak = stats["peak_bytes_in_use"] / 2**20
    else:  # host resident set
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fl = floors(n, steps)
    return {
        "n": n,
        "qflow_s": t,
        "steps": steps,
        "peak_MiB": peak,
        "z0_final": float(z[-1]),
        **fl,
    }


def _f(x: float | None, spec: str) -> str:
    """x formatted by `spec`, or "-" right-aligned to its width when None."""
    if x is None:
        return "-".rjust(int(spec.split(".")[0] or 0))
    return format(x, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def _maxdiff(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    return None if a is None or b is None else float(np.abs(a - b).max())


def main(quick: bool = False, out: str | None = None) -> None:
    ns, repeat = ((4, 6), 1) if quick else ((4, 6, 8), 3)
    rows, engine_rows = [], []
    print(
        f"{'n':>3} {'qflow s':>9} {'qutip s':>9} {'dynamiqs s':>11} {'x qutip':>8} "
        f"{'x dq':>7} {'|dz| qt':>9} {'|dz| dq':>9} {'t/floor':>8} {'rhs/fl':>7} "
        f"{'fl/10x':>7} {'solver s':>9}"
    )
    for n in ns:
        case = f"ring n={n}"
        fq, tq, zq, steps = run_qflow(n, repeat=repeat)
        # the same engine with diffrax's own Tsit5 (stage buffer) instead of the
        # default UnrolledTsit5
        t_dfx = run_qflow(n, repeat=repeat, method=dfx.Tsit5())[1]
        t_xla = run_qflow(n, repeat=repeat, kernel="xla")[1]
        peer = {
            "qutip": run_engine(run_qutip, n, repeat),
            "dynamiqs": run_engine(run_dynamiqs, n),
        }
        first = {k: None if v[0] is None else v[0][0] for k, v in peer.items()}
        t = {k: None if v[0] is None else v[0][1] for k, v in peer.items()}
        z = {k: None if v[0] is None else v[0][2] for k, v in peer.items()}
        tt, td, zt, zd = t["qutip"], t["dynamiqs"], z["qutip"], z["dynamiqs"]
        fl = floors(n, steps)
        row = {
            "n": n,
            "qflow_s": tq,
            "qutip_s": tt,
            "dynamiqs_s": td,
            "steps": steps,
            "err_vs_qutip": _maxdiff(zq, zt),
            "err_vs_dynamiqs": _maxdiff(zq, zd),
            **fl,
            "floor_vs_10x": None if tt is None else fl["floor_terms_s"] / (tt / 10),
            "solver_s": tq - fl["rhs_s"] * fl["rhs_evals"],
            "qflow_diffrax_tsit5_s": t_dfx,
            "qflow_xla_s": t_xla,
            "qutip_rhs_evals": None
            if peer["qutip"][0] is None
            else peer["qutip"][0][3],
        }
        rows.append(row)
        engine_rows.append(
            engine_row(
                case,
                "qflow_jax",
                time_s=tq,
                first_s=fq,
                max_abs_diff_vs_qutip=row["err_vs_qutip"],
                peak_MiB=None,
            )
        )
        for name, (_, status, reason) in peer.items():
            engine_rows.append(
                engine_row(
                    case,
                    name,
                    time_s=t[name],
                    first_s=first[name],
                    qflow_s=tq,
                    max_abs_diff_vs_qutip=_maxdiff(z[name], zt),
                    status=status,
                    reason=reason,
                    peak_MiB=None,
                )
            )
        print(
            f"{n:>3} {tq:9.3f} {_f(tt, '9.3f')} {_f(td, '11.3f')} "
            f"{_f(_ratio(tt, tq), '8.1f')} {_f(_ratio(td, tq), '7.1f')} "
            f"{_f(row['err_vs_qutip'], '9.1e')} {_f(row['err_vs_dynamiqs'], '9.1e')} "
            f"{tq / fl['floor_terms_s']:8.2f} "
            f"{fl['rhs_s'] * fl['rhs_evals'] / fl['floor_terms_s']:7.2f} "
            f"{_f(row['floor_vs_10x'], '7.2f')} {row['solver_s']:9.3f}"
        )
        print(
            f"    kernel {fl['kernel']}: {1e3 * fl['rhs_s']:.3f} ms per right-hand side"
            f"; XLA kernel {1e3 * fl['rhs_xla_s']:.3f} ms "
            f"({fl['rhs_xla_s'] * fl['rhs_evals'] / fl['floor_terms_s']:.2f} x floor)"
            f", whole solve with it {t_xla:.3f} s"
        )
        print(
            f"    right-hand sides: qflow_jax {fl['rhs_evals']}, QuTiP "
            f"{row['qutip_rhs_evals'] or '-'}; "
            f"qflow_jax with diffrax.Tsit5: {t_dfx:.3f} s ({t_dfx / tq:.2f}x); "
            f"a pass of {fl['terms']} row-flipped reads: "
            f"{fl['row_pass_s'] / fl['rhs_s']:.2f} x the right-hand side, "
            f"{fl['row_pass_s'] * fl['rhs_evals'] / fl['floor_terms_s']:.2f} x floor"
        )
        for name, (_, status, reason) in peer.items():
            if status != "ok":
                print(f"    {name}: {status} ({reason})")
    big = []
    for n in () if quick else (10, 11):
        proc = subprocess.run(
            [sys.executable, __file__, "--single", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        big.append(row)
        # one cold call (compilation included) in a fresh process; qflow_jax only
        engine_rows.append(
            engine_row(
                f"ring n={n}",
                "qflow_jax",
                time_s=row["qflow_s"],
                first_s=row["qflow_s"],
                peak_MiB=row["peak_MiB"],
            )
        )
        print(
            f"n={n}: qflow_jax {row['qflow_s']:.1f} s, {row['steps']} steps, "
            f"peak memory {row['peak_MiB']:.0f} MiB, "
            f"<sigmaz_0>(T) = {row['z0_final']:.6f}, t/floor "
            f"{row['qflow_s'] / row['floor_terms_s']:.2f}, rhs/floor "
            f"{row['rhs_s'] * row['rhs_evals'] / row['floor_terms_s']:.2f} "
            f"({row['kernel']}; XLA kernel "
            f"{row['rhs_xla_s'] * row['rhs_evals'] / row['floor_terms_s']:.2f}), "
            f"row-flip pass/floor "
            f"{row['row_pass_s'] * row['rhs_evals'] / row['floor_terms_s']:.2f}"
        )
    path = write_json(
        "network",
        {
            "quick": quick,
            "problem": {
                "model": "ring",
                "k": K,
                "gamma": GAMMA,
                "t_end": T_END,
                "n_save": N_SAVE,
                "rtol": RTOL,
                "atol": ATOL,
                "compare_n": list(ns),
                "warm_repeats": repeat,
                "large_n": [r["n"] for r in big],
            },
            "compare": rows,
            "large": big,
            "engine_versions": engine_versions(),
            "engine_rows": engine_rows,
        },
        path=out,
    )
    print(f"written {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="n = 4, 6 only, 1 warm call, no n >= 10"
    )
    parser.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/...)"
    )
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single is not None:
        print(json.dumps(single(args.single)))
    else:
        main(quick=args.quick, out=args.out)
