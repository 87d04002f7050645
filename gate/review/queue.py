"""The lane's durable case spool: writing a case never blocks on, or fails with, the store.

``submit`` seals the case (images encrypted on the lane, before any disk sees them),
writes it to a temporary file, fsyncs it and renames it into the spool: once ``submit``
has returned, the case survives a killed process or a power cut. A flusher thread moves
spooled cases into the store and deletes each file only after the store has committed
it; the store's insert is idempotent by case id, so a crash between commit and delete
sends the case again harmlessly. A store that is down only makes the spool grow; the
flusher retries with back-off.

Call ``submit`` from a lane worker thread, not from the thread that polls the barrier:
sealing and fsync take milliseconds (see docs/review.md for measured figures).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from gate.review.cases import CaseInput, CaseRejected
from gate.review.crypto import ImageSeal
from gate.review.store import CaseStore, SealedCase, StoreUnavailable, seal_case

log = structlog.get_logger(__name__)

SUFFIX = ".case"


class CaseSink(Protocol):
    """Where the flusher moves spooled cases: the case store itself (one lane), or the
    row's case stream (``gate.row.link.JetStreamCaseSink``). ``add_case`` returns once the
    case is durably there (idempotent by case id) and raises StoreUnavailable otherwise."""

    def add_case(self, case: SealedCase) -> bool: ...

    def close(self) -> None: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CaseSpool:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        seal: ImageSeal,
        store: str | Callable[[], CaseSink],
        *,
        start: bool = True,
        retry_min_s: float = 0.2,
        retry_max_s: float = 30.0,
    ) -> None:
        """``store`` is a store URL or a factory; it is opened lazily, on the flusher
        thread, so a lane starts even when the store is unreachable."""
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.directory / "damaged").mkdir(mode=0o700, exist_ok=True)
        self._seal = seal
        self._store_factory: Callable[[], CaseSink] = (
            (lambda: CaseStore(store)) if isinstance(store, str) else store
        )
        self._store: CaseSink | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._retry_min = retry_min_s
        self._retry_max = retry_max_s
        self._seq = 0
        self._seq_lock = threading.Lock()
        self.last_error: str | None = None
        # A temporary file left by a killed process was never committed: submit had not
        # returned for it. Remove it so it is never mistaken for a case.
        for leftover in self.directory.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="case-spool", daemon=True)
            self._thread.start()

    # -- the lane side ---------------------------------------------------------------

    def submit(self, case: CaseInput) -> str | None:
        """Durably spool one case; returns its id, or None (logged with a reason code)
        when it cannot be a case or the lane's disk refuses it. Never raises."""
        try:
            sealed = seal_case(case, self._seal)
        except CaseRejected as exc:
            log.error("case_not_spooled", reason="CASE_INVALID", detail=str(exc), **_summary(case))
            return None
        except Exception as exc:
            log.error("case_not_spooled", reason="CASE_SEAL_FAILED", error=type(exc).__name__,
                      **_summary(case))
            return None
        try:
            self._write(sealed)
        except OSError as exc:
            log.error("case_not_spooled", reason="SPOOL_WRITE_FAILED", error=type(exc).__name__,
                      **_summary(case))
            return None
        log.info("case_spooled", case_id=sealed.case_id, **_summary(case))
        self._wake.set()
        return sealed.case_id

    def _write(self, sealed: SealedCase) -> None:
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        name = f"{time.time_ns():020d}-{seq:06d}-{sealed.case_id}{SUFFIX}"
        tmp = self.directory / f".{name}.tmp"
        data = sealed.to_json().encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.directory / name)
            _fsync_dir(self.directory)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    def pending(self) -> int:
        return sum(1 for _ in self.directory.glob("*" + SUFFIX))

    # -- the store side ----------------------------------------------------------------

    def flush(self) -> int:
        """Move every spooled case into the store now; returns how many were moved.
        Raises StoreUnavailable when the store cannot be reached."""
        moved = 0
        with self._flush_lock:
            for path in sorted(self.directory.glob("*" + SUFFIX)):
                try:
                    sealed = SealedCase.from_json(path.read_text())
                except (ValueError, TypeError, KeyError) as exc:
                    log.error("spool_file_damaged", reason="SPOOL_FILE_DAMAGED",
                              file=path.name, error=type(exc).__name__)
                    os.replace(path, self.directory / "damaged" / path.name)
                    continue
                except FileNotFoundError:
                    continue
                store = self._open_store()
                try:
                    store.add_case(sealed)
                except StoreUnavailable:
                    self._drop_store()
                    raise
                path.unlink(missing_ok=True)
                moved += 1
        if moved:
            _fsync_dir(self.directory)
            log.info("cases_flushed", count=moved)
        return moved

    def _open_store(self) -> CaseSink:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def _drop_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def _run(self) -> None:
        delay = self._retry_min
        while not self._stop.is_set():
            self._wake.clear()  # before the flush: a submit during the flush wakes us again
            try:
                self.flush()
                self.last_error = None
                delay = self._retry_min
                self._wake.wait(timeout=5.0)  # also picks up files another process spooled
            except StoreUnavailable as exc:
                if self.last_error is None:
                    log.warning("case_store_unavailable", reason="STORE_UNAVAILABLE",
                                detail=str(exc), pending=self.pending())
                self.last_error = str(exc)
                self._stop.wait(timeout=delay)
                delay = min(delay * 2, self._retry_max)
            except Exception as exc:  # the flusher must outlive any single bad case
                log.error("case_flush_failed", reason="FLUSH_FAILED", error=type(exc).__name__)
                self.last_error = type(exc).__name__
                self._stop.wait(timeout=delay)
                delay = min(delay * 2, self._retry_max)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the flusher after one last attempt; what is still spooled stays on disk."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with contextlib.suppress(Exception):
            self.flush()
        self._drop_store()


def _summary(case: CaseInput) -> dict[str, object]:
    try:
        return case.log_summary()
    except Exception:
        return {}
