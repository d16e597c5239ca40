"""Memory available to a solve, for the engines that refuse a problem before they
allocate it (grid solvers, the full-state network engine)."""

from __future__ import annotations

import os

import jax

__all__ = ["InsufficientMemoryError", "available_memory", "memory_place"]


class InsufficientMemoryError(MemoryError, ValueError):
    """A solve refused before allocating: its estimated peak exceeds the memory
    available (a MemoryError and a ValueError: the arguments ask too much)."""


def available_memory(device: jax.Device | None = None) -> int:
    """Bytes a new solve can allocate on `device` (default: JAX's first device).

    An accelerator: its allocator's limit less what is in use
    (`memory_stats()["bytes_limit"] - ["bytes_in_use"]`); the CPU, or a device
    without these statistics: the host's available RAM (MemAvailable).
    """
    device = jax.devices()[0] if device is None else device
    stats = _memory_stats(device)
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return _host_available()


def memory_place(device: jax.Device | None = None) -> str:
    """Where `available_memory` looks, in words (for error messages)."""
    device = jax.devices()[0] if device is None else device
    if "bytes_limit" in _memory_stats(device):
        return f"{device.device_kind} memory"
    return "host RAM (MemAvailable)"


def _memory_stats(device: jax.Device) -> dict:
    try:
        return device.memory_stats() or {}
    except Exception:  # some backends do not implement it
        return {}


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
