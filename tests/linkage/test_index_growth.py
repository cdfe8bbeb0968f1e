"""The blocking index grows its columns ahead on a background thread (Decision 49).

Whatever interleaving of appends, undone appends (truncate), flag and label changes, and
background copies happens, the index must hold exactly what a plain list model holds, and find
the same candidates as an index built in one go.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpi.linkage import index as index_mod
from mpi.linkage.definition import DEFAULT_DEFINITION
from mpi.linkage.index import BlockingIndex

COLUMNS = DEFAULT_DEFINITION.columns()

Op = tuple[str, int, int]
ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 40), st.integers(0, 2**31)),
    st.tuples(st.just("undo"), st.integers(1, 40), st.integers(0, 2**31)),
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 5)),
    st.tuples(st.just("join"), st.just(0), st.just(0)),
), min_size=1, max_size=60)


def _rows(m: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    # Few distinct values so that blocking keys collide and candidates exist.
    return {c: rng.integers(0, 4, size=m).astype(np.int64) for c in COLUMNS}


def _wait(index: BlockingIndex) -> None:
    thread = index._spare_thread
    if thread is not None:
        thread.join()


@pytest.fixture()
def small_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "_GROW_MIN", 16)


def _pairs(found: tuple[Any, Any]) -> list[tuple[int, int]]:
    return sorted(zip(*(x.tolist() for x in found), strict=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, snap_at=st.integers(0, 59))
def test_background_growth_keeps_every_row(small_growth: None, ops: list[Op], snap_at: int) -> None:
    index = BlockingIndex(DEFAULT_DEFINITION)
    model: dict[str, list[int]] = {c: [] for c in COLUMNS}
    active: list[bool] = []
    label: list[int] = []
    ident: list[int] = []
    grew_ahead = False
    probe = _rows(6, 12345)
    snap: BlockingIndex | None = None
    frozen: dict[str, Any] = {}
    for i, (kind, a, b) in enumerate(ops):
        if i == snap_at % len(ops):  # a snapshot must not see anything done after it
            snap = index.snapshot()
            frozen = {"model": {c: list(v) for c, v in model.items()}, "active": list(active),
                      "label": list(label), "ident": list(ident),
                      "query": _pairs(index.query(probe))}
        if kind in ("append", "undo"):
            cols = _rows(a, b)
            labs = np.arange(len(label), len(label) + a, dtype=np.int64) + 1000
            ids = labs + 5000
            n0 = index.n
            index.append(cols, labs, ids)
            if kind == "undo":
                index.truncate(n0)
                continue
            for c in COLUMNS:
                model[c].extend(cols[c].tolist())
            active.extend([True] * a)
            label.extend(labs.tolist())
            ident.extend(ids.tolist())
        elif kind == "flip" and label:
            row = a % len(label)
            active[row] = not active[row]
            index.active[row] = active[row]
            label[row] = b
            index.label[row] = b
        elif kind == "join":
            grew_ahead |= index._spare is not None
            _wait(index)
        n = index.n
        assert n == len(label)
        assert index.active[:n].tolist() == active
        assert index.label[:n].tolist() == label
        assert index.ident[:n].tolist() == ident
        for c in COLUMNS:
            assert index.data[c][:n].tolist() == model[c]
        assert not index.active[n:].any()
        assert (index.label[n:] == -1).all()
    _wait(index)
    if index.n:
        fresh = BlockingIndex(DEFAULT_DEFINITION)
        fresh.append({c: np.array(model[c], dtype=np.int64) for c in COLUMNS},
                     np.array(label, dtype=np.int64))
        fresh.active[: index.n] = index.active[: index.n]
        rows = np.arange(index.n, dtype=np.int64)
        ours = sorted(zip(*(x.tolist() for x in index.candidates(rows)), strict=True))
        theirs = sorted(zip(*(x.tolist() for x in fresh.candidates(rows)), strict=True))
        assert ours == theirs
    assert snap is not None
    n = snap.n
    assert n == len(frozen["label"])
    assert snap.active.tolist() == frozen["active"] and snap.label.tolist() == frozen["label"]
    assert snap.ident.tolist() == frozen["ident"]
    for c in COLUMNS:
        assert snap.data[c].tolist() == frozen["model"][c]
    assert _pairs(snap.query(probe)) == frozen["query"]
    if n:
        rows = np.arange(n, dtype=np.int64)
        assert snap.gather(rows)[COLUMNS[0]].tolist() == frozen["model"][COLUMNS[0]]
        fresh = BlockingIndex(DEFAULT_DEFINITION)
        fresh.append({c: np.array(frozen["model"][c], dtype=np.int64) for c in COLUMNS},
                     np.array(frozen["label"], dtype=np.int64))
        fresh.active[:n] = frozen["active"]
        assert _pairs(snap.candidates(rows)) == _pairs(fresh.candidates(rows))
    with pytest.raises(RuntimeError):
        snap.append(_rows(1, 1), np.zeros(1, dtype=np.int64))


def test_growth_is_prepared_ahead_and_adopted(small_growth: None) -> None:
    index = BlockingIndex(DEFAULT_DEFINITION)
    index.append(_rows(100, 1), np.zeros(100, dtype=np.int64))
    cap = index._cap
    assert cap >= 116  # headroom after a big append: the next single record does not grow
    for _ in range(cap):
        if index._spare_thread is not None:
            break
        index.append(_rows(1, index.n), np.zeros(1, dtype=np.int64))
    assert index._spare_thread is not None, "no copy was started before the capacity ran out"
    assert index._cap == cap
    _wait(index)
    assert index._spare is not None
    before = {c: index.data[c][: index.n].copy() for c in COLUMNS}
    index.append(_rows(1, 7), np.zeros(1, dtype=np.int64))
    assert index._cap > cap and index._spare is None
    for c in COLUMNS:
        assert index.data[c][: index.n - 1].tolist() == before[c].tolist()


class _HeldCopy:
    """Stands in for the copy thread: runs the copy at once but holds back its result (as if
    the thread were still running) until ``release``, so an undo and new appends can land
    while the copy is in flight."""

    made: list[_HeldCopy] = []

    def __init__(self, target: Any, name: str, daemon: bool) -> None:
        self.target, self.held, self.index = target, None, None
        _HeldCopy.made.append(self)

    def start(self) -> None:
        self.target()

    def hold(self, index: BlockingIndex) -> None:
        self.held, index._spare, self.index = index._spare, None, index

    def is_alive(self) -> bool:
        return self.held is not None

    def release(self) -> None:
        assert self.index is not None
        self.index._spare, self.held = self.held, None


def test_rows_rewritten_while_the_copy_runs_are_copied_again(
        small_growth: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod.threading, "Thread", _HeldCopy)
    _HeldCopy.made.clear()
    index = BlockingIndex(DEFAULT_DEFINITION)
    first = _rows(100, 1)
    index.append(first, np.zeros(100, dtype=np.int64))
    cap = index._cap
    while not _HeldCopy.made:  # single appends until the copy starts (it copies rows so far)
        index.append(_rows(1, index.n), np.zeros(1, dtype=np.int64))
    copy = _HeldCopy.made[0]
    copy.hold(index)
    n0 = index.n
    assert 100 <= n0 <= 110
    index.truncate(n0 - 30)  # an undone enrol ...
    again = _rows(30, 99)  # ... and new rows written over the copied ones
    index.append(again, np.ones(30, dtype=np.int64))
    assert index._cap == cap  # still the old arrays: the held copy is what the next append takes
    copy.release()
    index.append(_rows(1, 5), np.zeros(1, dtype=np.int64))  # adopts the copy
    assert index._spare is None and index._cap > cap and len(_HeldCopy.made) == 1
    for c in COLUMNS:
        assert index.data[c][n0 - 30: n0].tolist() == again[c].tolist()
        assert index.data[c][:70].tolist() == first[c][:70].tolist()


def test_recent_rows_are_kept_out_of_the_garbage_collector() -> None:
    """Recent rows live in dicts of ints, which the collector does not track: a container per
    key made every full collection in the server walk ~80k of them (15-20 ms)."""
    import gc
    index = BlockingIndex(DEFAULT_DEFINITION)
    index.append(_rows(200, 3), np.zeros(200, dtype=np.int64))
    for i in range(50):  # single appends go to the recent rows; few values, so keys repeat
        index.append(_rows(1, i % 5), np.zeros(1, dtype=np.int64))
    rules = index._rules
    assert any(r.prev for r in rules), "no key got a second recent row"
    for r in rules:
        assert not gc.is_tracked(r.last) and not gc.is_tracked(r.prev)
    snap = index.snapshot()
    assert all(not gc.is_tracked(r.last) and not gc.is_tracked(r.prev) for r in snap._rules)
