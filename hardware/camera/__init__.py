"""Lane cameras as devices: ``open_camera(url)`` → a long-lived :class:`Camera` with health.

The lane names a camera by URL in ``[devices]`` and never asks which kind it got. Which
backend serves a URL is a table, as in python-can's ``BACKENDS``: name → (module, class),
imported only when used, so the lane does not load a driver it is not configured for. More
backends can be added by an installed package through the ``egate.camera`` entry-point
group (``name = "package.module:Class"``) and chosen with ``backend=NAME``.

    camera = open_camera("http://127.0.0.1:8080/stream.mjpg")
    camera.start()            # connects in the background; never raises for a dead camera
    camera.health             # DeviceHealth: ok, CAMERA_UNAVAILABLE, CAMERA_STALLED, CAMERA_ENDED
    seq, frame = camera.next_frame(camera.seq, timeout=1.0)
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from hardware.camera.api import (
    CAMERA_ENDED,
    CAMERA_STALLED,
    CAMERA_UNAVAILABLE,
    Camera,
    redact_url,
)

#: backend name → (module, class); the module is imported on first use.
BACKENDS: dict[str, tuple[str, str]] = {
    "opencv": ("hardware.camera.opencv", "OpenCVCamera"),
}

#: Which backend serves a URL when the caller does not name one: every kind of URL we
#: know (index, /dev/video, rtsp, http MJPEG, files) is OpenCV's today.
DEFAULT_BACKEND = "opencv"


def _backend_class(name: str) -> type[Camera]:
    if name in BACKENDS:
        module, cls = BACKENDS[name]
        found: Any = getattr(importlib.import_module(module), cls)
    else:
        matches = [ep for ep in entry_points(group="egate.camera") if ep.name == name]
        if not matches:
            known = sorted(set(BACKENDS) | {ep.name for ep in entry_points(group="egate.camera")})
            raise ValueError(f"unknown camera backend {name!r}; known: {', '.join(known)}")
        found = matches[0].load()
    if not (isinstance(found, type) and issubclass(found, Camera)):
        raise ValueError(f"camera backend {name!r} is not a Camera")
    return found


def open_camera(url: str | int, backend: str | None = None, **options: Any) -> Camera:
    """The camera at ``url``, not yet started (call ``start()``).

    A URL the backend cannot serve is a ``ValueError`` with a one-line message, raised
    here, at configuration time; a camera that is absent is *not* an error: its health
    says so once started. ``options`` go to the backend (``stall_s``, ``open_timeout_s``,
    ``backoff_max_s`` … for OpenCV).
    """
    cls = _backend_class(backend or DEFAULT_BACKEND)
    return cls(url, **options)


__all__ = ["BACKENDS", "CAMERA_ENDED", "CAMERA_STALLED", "CAMERA_UNAVAILABLE", "Camera",
           "open_camera", "redact_url"]
