"""The compiled CPU kernel of the network right-hand side (`_native_rhs.cc`).

The C++ source ships with the package and is compiled on first use with the host's
C++ compiler (`$CXX`, else `g++`/`c++`) against the XLA FFI headers that jaxlib
ships, then registered with `jax.ffi` as a CPU custom call. The library is cached
under `$QFLOW_JAX_CACHE_DIR` (default `~/.cache/qflow_jax`), keyed by the source, the
compiler, jaxlib and the CPU, so a shared home on a cluster with mixed nodes keeps
one build per kind of node. Concurrent first uses build into temporary files and
rename, so they cannot leave a half-written library.

Without a compiler (or with `QFLOW_JAX_NATIVE=0`) `native_reason()` says why and the
network engine uses its XLA kernel instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax

TARGET = "qflow_network_rhs"
_SOURCE = Path(__file__).with_name("_native_rhs.cc")
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def _cpu_signature() -> str:
    """Model and feature flags of this CPU (the library is built with -march=native)."""
    sig = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    sig += line
                if sig.count("\n") >= 2:
                    break
    except OSError:
        pass
    return sig


def _cache_dir() -> Path:
    root = os.environ.get("QFLOW_JAX_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "qflow_jax"


def _build(cxx: str) -> Path:
    """Compiles the kernel or finds it in the cache (RuntimeError on failure)."""
    version = subprocess.run(
        [cxx, "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    key = hashlib.sha256(
        b"\0".join(
            s.encode()
            for s in (
                _SOURCE.read_text(),
                " ".join(_FLAGS),
                version,
                jax.__version__,
                _cpu_signature(),
            )
        )
    ).hexdigest()[:16]
    lib = _cache_dir() / f"network_rhs-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for arch in (["-march=native"], []):  # not every compiler knows -march=native
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
        os.close(fd)
        cmd = [cxx, *_FLAGS, *arch, "-I", jax.ffi.include_dir(), str(_SOURCE)]
        proc = subprocess.run(
            [*cmd, "-o", tmp], capture_output=True, text=True, timeout=300
        )
        if proc.returncode == 0:
            os.replace(tmp, lib)
            return lib
        os.unlink(tmp)
        errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()[-2000:]}")
    raise RuntimeError("compiling the network kernel failed:\n" + "\n".join(errors))


@functools.cache
def _load() -> tuple[bool, str]:
    """(available, reason): builds, loads and registers the kernel once per process."""
    if os.environ.get("QFLOW_JAX_NATIVE", "1") == "0":
        return False, "disabled by QFLOW_JAX_NATIVE=0"
    cxx = _compiler()
    if cxx is None:
        return False, "no C++ compiler found ($CXX, g++, c++, clang++)"
    try:
        lib = ctypes.cdll.LoadLibrary(str(_build(cxx)))
        jax.ffi.register_ffi_target(
            TARGET, jax.ffi.pycapsule(lib.QflowNetworkRhs), platform="cpu"
        )
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(
            f"qflow_jax: the compiled network kernel is not available, the XLA kernel "
            f"is used instead ({err})",
            RuntimeWarning,
            stacklevel=3,
        )
        return False, str(err)
    return True, ""


def native_available() -> bool:
    """Whether the compiled CPU kernel is built and registered (builds it if needed).

    Examples:
        >>> native_available()
        True
    """
    return _load()[0]


def native_reason() -> str:
    """Why the compiled kernel is not available ("" when it is)."""
    return _load()[1]
