"""Driven Kerr oscillator in a Fock basis of 50: qflow_jax vs QuTiP vs dynamiqs.

    H = -0.1 a^dag a + 0.5 a^dag a^dag a a + 2 (a + a^dag),  L = a,  rho0 = |0><0|,
    t in [0, 10] with 101 saves, rtol 1e-6, atol 1e-8.

Every solver runs warm (the first call, with compilation, is reported apart);
the table gives the median of 3 warm runs, the ratio of each peer's time to
qflow_jax's, and the max difference of <a^dag a> from QuTiP's.

Run: python benchmarks/lindblad_bosonic.py   (peers: pip install ".[bench]")
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _common import print_table, time_warm, write_json

import qflow_jax as qf

N, T_END, N_SAVE, RTOL, ATOL = 50, 10.0, 101, 1e-6, 1e-8


def problem_numpy() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a = np.diag(np.sqrt(np.arange(1, N)), 1).astype(complex)
    ad = a.conj().T
    H = -0.1 * ad @ a + 0.5 * ad @ ad @ a @ a + 2.0 * (a + ad)
    rho0 = np.zeros((N, N), complex)
    rho0[0, 0] = 1.0
    return H, a, rho0, np.linspace(0.0, T_END, N_SAVE)


def run_qflow(method: str) -> tuple[float, float, np.ndarray, dict]:
    H, a, rho0, t = problem_numpy()
    nop = a.conj().T @ a

    def solve():
        res = qf.mesolve(
            H,
            [a],
            rho0,
            t,
            exp_ops=[nop],
            method=method,
            rtol=RTOL,
            atol=ATOL,
            save_states=False,
        )
        return jax.block_until_ready(res)

    first, warm, res = time_warm(solve)
    stats = {k: int(v) for k, v in res.stats.items()}
    return first, warm, np.asarray(res.expects[0].real), stats


def run_qutip() -> tuple[float, float, np.ndarray]:
    import qutip as qt

    # Each peer builds the problem its own idiomatic way (QuTiP: sparse operators).
    a = qt.destroy(N)
    H = -0.1 * a.dag() * a + 0.5 * a.dag() * a.dag() * a * a + 2.0 * (a + a.dag())
    t = problem_numpy()[3]
    opts = {"rtol": RTOL, "atol": ATOL, "nsteps": 10**6}

    def solve():
        return qt.mesolve(
            H, qt.fock_dm(N, 0), t, [a], e_ops=[a.dag() * a], options=opts
        )

    first, warm, res = time_warm(solve)
    return first, warm, np.asarray(res.expect[0])


def run_dynamiqs() -> tuple[float, float, np.ndarray]:
    import dynamiqs as dq

    # dynamiqs' own operators (sparse DIA layout)
    a = dq.destroy(N)
    ad = dq.dag(a)
    H = -0.1 * ad @ a + 0.5 * ad @ ad @ a @ a + 2.0 * (a + ad)
    t = problem_numpy()[3]
    method = dq.method.Tsit5(rtol=RTOL, atol=ATOL, max_steps=10**6)

    def solve():
        res = dq.mesolve(
            H,
            [a],
            dq.fock_dm(N, 0),
            t,
            exp_ops=[ad @ a],
            method=method,
            progress_meter=False,
            save_states=False,
        )
        return jax.block_until_ready(res.expects)

    first, warm, ex = time_warm(solve)
    return first, warm, np.asarray(ex[0].real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="auto", help="qflow_jax mesolve method")
    args = parser.parse_args()

    first, warm, n_qf, stats = run_qflow(args.method)
    rows = [{"solver": f"qflow_jax ({args.method})", "first_s": first, "warm_s": warm}]
    peers = {}
    for name, fn in (("qutip", run_qutip), ("dynamiqs", run_dynamiqs)):
        try:
            p_first, p_warm, n_p = fn()
        except ImportError as err:
            print(f"{name}: not installed ({err}); pip install '.[bench]'")
            continue
        peers[name] = {"first_s": p_first, "warm_s": p_warm, "n": n_p}
        rows.append({"solver": name, "first_s": p_first, "warm_s": p_warm})
    ref = peers.get("qutip", {}).get("n")
    for r in rows:
        key = r["solver"].split(" ")[0]
        n = n_qf if key == "qflow_jax" else peers[key]["n"]
        r["speedup_of_qflow"] = (r["warm_s"] / warm) if key != "qflow_jax" else 1.0
        r["max|dn| vs qutip"] = None if ref is None else float(np.abs(n - ref).max())
    print(
        f"Kerr oscillator, N={N}, t in [0, {T_END}], {N_SAVE} saves, "
        f"rtol={RTOL}, atol={ATOL}; backend {jax.default_backend()}"
    )
    print(f"qflow_jax steps: {stats}")
    print_table(
        rows, ["solver", "first_s", "warm_s", "speedup_of_qflow", "max|dn| vs qutip"]
    )
    fastest_peer = min((p["warm_s"] for p in peers.values()), default=None)
    if fastest_peer is not None:
        print(f"qflow_jax is {fastest_peer / warm:.2f}x faster than the faster peer")
    path = write_json(
        "lindblad_bosonic",
        {
            "problem": {
                "N": N,
                "t_end": T_END,
                "n_save": N_SAVE,
                "rtol": RTOL,
                "atol": ATOL,
            },
            "qflow_method": args.method,
            "qflow_stats": stats,
            "rows": rows,
            "speedup_vs_fastest_peer": None
            if fastest_peer is None
            else fastest_peer / warm,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
