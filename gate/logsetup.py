"""structlog set-up for the lane: JSON lines, and a last line of defence for privacy.

Callers are expected never to log personal data (stage outcomes offer ``log_summary()``
for that). ``withhold_personal_data`` is the safety net for when one forgets: any key that
names personal or biometric data is replaced, and any image-like value (arrays, bytes) is
replaced wherever it appears, so a mistake costs a useless log line, not a leak.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

WITHHELD = "[withheld]"

#: Keys (normalised: lower case, letters only) whose values are never logged.
PERSONAL_KEYS = frozenset({
    "surname", "surnames", "givenname", "givennames", "name", "names", "fullname",
    "holdername", "firstname", "lastname", "primaryidentifier", "secondaryidentifier",
    "documentnumber", "docnumber", "passportnumber", "number", "personalnumber",
    "optionaldata", "optionaldata1", "optionaldata2", "dateofbirth", "birthdate", "dob",
    "mrz", "mrztext", "rawmrz", "mrzlines", "portrait", "photo", "image", "images", "img",
    "frame", "frames", "face", "faces", "crop", "embedding", "embeddings", "template",
    "features", "biometric", "pages", "page", "nationality", "sex", "address",
})

_NORMALISE = re.compile(r"[^a-z0-9]")
_MAX_DEPTH = 6


def _is_personal_key(key: object) -> bool:
    return isinstance(key, str) and _NORMALISE.sub("", key.lower()) in PERSONAL_KEYS


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return WITHHELD
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{WITHHELD}:bytes"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy arrays, tensors
        return f"{WITHHELD}:array"
    if isinstance(value, Mapping):
        return {k: (WITHHELD if _is_personal_key(k) else _scrub(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    return value


def withhold_personal_data(
    logger: Any, method: str, event_dict: MutableMapping[str, Any],
) -> MutableMapping[str, Any]:
    """structlog processor: replace personal keys and image-like values, at any depth."""
    for key in list(event_dict):
        if key == "event":
            continue
        if _is_personal_key(key):
            event_dict[key] = WITHHELD
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO", json: bool = True,
                      stream: TextIO | None = None) -> None:
    """Configure structlog for the whole process (the CLI calls this once)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            withhold_personal_data,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(component: str, **context: Any) -> Any:
    return structlog.get_logger(component).bind(component=component, **context)
