"""Validated configurations: pydantic models are the schema.

A config is a `Section` (a pydantic model: unknown keys and non-finite numbers are
errors) whose sections are further `Section`s, unions tagged by their `kind`
(`kinds`), or the library's own settings classes (`settings_class`: a frozen
pydantic dataclass, so that the class that runs a method is also its config
section, with one set of defaults). `validate_model` reads a mapping into such a
model; whatever is wrong, the first problem becomes a `ConfigError` of one line
naming the key path and what is allowed (`describe`), which the CLI turns into exit
code 2.

Examples:
    >>> class Times(Section):
    ...     t_end: PositiveFloat = 1.0
    ...     n_save: PositiveInt = 11
    >>> validate_model({"t_end": 5}, Times)
    Times(t_end=5.0, n_save=11)
    >>> validate_model({"t_end": -1.0}, Times)
    Traceback (most recent call last):
    ...
    qflow_jax.config.ConfigError: `t_end` must be > 0.0, got -1.0
    >>> validate_model({"tend": 5}, Times)
    Traceback (most recent call last):
    ...
    qflow_jax.config.ConfigError: unknown key `tend`; allowed keys here: n_save, t_end
"""

from __future__ import annotations

import functools
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic import Field as _PField
from pydantic.dataclasses import dataclass as _pydantic_dataclass

__all__ = [
    "ComplexPair",
    "ConfigError",
    "Float",
    "Int",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Section",
    "describe",
    "kinds",
    "load_yaml",
    "settings_class",
    "validate_model",
]


class ConfigError(ValueError):
    """An invalid configuration: unknown key, wrong type, bad value."""


# numbers as configs write them: no strings, no booleans, finite
Float = Annotated[float, Strict()]
Int = Annotated[int, Strict()]
PositiveFloat = Annotated[float, Strict(), _PField(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), _PField(ge=0)]
PositiveInt = Annotated[int, Strict(), _PField(gt=0)]
NonNegativeInt = Annotated[int, Strict(), _PField(ge=0)]
# a complex number as [real, imag]
ComplexPair = Annotated[list[Float], _PField(min_length=2, max_length=2)]

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


class Section(BaseModel):
    """A config section: typed keys with defaults; unknown keys and non-finite
    numbers are errors."""

    model_config = _STRICT


def kinds(*members: type, default: str | None = None) -> Any:
    """The type of a section that is one of `members`, chosen by its `kind` key
    (each member declares `kind: Literal["..."]`); a missing `kind` means
    `default`."""

    def kind_of(value: Any) -> str | None:
        kind = value.get("kind", default) if isinstance(value, dict) else None
        kind = getattr(value, "kind", kind)
        return None if kind is None else f"kind={kind}"

    tagged = tuple(Annotated[m, Tag(f"kind={_kind(m)}")] for m in members)
    return Annotated[typing.Union[tagged], Discriminator(kind_of)]  # noqa: UP007


def _kind(member: type) -> str:
    return typing.get_args(member.model_fields["kind"].annotation)[0]


def _fields(cls: Any) -> dict[str, Any]:
    """name -> annotation of a model's or a (pydantic) dataclass's fields."""
    fields = getattr(cls, "model_fields", None)
    if fields is None:
        fields = getattr(cls, "__pydantic_fields__", None) or {}
    return {name: f.annotation for name, f in fields.items()}


def _members(t: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated) union, or [t]."""
    while typing.get_origin(t) is Annotated:
        t = typing.get_args(t)[0]
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(t) for m in _members(a)]
    return [t]


def _allowed(model: Any, loc: tuple) -> str:
    """The keys allowed in the section at `loc` of `model` ("" if unknown)."""
    current = [model]
    for part in loc:
        nxt = []
        for t in (m for c in current for m in _members(c)):
            if isinstance(part, str) and part.startswith("kind="):
                if _fields(t) and _kind(t) == part[5:]:
                    nxt.append(t)
            elif isinstance(part, int) or typing.get_origin(t) is dict:
                args = typing.get_args(t)
                nxt += args[-1:]
            elif part in _fields(t):
                nxt.append(_fields(t)[part])
        current = nxt
    keys = [k for c in current for m in _members(c) for k in _fields(m)]
    return ", ".join(sorted(set(keys)))


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("kind=", "function-")):
            out += f".{part}" if out else str(part)
    return out


_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}
_TYPES = {"float": "a number", "int": "an integer", "string": "a string"}
_TYPES |= {"bool": "true or false", "dict": "a mapping", "list": "a list"}


def describe(err: ValidationError, model: Any = None, prefix: str = "") -> str:
    """One line for the first error of a pydantic validation of `model` (in the
    config section `prefix`): the key path and what is allowed, e.g.
    "`tdvp.dt` must be > 0.0, got -0.1"."""
    e = err.errors(include_url=False)[0]
    loc = tuple(e["loc"])
    key = _path(((prefix,) if prefix else ()) + loc)
    kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
    where = f"`{key}`" if key else "the configuration"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _allowed(model, loc[:-1]) if model is not None else ""
        return f"unknown key {where}" + f"; allowed keys here: {allowed}" * bool(
            allowed
        )
    if kind in ("missing", "missing_argument"):
        return f"missing required key {where}"
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()))
        return f"{where} must be {_BOUNDS[kind]} {limit}, got {value!r}"
    if kind == "literal_error":
        return f"{where} must be one of {ctx['expected']}, got {value!r}"
    if kind == "finite_number":
        return f"{where} must be finite (no .nan or .inf), got {value!r}"
    if kind == "union_tag_not_found":
        return f"missing required key `{key + '.' if key else ''}kind`"
    if kind == "union_tag_invalid":
        allowed = re.findall(r"kind=([^']+)", str(ctx.get("expected_tags", "")))
        got = str(ctx.get("tag", "")).removeprefix("kind=")
        return (
            f"`{key + '.' if key else ''}kind` must be one of "
            f"{', '.join(map(repr, allowed))}, got {got!r}"
        )
    if kind in ("too_short", "too_long"):
        which = "at least" if kind == "too_short" else "at most"
        n = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"{where} must hold {which} {n} entries, got {value!r}"
    if kind == "value_error":
        msg = str(ctx.get("error", e["msg"]))
        return msg if not key or f"`{key}" in msg else f"{where}: {msg}"
    if kind.endswith(("_type", "_parsing")):
        name = kind.removesuffix("_type").removesuffix("_parsing")
        wanted = _TYPES.get(name, name)
        return f"{where} must be {wanted}, got {type(value).__name__} {value!r}"
    return f"{where}: {e['msg']}, got {value!r}"


def validate_model(data: Any, model: Any) -> Any:
    """`model` (a `Section`, or a union of them from `kinds`) validated from `data`
    (a mapping; None for all defaults); a `ConfigError` of one line for the first
    problem (`describe`)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the configuration must be a mapping, got {type(data).__name__}"
        )
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        return TypeAdapter(model).validate_python(data)
    except ValidationError as err:
        raise ConfigError(describe(err, model)) from None


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
