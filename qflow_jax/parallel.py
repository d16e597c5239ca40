"""Data parallelism over devices with JAX's own sharding.

Every device of the run (all local devices; on several hosts, all devices of all
processes after `jax.distributed.initialize`) forms one mesh axis, "data". Sample
batches of Euler-KL and TDVP are split along it with `NamedSharding`: per-sample work
(flow, PDE kernel, per-sample gradients) runs where its samples live, and the means
that make the loss gradient, S and F become all-reduces inserted by the compiler.
Parameters stay replicated. Batched Lindblad solves split their batch axis the same
way (`map_batch`). With one device every function here is the identity.

Random numbers do not depend on the device count (`jax_threefry_partitionable`), so
a run on 1 device and on 4 devices with the same seed and total batch sees the same
samples; results agree up to the order of floating-point sums.

Several processes (hosts): `initialize_distributed` starts JAX's own distributed
runtime (`jax.distributed.initialize`) from explicit arguments or, inside a SLURM job
with several tasks, from SLURM's variables; then the mesh spans every process's
devices, and only process 0 writes results and checkpoints (`is_main_process`).

Examples:
    Four CPU devices on one host, for testing:
    $ XLA_FLAGS=--xla_force_host_platform_device_count=4 qflow run
    Two processes on one machine:
    $ qflow run CFG --coordinator localhost:1234 --num-processes 2 --process-id 0 &
    $ qflow run CFG --coordinator localhost:1234 --num-processes 2 --process-id 1
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "initialize_distributed",
    "is_main_process",
    "map_batch",
    "shard_samples",
]

DATA_AXIS = "data"


@functools.cache
def _mesh(devices: tuple[jax.Device, ...]) -> Mesh:
    return Mesh(np.array(devices), (DATA_AXIS,))


def data_mesh() -> Mesh:
    """The one-axis ("data") mesh of all devices of the run."""
    return _mesh(tuple(jax.devices()))


def _spec(x: jax.Array) -> P:
    return P(DATA_AXIS, *([None] * (x.ndim - 1)))


def shard_samples(x: jax.Array, name: str = "batch_size") -> jax.Array:
    """x with its leading (sample) axis split over the data mesh.

    Inside jit this is a sharding constraint for the compiler; outside, a transfer.

    Raises:
        ValueError: when the leading size is not a multiple of the device count
            (the message names `name`, the setting that fixes it).
    """
    mesh = data_mesh()
    if mesh.size == 1:
        return x
    if x.shape[0] % mesh.size:
        raise ValueError(
            f"`{name}` ({x.shape[0]}) must be a multiple of the number of devices "
            f"({mesh.size}) to split the samples over them"
        )
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, _spec(x)))


def map_batch(fn: Callable[[Any], Any], xs: Any, sequential: bool) -> Any:
    """fn mapped over the leading axis of the pytree xs, that axis split over the
    devices when its size is a multiple of the device count.

    Each device maps fn over its own part, one element after the other
    (`lax.map`, `sequential`) or vectorized (`vmap`); on one device, or for a batch
    that does not divide evenly, the whole batch is mapped on the default device.
    """

    def local(part):
        return jax.lax.map(fn, part) if sequential else jax.vmap(fn)(part)

    mesh = data_mesh()
    size = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if mesh.size == 1 or size % mesh.size:
        return local(xs)
    specs = jax.tree_util.tree_map(_spec, xs)
    out_shape = jax.eval_shape(local, xs)
    out_specs = jax.tree_util.tree_map(_spec, out_shape)
    # check_vma=False: diffrax's while loops start from unsharded constants
    return jax.shard_map(
        local, mesh=mesh, in_specs=(specs,), out_specs=out_specs, check_vma=False
    )(xs)


def _slurm_tasks() -> int:
    if "SLURM_JOB_ID" not in os.environ:
        return 1
    return int(os.environ.get("SLURM_NTASKS", "1"))


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Starts JAX's distributed runtime when the run spans several processes.

    With `coordinator` ("host:port"), `num_processes` and `process_id` given, those
    are used; with none given inside a SLURM job of several tasks, JAX reads them
    from SLURM's variables; otherwise (one process) nothing happens. On the CPU
    backend the cross-process collectives use gloo. Call it before any JAX
    computation. Returns whether the runtime was started.

    Raises:
        ValueError: when only some of the three arguments are given, or they are
            out of range.
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError(
            "`--coordinator`, `--num-processes` and `--process-id` must be given "
            "together"
        )
    if all(given):
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"`--process-id` must be in [0, {num_processes}) and "
                f"`--num-processes` >= 1, got {process_id} and {num_processes}"
            )
        if num_processes == 1:
            return False
    elif _slurm_tasks() <= 1:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True


def is_main_process() -> bool:
    """True on process 0 (the one that writes results), and in single-process runs."""
    return jax.process_index() == 0
