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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_background_growth_keeps_every_row(small_growth: None, ops: list[Op]) -> None:
    index = BlockingIndex(DEFAULT_DEFINITION)
    model: dict[str, list[int]] = {c: [] for c in COLUMNS}
    active: list[bool] = []
    label: list[int] = []
    ident: list[int] = []
    grew_ahead = False
    for kind, a, b in ops:
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


def test_growth_is_prepared_ahead_and_adopted(small_growth: None) -> None:
    index = BlockingIndex(DEFAULT_DEFINITION)
    index.append(_rows(100, 1), np.zeros(100, dtype=np.int64))
    cap = index._cap
    assert cap >= 116  # headroom after a big append: the next single record does not grow
    while index._spare_thread is None:
        index.append(_rows(1, index.n), np.zeros(1, dtype=np.int64))
    assert index._cap == cap  # the copy started before the capacity ran out
    _wait(index)
    assert index._spare is not None
    before = {c: index.data[c][: index.n].copy() for c in COLUMNS}
    index.append(_rows(1, 7), np.zeros(1, dtype=np.int64))
    assert index._cap > cap and index._spare is None
    for c in COLUMNS:
        assert index.data[c][: index.n - 1].tolist() == before[c].tolist()
