"""Declarative settings: every key of lane.toml with its type, range and unit.

A section of lane.toml is a frozen dataclass whose fields are its keys. Each field's
annotation is the key's type, and :func:`setting` adds its range, unit and allowed values,
so one reader (:func:`values`, :func:`load`) checks every section the same way and no key
can slip through untyped or out of range::

    @dataclass(frozen=True)
    class Timeouts:
        admitting: float = setting(20.0, above=0, high=600, unit="s")

Types a setting may have (anything else is a programming error, raised as ``TypeError``
when the section is read — ``tests/test_config_schema.py`` reads every section):

* ``bool``, ``int`` (not a bool), ``float`` (an int is taken; never nan or inf), ``str``;
* ``float | None`` and the like: TOML has no null, so the key is either left out or of
  the type;
* ``frozenset[str]`` / ``tuple[str, ...]``: a TOML *list* of strings (a bare string is an
  error, never a set of its letters);
* ``tuple[int, int]`` / ``tuple[float, float]``: a list of exactly that many numbers;
* ``datetime.date``: a TOML date or an ISO string;
* another such dataclass: a sub-table (``[face.capture]``).

A numeric range applies to the number itself or to each number of a tuple; ``item``
normalises and checks each string (of a list, or a single one) and raises ``ValueError``
with the reason.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from datetime import date
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """The lane's configuration file is wrong; the message says where and how."""


@dataclass(frozen=True)
class Spec:
    """What a setting may be, beside its type."""

    low: float | None = None  # value >= low
    above: float | None = None  # value > above
    high: float | None = None  # value <= high
    also: tuple[Any, ...] = ()  # values allowed outside the range (0: "off")
    unit: str = ""
    choices: tuple[str, ...] = ()
    item: Callable[[str], str] | None = None  # normalise/check a string; ValueError if bad
    ordered: bool = False  # a pair (low, high) with low <= high
    nonempty: bool = False  # a string that must not be blank

    def describe_range(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        also = "".join(f"{a!r} or " for a in self.also)
        if self.above is not None and self.high is not None:
            return f"{also}> {_num(self.above)} and <= {_num(self.high)}{unit}"
        if self.above is not None:
            return f"{also}> {_num(self.above)}{unit}"
        if self.low is not None and self.high is not None:
            return f"{also}{_num(self.low)}..{_num(self.high)}{unit}"
        if self.low is not None:
            return f"{also}>= {_num(self.low)}{unit}"
        if self.high is not None:
            return f"{also}<= {_num(self.high)}{unit}"
        return ""

    def in_range(self, value: float) -> bool:
        if value in self.also:
            return True
        return not ((self.low is not None and value < self.low)
                    or (self.above is not None and value <= self.above)
                    or (self.high is not None and value > self.high))


@dataclass(frozen=True)
class ConfigWarning:
    """A setting that is allowed but weakens a check: logged as ``code`` and shown where
    the lane's keepers look (``/healthz``, ``/metrics``, ``gate run --check``)."""

    code: str  # the log event, e.g. "config.threshold_below_calibrated"
    message: str  # one line for people
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _num(value: float) -> str:
    return f"{value:g}"


def setting(default: Any = MISSING, *, factory: Callable[[], Any] | None = None,
            low: float | None = None, above: float | None = None, high: float | None = None,
            also: tuple[Any, ...] = (), unit: str = "", choices: tuple[str, ...] = (),
            item: Callable[[str], str] | None = None, ordered: bool = False,
            nonempty: bool = False) -> Any:
    """A dataclass field that is a setting: its default and what it may be."""
    meta = {"setting": Spec(low=low, above=above, high=high, also=also, unit=unit,
                            choices=choices, item=item, ordered=ordered, nonempty=nonempty)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def spec_of(f: dataclasses.Field[Any]) -> Spec:
    spec = f.metadata.get("setting")
    return spec if isinstance(spec, Spec) else Spec()


def settings_of(cls: type) -> dict[str, tuple[Any, Spec]]:
    """Each setting of section ``cls``: its resolved type and its spec."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], spec_of(f)) for f in dataclasses.fields(cls) if f.init}


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin in (frozenset, set, list) or (origin is tuple and args[-1:] == (Ellipsis,)):
        return f"a list of {_type_name(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} {_type_name(args[0])}"
    if _is_dataclass_type(kind):
        return "a table"
    if kind is date:
        return "a date (YYYY-MM-DD)"
    return str(getattr(kind, "__name__", kind))


def _got(value: object) -> str:
    return f"got {type(value).__name__} {value!r}"


def convert(kind: Any, spec: Spec, value: object, where: str) -> Any:
    """``value`` from TOML as a setting of type ``kind``; ``ConfigError`` naming ``where``
    (``"[barrier] retries"``) if it is not one."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"{where}: a setting has one type besides None, not {kind}")
        return convert(options[0], spec, value, where)
    if _is_dataclass_type(kind):
        return load(kind, value, where.strip("[]").replace("] ", "."))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be bool (true or false), {_got(value)}")
        return value
    if kind is int or kind is float:
        return _number(kind, spec, value, where)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be str, {_got(value)}")
        return _string(spec, value, where)
    if kind is date:
        if isinstance(value, date) and not hasattr(value, "hour"):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a date (YYYY-MM-DD), {_got(value)}")
    if origin in (frozenset, tuple) and (origin is frozenset or args[-1:] == (Ellipsis,)):
        if args[0] is not str:
            raise TypeError(f"{where}: a list setting holds strings, not {args[0]}")
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list of strings, {_got(value)}")
        items = []
        for i, element in enumerate(value):
            if not isinstance(element, str):
                raise ConfigError(f"{where} must be a list of strings; item {i + 1} is "
                                  f"{type(element).__name__} {element!r}")
            items.append(_string(spec, element, where))
        return frozenset(items) if origin is frozenset else tuple(items)
    if origin is tuple:
        if not isinstance(value, list) or len(value) != len(args):
            raise ConfigError(f"{where} must be {_type_name(kind)}, {_got(value)}")
        pair = tuple(_number(a, spec, v, where) for a, v in zip(args, value, strict=True))
        if spec.ordered and list(pair) != sorted(pair):
            raise ConfigError(f"{where} must be [low, high] with low <= high, got {value!r}")
        return pair
    raise TypeError(f"{where}: a setting cannot be of type {kind}")


def _number(kind: type, spec: Spec, value: object, where: str) -> Any:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        ok = ok or isinstance(value, float)
    if not ok:
        raise ConfigError(f"{where} must be {kind.__name__}, {_got(value)}")
    number = kind(value)
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if not spec.in_range(number):
        raise ConfigError(f"{where} must be {spec.describe_range()}, got {value!r}")
    return number


def _string(spec: Spec, value: str, where: str) -> str:
    if spec.item is not None:
        try:
            value = spec.item(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    if spec.nonempty and not value.strip():
        raise ConfigError(f"{where} must not be empty")
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{where} must be one of {', '.join(spec.choices)}, got {value!r}")
    return value


def values(cls: type, raw: object, section: str) -> dict[str, Any]:
    """The keys of TOML table ``raw`` checked against section ``cls``, converted; only
    the keys present (the rest keep the dataclass defaults)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table, {_got(raw)}")
    known = settings_of(cls)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in [{section}]; known: "
                              f"{', '.join(sorted(known))}")
        kind, spec = known[key]
        out[key] = convert(kind, spec, value, f"[{section}] {key}")
    return out


def load(cls: type[T], raw: object, section: str) -> T:
    """Section ``cls`` from TOML table ``raw``; ``ConfigError`` on any bad key."""
    return cls(**values(cls, raw, section))


def check(instance: object, section: str) -> None:
    """Check an already built section (defaults included) as if it came from a file:
    the defaults of a section must themselves be valid settings."""
    for f in dataclasses.fields(instance):  # type: ignore[arg-type]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            check(value, f"{section}.{f.name}")
        elif value is not None:
            kind = typing.get_type_hints(type(instance))[f.name]
            convert(kind, spec_of(f), _as_toml(value), f"[{section}] {f.name}")


def _as_toml(value: object) -> object:
    if isinstance(value, frozenset | tuple):
        return sorted(value) if isinstance(value, frozenset) else list(value)
    return value
