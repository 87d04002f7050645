"""Faults of the simulated barrier board, as data.

Two kinds, both plain data so that a scenario file can carry them:

- ``BoardFaults``: link noise as probabilities per request frame, drawn from the board's
  seeded RNG, so a run with the same seed and the same request stream fails the same way.
- ``FaultPlan``: a timetable of things that happen to the lane (fire alarm, cabinet
  opened, mains lost, a bag stuck in a doorway, a reboot, the USB cable pulled...). It
  loads from a dict or a TOML file::

      [[fault]]
      at_s = 2.0
      action = "emergency"
      active = true

      [[fault]]
      at_s = 5.0
      action = "rates"
      drop_reply = 0.2

``at_s`` is real seconds after ``SimBoard.start()`` (protocol time, not scaled by the
board's ``speed``), because link faults and watchdogs live in real time.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hardware.barrier.protocol import Door
from sim.traveller import TravellerBehaviour


@dataclass
class BoardFaults:
    """Probabilities per accepted request frame (0.0 .. 1.0)."""

    drop_reply: float = 0.0  # executed, but no reply goes out
    drop_request: float = 0.0  # never seen: no execution, no reply
    corrupt_reply: float = 0.0  # one byte of the reply is flipped
    noise: float = 0.0  # random garbage bytes go out before the reply

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"fault rate {f.name}={value!r} is not a probability")
            setattr(self, f.name, float(value))


#: action -> {argument: type}; the arguments each action accepts (all required unless
#: listed in OPTIONAL_ARGS).
ACTIONS: dict[str, dict[str, type]] = {
    "emergency": {"active": bool},
    "tamper": {"open": bool},
    "mains": {"present": bool},
    "maintenance_key": {"on": bool},
    "jam": {"door": Door},
    "clear_jam": {"door": Door},
    "reboot": {},
    "unplug": {},
    "replug": {},
    "rates": {"drop_reply": float, "drop_request": float, "corrupt_reply": float,
              "noise": float},
    "traveller": {"kind": str, "walk_s": float, "hesitate_s": float},
}

OPTIONAL_ARGS: dict[str, frozenset[str]] = {
    "rates": frozenset({"drop_reply", "drop_request", "corrupt_reply", "noise"}),
    "traveller": frozenset({"kind", "walk_s", "hesitate_s"}),
}


class FaultPlanError(ValueError):
    """A fault plan that cannot be run as written."""


def _door(value: object) -> Door:
    if isinstance(value, str):
        try:
            return Door[value.upper()]
        except KeyError as exc:
            raise FaultPlanError(f"unknown door {value!r} (entry or exit)") from exc
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Door(value)
        except ValueError as exc:
            raise FaultPlanError(f"unknown door {value!r} (1 or 2)") from exc
    raise FaultPlanError(f"door must be 'entry', 'exit', 1 or 2, not {value!r}")


def _coerce(action: str, name: str, kind: type, value: object) -> object:
    if kind is Door:
        return _door(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise FaultPlanError(f"{action}.{name} must be true or false, not {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FaultPlanError(f"{action}.{name} must be a number, not {value!r}")
        return float(value)
    if not isinstance(value, kind):
        raise FaultPlanError(f"{action}.{name} must be {kind.__name__}, not {value!r}")
    return value


@dataclass(frozen=True)
class FaultStep:
    at_s: float
    action: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FaultStep:
        data = dict(raw)
        try:
            at_s = data.pop("at_s")
            action = data.pop("action")
        except KeyError as exc:
            raise FaultPlanError(f"fault step {raw!r} lacks {exc.args[0]}") from exc
        nested = data.pop("args", None)
        if isinstance(nested, Mapping):
            data.update(nested)
        if isinstance(at_s, bool) or not isinstance(at_s, int | float) or at_s < 0:
            raise FaultPlanError(f"at_s must be a number >= 0, not {at_s!r}")
        if action not in ACTIONS:
            raise FaultPlanError(f"unknown fault action {action!r}; known: {sorted(ACTIONS)}")
        schema = ACTIONS[action]
        unknown = set(data) - set(schema)
        if unknown:
            raise FaultPlanError(f"{action} does not take {sorted(unknown)}")
        missing = set(schema) - set(data) - OPTIONAL_ARGS.get(action, frozenset())
        if missing:
            raise FaultPlanError(f"{action} needs {sorted(missing)}")
        args: dict[str, Any] = {
            name: _coerce(action, name, schema[name], value) for name, value in data.items()
        }
        if action == "rates":
            try:
                BoardFaults(**args)  # range check now, not in the middle of a run
            except ValueError as exc:
                raise FaultPlanError(str(exc)) from exc
        if action == "traveller":
            try:
                TravellerBehaviour(**args)
            except ValueError as exc:
                raise FaultPlanError(str(exc)) from exc
        return cls(float(at_s), action, args)


@dataclass(frozen=True)
class FaultPlan:
    steps: tuple[FaultStep, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FaultPlan:
        entries = raw.get("fault", [])
        if not isinstance(entries, list):
            raise FaultPlanError("'fault' must be a list of tables")
        steps = [FaultStep.from_dict(e) for e in entries]
        return cls(tuple(sorted(steps, key=lambda s: s.at_s)))

    @classmethod
    def load(cls, path: str | Path) -> FaultPlan:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise FaultPlanError(f"{path}: {exc}") from exc
        return cls.from_dict(raw)
