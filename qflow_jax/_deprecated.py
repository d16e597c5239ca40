"""Deprecated import paths of modules that moved: the old module stays importable
and hands out the new module's names with a `DeprecationWarning`.

Examples:
    >>> import warnings
    >>> from qflow_jax.evolution import run as old
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     old.run_qflow.__module__
    'qflow_jax.apps.run'
    >>> for w in caught:
    ...     if "qflow_jax" in str(w.message):
    ...         print(w.message)
    qflow_jax.evolution.run.run_qflow is deprecated; import it from qflow_jax.apps.run
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved(
    old: str, new: str, elsewhere: Mapping[str, str] | None = None
) -> Callable[[str], Any]:
    """The module `__getattr__` of the old module `old`, whose names now live in
    the module `new`, or in the module `elsewhere[name]` (imported on first use, so
    the old path costs nothing)."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = (elsewhere or {}).get(name, new)
        module = importlib.import_module(target)
        if not hasattr(module, name):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} is deprecated; import it from {target}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, name)

    return __getattr__


def renamed(module: str, aliases: Mapping[str, str], namespace: Mapping[str, Any]):
    """The module `__getattr__` of `module` whose old names `aliases` (old -> new)
    stay available, with a `DeprecationWarning`, as the objects now in
    `namespace` (the module's globals)."""

    def __getattr__(name: str) -> Any:
        if name not in aliases:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is deprecated; use {aliases[name]}",
            DeprecationWarning,
            stacklevel=2,
        )
        return namespace[aliases[name]]

    return __getattr__
