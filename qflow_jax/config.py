"""Validated YAML configurations.

A schema is a dict mapping keys to `Field`s, to nested schemas (sub-sections), or
to a settings class of the library (`settings_class`: a pydantic dataclass, so that
the class that runs a method is also its config section, with its one set of
defaults). `validate` fills defaults and rejects unknown keys, wrong types and
non-finite numbers (`.nan`, `.inf`, also inside lists) with a `ConfigError` that
names the key path and what is allowed; the CLI turns it into exit code 2 with the
message.

Examples:
    >>> schema = {"t_end": Field(float, 1.0), "solver": {"rtol": Field(float, 1e-6)}}
    >>> validate({"solver": {"rtol": 1e-8}}, schema)
    {'t_end': 1.0, 'solver': {'rtol': 1e-08}}
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic import Field as _PField
from pydantic.dataclasses import dataclass as _pydantic_dataclass

__all__ = [
    "REQUIRED",
    "ConfigError",
    "Field",
    "Float",
    "Int",
    "NonNegativeFloat",
    "PositiveFloat",
    "PositiveInt",
    "describe",
    "settings_class",
    "at_least_two",
    "complex_pairs",
    "positive_ints",
    "unit_interval",
    "load_yaml",
    "non_negative",
    "positive",
    "validate",
]


class ConfigError(ValueError):
    """An invalid configuration: unknown key, wrong type, bad value."""


# numbers as configs write them: no strings, no booleans, finite
Float = Annotated[float, Strict()]
Int = Annotated[int, Strict()]
PositiveFloat = Annotated[float, Strict(), _PField(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), _PField(ge=0)]
PositiveInt = Annotated[int, Strict(), _PField(gt=0)]

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union")):
            out += f".{part}" if out else str(part)
    return out


def _allowed(cls: Any, loc: tuple) -> str:
    """The keys allowed at the section `loc` of the settings class `cls`."""
    if loc:  # settings classes are flat: a nested key has no listing
        return ""
    return ", ".join(sorted(getattr(cls, "__dataclass_fields__", {})))


def describe(err: ValidationError, model: Any = None, prefix: str = "") -> str:
    """One line for the first error of a pydantic validation of the settings class
    `model` (in the config section `prefix`): the key path and what is allowed,
    e.g. "`tdvp.dt` must be > 0.0, got -0.1"."""
    e = err.errors(include_url=False)[0]
    loc = tuple(p for p in e["loc"] if not str(p).startswith("function-"))
    key = _path(((prefix,) if prefix else ()) + loc)
    kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
    where = f"`{key}`" if key else "the configuration"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}
    bounds["less_than_equal"] = "<="
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _allowed(model, loc[:-1]) if model is not None else ""
        return f"unknown key {where}" + (
            f"; allowed keys here: {allowed}" * bool(allowed)
        )
    if kind in ("missing", "missing_argument"):
        return f"missing required key {where}"
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{where} must be {bounds[kind]} {limit}, got {value!r}"
    if kind == "literal_error":
        return f"{where} must be one of {ctx['expected']}, got {value!r}"
    if kind == "finite_number":
        return f"{where} must be finite (no .nan or .inf), got {value!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"{where}: {e['msg']}"
    if kind == "value_error":
        msg = str(ctx.get("error", e["msg"]))
        return f"{where}: {msg}" if key else msg
    if kind.endswith("_type") or kind.endswith("_parsing"):
        wanted = kind.removesuffix("_type").removesuffix("_parsing")
        wanted = {"float": "a number", "int": "an integer", "string": "a string"}.get(
            wanted, wanted
        )
        return f"{where} must be {wanted}, got {type(value).__name__} {value!r}"
    return f"{where}: {e['msg']}, got {value!r}"


def settings_class(cls: type) -> type:
    """Makes a settings class a frozen pydantic dataclass that is also a config
    section: typed, range-checked fields (unknown keys and non-finite numbers
    refused), one-line `ConfigError`s (a ValueError) naming the field when built
    from Python, the same checks when validated inside a config model."""
    cls = _pydantic_dataclass(frozen=True, config=_STRICT)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as err:
            raise ConfigError(describe(err, type(self))) from None

    cls.__init__ = __init__
    return cls


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Field:
    """One configuration value.

    Args:
        types: allowed Python type(s); int is accepted where float is allowed.
        default: value when absent; `REQUIRED` makes the key mandatory.
        choices: allowed values, if restricted.
        check: callable returning an error message (str) or None for a valid value.
        doc: one-line description shown in error messages.
    """

    types: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""

    def type_names(self) -> str:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        return " or ".join(t.__name__ for t in types)


def _type_ok(value: Any, types: type | tuple[type, ...]) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False
    if float in types and isinstance(value, int):
        return True
    return isinstance(value, types)


def positive(value: Any) -> str | None:
    """Check for `Field.check`: strictly positive number."""
    return None if value > 0 else "must be > 0"


def non_negative(value: Any) -> str | None:
    """Check for `Field.check`: number >= 0."""
    return None if value >= 0 else "must be >= 0"


def at_least_two(value: Any) -> str | None:
    """Check for `Field.check`: an integer count >= 2 (e.g. save times)."""
    return None if value >= 2 else "must be >= 2"


def unit_interval(value: Any) -> str | None:
    """Check for `Field.check`: a number in [0, 1]."""
    return None if 0 <= value <= 1 else "must be in [0, 1]"


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def complex_pairs(value: Any) -> str | None:
    """Check for `Field.check`: a non-empty list of [real, imag] pairs (one per
    mode)."""
    ok = isinstance(value, list) and all(
        isinstance(v, list) and len(v) == 2 and all(_is_number(c) for c in v)
        for v in value
    )
    if ok and value:
        return None
    return "must be a list of [real, imag] pairs, one per mode"


def positive_ints(value: Any) -> str | None:
    """Check for `Field.check`: a non-empty list of positive integers (layer
    widths)."""
    ok = isinstance(value, list) and bool(value)
    ok = ok and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )
    return None if ok else "must be a list of positive integers"


def _finite(value: Any) -> bool:
    """False when a float anywhere in `value` (lists, mappings) is nan or inf."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    return True


def validate(data: Any, schema: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """Checks `data` against `schema`; returns a new dict with defaults filled in."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        where = f"`{path}`" if path else "the configuration"
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(
            f"unknown key `{key}`; allowed keys here: {', '.join(sorted(schema))}"
        )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        full = f"{path}.{key}" if path else key
        if isinstance(spec, Mapping):
            out[key] = validate(data.get(key), spec, full)
            continue
        if isinstance(spec, type):  # a settings class is the section's schema
            out[key] = _validate_settings(data.get(key), spec, full)
            continue
        if key not in data:
            if spec.default is REQUIRED:
                raise ConfigError(f"missing required key `{full}` ({spec.doc})")
            out[key] = spec.default
            continue
        value = data[key]
        if value is None and spec.default is None:
            out[key] = None
            continue
        if not _type_ok(value, spec.types):
            raise ConfigError(
                f"`{full}` must be {spec.type_names()}, got {type(value).__name__} "
                f"{value!r}" + (f" ({spec.doc})" if spec.doc else "")
            )
        if not _finite(value):
            raise ConfigError(
                f"`{full}` must be finite (no .nan or .inf), got {value!r}"
            )
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(
                f"`{full}` must be one of {', '.join(map(repr, spec.choices))}, "
                f"got {value!r}"
            )
        if spec.check is not None and (msg := spec.check(value)) is not None:
            raise ConfigError(f"`{full}` {msg}, got {value!r}")
        out[key] = float(value) if spec.types is float else value
    return out


def _validate_settings(data: Any, cls: type, path: str) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"`{path}` must be a mapping, got {type(data).__name__}")
    try:
        value = TypeAdapter(cls).validate_python(dict(data))
    except ValidationError as err:
        raise ConfigError(describe(err, cls, prefix=path)) from None
    return dataclasses.asdict(value)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: `1e-3` is a number (YAML 1.1, PyYAML's default, makes it a
    string unless it has a decimal point); a key given twice in one mapping is an
    error (PyYAML's default keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} on line {line} (first on line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping from `path`; a `ConfigError` for a missing or bad file.
    Numbers like `1e-3` are floats."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data
