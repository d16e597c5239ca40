"""Versioned, atomic checkpoints of one run, written with orbax-checkpoint.

A `Checkpoints` folder (e.g. `RUN/checkpoints/`) holds one sub-folder per saved step
(`RUN/checkpoints/3/`), with two items: `tree`, the arrays (orbax's
`StandardCheckpointHandler`: tensorstore/OCDBT files), and `meta`, a JSON document
that carries the run fingerprint (`qflow_jax.runs.fingerprint`) and whatever other
JSON state the caller keeps. Orbax writes each step into
`3.orbax-checkpoint-tmp` and renames it to `3` only when every file is written, and
`save` returns only after that rename (synchronous saves): a step that
`latest_step` reports is complete, and a run killed (even with `kill -9`) after
`save` returned keeps it. The `keep` most recent steps are kept.

Every damaged or foreign checkpoint raises `qflow_jax.runs.ResumeError` with one
line that names the folder and the step, never an orbax or tensorstore traceback.

Orbax is imported on first use (about 0.2 s once JAX is imported). Its log records
are dropped (a filter on the "absl" and root loggers that matches orbax's own
modules only), and so are the late reports of tensorstore reads that a failed
restore leaves in flight (a filter on the "asyncio" logger and a wrapper of
`sys.unraisablehook`, both matching only those reports): a command prints nothing
from orbax.

In a run of several processes only process 0 writes (`save` does nothing on the
others, as `qflow_jax.runs.RunFolder`), and every process may read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qflow_jax.runs import ResumeError, check_fingerprint, to_jsonable

__all__ = ["Checkpoints"]

_TREE, _META = "tree", "meta"
_AGAIN = "run without --resume to start again"
_LIST_TRIES = 5


class _DropOrbaxRecords(logging.Filter):
    """Drops the log records that orbax's modules write (through absl's logger
    and, in a few modules, the root logger), and asyncio's "Task (or Future)
    exception was never retrieved" reports of the tensorstore reads that orbax
    leaves behind when a restore fails; other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" in record.pathname:
            return False
        if "exception was never retrieved" not in str(record.msg):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        text = f"{record.getMessage()} {exc}".lower()
        return "tensorstore" not in text and "ocdbt" not in text


_FILTER = _DropOrbaxRecords()


def _is_stale_loop_error(args: Any) -> bool:
    """True for the `RuntimeError("Event loop is closed")` that tensorstore reports
    (through `sys.unraisablehook`) when a read that orbax started finishes after
    orbax gave up on a failed restore and closed its event loop."""
    if not (
        isinstance(args.exc_value, RuntimeError)
        and str(args.exc_value) == "Event loop is closed"
    ):
        return False
    tb = args.exc_traceback
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "_check_closed"


def _quiet_orbax() -> None:
    """Silences orbax: its log records, and the late reports of reads still in
    flight after a failed restore, which would print tracebacks after the
    ResumeError. Everything else logged or reported passes unchanged."""
    for name in ("absl", "", "asyncio"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    previous = sys.unraisablehook
    if getattr(previous, "_qflow_checkpoints", False):
        return

    def hook(args: Any) -> None:
        if not _is_stale_loop_error(args):
            previous(args)

    hook._qflow_checkpoints = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _ocp() -> Any:
    """orbax.checkpoint, imported on first use, silenced (`_quiet_orbax`)."""
    import orbax.checkpoint as ocp

    _quiet_orbax()
    return ocp


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _part(key: Any) -> str:
    """One step of a pytree key path as a name (dict key, index or attribute)."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _leaves(tree: Any) -> tuple[list[tuple[str, ...]], list[Any], Any]:
    """The names (key paths) and leaves of `tree`, and its tree structure.

    Raises:
        ValueError: when two leaves get one name (say dict keys 0 and "0") or
            a name holds a "." (orbax joins the parts of a name with ".").
    """
    import jax

    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [tuple(_part(k) for k in path) or ("value",) for path, _ in flat]
    joined = [".".join(name) for name in names]
    if len(set(joined)) != len(joined) or any(
        "." in part or not part for name in names for part in name
    ):
        raise ValueError(
            "checkpoint arrays need distinct key names without '.' or empty parts; "
            f"got {sorted(joined)}"
        )
    return names, [leaf for _, leaf in flat], treedef


def _nest(names: list[tuple[str, ...]], values: list[Any]) -> dict[str, Any]:
    """A nested dict with `values` at the key paths `names`."""
    out: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        node = out
        for part in name[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"checkpoint array {'.'.join(name)} is inside another")
        if name[-1] in node:
            raise ValueError(f"checkpoint array {'.'.join(name)} holds other arrays")
        node[name[-1]] = value
    return out


def _flatten_nested(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple, Any]:
    if isinstance(tree, Mapping):
        out: dict[tuple, Any] = {}
        for k, v in tree.items():
            out.update(_flatten_nested(v, (*prefix, str(k))))
        return out
    return {prefix: tree}


def _host(name: tuple[str, ...], leaf: Any) -> np.ndarray:
    try:
        return np.asarray(leaf)
    except Exception as err:  # typed PRNG keys, non-addressable shards, ...
        raise ValueError(
            f"cannot checkpoint array {'.'.join(name)} ({type(err).__name__}: "
            f"{_first_line(err)}); store PRNG keys as jax.random.key_data"
        ) from None


def _spec(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a template leaf (array, ShapeDtypeStruct or scalar)."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    arr = np.asarray(leaf)
    return arr.shape, arr.dtype


def _like(leaf: Any, value: np.ndarray) -> Any:
    """`value` (restored as numpy) in the kind of the template's `leaf`: a JAX
    array (with the leaf's sharding) for JAX arrays and ShapeDtypeStructs, a
    Python or NumPy scalar for scalars, else the numpy array."""
    import jax

    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct):
        sharding = getattr(leaf, "sharding", None)
        return jax.device_put(value, sharding) if sharding else jax.device_put(value)
    if isinstance(leaf, bool | int | float | complex):
        return value.item()
    if isinstance(leaf, np.generic):
        return value[()]
    return value


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_main_process() -> bool:
    import jax

    return jax.process_index() == 0


class Checkpoints:
    """Versioned, atomic checkpoints of one run in `folder` (e.g. RUN/checkpoints/).

    Args:
        folder: the checkpoints folder, one sub-folder per step; created by the
            first `save`.
        keep: how many of the most recent steps to keep (older ones are deleted
            after each save).

    Raises:
        ValueError: when `keep` is below 1.

    Examples:
        >>> from qflow_jax.checkpoints import Checkpoints
        >>> from qflow_jax.runs import fingerprint
        >>> fp = fingerprint({"seed": 0})
        >>> ckpts = Checkpoints("run/checkpoints", keep=2)
        >>> print(ckpts.latest_step())
        None
        >>> tree = {"params": {"w": jnp.ones((2, 3))}, "q": np.zeros((4, 5))}
        >>> for step in range(3):
        ...     ckpts.save(step, tree, {"fingerprint": fp, "records": [step]})
        >>> ckpts.latest_step(), ckpts.all_steps()
        (2, [1, 2])
        >>> step, restored, meta = ckpts.restore(tree, fp)
        >>> step, meta["records"], restored["q"].shape
        (2, [2], (4, 5))
    """

    def __init__(self, folder: str | Path, *, keep: int = 2):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` must be an integer >= 1, got {keep!r}")
        self.folder = Path(folder)
        self.keep = keep
        # orbax wants an absolute path; fixed here, against later changes of cwd
        self._path = self.folder.absolute()

    def __repr__(self) -> str:
        return f"Checkpoints({str(self.folder)!r}, keep={self.keep})"

    def _where(self, step: int) -> str:
        return f"{self.folder} (step {step})"

    def _manager(self, *, write: bool) -> Any:
        """An orbax CheckpointManager of the folder: synchronous saves, `keep`
        steps, leftovers of killed saves removed (writer only), process-local (no
        barriers across the processes of a run: only process 0 writes)."""
        import jax

        ocp = _ocp()
        me = jax.process_index()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.keep if write else None,
            save_interval_steps=1 if write else 0,
            enable_async_checkpointing=False,
            create=False,
            read_only=not write,
            cleanup_tmp_directories=write,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}
            ),
        )
        registry = ocp.handlers.create_default_handler_registry(
            **{
                _TREE: ocp.StandardCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
            }
        )
        return ocp.CheckpointManager(
            self._path, options=options, handler_registry=registry
        )

    def _readable(self) -> bool:
        """False when the folder does not exist; ResumeError when it is no folder."""
        if not self._path.exists():
            return False
        if not self._path.is_dir():
            raise ResumeError(
                f"{self.folder} is not a checkpoints folder (it is a file); {_AGAIN}"
            )
        return True

    def _steps(self) -> list[int]:
        if not self._readable():
            return []
        # a process may list the steps while another one writes them (a monitor
        # of a live run): a step deleted between listing and reading is retried
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._manager(write=False) as manager:
                    return sorted(manager.all_steps())
            except Exception as err:
                vanished = isinstance(err, (FileNotFoundError, NotADirectoryError))
                if vanished and attempt < _LIST_TRIES:
                    time.sleep(0.01 * attempt)
                    continue
                raise ResumeError(
                    f"{self.folder} is not a readable checkpoints folder "
                    f"({type(err).__name__}: {_first_line(err)}); {_AGAIN}"
                ) from None

    def all_steps(self) -> list[int]:
        """The complete steps in the folder, oldest first ([] when none).

        Raises:
            ResumeError: when `folder` is a file or cannot be read.
        """
        return self._steps()

    def latest_step(self) -> int | None:
        """The most recent complete step; None when none was finished (no folder,
        an empty one, or only the temporary folder of a killed save).

        Raises:
            ResumeError: when `folder` is a file or cannot be read.
        """
        steps = self._steps()
        return steps[-1] if steps else None

    def save(self, step: int, tree: Any, meta: Mapping[str, Any]) -> None:
        """Writes `tree` and `meta` as step `step`; returns once the step is
        complete on disk (an atomic rename of its temporary folder). Steps at or
        after `step` already in the folder (of an earlier run, or beyond the step a
        run resumed from) are deleted first, so that `step` becomes the latest.
        Does nothing on processes other than 0.

        Args:
            step: the step number (>= 0).
            tree: a pytree of arrays (flax params, numpy or JAX arrays, scalars);
                stored as numpy arrays of the same dtypes and shapes. JAX arrays
                must be addressable from this process (replicated parameters are).
            meta: JSON-able state; must hold the run fingerprint under
                "fingerprint" (`qflow_jax.runs.fingerprint`). Stored through
                `qflow_jax.runs.to_jsonable` (tuples become lists, numpy scalars
                numbers).

        Raises:
            ValueError: when `step` is negative, `meta` has no "fingerprint" or is
                not JSON-able, `tree` holds something that is not an array, or the
                folder cannot be created.
        """
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"`step` must be an integer >= 0, got {step!r}")
        step = int(step)
        if not isinstance(meta, Mapping) or "fingerprint" not in meta:
            raise ValueError(
                "checkpoint `meta` must be a mapping with the run's fingerprint "
                'under "fingerprint"'
            )
        document = to_jsonable(meta)
        try:
            json.dumps(document)
        except (TypeError, ValueError) as err:
            raise ValueError(f"checkpoint `meta` is not JSON-able: {err}") from None
        names, leaves, _ = _leaves(tree)
        if not names:
            raise ValueError("checkpoint `tree` holds no arrays")
        host = [_host(n, x) for n, x in zip(names, leaves, strict=True)]
        arrays = _nest(names, host)
        sums = {".".join(n): _digest(x) for n, x in zip(names, host, strict=True)}
        if not _is_main_process():
            return
        try:
            self._path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"cannot write checkpoints to {self.folder}: {err.strerror or err}"
            ) from None
        ocp = _ocp()
        with self._manager(write=True) as manager:
            for old in manager.all_steps():
                if old >= step:
                    manager.delete(old)
            manager.save(
                step,
                args=ocp.args.Composite(
                    **{
                        _TREE: ocp.args.StandardSave(
                            arrays, custom_metadata={"sha256": sums}
                        ),
                        _META: ocp.args.JsonSave(document),
                    }
                ),
                force=True,
            )
            manager.wait_until_finished()

    def restore(
        self,
        template: Any,
        fingerprint: Mapping[str, Any],
        step: int | None = None,
    ) -> tuple[int, Any, dict]:
        """Reads step `step` (default: the latest complete one) into the structure
        of `template`, after checking that the stored fingerprint is
        `fingerprint` and that the stored arrays have the template's names,
        shapes and dtypes.

        Args:
            template: a pytree like the saved `tree` (same structure, shapes and
                dtypes); its leaves may be arrays, `jax.ShapeDtypeStruct`s or
                scalars; only their shapes and dtypes are read.
            fingerprint: the current run's fingerprint
                (`qflow_jax.runs.fingerprint`).
            step: the step to read; None for the latest.

        Returns:
            `(step, tree, meta)`: the step read, the arrays in the structure of
            `template` (JAX arrays, on the template leaf's sharding, where the
            template has JAX arrays or ShapeDtypeStructs; numpy arrays where it
            has numpy arrays; scalars where it has scalars) and the full `meta`
            dict as saved (in its JSON form).

        Raises:
            ResumeError: when there is no such step, the folder is no checkpoints
                folder, the step is damaged (missing or truncated files, garbled
                JSON), was written by a different run (fingerprint), carries no
                fingerprint, or holds other arrays than `template`.
        """
        steps = self._steps()
        step = None if step is None else int(step)
        if step is None:
            if not steps:
                raise ResumeError(
                    f"{self.folder} holds no complete checkpoint; {_AGAIN}"
                )
            step = steps[-1]
        elif step not in steps:
            held = ", ".join(map(str, steps)) or "none"
            raise ResumeError(
                f"{self.folder} holds no step {step} (complete steps: {held}); {_AGAIN}"
            )
        where = self._where(step)
        names, leaves, treedef = _leaves(template)
        wanted = {name: _spec(leaf) for name, leaf in zip(names, leaves, strict=True)}
        ocp = _ocp()
        with self._manager(write=False) as manager:
            meta = self._read(where, manager, step, {_META: ocp.args.JsonRestore()})
            meta = meta[_META]
            if not isinstance(meta, Mapping):
                raise ResumeError(
                    f"{where} is damaged (its meta is a {type(meta).__name__}, not a "
                    f"JSON object); {_AGAIN}"
                )
            check_fingerprint(meta.get("fingerprint"), fingerprint, Path(where))
            stored, sums = self._read_metadata(where, manager, step)
            self._check_arrays(where, stored, wanted)
            targets = _nest(
                names, [np.empty(shape, dtype) for shape, dtype in wanted.values()]
            )
            restored = self._read(
                where, manager, step, {_TREE: ocp.args.StandardRestore(targets)}
            )[_TREE]
        flat = _flatten_nested(restored)
        values = []
        for name, leaf in zip(names, leaves, strict=True):
            value = np.asarray(flat.get(name))
            key = ".".join(name)
            if (value.shape, value.dtype) != wanted[name] or _digest(value) != sums.get(
                key
            ):
                raise ResumeError(
                    f"{where} is damaged (array {key} does not read back as "
                    f"written: checksum mismatch); {_AGAIN}"
                )
            values.append(_like(leaf, value))
        return step, treedef.unflatten(values), dict(meta)

    def _read(self, where: str, manager: Any, step: int, items: dict) -> Any:
        ocp = _ocp()
        try:
            return manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:
            raise ResumeError(
                f"{where} is damaged ({type(err).__name__}: {_first_line(err)}); "
                f"{_AGAIN}"
            ) from None

    def _read_metadata(
        self, where: str, manager: Any, step: int
    ) -> tuple[dict[tuple, tuple[tuple[int, ...], np.dtype]], dict[str, str]]:
        """Names, shapes and dtypes of the stored arrays, and their checksums."""
        try:
            metadata = manager.item_metadata(step)[_TREE]
            tree = getattr(metadata, "tree", None)
            sums = (getattr(metadata, "custom_metadata", None) or {}).get("sha256")
            if not isinstance(tree, Mapping) or not isinstance(sums, Mapping):
                raise ValueError("no array metadata or checksums")
            specs = {
                name: (tuple(md.shape), np.dtype(md.dtype))
                for name, md in _flatten_nested(tree).items()
            }
        except Exception as err:
            raise ResumeError(
                f"{where} is damaged ({type(err).__name__}: {_first_line(err)}); "
                f"{_AGAIN}"
            ) from None
        return specs, dict(sums)

    @staticmethod
    def _check_arrays(
        where: str,
        stored: dict[tuple, tuple[tuple[int, ...], np.dtype]],
        wanted: dict[tuple, tuple[tuple[int, ...], np.dtype]],
    ) -> None:
        def show(spec: tuple[tuple[int, ...], np.dtype] | None) -> str:
            return "absent" if spec is None else f"{spec[1]}{list(spec[0])}"

        diffs = [
            f"{'.'.join(name)} is {show(stored.get(name))} there, "
            f"{show(wanted.get(name))} now"
            for name in sorted(set(stored) | set(wanted))
            if stored.get(name) != wanted.get(name)
        ]
        if diffs:
            more = f"; and {len(diffs) - 6} more" if len(diffs) > 6 else ""
            raise ResumeError(
                f"{where} holds other arrays than this run: "
                f"{'; '.join(diffs[:6])}{more}; {_AGAIN}"
            )
