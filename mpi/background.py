"""The one runner of background jobs (bulk uploads, model training, extract builds).

Owns: starting each job on a named daemon thread, grouping jobs (``bulk``, ``train``,
``build``) so a group can be exclusive (one training job at a time) or one job unique (one
build per extract), the stop signal long jobs check between steps, and draining: at shutdown
the app's lifespan (and ``Registry.close``) calls ``drain``, which refuses new jobs, signals
the running ones and waits for them. One runner per open registry (``Registry.background``).
Must not: know what a job does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mpi.errors import Conflict


class Background:
    """Named background jobs of one registry, drained together at shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[str, threading.Thread | None]] = {}  # name -> (group, thread)
        self.stopping = threading.Event()  # long jobs check it between steps

    def _alive(self, name: str) -> bool:
        entry = self._jobs.get(name)
        return entry is not None and (entry[1] is None or entry[1].is_alive())

    def reserve(self, name: str, *, group: str, exclusive: bool = False,
                busy: str = "this job is already running") -> None:
        """Claim ``name`` (and, if ``exclusive``, its whole group) before doing the job's setup;
        Conflict when it is taken or the service is stopping. ``start`` or ``release`` next."""
        with self._lock:
            if self.stopping.is_set():
                raise Conflict("the service is shutting down; try again after it restarts")
            taken = self._alive(name) or (exclusive and any(
                g == group and self._alive(n) for n, (g, _t) in self._jobs.items()))
            if taken:
                raise Conflict(busy)
            self._jobs[name] = (group, None)

    def release(self, name: str) -> None:
        """Give up a reservation whose job was never started (its setup failed)."""
        with self._lock:
            entry = self._jobs.get(name)
            if entry is not None and entry[1] is None:
                del self._jobs[name]

    def start(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a daemon thread under a reserved ``name``."""
        thread = threading.Thread(target=fn, args=args, name=f"mpi-{name}", daemon=True)
        with self._lock:
            group = self._jobs[name][0]
            self._jobs = {n: e for n, e in self._jobs.items() if e[1] is None or e[1].is_alive()}
            self._jobs[name] = (group, thread)
        thread.start()

    def running(self, name: str) -> bool:
        """Whether job ``name`` is reserved or still running."""
        with self._lock:
            return self._alive(name)

    def wait(self, timeout: float | None = None, *, group: str | None = None) -> None:
        """Wait for the running jobs (of ``group``, or all)."""
        with self._lock:
            threads = [t for g, t in self._jobs.values()
                       if t is not None and (group is None or g == group)]
        for t in threads:
            t.join(timeout)

    def drain(self, timeout: float | None = 120.0) -> None:
        """Refuse new jobs, signal running ones to stop after their current step and wait for
        them; then accept jobs again (an app may be started again over the same registry)."""
        self.stopping.set()
        try:
            self.wait(timeout)
        finally:
            self.stopping.clear()
