"""A full-page document reader that drops one image file per document into a folder.

Many desktop and kiosk readers come with an SDK service that scans the page itself and
writes the result to a "hot folder". For the lane each new, complete image there is one
document laid on the glass (PLACED, the image as the one frame); it is taken away
(REMOVED) when the file is deleted or the next document's file arrives.

Three rules keep this honest:

* **complete files only** — a writer needs time, and a half-written JPEG still decodes
  (OpenCV fills the rest with grey). A file is read only once its size and modification
  time have not changed for ``settle_s``; writers that rename a finished file into place
  pass at once after that. Names starting with ``.`` and other suffixes than
  ``.png``/``.jpg``/``.jpeg`` (``page.jpg.part``, ``.page.jpg``) are never read.
* **never twice** — a file is remembered by name, inode, size and modification time once
  read (or once found at start); the same name written anew is a new document. Files
  already in the folder when the reader starts — or when the folder comes back after it
  vanished — are history, not documents: reading them would open the lane for a
  passport from another passage.
* **a vanished folder is a dead reader** — ``READER_UNAVAILABLE`` until it is back.

Files are read through :mod:`hardware.images`, the lane's one decoding path: regular files
of at most 64 MiB, JPEG/PNG/JPEG 2000 by their magic bytes, the declared size checked
before decoding. A file refused for what more writing cannot mend (too large, not a
regular file) is given up at once; any other refusal is retried until ``give_up_s``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hardware import images
from hardware.device import DeviceHealth
from hardware.docreader.api import READER_UNAVAILABLE, DocumentReader

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: Refusals that a writer still at work cannot mend: the file is given up at once.
FINAL_REFUSALS = frozenset({images.FILE_TOO_LARGE, images.IMAGE_TOO_LARGE,
                            images.NOT_A_REGULAR_FILE, images.IS_A_DIRECTORY})

#: (inode, size, mtime_ns): what tells a file from an earlier one of the same name.
_Key = tuple[int, int, int]


@dataclass
class _Pending:
    key: _Key
    first_seen: float  # when the file was first noticed (the document's placed_at)
    since: float  # when it last changed
    failed_reads: int = 0


class FolderDocumentReader(DocumentReader):
    """A :class:`DocumentReader` over a hot folder of page images."""

    def __init__(self, folder: str | os.PathLike[str], *, poll_s: float = 0.1,
                 settle_s: float = 0.4, give_up_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, logger: Any = None) -> None:
        super().__init__(logger=logger)
        if poll_s <= 0 or settle_s < 0 or give_up_s <= 0:
            raise ValueError("poll_s and give_up_s must be > 0, settle_s >= 0")
        self.folder = Path(folder)
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.give_up_s = give_up_s  # a settled file that never decodes is skipped then
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._fault: str | None = "not scanned yet"
        self._seen: dict[str, _Key] = {}
        self._pending: dict[str, _Pending] = {}
        self._current_file: tuple[str, _Key] | None = None
        self._history_due = True  # the next good scan's files are history
        self.unreadable = 0  # settled files that never decoded

    def describe(self) -> str:
        return f"{type(self).__name__} {self.folder}"

    def start(self) -> None:
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._watch, name="docreader-folder",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    @property
    def health(self) -> DeviceHealth:
        if self._closed:
            return DeviceHealth.bad(READER_UNAVAILABLE, "closed")
        if self._thread is None:
            return DeviceHealth.bad(READER_UNAVAILABLE, "not started")
        if not self._thread.is_alive():
            return DeviceHealth.bad(READER_UNAVAILABLE, "the watch stopped")
        fault = self._fault
        if fault is not None:
            return DeviceHealth.bad(READER_UNAVAILABLE, f"folder {self.folder}: {fault}")
        return DeviceHealth.good(f"watching {self.folder}")

    # ------------------------------------------------------------------ the watch

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception:  # a surprise in one scan must not end the watch
                self._log.exception("docreader.folder_scan_failed")
            self._stop.wait(self.poll_s)

    def _scan(self) -> dict[str, _Key] | None:
        """Image files in the folder by name, or None (and the fault noted) when the
        folder cannot be listed."""
        files: dict[str, _Key] = {}
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                        continue
                    try:
                        if not entry.is_file():
                            continue
                        st = entry.stat()
                    except FileNotFoundError:
                        continue  # deleted between listing and stat
                    files[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError):
            self._set_fault("not found")
            return None
        except PermissionError:
            self._set_fault("permission denied")
            return None
        except OSError as exc:
            self._set_fault(f"cannot be listed ({exc.strerror or type(exc).__name__})")
            return None
        if self._fault is not None:
            self._log.info("docreader.folder_available", folder=str(self.folder))
            self._fault = None
        return files

    def _set_fault(self, fault: str) -> None:
        if self._fault != fault:
            self._log.warning("docreader.folder_unavailable", folder=str(self.folder),
                              fault=fault)
        self._fault = fault
        self._history_due = True
        self._pending.clear()

    def _poll(self) -> None:
        files = self._scan()
        if files is None:
            return
        now = self.clock()
        if self._history_due:
            self._history_due = False
            self._seen = dict(files)
            self._pending.clear()
        # what was read stays known while it exists; a changed file under a known name
        # is a new one
        self._seen = {n: k for n, k in self._seen.items() if files.get(n) == k}
        if self._current_file is not None:
            name, key = self._current_file
            if files.get(name) != key:
                self._current_file = None
                self._removed()
        for name in list(self._pending):
            if name not in files or name in self._seen:
                del self._pending[name]
        for name, key in files.items():
            if name in self._seen:
                continue
            pending = self._pending.get(name)
            if pending is None:
                self._pending[name] = _Pending(key, now, now)
            elif pending.key != key:
                pending.key, pending.since = key, now
        ready = [(p.key[2], name) for name, p in self._pending.items()
                 if p.key[1] > 0 and now - p.since >= self.settle_s]
        for _, name in sorted(ready):
            self._take(name, self._pending[name], now)

    def _take(self, name: str, pending: _Pending, now: float) -> None:
        """Read a settled file: PLACED with its image, or wait, or give it up."""
        image, problem = self._read(self.folder / name)
        if image is None:
            pending.failed_reads += 1
            if problem not in FINAL_REFUSALS and now - pending.since < self.give_up_s:
                return  # a writer that pauses mid-file: try again on the next scans
            self.unreadable += 1
            self._log.warning("docreader.folder_unreadable_file", file=name,
                              reads=pending.failed_reads, problem=problem)
        del self._pending[name]
        self._seen[name] = pending.key
        if image is None:
            return
        self._placed((image,), pending.first_seen)
        self._current_file = (name, pending.key)

    @staticmethod
    def _read(path: Path) -> tuple[np.ndarray | None, str | None]:
        return images.load(path)


__all__ = ["FINAL_REFUSALS", "IMAGE_SUFFIXES", "FolderDocumentReader"]
