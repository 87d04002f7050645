"""What the lane sees of a document reader: a document laid on the glass, and taken away.

A reader is a device like the barrier board and the lane camera: opened once when the lane
starts, watched through ``health``, and it *tells* the lane what happens on its glass
instead of being asked for pages. The lane subscribes and gets :class:`ReaderNotice`\\ s:

* ``PLACED`` — a document lies on the glass and the reader has the page: the notice
  carries a :class:`Placement` with a few frames of it (the MRZ reader votes across
  frames, so more than one helps);
* ``REMOVED`` — that document was taken away.

**One placement is one passage.** A document left lying on the glass is reported once;
it is reported again only after it was taken away and laid down again. Otherwise a
traveller who forgets their passport on the glass would open the lane for the next one.

Backends (:mod:`hardware.docreader.camera` over a document camera,
:mod:`hardware.docreader.folder` for a full-page reader that drops image files) share the
subscription, numbering and presence logic here, so the lane cannot tell them apart.

Health reason (``DeviceHealth.reason``): ``READER_UNAVAILABLE`` — the reader's source is
gone (the camera does not deliver, the folder vanished), or the reader is not started or
closed.
"""

from __future__ import annotations

import abc
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import structlog

from hardware.device import DeviceHealth

READER_UNAVAILABLE = "READER_UNAVAILABLE"


@dataclass(frozen=True)
class Placement:
    """One document laid on the glass, as the reader saw it.

    ``frames`` are BGR images of the page, each one stable and sharp (for a full-page
    reader: the one image it produced); they are shared, treat them as read-only.
    ``placed_at`` is on the reader's clock (``time.monotonic`` unless told otherwise):
    when the document was first seen on the glass, not when it was reported.
    """

    number: int
    frames: tuple[np.ndarray, ...]
    placed_at: float


class ReaderNoticeKind(enum.Enum):
    PLACED = "placed"
    REMOVED = "removed"


@dataclass(frozen=True)
class ReaderNotice:
    """``placement`` is set for PLACED; REMOVED names only the placement's number."""

    kind: ReaderNoticeKind
    placement_number: int
    placement: Placement | None = None


ReaderHandler = Callable[[ReaderNotice], None]


class DocumentReader(abc.ABC):
    """A document reader: started once, tells its subscribers what happens on the glass.

    Handlers are called on the reader's own thread, one notice after the other, in the
    order things happened; a handler that raises is logged and the others still get the
    notice. Handlers should be quick (the lane puts the notice on its own queue): the
    reader does not watch the glass while a handler runs.
    """

    def __init__(self, *, logger: Any = None) -> None:
        self._handlers: list[ReaderHandler] = []
        self._state_lock = threading.Lock()
        self._placements = 0
        self._on_glass: Placement | None = None
        self._log: Any = logger or structlog.get_logger("hardware.docreader")

    # ------------------------------------------------------------------ the interface

    @abc.abstractmethod
    def start(self) -> None:
        """Begin watching in the background; never raises because the source is absent
        (``health`` says so until it is there)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop for good; no notice is delivered after this returns."""

    @property
    @abc.abstractmethod
    def health(self) -> DeviceHealth:
        """ok while the reader can see its glass; else ``READER_UNAVAILABLE``."""

    def describe(self) -> str:
        """What this reader is, for logs and the maintenance page."""
        return type(self).__name__

    def subscribe(self, handler: ReaderHandler) -> None:
        self._handlers = [*self._handlers, handler]

    def unsubscribe(self, handler: ReaderHandler) -> None:
        """Stop calling ``handler``; unknown handlers are ignored."""
        self._handlers = [h for h in self._handlers if h is not handler]

    @property
    def document_present(self) -> bool:
        """A reported document lies on the glass (between its PLACED and REMOVED)."""
        with self._state_lock:
            return self._on_glass is not None

    @property
    def placement(self) -> Placement | None:
        """The document lying on the glass now, as it was reported; None when empty."""
        with self._state_lock:
            return self._on_glass

    def __enter__(self) -> DocumentReader:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ for the backends

    def _placed(self, frames: tuple[np.ndarray, ...], placed_at: float) -> Placement:
        """A new document on the glass: number it and tell the subscribers. Call on the
        reader's thread only. A document still reported as present is taken away first,
        so subscribers always see PLACED and REMOVED alternate."""
        if self.document_present:
            self._removed()
        with self._state_lock:
            self._placements += 1
            placement = Placement(self._placements, tuple(frames), placed_at)
            self._on_glass = placement
        self._log.info("docreader.placed", placement=placement.number, frame_count=len(frames))
        self._notify(ReaderNotice(ReaderNoticeKind.PLACED, placement.number, placement))
        return placement

    def _removed(self) -> None:
        """The reported document was taken away (nothing happens if none was reported)."""
        with self._state_lock:
            current, self._on_glass = self._on_glass, None
        if current is None:
            return
        self._log.info("docreader.removed", placement=current.number)
        self._notify(ReaderNotice(ReaderNoticeKind.REMOVED, current.number))

    def _notify(self, notice: ReaderNotice) -> None:
        for handler in self._handlers:
            try:
                handler(notice)
            except Exception:  # one broken subscriber must not blind the others
                self._log.exception("docreader.handler_failed", kind=notice.kind.value)


__all__ = ["READER_UNAVAILABLE", "DocumentReader", "Placement", "ReaderHandler",
           "ReaderNotice", "ReaderNoticeKind"]
