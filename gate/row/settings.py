"""``[row]`` of lane.toml, checked without loading the bus client: ``gate.service`` checks
it for every lane at start-up, most of which are not in a row."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from gate.config import ConfigError
from gate.row.commands import DEFAULT_MAX_AGE_S, check_lane_id
from gate.schema import setting


@dataclass(frozen=True)
class RowSettings:
    """``[row]``: the lane as one of a row watched from an officers' station."""

    # nats://host:4222 (tls://host:4222 with the certificates below); "": a lane on its own
    broker: str = setting("")
    # the station's Ed25519 public key (PEM file): commands signed by anything else are refused
    station_key: str = setting("")
    # no station heartbeat for this long: admit nobody new until it is back
    unsupervised_after_s: float = setting(30.0, above=0, high=3600.0, unit="seconds")
    # a command older than this when it arrives is refused (never acts late)
    command_max_age_s: float = setting(DEFAULT_MAX_AGE_S, above=0, high=30.0, unit="seconds")
    # state published at least this often (and at every change)
    state_interval_s: float = setting(1.0, low=0.1, high=10.0, unit="seconds")
    # mTLS to the broker: the row's CA, this lane's certificate and key (PEM files)
    tls_ca: str = setting("")
    tls_cert: str = setting("")
    tls_key: str = setting("")


def row_settings(sections: Any, source: str = "", lane_id: str = "lane-1") -> RowSettings:
    from gate import schema

    try:
        settings = schema.load(RowSettings, sections.get("row", {}), "row")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if settings.broker and not settings.station_key:
        raise ConfigError(f"{source}: [row] broker is set but station_key is not: the lane "
                          "must know the station's public key to accept its commands")
    if settings.broker:
        try:
            check_lane_id(lane_id)
        except ValueError as exc:
            raise ConfigError(f"{source}: [lane] id: {exc}") from exc
    tls = (settings.tls_ca, settings.tls_cert, settings.tls_key)
    if any(tls) and not all(tls):
        raise ConfigError(f"{source}: [row] tls_ca, tls_cert and tls_key go together")
    return settings


def tls_context(ca: str, cert: str, key: str, *, server_side: bool = False) -> ssl.SSLContext:
    """mTLS: trust only the row's CA, present our own certificate."""
    purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
    context = ssl.create_default_context(purpose, cafile=ca)
    context.load_cert_chain(cert, key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def row_tls(settings: RowSettings) -> ssl.SSLContext | None:
    if not settings.tls_ca:
        return None
    try:
        return tls_context(settings.tls_ca, settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[row] TLS files: {exc}") from exc


