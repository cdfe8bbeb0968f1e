"""Per-principal token-bucket rate limiting, and failed-authentication counting per address.

Owns: the buckets (one per principal id, in memory) and the failed-key windows (one per client
address, at most ``max_addresses`` of them). Must not: know about HTTP; the auth dependency
turns a refusal into 429 with ``Retry-After``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """Token buckets refilled at ``rate`` per second up to ``burst``; rate 0 means no limit."""

    def __init__(self, rate: float, *, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when allowed, else seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class FailureLimiter:
    """Wrong-key attempts per client address in fixed windows: after ``limit`` failures an
    address is refused until its window ends. Memory is bounded: past ``max_addresses`` the
    least recently failing address is forgotten."""

    def __init__(self, *, limit: int = 20, window: float = 60.0, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # start, failures
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._windows)

    def blocked(self, address: str) -> float:
        """0.0 when ``address`` may try a key, else seconds until its window ends."""
        now = self._clock()
        with self._lock:
            start, failures = self._windows.get(address, (now, 0))
            if failures < self.limit or now - start >= self.window:
                return 0.0
            return self.window - (now - start)

    def fail(self, address: str) -> bool:
        """Count one failure; True when it opens a new window (the one to audit)."""
        now = self._clock()
        with self._lock:
            start, failures = self._windows.pop(address, (now, 0))
            fresh = failures == 0 or now - start >= self.window
            self._windows[address] = (now, 1) if fresh else (start, failures + 1)
            while len(self._windows) > self.max_addresses:
                self._windows.popitem(last=False)
            return fresh
