"""One TOML file per lane: its devices (as URLs), timeouts, policy and logging.

Known sections are checked strictly (a misspelt key is an error, not a silent default),
because a lane that runs with the wrong timeout is worse than one that refuses to start.
Sections this module does not know (``[document]``, ``[face]``, ...) belong to other
stages: they are kept, unchecked, in ``LaneConfig.sections``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any


class ConfigError(ValueError):
    """The lane's configuration file is wrong; the message says where and how."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds each waiting state may last before the lane gives up on it."""

    reading_document: float = 10.0
    admitting: float = 20.0
    closing_entry: float = 15.0
    capturing_face: float = 15.0
    verifying: float = 10.0
    releasing: float = 20.0
    closing_exit: float = 15.0
    rejected: float = 60.0
    closing_rejected: float = 15.0
    recovering: float = 15.0
    out_of_service_retry: float = 0.5  # how often an out-of-service lane re-checks its causes
    red_cross_hold: float = 3.0  # how long the red cross stays after a rejected document
    obstructed_doorway: float = 3.0  # then an (obstruction-safe) close is tried anyway

    def for_state(self, state: str) -> float | None:
        value = getattr(self, state, None)
        return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Devices:
    """Every device is a URL; the lane never asks which kind it got."""

    barrier: str = "sim"  # "sim", "sim?speed=10", "serial:///dev/ttyUSB0", any pyserial URL
    camera: str = ""  # lane camera: 0, /dev/video0, rtsp://…, http://…/stream.mjpg, file:…
    documents: str = ""  # document camera (same kinds) or folder:/path of a full-page reader


def default_state_dir() -> Path:
    """Where a lane keeps its cases and key unless told: $EGATE_STATE_DIR, else
    /var/lib/egate for root (a lane PC's service), else ~/.local/state/egate."""
    env = os.environ.get("EGATE_STATE_DIR")
    if env:
        return Path(env)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/egate")
    return Path.home() / ".local" / "state" / "egate"


@dataclass(frozen=True)
class Cases:
    """Where the lane's cases go: a durable spool on the lane PC, flushed to the store the
    officers' review reads. Empty values take the defaults under the state directory."""

    store: str = ""  # sqlite:///PATH or postgresql://…; default STATE/review.sqlite3
    spool: str = ""  # folder; default STATE/spool/LANE_ID
    key_file: str = ""  # AES-256 image key; default STATE/review.key (created if missing)


@dataclass(frozen=True)
class Metrics:
    listen: str = "127.0.0.1:9464"  # /healthz and /metrics; "" switches them off


@dataclass(frozen=True)
class BarrierLink:
    """Host driver settings; the protocol's own defaults unless a site needs otherwise."""

    address: int = 1
    watchdog_ms: int = 0  # 0: leave the board's setting alone
    reply_timeout_s: float = 0.1
    retries: int = 3
    poll_interval_s: float = 0.1


@dataclass(frozen=True)
class Policy:
    stop_admitting_on_mains_loss: bool = True  # a passage under way still finishes
    reset_faults_automatically: bool = True  # watchdog/jam cleared by the lane once safe
    capture_while_closing: bool = True  # start the face capture as ENTRY closes (frames only)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    json: bool = True


@dataclass(frozen=True)
class LaneConfig:
    lane_id: str = "lane-1"
    devices: Devices = field(default_factory=Devices)
    barrier: BarrierLink = field(default_factory=BarrierLink)
    timeouts: Timeouts = field(default_factory=Timeouts)
    policy: Policy = field(default_factory=Policy)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cases: Cases = field(default_factory=Cases)
    metrics: Metrics = field(default_factory=Metrics)
    #: keys the file left out, as "[section] key" (the service logs the defaults it took)
    defaulted: tuple[str, ...] = field(default=(), compare=False)
    sections: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}))
    source: str = ""  # the file it came from, for messages


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _section(cls: type, name: str, raw: object, origin: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{origin}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(
                f"{origin}: unknown key {key!r} in [{name}]; known: {', '.join(sorted(known))}")
        default = getattr(cls(), key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
            if ok and not math.isfinite(value):
                raise ConfigError(f"{origin}: [{name}] {key} must be a finite number, "
                                  f"got {value!r}")
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ConfigError(f"{origin}: [{name}] {key} must be {type(default).__name__}, "
                              f"got {type(value).__name__} {value!r}")
        values[key] = value
    return cls(**values)


def _check_barrier_url(url: str, origin: str) -> None:
    if not url.strip():
        raise ConfigError(f"{origin}: [devices] barrier is empty; use \"sim\" or a port URL")
    if url.startswith("sim") and url not in ("sim",) and not url.startswith("sim?"):
        raise ConfigError(f"{origin}: [devices] barrier {url!r}: did you mean \"sim\"?")
    if url.startswith("serial://") and len(url) == len("serial://"):
        raise ConfigError(f"{origin}: [devices] barrier {url!r} names no port")


def parse_config(data: Mapping[str, Any], origin: str = "<config>") -> LaneConfig:
    """Build and check a ``LaneConfig`` from already-parsed TOML."""
    lane = data.get("lane", {})
    if not isinstance(lane, Mapping):
        raise ConfigError(f"{origin}: [lane] must be a table")
    unknown = set(lane) - {"id"}
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {sorted(unknown)} in [lane]; known: id")
    lane_id = lane.get("id", "lane-1")
    if not isinstance(lane_id, str) or not lane_id.strip():
        raise ConfigError(f"{origin}: [lane] id must be a non-empty string")
    devices = _section(Devices, "devices", data.get("devices", {}), origin)
    _check_barrier_url(devices.barrier, origin)
    barrier = _section(BarrierLink, "barrier", data.get("barrier", {}), origin)
    if not 0 <= barrier.address <= 255:
        raise ConfigError(f"{origin}: [barrier] address must be 0..255")
    if barrier.watchdog_ms and not 200 <= barrier.watchdog_ms <= 10000:
        raise ConfigError(f"{origin}: [barrier] watchdog_ms must be 0 or 200..10000")
    if not 0 <= barrier.retries <= 10:
        raise ConfigError(f"{origin}: [barrier] retries must be 0..10")
    if not 0.02 <= barrier.poll_interval_s <= 0.2:  # the contract: a request every 250 ms
        raise ConfigError(f"{origin}: [barrier] poll_interval_s must be 0.02..0.2 seconds")
    if not 0.02 <= barrier.reply_timeout_s <= 1.0:
        raise ConfigError(f"{origin}: [barrier] reply_timeout_s must be 0.02..1.0 seconds")
    timeouts = _section(Timeouts, "timeouts", data.get("timeouts", {}), origin)
    for f in fields(Timeouts):
        if getattr(timeouts, f.name) <= 0:
            raise ConfigError(f"{origin}: [timeouts] {f.name} must be > 0 seconds")
    policy = _section(Policy, "policy", data.get("policy", {}), origin)
    logging_ = _section(LoggingConfig, "logging", data.get("logging", {}), origin)
    if logging_.level.upper() not in _LEVELS:
        raise ConfigError(f"{origin}: [logging] level must be one of {', '.join(_LEVELS)}")
    cases = _section(Cases, "cases", data.get("cases", {}), origin)
    metrics = _section(Metrics, "metrics", data.get("metrics", {}), origin)
    own = {"lane", "devices", "barrier", "timeouts", "policy", "logging", "cases", "metrics"}
    defaulted = tuple(
        f"[{name}] {f.name}" for name, cls in (
            ("devices", Devices), ("barrier", BarrierLink), ("timeouts", Timeouts),
            ("policy", Policy), ("logging", LoggingConfig), ("cases", Cases),
            ("metrics", Metrics))
        for f in fields(cls)
        if not isinstance(data.get(name), Mapping) or f.name not in data[name])
    others: dict[str, Mapping[str, Any]] = {}
    for name, value in data.items():
        if name in own:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{origin}: top-level key {name!r} must be a [section]")
        others[name] = MappingProxyType(dict(value))
    return LaneConfig(lane_id=lane_id, devices=devices, barrier=barrier, timeouts=timeouts,
                      policy=policy, logging=logging_, cases=cases, metrics=metrics,
                      defaulted=defaulted, sections=MappingProxyType(others),
                      source=origin)


def load_config(path: str | Path) -> LaneConfig:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path))


EXAMPLE_PATH = Path(__file__).with_name("lane.example.toml")
