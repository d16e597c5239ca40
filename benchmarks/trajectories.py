"""Quantum trajectories of a dissipative Bose-Hubbard chain in an excitation-number-
restricted basis: qflow_jax `mcsolve` vs QuTiP `mcsolve` vs dynamiqs `jssesolve`.

    H = sum_j U/2 a_j^dag^2 a_j^2 - J sum_j (a_j^dag a_{j+1} + h.c.),
    L_j = sqrt(kappa) a_j,   U = 1, J = 0.5, kappa = 0.2,

5 modes, at most K = 6 quanta (`qf.ENRBasis(5, 6)`, D = 462 states, QuTiP's
`enr_destroy` order), psi0 = |2, 1, 1, 1, 1> (6 quanta: no truncation at any time,
since H keeps the number and the jumps lower it), 1000 trajectories, t in [0, 5]
with 51 saves, rtol 1e-6, atol 1e-8 for every engine, exp_ops n_j.

- qflow_jax: `qf.mcsolve` with the ENR operators as BCOO (jumps located by a
  diffrax event with a Newton root find);
- QuTiP: `qutip.mcsolve` with the same operators (`enr_destroy`), its default
  integrator, serial and with 2 worker processes (the faster one is the peer);
- dynamiqs: `dq.jssesolve` with `dq.method.Event(Tsit5, root_finder=Newton)`,
  dense operators (dynamiqs has no ENR basis), `nmaxclick` 16, in chunks of 50
  trajectories (all 1000 at once need 68 GB: arrays of operator size per
  trajectory). It took 55 s per chunk here, so it runs 100 trajectories, one warm
  run, and its time is scaled by ntraj / 100 (the chunks are independent calls);
  its row says so.

JAX engines report the first call (with compilation) apart; the table gives the
median of the warm runs, each peer's time over qflow_jax's, and the largest
difference of <n_j> from the Lindblad solution (`qf.mesolve` on the 462 x 462
density matrix) next to the largest standard error of the trajectory means.

--quick: 3 modes, K = 4 (D = 35), 100 trajectories, t in [0, 2], 1 warm run.
--out FILE: write the JSON there instead of benchmarks/results/trajectories.json.
A peer that is not installed or fails gets a row with that status and a reason.

Run: python benchmarks/trajectories.py [--quick] [--out FILE]
(peers: pip install ".[bench]")
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    engine_row,
    engine_versions,
    print_table,
    run_engine,
    time_warm,
    write_json,
)

import qflow_jax as qf  # noqa: E402
from qflow_jax.husimi.algebra import BosonOp, a, adag  # noqa: E402

U, J, KAPPA = 1.0, 0.5, 0.2
# dynamiqs keeps every trajectory's click times in arrays of this length per channel
# (its default, 10000, asked for 68 GB here); 6 quanta allow at most 6 jumps
NMAXCLICK = 16
DYNAMIQS_CHUNK = 50
# dynamiqs took 55 s per 50 trajectories here: it runs 100 (one warm run) and its
# time is scaled to `ntraj` (its chunks are independent calls)
DYNAMIQS_NTRAJ = 100


@dataclass(frozen=True)
class Problem:
    modes: int
    K: int
    ntraj: int
    t_end: float
    n_save: int
    rtol: float = 1e-6
    atol: float = 1e-8
    repeats: int = 3  # warm runs; the median is reported
    seed: int = 0

    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.t_end, self.n_save)

    def occupations(self) -> list[int]:
        occ = [1] * self.modes
        occ[0] += self.K - self.modes  # K quanta in all
        return occ


FULL = Problem(modes=5, K=6, ntraj=1000, t_end=5.0, n_save=51)
QUICK = Problem(modes=3, K=4, ntraj=100, t_end=2.0, n_save=21, repeats=1)


def hamiltonian(modes: int) -> BosonOp:
    H = BosonOp()
    for j in range(modes):
        H = H + U / 2 * adag(j) ** 2 @ a(j) ** 2
    for j in range(modes - 1):
        H = H - J * (adag(j) @ a(j + 1) + adag(j + 1) @ a(j))
    return H


def operators(p: Problem, format: str):
    basis = qf.ENRBasis(p.modes, p.K)
    H = basis.operator(hamiltonian(p.modes), format=format)
    jumps = [KAPPA**0.5 * basis.destroy(j, format=format) for j in range(p.modes)]
    numbers = [basis.number(j, format=format) for j in range(p.modes)]
    return basis, H, jumps, numbers


def run_qflow(p: Problem) -> tuple[float, float, np.ndarray, np.ndarray, dict]:
    basis, H, jumps, numbers = operators(p, "bcoo")
    psi0 = basis.fock_state(p.occupations())

    def solve():
        res = qf.mcsolve(
            H,
            jumps,
            psi0,
            p.times(),
            key=jax.random.key(p.seed),
            ntraj=p.ntraj,
            exp_ops=numbers,
            rtol=p.rtol,
            atol=p.atol,
        )
        return jax.block_until_ready(res)

    first, warm, res = time_warm(solve, p.repeats)
    stats = {
        "mean_steps": float(np.mean(res.stats["num_steps"])),
        "mean_jumps": float(np.mean(res.num_jumps)),
    }
    return (
        first,
        warm,
        np.asarray(res.expects.real),
        np.asarray(res.expects_stderr),
        stats,
    )


def run_mesolve(p: Problem) -> np.ndarray:
    """<n_j>(t) of the Lindblad equation itself (the trajectories' limit)."""
    basis, H, jumps, numbers = operators(p, "dense")
    rho0 = basis.fock_state(p.occupations())
    res = qf.mesolve(
        H,
        jumps,
        rho0,
        p.times(),
        exp_ops=numbers,
        rtol=1e-8,
        atol=1e-10,
        save_states=False,
    )
    return np.asarray(res.expects.real)


def run_qutip(p: Problem, workers: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    import qutip as qt

    dims, K = [p.K + 1] * p.modes, p.K
    ops = qt.enr_destroy(dims, K)
    H = sum(U / 2 * o.dag() * o.dag() * o * o for o in ops)
    H = H - J * sum(
        ops[j].dag() * ops[j + 1] + ops[j + 1].dag() * ops[j]
        for j in range(p.modes - 1)
    )
    psi0 = qt.enr_fock(dims, K, p.occupations())
    opts = {
        "rtol": p.rtol,
        "atol": p.atol,
        "progress_bar": False,
        "map": "serial" if workers == 1 else "parallel",
        "num_cpus": workers,
        "keep_runs_results": False,
    }

    def solve():
        return qt.mcsolve(
            H,
            psi0,
            p.times(),
            [np.sqrt(KAPPA) * o for o in ops],
            e_ops=[o.dag() * o for o in ops],
            ntraj=p.ntraj,
            options=opts,
            seeds=p.seed,
        )

    first, warm, res = time_warm(solve, p.repeats)
    n = np.array([np.real(e) for e in res.expect])
    err = np.array([np.asarray(s) for s in res.std_expect]) / np.sqrt(p.ntraj)
    return first, warm, n, err


def run_dynamiqs(p: Problem) -> tuple[float, float, np.ndarray, np.ndarray]:
    import dynamiqs as dq
    import optimistix as optx

    _, H, jumps, numbers = operators(p, "dense")
    basis = qf.ENRBasis(p.modes, p.K)
    psi0 = basis.fock_state(p.occupations())
    method = dq.method.Event(
        noclick_method=dq.method.Tsit5(rtol=p.rtol, atol=p.atol, max_steps=10**6),
        root_finder=optx.Newton(rtol=p.rtol, atol=p.atol),
    )
    ntraj = min(p.ntraj, DYNAMIQS_NTRAJ)
    keys = jax.random.split(jax.random.key(p.seed), ntraj)

    def solve():
        # in chunks: all 1000 trajectories at once asked for 68 GB (it holds
        # operator-sized arrays per trajectory)
        out = []
        for start in range(0, ntraj, DYNAMIQS_CHUNK):
            res = dq.jssesolve(
                H,
                jumps,
                psi0,
                p.times(),
                keys[start : start + DYNAMIQS_CHUNK],
                exp_ops=numbers,
                method=method,
                save_states=False,
                nmaxclick=NMAXCLICK,
            )
            out.append(jax.block_until_ready(res.expects))
        return np.concatenate(out)

    first, warm, ex = time_warm(solve, 1)
    ex = np.asarray(ex.real)  # (ntraj, n_ops, nt)
    scale = p.ntraj / ntraj  # independent chunks: time grows with ntraj
    return first, warm * scale, ex.mean(0), ex.std(0, ddof=1) / np.sqrt(ntraj)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 modes, K = 4")
    parser.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/...)"
    )
    args = parser.parse_args()
    p = QUICK if args.quick else FULL
    case = f"bose-hubbard {p.modes} modes K={p.K} ntraj={p.ntraj}"
    exact = run_mesolve(p)

    def deviation(n: np.ndarray, err: np.ndarray) -> dict[str, float]:
        """max |<n_j> - Lindblad| over modes and times, and the largest stderr."""
        return {
            "max_abs_dev": float(np.max(np.abs(n - exact))),
            "max_stderr": float(np.max(err)),
        }

    first, warm, n_qf, err_qf, stats = run_qflow(p)
    rows = [
        {
            "solver": "qflow_jax",
            "first_s": first,
            "warm_s": warm,
            **deviation(n_qf, err_qf),
        }
    ]
    peers, failed = {}, {}
    calls = (
        ("qutip (serial)", lambda q: run_qutip(q, 1)),
        ("qutip (2 processes)", lambda q: run_qutip(q, 2)),
        (f"dynamiqs ({DYNAMIQS_NTRAJ} traj, time scaled)", run_dynamiqs),
    )
    for name, fn in calls:
        out, status, reason = run_engine(fn, p)
        if status != "ok":
            hint = "; pip install '.[bench]'" if status == "not installed" else ""
            print(f"{name}: {status} ({reason}){hint}")
            failed[name] = (status, reason)
            continue
        p_first, p_warm, n_p, err_p = out
        peers[name] = p_warm
        rows.append(
            {
                "solver": name,
                "first_s": p_first,
                "warm_s": p_warm,
                "speedup_of_qflow": p_warm / warm,
                **deviation(n_p, err_p),
            }
        )
    rows[0]["speedup_of_qflow"] = 1.0

    print(
        f"{case}: D = {qf.ENRBasis(p.modes, p.K).dim}, t in [0, {p.t_end}], "
        f"{p.n_save} saves, rtol={p.rtol}, atol={p.atol}, median of {p.repeats} "
        f"warm run(s){' (quick)' if args.quick else ''}; backend "
        f"{jax.default_backend()}"
    )
    print(f"qflow_jax per trajectory: {stats}")
    print_table(
        rows,
        [
            "solver",
            "first_s",
            "warm_s",
            "speedup_of_qflow",
            "max_abs_dev",
            "max_stderr",
        ],
    )
    fastest = min(peers.values(), default=None)
    if fastest is not None:
        print(f"fastest peer / qflow_jax: {fastest / warm:.3g}x (goal >= 5)")
    engine_rows = [engine_row(case, "qflow_jax", time_s=warm, first_s=first)]
    for r in rows[1:]:
        engine_rows.append(
            engine_row(
                case,
                r["solver"],
                time_s=r["warm_s"],
                first_s=r["first_s"],
                qflow_s=warm,
            )
        )
    for name, (status, reason) in failed.items():
        engine_rows.append(engine_row(case, name, status=status, reason=reason))
    path = write_json(
        "trajectories",
        {
            "problem": asdict(p) | {"U": U, "J": J, "kappa": KAPPA},
            "engines": engine_versions(),
            "rows": rows,
            "engine_rows": engine_rows,
            "qflow_stats": stats,
            "fastest_peer_over_qflow": None if fastest is None else fastest / warm,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
