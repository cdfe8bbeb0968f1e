"""The match state's consistency rule under write failures, and the online key decision.

Owns: fault tests (the store refuses a write: memory must stay exactly as stored, for enrol,
withdraw, steward merge and re-link) and property tests of ``keys.decide_online``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpi.config import Settings
from mpi.identity import keys as keyrules
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.steward import stewardship
from mpi.store import audit as audit_store
from mpi.synth import generate

ROWS, _TRUTH = generate(people=60, agencies=2, seed=5)
TOKENS = {a: tokenize_rows(r, secret=demo_secret(1))[0] for a, r in ROWS.items()}


class StoreDown(OSError):
    """The fault: the registry file refuses the write."""


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    """A registry with the first agency's records and half of the second's."""
    r = Registry(Settings(data_dir=tmp_path / "data"))
    first, second = sorted(TOKENS)
    r.enrol_records(first, list(enumerate(TOKENS[first], start=1)))
    half = TOKENS[second][: len(TOKENS[second]) // 2]
    r.enrol_records(second, list(enumerate(half, start=1)))
    yield r
    r.close()


def _snapshot(reg: Registry) -> dict[str, Any]:
    st_ = reg.state
    n = st_.index.n
    return {"n": n, "persons": list(st_.persons), "person_of": dict(st_.person_of),
            "count": list(st_.person_count), "by_sid": dict(st_.by_sid),
            "label": st_.index.label[:n].copy(), "active": st_.index.active[:n].copy(),
            "key_ids": set(st_.key_ids), "agencies": set(st_.known_agencies)}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def _stored_keys(reg: Registry) -> dict[tuple[str, str], str]:
    t = reg.export_keys().to_pylist()
    return {(r["agency"], r["source_record_id"]): r["person_key"] for r in t}


def _memory_keys(reg: Registry) -> dict[tuple[str, str], str]:
    st_ = reg.state
    return {k: st_.persons[int(st_.index.label[ref.row])]
            for k, ref in st_.by_sid.items() if ref.row >= 0}


def _fail_writes(monkeypatch: pytest.MonkeyPatch, reg: Registry) -> None:
    def down(*_a: Any, **_k: Any) -> Any:
        raise StoreDown("disk full")
    monkeypatch.setattr(reg.store, "write_set", down)
    monkeypatch.setattr(reg.store, "transaction", down)


def test_failed_enrol_leaves_memory_as_stored(reg: Registry,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """New records, updates and a new agency in one batch: a refused write changes nothing."""
    second = sorted(TOKENS)[1]
    rest = TOKENS[second][len(TOKENS[second]) // 2:]
    update = {**TOKENS[second][0], "attributes": {"note": "v2"}}
    before = _snapshot(reg)
    with monkeypatch.context() as m:
        _fail_writes(m, reg)
        with pytest.raises(StoreDown):
            reg.enrol_records(second, list(enumerate([update, *rest], start=1)))
        with pytest.raises(StoreDown):
            reg.enrol_records("new-agency", list(enumerate(rest[:3], start=1)))
    _same(before, _snapshot(reg))
    assert _memory_keys(reg) == _stored_keys(reg)
    res = reg.enrol_records(second, list(enumerate([update, *rest], start=1)))  # then it works
    assert not res.problems
    assert _memory_keys(reg) == _stored_keys(reg)


def test_failed_withdraw_leaves_memory_as_stored(reg: Registry,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Withdrawing records (one key retiring) under a refused write changes nothing."""
    first = sorted(TOKENS)[0]
    sids = [t["source_record_id"] for t in TOKENS[first][:5]]
    before = _snapshot(reg)
    with monkeypatch.context() as m:
        _fail_writes(m, reg)
        with pytest.raises(StoreDown):
            reg.withdraw_records(first, sids)
    _same(before, _snapshot(reg))
    assert not reg.withdraw_records(first, sids).problems
    assert _memory_keys(reg) == _stored_keys(reg)


def test_failed_merge_and_relink_leave_memory_as_stored(reg: Registry,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The regrouping path (steward merge, re-link) under a refused write changes nothing."""
    keys = sorted(set(_memory_keys(reg).values()))
    before = _snapshot(reg)
    with monkeypatch.context() as m:
        _fail_writes(m, reg)
        with pytest.raises(StoreDown):
            stewardship.merge_persons(reg, keys[0], others=[keys[1]], reason="t", principal="p")
        with pytest.raises(StoreDown):
            reg.link()
    _same(before, _snapshot(reg))
    # The write fails at its last statement (the audit rows), after the merge was applied to
    # memory inside the block: the undo must take it back.
    with monkeypatch.context() as m:
        def audit_down(*_a: Any, **_k: Any) -> Any:
            raise StoreDown("disk full")
        m.setattr(audit_store, "append_audit", audit_down)
        with pytest.raises(StoreDown):
            stewardship.merge_persons(reg, keys[0], others=[keys[1]], reason="t", principal="p")
    _same(before, _snapshot(reg))
    assert _memory_keys(reg) == _stored_keys(reg)
    stewardship.merge_persons(reg, keys[0], others=[keys[1]], reason="t", principal="p")
    assert _memory_keys(reg) == _stored_keys(reg)


# ---- the online key decision (Decisions 3-5) as a pure function --------------------------
LINK, REVIEW = 10.0, 0.0
weights = st.floats(-20, 30, allow_nan=False)


@st.composite
def situations(draw: st.DrawFn) -> dict[str, Any]:
    """Ranked candidates (distinct persons, by descending weight) and the record's history."""
    people = draw(st.lists(st.integers(0, 30), unique=True, max_size=6))
    ranked = sorted(((p, draw(weights)) for p in people), key=lambda kv: (-kv[1], kv[0]))
    update = draw(st.booleans())
    old = draw(st.integers(-1, 30)) if update else -1
    return {"ranked": ranked, "must": draw(st.none() | st.integers(0, 30)), "update": update,
            "old": old, "old_emptied": old >= 0 and draw(st.booleans())}


@given(situations())
def test_online_decision_rules(s: dict[str, Any]) -> None:
    """Only a constraint or a clear link joins a person; clear others become possible
    duplicates (never merged); a mint happens exactly when nothing else applies; an emptied
    old key retires exactly when the record goes elsewhere."""
    d = keyrules.decide_online(s["ranked"], link_weight=LINK, review_weight=REVIEW,
                               must=s["must"], update=s["update"], old=s["old"],
                               old_emptied=s["old_emptied"])
    ranked, best = s["ranked"], s["ranked"][0] if s["ranked"] else None
    if s["must"] is not None:
        assert d.target == s["must"]
    elif best is not None and best[1] >= LINK:
        assert d.target == best[0]
        assert [o for o, _w in d.duplicates] == [p for p, w in ranked[1:] if w >= LINK]
    elif s["old"] >= 0 and s["old_emptied"]:
        assert d.target == s["old"]
    else:
        assert d.target is None  # mint
    assert all(w >= LINK for _o, w in d.duplicates)
    assert d.target not in [o for o, _w in d.duplicates]
    if d.suggestion is not None:
        assert d.target is None and REVIEW <= d.suggestion[1] < LINK
    assert d.retire_old == (s["old"] >= 0 and s["old_emptied"] and d.target != s["old"])
    expected = {"updated"} if s["update"] else {"new", "linked", "review"}
    assert d.outcome in expected
    if not s["update"]:
        assert (d.outcome == "linked") == (d.target is not None)
        assert (d.outcome == "review") == (d.suggestion is not None)


@given(situations(), st.floats(-5, 5, allow_nan=False))
def test_online_decision_is_monotone_in_the_link_bar(s: dict[str, Any], shift: float) -> None:
    """Lowering the link bar never turns a join into a mint (stricter never links more)."""
    strict = keyrules.decide_online(s["ranked"], link_weight=LINK + abs(shift),
                                    review_weight=REVIEW, must=s["must"], update=s["update"],
                                    old=s["old"], old_emptied=s["old_emptied"])
    lax = keyrules.decide_online(s["ranked"], link_weight=LINK, review_weight=REVIEW,
                                 must=s["must"], update=s["update"], old=s["old"],
                                 old_emptied=s["old_emptied"])
    if strict.target is not None and strict.target != s["old"]:
        assert lax.target == strict.target
    assert len(lax.duplicates) >= len(strict.duplicates) or s["must"] is not None
