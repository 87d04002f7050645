"""In-process guards of the sign-in: one attempt at a time per account, a failure budget
per client address, and aggregation of the audit rows that nobody signed in wrote.

These are the process's own defences; the store's atomic lock-out
(:meth:`gate.review.store.CaseStore.login_failed`) is what holds across processes.
Everything here is bounded in memory, whatever an attacker sends.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: At most this many addresses (or audit keys) are tracked; the oldest are dropped first.
MAX_TRACKED = 50_000


class KeyedLocks:
    """A lock per key (an account name), created on demand and dropped when unused."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str, timeout_s: float) -> Iterator[bool]:
        """Yields whether the key's lock was taken within ``timeout_s``."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        got = lock.acquire(timeout=timeout_s)
        try:
            yield got
        finally:
            if got:
                lock.release()
            with self._guard:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class AddressLimiter:
    """At most ``max_failures`` failed sign-ins per address in any ``window_s``.

    An attempt reserves its place before the password is checked (``admit``) and gives it
    back when it succeeded (``done``), so parallel requests cannot all pass the check
    before the first failure is counted.
    """

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}

    def _prune(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            times = deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def admit(self, address: str, now: float) -> bool:
        if self.max_failures <= 0:
            return True
        with self._lock:
            times = self._prune(address, now)
            busy = self._in_flight.get(address, 0)
            if len(times) + busy >= self.max_failures:
                return False
            self._in_flight[address] = busy + 1
            if times:
                self._failures[address] = times
            return True

    def done(self, address: str, failed: bool, now: float) -> None:
        if self.max_failures <= 0:
            return
        with self._lock:
            busy = self._in_flight.get(address, 1) - 1
            if busy > 0:
                self._in_flight[address] = busy
            else:
                self._in_flight.pop(address, None)
            times = self._prune(address, now)
            if failed:
                times.append(now)
            if times:
                self._failures[address] = times
                if len(self._failures) > MAX_TRACKED:
                    self._forget_oldest(now)
            else:
                self._failures.pop(address, None)

    def _forget_oldest(self, now: float) -> None:
        for address in list(self._failures):
            if not self._prune(address, now):
                del self._failures[address]
        while len(self._failures) > MAX_TRACKED:
            del self._failures[next(iter(self._failures))]

    def retry_after_s(self, address: str, now: float) -> float:
        with self._lock:
            times = self._prune(address, now)
            return max(1.0, times[0] + self.window_s - now) if times else 1.0


@dataclass
class _Window:
    started: float
    first_detail: str
    last: float
    more: int = 0


#: writes one audit row: (user, action, detail)
AuditWriter = Callable[[str, str, str], None]


class AuditThrottle:
    """Audit rows of requests nobody signed in for, aggregated per address.

    The first event of a kind (action, name written, address) is written at once; the
    same kind from the same address within ``window_s`` is only counted, and one row
    with the count is written when the window is over (at the next event of any kind, on
    the app's flush timer, or at shutdown). A flood of forged requests therefore costs
    two rows per address and window, and the first one is in the log immediately.
    """

    def __init__(self, write: AuditWriter, window_s: float) -> None:
        self._write = write
        self.window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def record(self, user: str, action: str, detail: str, address: str, now: float) -> None:
        key = (action, user, address)
        write_now = False
        with self._lock:
            due = self._take_due(now, keep=key)
            w = self._windows.get(key)
            if w is not None and now - w.started >= self.window_s:
                due.append((key, w))
                w = None
            if w is None:
                self._windows[key] = _Window(now, detail, now)
                write_now = True
                if len(self._windows) > MAX_TRACKED:  # oldest out, their counts written
                    oldest = next(iter(self._windows))
                    due.append((oldest, self._windows.pop(oldest)))
            else:
                w.more += 1
                w.last = now
        self._write_all(due)
        if write_now:
            self._write(user, action, f"{detail} (from {address})")

    def flush(self, now: float | None = None) -> None:
        """Write the counts of windows that are over (all of them when ``now`` is None)."""
        with self._lock:
            if now is None:
                due = list(self._windows.items())
                self._windows.clear()
            else:
                due = self._take_due(now)
        self._write_all(due)

    def _take_due(self, now: float, keep: tuple[str, str, str] | None = None) -> list[
            tuple[tuple[str, str, str], _Window]]:
        due = [(k, w) for k, w in self._windows.items()
               if k != keep and now - w.started >= self.window_s]
        for k, _ in due:
            del self._windows[k]
        return due

    def _write_all(self, due: list[tuple[tuple[str, str, str], _Window]]) -> None:
        for (action, user, address), w in due:
            if w.more:
                span = max(0.0, w.last - w.started)
                self._write(user, action, f"{w.more} more from {address} within {span:.0f} s "
                            f"of the first (like: {w.first_detail})")
