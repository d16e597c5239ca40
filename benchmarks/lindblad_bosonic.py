"""Driven Kerr oscillator in a Fock basis of 50: qflow_jax vs QuTiP vs dynamiqs.

    H = -0.1 a^dag a + 0.5 a^dag a^dag a a + 2 (a + a^dag),  L = a,  rho0 = |0><0|,
    t in [0, 10] with 101 saves, rtol 1e-6, atol 1e-8.

Every solver runs warm (the first call, with compilation, is reported apart);
the table gives the median of 3 warm runs, the ratio of each peer's time to
qflow_jax's, and the max difference of <a^dag a> from QuTiP's.

--quick: Fock basis of 20, t in [0, 5] with 51 saves, 1 warm run (well under a
minute on one CPU core); the JSON's "problem" states which was run.
--out FILE: write the JSON there instead of benchmarks/results/lindblad_bosonic.json.
A peer that is not installed or fails gets a row with that status and a reason.

Run: python benchmarks/lindblad_bosonic.py [--quick] [--out FILE] [--method M]
(peers: pip install ".[bench]")
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import jax
import numpy as np
from _common import (
    engine_row,
    engine_versions,
    print_table,
    run_engine,
    time_warm,
    write_json,
)

import qflow_jax as qf


@dataclass(frozen=True)
class Problem:
    N: int
    t_end: float
    n_save: int
    rtol: float = 1e-6
    atol: float = 1e-8
    repeats: int = 3  # warm runs; the median is reported

    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.t_end, self.n_save)


FULL = Problem(N=50, t_end=10.0, n_save=101)
QUICK = Problem(N=20, t_end=5.0, n_save=51, repeats=1)


def problem_numpy(p: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a = np.diag(np.sqrt(np.arange(1, p.N)), 1).astype(complex)
    ad = a.conj().T
    H = -0.1 * ad @ a + 0.5 * ad @ ad @ a @ a + 2.0 * (a + ad)
    rho0 = np.zeros((p.N, p.N), complex)
    rho0[0, 0] = 1.0
    return H, a, rho0, p.times()


def run_qflow(p: Problem, method: str) -> tuple[float, float, np.ndarray, dict]:
    H, a, rho0, t = problem_numpy(p)
    nop = a.conj().T @ a

    def solve():
        res = qf.mesolve(
            H,
            [a],
            rho0,
            t,
            exp_ops=[nop],
            method=method,
            rtol=p.rtol,
            atol=p.atol,
            save_states=False,
        )
        return jax.block_until_ready(res)

    first, warm, res = time_warm(solve, p.repeats)
    stats = {k: int(v) for k, v in res.stats.items()}
    return first, warm, np.asarray(res.expects[0].real), stats


def run_qutip(p: Problem) -> tuple[float, float, np.ndarray]:
    import qutip as qt

    # Each peer builds the problem its own idiomatic way (QuTiP: sparse operators).
    a = qt.destroy(p.N)
    H = -0.1 * a.dag() * a + 0.5 * a.dag() * a.dag() * a * a + 2.0 * (a + a.dag())
    t = p.times()
    opts = {"rtol": p.rtol, "atol": p.atol, "nsteps": 10**6}

    def solve():
        return qt.mesolve(
            H, qt.fock_dm(p.N, 0), t, [a], e_ops=[a.dag() * a], options=opts
        )

    first, warm, res = time_warm(solve, p.repeats)
    return first, warm, np.asarray(res.expect[0])


def run_dynamiqs(p: Problem) -> tuple[float, float, np.ndarray]:
    import dynamiqs as dq

    # dynamiqs' own operators (sparse DIA layout)
    a = dq.destroy(p.N)
    ad = dq.dag(a)
    H = -0.1 * ad @ a + 0.5 * ad @ ad @ a @ a + 2.0 * (a + ad)
    t = p.times()
    method = dq.method.Tsit5(rtol=p.rtol, atol=p.atol, max_steps=10**6)

    def solve():
        res = dq.mesolve(
            H,
            [a],
            dq.fock_dm(p.N, 0),
            t,
            exp_ops=[ad @ a],
            method=method,
            progress_meter=False,
            save_states=False,
        )
        return jax.block_until_ready(res.expects)

    first, warm, ex = time_warm(solve, p.repeats)
    return first, warm, np.asarray(ex[0].real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="auto", help="qflow_jax mesolve method")
    parser.add_argument(
        "--quick", action="store_true", help="N=20, t_end=5, 1 warm run"
    )
    parser.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/...)"
    )
    args = parser.parse_args()
    p = QUICK if args.quick else FULL
    case = f"kerr N={p.N}"

    first, warm, n_qf, stats = run_qflow(p, args.method)
    rows = [{"solver": f"qflow_jax ({args.method})", "first_s": first, "warm_s": warm}]
    peers, failed = {}, {}
    for name, fn in (("qutip", run_qutip), ("dynamiqs", run_dynamiqs)):
        out, status, reason = run_engine(fn, p)
        if status != "ok":
            hint = "; pip install '.[bench]'" if status == "not installed" else ""
            print(f"{name}: {status} ({reason}){hint}")
            failed[name] = (status, reason)
            continue
        p_first, p_warm, n_p = out
        peers[name] = {"first_s": p_first, "warm_s": p_warm, "n": n_p}
        rows.append({"solver": name, "first_s": p_first, "warm_s": p_warm})
    ref = peers.get("qutip", {}).get("n")
    for r in rows:
        key = r["solver"].split(" ")[0]
        n = n_qf if key == "qflow_jax" else peers[key]["n"]
        r["speedup_of_qflow"] = (r["warm_s"] / warm) if key != "qflow_jax" else 1.0
        r["max|dn| vs qutip"] = None if ref is None else float(np.abs(n - ref).max())

    engine_rows = [
        engine_row(
            case,
            "qflow_jax",
            time_s=warm,
            first_s=first,
            max_abs_diff_vs_qutip=rows[0]["max|dn| vs qutip"],
        )
    ]
    for name in ("qutip", "dynamiqs"):
        if name in peers:
            r = next(r for r in rows if r["solver"] == name)
            engine_rows.append(
                engine_row(
                    case,
                    name,
                    time_s=r["warm_s"],
                    first_s=r["first_s"],
                    qflow_s=warm,
                    max_abs_diff_vs_qutip=r["max|dn| vs qutip"],
                )
            )
        else:
            status, reason = failed[name]
            engine_rows.append(engine_row(case, name, status=status, reason=reason))

    print(
        f"Kerr oscillator, N={p.N}, t in [0, {p.t_end}], {p.n_save} saves, "
        f"rtol={p.rtol}, atol={p.atol}, median of {p.repeats} warm run(s)"
        f"{' (quick)' if args.quick else ''}; backend {jax.default_backend()}"
    )
    print(f"qflow_jax steps: {stats}")
    print_table(
        rows, ["solver", "first_s", "warm_s", "speedup_of_qflow", "max|dn| vs qutip"]
    )
    fastest_peer = min((v["warm_s"] for v in peers.values()), default=None)
    if fastest_peer is not None:
        print(f"qflow_jax is {fastest_peer / warm:.2f}x faster than the faster peer")
    path = write_json(
        "lindblad_bosonic",
        {
            "quick": args.quick,
            "problem": {k: v for k, v in asdict(p).items() if k != "repeats"}
            | {"warm_repeats": p.repeats},
            "qflow_method": args.method,
            "qflow_stats": stats,
            "rows": rows,
            "speedup_vs_fastest_peer": None
            if fastest_peer is None
            else fastest_peer / warm,
            "engine_versions": engine_versions(),
            "engine_rows": engine_rows,
        },
        path=args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
