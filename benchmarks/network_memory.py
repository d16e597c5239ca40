"""Benchmark: peak memory and time of the full-state network engine.

Model: ring of n qubits, H_j = (j+1)/2 sigmaz + 0.3 sigmax, L_j = sqrt(0.1) sigmam,
swap gain k = 4, product initial state (|0> on even, |+> on odd qubits), t in
[0, 5], 51 saves of the reduced states and the final state (`save_states=False`),
default method (Tsit5, rtol 1e-6, atol 1e-8) and kernel ("auto").

Each n runs in a fresh process: one short solve (t in [0, 1e-6]) compiles the
program, then the peak is reset (host: /proc/self/clear_refs; accelerator: the
allocator's peak counts from the start, the short solve holds the same buffers)
and the full solve is timed. Columns:

- `state_MB`: one state, 16 x 4^n bytes.
- `peak_MB`, `peak_x`: the solve's peak over the memory in use before it (host
  resident set on a CPU, `peak_bytes_in_use` on an accelerator), in MB and in
  states.
- `compiled_x`: the compiled program's own count, `memory_analysis()` (temporaries
  + arguments + outputs - aliased), in states.
- `estimate_x`: `network_memory_estimate` (what `network_mesolve` checks before
  it allocates), in states.
- `time_s`: the full solve, compiled beforehand.

`--compile-only`: no solve, only `compiled_x` and `estimate_x` (the programs of
sizes that do not run here: `--ns 13 14 --kernel xla --compile-only` on a CPU
counts the buffers of the accelerator's kernel at the sizes of a 141 GiB GPU).

Run: python benchmarks/network_memory.py [--ns 8 9 10 11 12] [--kernel auto]
[--compile-only] [--out FILE] (on a GPU: --ns 12 13 14). `--single N` is the
internal fresh-process run of one n.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import jax
import numpy as np
from _common import print_table, write_json
from network import GAMMA, initial_factors, ring

from qflow_jax.network import network_mesolve

K, T_END, N_SAVE = 4.0, 5.0, 51  # the H200 measurement: k = 4
COLUMNS = [
    "n",
    "state_MB",
    "peak_MB",
    "peak_x",
    "compiled_x",
    "estimate_x",
    "time_s",
    "steps",
]


def _host_rss() -> tuple[int, int]:
    """(current, peak) resident set of this process in bytes."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def _reset_host_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _compiled_states(n: int, kernel: str) -> float | None:
    """memory_analysis() of the compiled solve, in states (None where missing)."""
    from qflow_jax.network.solve import _lower_network

    lowered = _lower_network(
        ring(n, K),
        initial_factors(n),
        np.linspace(0.0, T_END, N_SAVE),
        save_states=False,
        kernel=kernel,
    )
    m = lowered.compile().memory_analysis()
    if m is None:
        return None
    used = (
        m.temp_size_in_bytes
        + m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
    )
    return used / (16 * 4**n)


def _estimate_states(n: int) -> float | None:
    try:
        from qflow_jax.network import network_memory_estimate
    except ImportError:  # before the estimate existed
        return None
    est = network_memory_estimate(n, nt=N_SAVE, save_states=False)
    return est.bytes / (16 * 4**n)


def single(n: int, kernel: str, compile_only: bool = False) -> dict:
    if compile_only:
        return {
            "n": n,
            "state_MB": 16 * 4**n / 1e6,
            "compiled_x": _compiled_states(n, kernel),
            "estimate_x": _estimate_states(n),
            "kernel": kernel,
        }
    net, rho0 = ring(n, K), initial_factors(n)
    tsave = np.linspace(0.0, T_END, N_SAVE)
    device = jax.devices()[0]

    def solve(ts):
        res = network_mesolve(net, rho0, ts, save_states=False, kernel=kernel)
        res.final_state.block_until_ready()
        return res

    stats = device.memory_stats() or {}
    on_host = "peak_bytes_in_use" not in stats
    before = stats.get("bytes_in_use", 0)
    solve(np.linspace(0.0, 1e-6, N_SAVE))  # compiles the same program
    if on_host:
        _reset_host_peak()
        before = _host_rss()[0]
    t0 = time.perf_counter()
    res = solve(tsave)
    elapsed = time.perf_counter() - t0
    if on_host:
        peak = _host_rss()[1] - before
    else:
        peak = device.memory_stats()["peak_bytes_in_use"] - before
    state = 16 * 4**n
    return {
        "n": n,
        "state_MB": state / 1e6,
        "peak_MB": peak / 1e6,
        "peak_x": peak / state,
        "compiled_x": _compiled_states(n, kernel),
        "estimate_x": _estimate_states(n),
        "time_s": elapsed,
        "steps": int(res.stats["num_steps"]),
        "kernel": res.kernels[0],
    }


def main(ns: list[int], kernel: str, out: str | None, compile_only: bool) -> None:
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), kernel={kernel}")
    rows = []
    for n in ns:
        proc = subprocess.run(
            [sys.executable, __file__, "--single", str(n), "--kernel", kernel]
            + ["--compile-only"] * compile_only,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
            rows.append({"n": n, "status": "failed", "reason": reason})
            print(f"n={n}: failed: {reason}")
            continue
        rows.append(
            {**json.loads(proc.stdout.strip().splitlines()[-1]), "status": "ok"}
        )
    print_table(rows, [c for c in COLUMNS if any(c in r for r in rows)] + ["status"])
    path = write_json(
        "network_memory",
        {
            "model": f"ring, k={K}, gamma={GAMMA}, t in [0, {T_END}], {N_SAVE} saves",
            "kernel": kernel,
            "compile_only": compile_only,
            "rows": rows,
        },
        out,
    )
    print(f"written {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 9, 10, 11, 12])
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--out", default=None)
    parser.add_argument("--single", type=int, default=None)
    parser.add_argument("--compile-only", action="store_true")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    if args.single is not None:
        print(json.dumps(single(args.single, args.kernel, args.compile_only)))
    else:
        main(args.ns, args.kernel, args.out, args.compile_only)
