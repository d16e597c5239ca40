"""Orbit attraction at scale: the whole state of a qubit ring with Hamiltonian pair
couplings against its network-level blended orbit, vs the swap gain k.

Model (n qubits on a ring, swap gain k on every edge):

    H_j = 0.1 sigma_x + h_j sigma_z,  h_j = 0.2 + 0.3 j / (n - 1),
    L_j = sqrt(0.05) sigma_-,  XX pair coupling 0.1 on every ring edge,

from the product |0>|+>|0>|+>..., t in [0, 4]. The XX couplings make the reduced
states an open system (no closed blended qubit equation); the blended orbit is
d rhobar/dt = P L0 P rhobar in the permutation-invariant operators
(`blended_invariant_mesolve`, dimension C(n+3, 3)).

- n = 4 .. 12: `orbit_sweep` (full state by `network_mesolve`'s structured engine,
  5 save times, distances ||rho(t) - rhobar(t)||_F for t >= 1 from the Pauli
  coefficients) for every k, the fitted slope of log d vs log k, and the time;
  n = 12 runs the two smallest gains only (k = 4 and 8 took 59 min together on a
  2-core CPU);
- n = 20, 50, 100: the blended dynamics alone (its single-qubit <sigma_z>(t_end)),
  first call and warm.

Writes benchmarks/results/orbit_attraction.json and orbit_attraction.png (distance
vs k per n with the fits). --quick: n = 4, 6 and the blended n = 20 only; --sizes:
the full-state sizes (default 4 6 8 10 12).

Run: python benchmarks/orbit_attraction.py [--quick] [--sizes N ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from _common import print_table, write_json  # noqa: E402

import qflow_jax as qf  # noqa: E402
from qflow_jax.network import orbit_sweep  # noqa: E402
from qflow_jax.plots import plot_axes  # noqa: E402
from qflow_jax.runs import RunFolder  # noqa: E402

KS = (4.0, 8.0, 16.0)
T_END, N_SAVE, T_SKIP = 4.0, 5, 1.0
RTOL, ATOL = 1e-7, 1e-9


def ring(n: int) -> qf.QubitNetwork:
    fields = [
        0.1 * qf.sigmax() + (0.2 + 0.3 * j / (n - 1)) * qf.sigmaz() for j in range(n)
    ]
    return qf.QubitNetwork(
        n,
        "ring",
        k=1.0,
        H=fields,
        jump_ops=[[np.sqrt(0.05) * qf.sigmam()]] * n,
        couplings=[(j, (j + 1) % n, "XX", 0.1) for j in range(n)],
    )


def start(n: int) -> list:
    plus = np.full((2, 2), 0.5)
    return [np.asarray(qf.fock_dm(2, 0)) if j % 2 == 0 else plus for j in range(n)]


def full_row(n: int, ks: tuple[float, ...]) -> dict:
    t0 = time.perf_counter()
    out = orbit_sweep(
        ring(n),
        start(n),
        np.linspace(0.0, T_END, N_SAVE),
        ks,
        t_skip=T_SKIP,
        rtol=RTOL,
        atol=ATOL,
        progress=True,
    )
    return {
        "n": n,
        "ks": list(map(float, ks)),
        "max_distance": out["max_distance"].tolist(),
        "k_times_distance": out["k_times_distance"].tolist(),
        "slope": out["slope"],
        "time_s": time.perf_counter() - t0,
    }


def blended_row(n: int) -> dict:
    net, rho0 = ring(n), start(n)
    tsave = np.linspace(0.0, T_END, N_SAVE)

    def solve():
        res = qf.blended_invariant_mesolve(net, rho0, tsave, rtol=RTOL, atol=ATOL)
        return jax.block_until_ready(res)

    t0 = time.perf_counter()
    solve()
    t1 = time.perf_counter()
    res = solve()
    t2 = time.perf_counter()
    z = float(np.real(np.trace(res.reduced[-1] @ np.asarray(qf.sigmaz()))))
    dim = qf.PermutationInvariantBasis(n).dim
    return {"n": n, "dim": dim, "first_s": t1 - t0, "warm_s": t2 - t1, "z_final": z}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 6, 8, 10, 12])
    args = parser.parse_args()
    sizes = (4, 6) if args.quick else tuple(args.sizes)
    blended_sizes = (20,) if args.quick else (20, 50, 100)
    rows = []
    for n in sizes:
        rows.append(full_row(n, KS[:2] if n >= 12 else KS))
        print(f"n={n}: slope {rows[-1]['slope']:.3f} in {rows[-1]['time_s']:.1f} s")
    blended = [blended_row(n) for n in blended_sizes]
    print_table(rows, ["n", "ks", "max_distance", "slope", "time_s"])
    print_table(blended, ["n", "dim", "first_s", "warm_s", "z_final"])
    path = write_json(
        "orbit_attraction",
        {
            "device": str(jax.devices()[0]),
            "model": {
                "graph": "ring",
                "fields": "0.1 X + (0.2 + 0.3 j/(n-1)) Z",
                "decay": 0.05,
                "coupling": "XX 0.1 on ring edges",
                "t_end": T_END,
                "n_save": N_SAVE,
                "t_skip": T_SKIP,
                "rtol": RTOL,
                "atol": ATOL,
            },
            "orbit": rows,
            "blended_only": blended,
        },
        args.out,
    )

    def draw(ax):
        for row in rows:
            ks, d = np.asarray(row["ks"]), np.asarray(row["max_distance"])
            ax.loglog(ks, d, "o-", label=f"n = {row['n']}: slope {row['slope']:.2f}")
        ax.set_xlabel("swap gain k")
        ax.set_ylabel("max_{t >= 1} ||rho(t) - rhobar(t)||_F")

    plot_axes(RunFolder(Path(path).parent), Path(path).with_suffix(".png").name, draw)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
