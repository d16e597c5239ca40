"""Matvec H @ psi in an excitation-number-restricted basis: sparse vs dense, jitted.

The dissipative Bose-Hubbard chain (open boundaries), with the effective
non-Hermitian Hamiltonian of its jump operators L_j = sqrt(kappa) a_j:

    H = sum_j U/2 n_j (n_j - 1) - J sum_j (a_j^dag a_{j+1} + h.c.),
    H_eff = H - i/2 sum_j L_j^dag L_j,   U = 1, J = 0.3, kappa = 0.1,

built by `ENRBasis.operator` for (5 modes, K = 6, D = 462) and (10 modes, K = 6,
D = 8008), and applied under `jax.jit` to one ket (D, 1) and to a batch (D, 64) of
random complex128 kets. Layouts:

- `bcoo`: what `operator(format="bcoo")` returns (COO, sorted, no batch dims);
- `bcoo_rows`: BCOO with one batch dimension over rows, each row padded to the
  longest (an ELL layout: a gather per row, no scatter);
- `bcsr`: what `operator(format="bcsr")` returns (`jax.experimental.sparse.BCSR`,
  which jit lowers on the CPU to XLA's CSR kernel `cpu_csr_sparse_dense_ffi`);
- `dense`: `operator(format="dense")`, only where D^2 x 16 bytes fits
  `--max-dense-gib` (default 2);
- `scipy_csr`: SciPy's CSR on the host (a reference, not jitted).

Each time is the median over `--repeats` rounds of the mean of `--inner` calls
(fewer for calls slower than 10 ms), after two warm-up calls (compilation). The
table is printed and written with the device and versions to
benchmarks/results/enr_matvec.json (or `--out`).

Run: python benchmarks/enr_matvec.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import print_table, write_json  # noqa: E402
from jax.experimental import sparse as jsparse  # noqa: E402

from qflow_jax.husimi.algebra import BosonOp, a, adag  # noqa: E402
from qflow_jax.lindblad.enr import ENRBasis  # noqa: E402

U, J, KAPPA = 1.0, 0.3, 0.1
CASES = ((5, 6), (10, 6))
BATCH = 64
COLUMNS = ["modes", "K", "D", "nnz", "layout", "rhs", "time_us", "vs_bcoo"]


def bose_hubbard_eff(n_modes: int) -> BosonOp:
    """H - i/2 sum_j kappa a_j^dag a_j for the open chain of `n_modes` sites."""
    H = BosonOp()
    for j in range(n_modes):
        H = H + U / 2 * adag(j) @ adag(j) @ a(j) @ a(j)  # n(n - 1) = a^dag^2 a^2
        H = H - 0.5j * KAPPA * adag(j) @ a(j)
    for j in range(n_modes - 1):
        H = H - J * (adag(j) @ a(j + 1) + adag(j + 1) @ a(j))
    return H


def row_padded_bcoo(mat: jsparse.BCOO) -> jsparse.BCOO:
    """The same matrix as a BCOO with one batch dimension over rows (ELL)."""
    rows = np.asarray(mat.indices[:, 0])
    cols = np.asarray(mat.indices[:, 1])
    vals = np.asarray(mat.data)
    D = mat.shape[0]
    per_row = np.bincount(rows, minlength=D)
    width = int(per_row.max())
    slot = np.arange(rows.size) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    data = np.zeros((D, width), vals.dtype)
    idx = np.zeros((D, width, 1), np.int32)
    data[rows, slot] = vals
    idx[rows, slot, 0] = cols
    return jsparse.BCOO((jnp.asarray(data), jnp.asarray(idx)), shape=mat.shape)


def time_call(fn: Callable[[], Any], inner: int, repeats: int) -> float:
    """Median over `repeats` of the mean time of `inner` calls (seconds); `inner`
    shrinks so that a round of slow calls takes about 0.2 s."""
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    inner = max(1, min(inner, int(0.2 / (time.perf_counter() - t0))))
    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        rounds.append((time.perf_counter() - t0) / inner)
    return statistics.median(rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--max-dense-gib", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=20)
    parser.add_argument("--out", default=None, help="JSON path")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    inner = 5 if args.quick else args.inner

    matvec = jax.jit(lambda A, x: A @ x)
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for n_modes, k in CASES:
        basis = ENRBasis(n_modes, k)
        t0 = time.perf_counter()
        H = basis.operator(bose_hubbard_eff(n_modes), format="bcoo")
        build_s = time.perf_counter() - t0
        D, nnz = basis.dim, int(H.nse)
        print(
            f"{n_modes} modes, K = {k}: D = {D}, nnz = {nnz}, built in {build_s:.3f} s"
        )
        layouts: dict[str, Any] = {
            "bcoo": H,
            "bcoo_rows": row_padded_bcoo(H),
            "bcsr": basis.operator(bose_hubbard_eff(n_modes), format="bcsr"),
        }
        if D * D * 16 <= args.max_dense_gib * 2**30:
            layouts["dense"] = basis.operator(bose_hubbard_eff(n_modes), "dense")
        H_csr = basis.operator(bose_hubbard_eff(n_modes), format="scipy")
        kets = {
            "(D, 1)": rng.normal(size=(D, 1)) + 1j * rng.normal(size=(D, 1)),
            f"(D, {BATCH})": rng.normal(size=(D, BATCH))
            + 1j * rng.normal(size=(D, BATCH)),
        }
        reference = {name: H_csr @ x for name, x in kets.items()}
        case_rows = []
        for rhs, x_np in kets.items():
            x = jnp.asarray(x_np)
            for layout, A in layouts.items():
                err = float(np.abs(np.asarray(matvec(A, x)) - reference[rhs]).max())
                assert err < 1e-10, (layout, rhs, err)
                t = time_call(lambda A=A, x=x: matvec(A, x), inner, repeats)
                case_rows.append(dict(layout=layout, rhs=rhs, time_us=1e6 * t))
            t = time_call(lambda A=H_csr, x=x_np: A @ x, inner, repeats)
            case_rows.append(dict(layout="scipy_csr", rhs=rhs, time_us=1e6 * t))
        for r in case_rows:
            base = next(
                q["time_us"]
                for q in case_rows
                if q["layout"] == "bcoo" and q["rhs"] == r["rhs"]
            )
            r.update(modes=n_modes, K=k, D=D, nnz=nnz, vs_bcoo=r["time_us"] / base)
            r["build_s"] = build_s
        rows += case_rows
    print()
    print_table(rows, COLUMNS)
    path = write_json(
        "enr_matvec",
        {
            "problem": {"U": U, "J": J, "kappa": KAPPA, "cases": CASES, "batch": BATCH},
            "timing": {"repeats": repeats, "inner": inner, "unit": "us per matvec"},
            "rows": rows,
        },
        args.out,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
