"""The one background-job runner: exclusive groups, unique names, reservations, draining."""

from __future__ import annotations

import threading

import pytest

from mpi.background import Background
from mpi.errors import Conflict


def test_an_exclusive_group_runs_one_job_at_a_time() -> None:
    """A second training job is refused while one runs, accepted once it ends."""
    bg, go = Background(), threading.Event()
    bg.reserve("t1", group="train", exclusive=True)
    bg.start("t1", go.wait)
    with pytest.raises(Conflict):
        bg.reserve("t2", group="train", exclusive=True, busy="busy")
    bg.reserve("b1", group="build")  # another group is not blocked
    bg.release("b1")
    go.set()
    bg.wait(5)
    bg.reserve("t2", group="train", exclusive=True)
    bg.release("t2")
    assert not bg.running("t2")


def test_a_reserved_name_is_taken_until_released() -> None:
    """One build per extract: the name is taken from reservation to the end of the job."""
    bg = Background()
    bg.reserve("build-x", group="build")
    assert bg.running("build-x")
    with pytest.raises(Conflict):
        bg.reserve("build-x", group="build")
    bg.release("build-x")
    assert not bg.running("build-x")


def test_drain_signals_running_jobs_waits_and_then_accepts_again() -> None:
    """drain sets ``stopping`` (jobs stop after their current step), refuses new jobs while it
    waits, returns once the jobs ended, and accepts jobs again afterwards."""
    bg = Background()
    seen: list[str] = []
    started = threading.Event()

    def job() -> None:
        started.set()
        bg.stopping.wait(5)
        with pytest.raises(Conflict):  # no new job while draining
            bg.reserve("late", group="bulk")
        seen.append("stopped")

    bg.reserve("j", group="bulk")
    bg.start("j", job)
    started.wait(5)
    bg.drain(timeout=5)
    assert seen == ["stopped"] and not bg.running("j")
    bg.reserve("after", group="bulk")  # accepted again
