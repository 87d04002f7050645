"""One TOML file per lane: its devices (as URLs), timeouts, policy and logging.

Known sections are checked strictly (a misspelt key is an error, not a silent default),
because a lane that runs with the wrong timeout is worse than one that refuses to start.
Every key is declared with its type, range and unit (:func:`gate.schema.setting`), and one
reader checks them all: typed, finite, in range. Sections this module does not know
(``[document]``, ``[face]``, ...) belong to the stages, which declare and check them the
same way (``DocumentPolicy.from_dict``, ``FaceConfig.from_mapping``); they are kept as they
are in ``LaneConfig.sections`` (``gate.service.stage_settings`` checks them without loading
a model).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gate import schema
from gate.schema import ConfigError, setting

__all__ = ["ConfigError", "LaneConfig", "load_config", "parse_config"]

#: The longest any waiting state may last (seconds): a longer timeout is a typo, and a
#: lane must never hold a door open, or a traveller in the zone, for longer unattended.
MAX_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Timeouts:
    """Seconds each waiting state may last before the lane gives up on it."""

    reading_document: float = setting(10.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    admitting: float = setting(20.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    closing_entry: float = setting(15.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    capturing_face: float = setting(15.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    verifying: float = setting(10.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    releasing: float = setting(20.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    closing_exit: float = setting(15.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    rejected: float = setting(60.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    closing_rejected: float = setting(15.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    recovering: float = setting(15.0, above=0, high=MAX_TIMEOUT_S, unit="seconds")
    # how often an out-of-service lane re-checks its causes
    out_of_service_retry: float = setting(0.5, low=0.05, high=60.0, unit="seconds")
    # how long the red cross stays after a rejected document
    red_cross_hold: float = setting(3.0, above=0, high=60.0, unit="seconds")
    # then an (obstruction-safe) close is tried anyway
    obstructed_doorway: float = setting(3.0, above=0, high=60.0, unit="seconds")

    def for_state(self, state: str) -> float | None:
        value = getattr(self, state, None)
        return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Devices:
    """Every device is a URL; the lane never asks which kind it got."""

    # "sim", "sim?speed=10", "serial:///dev/ttyUSB0", any pyserial URL
    barrier: str = setting("sim")
    # lane camera: 0, /dev/video0, rtsp://…, http://…/stream.mjpg, file:…
    camera: str = setting("")
    # document camera (same kinds) or folder:/path of a full-page reader
    documents: str = setting("")
    # passport chip reader: pcsc:READER NAME, pcsc: (the first reader); "": no chip read
    chip: str = setting("")


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

    store: str = setting("")  # sqlite:///PATH or postgresql://…; default STATE/review.sqlite3
    spool: str = setting("")  # folder; default STATE/spool/LANE_ID
    key_file: str = setting("")  # AES-256 image key; default STATE/review.key (created if missing)


@dataclass(frozen=True)
class Metrics:
    listen: str = setting("127.0.0.1:9464")  # /healthz and /metrics; "" switches them off


@dataclass(frozen=True)
class BarrierLink:
    """Host driver settings; the protocol's own defaults unless a site needs otherwise."""

    address: int = setting(1, low=0, high=255)
    # 0: leave the board's setting alone
    watchdog_ms: int = setting(0, low=200, high=10000, also=(0,), unit="ms")
    reply_timeout_s: float = setting(0.1, low=0.02, high=1.0, unit="seconds")
    retries: int = setting(3, low=0, high=10)
    # the contract: a request at least every 250 ms
    poll_interval_s: float = setting(0.1, low=0.02, high=0.2, unit="seconds")


@dataclass(frozen=True)
class Policy:
    stop_admitting_on_mains_loss: bool = setting(True)  # a passage under way still finishes
    reset_faults_automatically: bool = setting(True)  # watchdog/jam cleared by the lane once safe
    capture_while_closing: bool = setting(True)  # start the face capture as ENTRY closes


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting("INFO", choices=_LEVELS, item=str.upper)
    json: bool = setting(True)


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


def _section(cls: type, name: str, raw: object, origin: str) -> Any:
    try:
        return schema.load(cls, raw, name)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from exc


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
    timeouts = _section(Timeouts, "timeouts", data.get("timeouts", {}), origin)
    policy = _section(Policy, "policy", data.get("policy", {}), origin)
    logging_ = _section(LoggingConfig, "logging", data.get("logging", {}), origin)
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
