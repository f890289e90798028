"""A per-process throttle of failed attempts (pure; no Flask, no database).

Used for electronic signatures: SPEC §4.2 wants a wrong signature to change nothing, so the
failures are not written to the database, yet a stolen session or API token must not allow
unlimited password guessing. Each worker process keeps its own counts, so with W workers
at most W × ``limit`` guesses fit in one window.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class FailureThrottle:
    """Counts failures per key in a sliding window; a key with ``limit`` failures is blocked."""

    def __init__(
        self, limit: int = 5, window_seconds: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.limit, self.window, self._clock = limit, window_seconds, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        entries = self._failures.setdefault(key, deque())
        while entries and now - entries[0] > self.window:
            entries.popleft()
        return entries

    def blocked(self, key: str) -> bool:
        """True while the key has ``limit`` failures inside the window."""
        with self._lock:
            return len(self._recent(key)) >= self.limit

    def fail(self, key: str) -> None:
        """Record one failure for the key."""
        with self._lock:
            self._recent(key).append(self._clock())

    def clear(self, key: str) -> None:
        """Forget the key's failures (after a success)."""
        with self._lock:
            self._failures.pop(key, None)
