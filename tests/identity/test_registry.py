"""Registry use cases on real DuckDB files: enrol, re-send, update, withdraw, link, reopen.

Owns: the registry's promises seen from outside: every active record has one active key,
re-sending is a no-op, bad rows are refused with row/field and do not block good ones, linking
is idempotent and order-invariant, key changes are explained by key events, and a reopened or
failed registry is in the same state as its file. Fresh Registry per test in tmp_path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpi.config import Settings
from mpi.identity import registry as registry_module
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import JOURNAL_MAX_RECORDS as JOURNAL_MAX
from mpi.identity.registry import EnrolResult, Registry
from mpi.store import journal as journal_module
from mpi.store import records as rstore
from mpi.synth import generate
from tests.support.records import Records, token_records

SECRET = demo_secret(1)
OTHER_SECRET = demo_secret(2)
TABLES = ("source_record", "record_version", "person", "key_event", "key_lineage", "review_item",
          "linkage_key", "agency")
Partition = frozenset[frozenset[tuple[str, str]]]


# ---- data ----------------------------------------------------------------------------------
def tok(rows: list[dict[str, str]], secret: bytes = SECRET) -> list[dict[str, Any]]:
    records, rejected = tokenize_rows(rows, secret=secret)
    assert rejected == 0
    return records


@pytest.fixture(scope="module")
def synth_records() -> Records:
    """Token records per agency for a small seeded population (3 agencies)."""
    return token_records(people=80, agencies=3, seed=11, secret=SECRET)


@pytest.fixture(scope="module")
def small_records() -> Records:
    return token_records(people=30, agencies=3, seed=5, secret=SECRET)


_GIVEN = ("Alice", "Brenda", "Carmen", "Diana", "Elena", "Fiona", "Gloria", "Helena", "Irene",
          "Julia", "Karina", "Lorena", "Marisol", "Natalia")
_FAMILY = ("Abernathy", "Blackwood", "Castellano", "Dunleavy", "Eckhardt", "Fairbanks",
           "Gallagher", "Hargreaves", "Ingersoll", "Jorgensen", "Kowalczyk", "Lindqvist",
           "Montgomery", "Nakamura")


def triple(i: int) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """x (name, DOB, SSN) and z (name, contact) share no blocking key; y has both and bridges."""
    name = {"given_name": _GIVEN[i], "family_name": _FAMILY[i]}
    x = {"source_record_id": f"x{i}", **name, "date_of_birth": f"19{60 + i}-0{1 + i % 9}-1{i % 10}",
         "national_id": f"23{i % 10}-5{i % 10}-{7100 + i}", "sex": "F"}
    z = {"source_record_id": f"z{i}", **name, "email": f"{name['given_name'].lower()}{i}@example.org",
         "phone": f"617-555-{1100 + i}", "postal_code": f"0{2100 + 37 * i}",
         "address_line": f"{10 + i} Elm St", "city": "Cambridge"}
    y = {**x, **z, "source_record_id": f"y{i}"}
    return x, y, z


# ---- registry helpers --------------------------------------------------------------------------
@pytest.fixture
def open_registry(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    opened: list[Registry] = []

    def make(name: str = "d") -> Registry:
        reg = Registry(Settings(data_dir=tmp_path / name))
        opened.append(reg)
        return reg

    yield make
    for reg in opened:
        with contextlib.suppress(Exception):  # already closed by the test
            reg.close()


def enrol(reg: Registry, agency: str, records: list[dict[str, Any]], start: int = 1) -> EnrolResult:
    return reg.enrol_records(agency, list(enumerate(records, start=start)))


def enrol_all(reg: Registry, records: Records) -> None:
    for agency, recs in records.items():
        res = enrol(reg, agency, recs)
        assert not res.problems


def table_counts(reg: Registry) -> dict[str, int]:
    cur = reg.store.cursor()
    return {t: int(cur.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in TABLES}


def keys_of(reg: Registry) -> dict[tuple[str, str], str]:
    rows = reg.export_keys().to_pylist()
    return {(r["agency"], r["source_record_id"]): r["person_key"] for r in rows}


def partition(reg: Registry) -> Partition:
    groups: dict[str, set[tuple[str, str]]] = {}
    for rec, key in keys_of(reg).items():
        groups.setdefault(key, set()).add(rec)
    return frozenset(frozenset(g) for g in groups.values())


def record(reg: Registry, agency: str, sid: str) -> dict[str, Any] | None:
    return rstore.find_record(reg.store.cursor(), agency=agency, source_record_id=sid)


def versions(reg: Registry, seq: int) -> int:
    return len(rstore.record_history(reg.store.cursor(), seq))


def events_after(reg: Registry, seq: int) -> list[tuple[str, str, str | None]]:
    rows = reg.store.cursor().execute(
        "SELECT person_key, event_type, related_key FROM key_event WHERE event_seq > ? "
        "ORDER BY event_seq", [seq]).fetchall()
    return [(str(k), str(t), r) for k, t, r in rows]


def max_event(reg: Registry) -> int:
    return int(reg.store.cursor().execute(
        "SELECT coalesce(max(event_seq), 0) FROM key_event").fetchall()[0][0])


def assert_consistent(reg: Registry) -> None:
    """Every active record has exactly one key, that key is active, and every active key has
    at least one active record."""
    cur = reg.store.cursor()
    bad = cur.execute(
        "SELECT s.agency, s.source_record_id, s.person_key, p.status FROM source_record s "
        "LEFT JOIN person p ON p.person_key = s.person_key "
        "WHERE s.status = 'active' AND (p.status IS NULL OR p.status <> 'active')").fetchall()
    assert bad == [], f"active records without an active key: {bad[:5]}"
    empty = cur.execute(
        "SELECT p.person_key FROM person p WHERE p.status = 'active' AND NOT EXISTS ("
        "SELECT 1 FROM source_record s WHERE s.person_key = p.person_key AND s.status = 'active')"
    ).fetchall()
    assert empty == [], f"{len(empty)} active keys without active records"
    dup = cur.execute("SELECT agency, source_record_id, count(*) FROM source_record "
                      "GROUP BY ALL HAVING count(*) > 1").fetchall()
    assert dup == []


# ---- enrol -----------------------------------------------------------------------------------
def test_enrol_gives_every_active_record_exactly_one_active_key(open_registry: Callable[..., Registry],
                                                                synth_records: Records) -> None:
    reg = open_registry()
    results: dict[tuple[str, str], str | None] = {}
    for agency, recs in synth_records.items():
        res = enrol(reg, agency, recs)
        assert res.problems == []
        assert len(res.results) == len(recs)
        assert {r.outcome for r in res.results} <= {"new", "linked", "review"}
        results.update({(agency, r.source_record_id): r.person_key for r in res.results})
    assert_consistent(reg)
    stored = keys_of(reg)
    assert stored == results
    assert reg.stats()["records"] == {"active": sum(len(r) for r in synth_records.values())}
    # Records of several agencies share keys: online matching links across agencies.
    assert len(set(stored.values())) < len(stored)


def test_resending_identical_records_changes_nothing(open_registry: Callable[..., Registry],
                                                      synth_records: Records) -> None:
    reg = open_registry()
    enrol_all(reg, synth_records)
    before, counts = keys_of(reg), table_counts(reg)
    for agency, recs in synth_records.items():
        res = enrol(reg, agency, recs)
        assert res.problems == []
        assert {r.outcome for r in res.results} == {"unchanged"}
        assert all(before[(agency, r.source_record_id)] == r.person_key for r in res.results)
    assert keys_of(reg) == before
    assert table_counts(reg) == counts


def test_changed_record_is_updated_and_history_grows(open_registry: Callable[..., Registry],
                                                     synth_records: Records) -> None:
    reg = open_registry()
    enrol_all(reg, synth_records)
    agency, recs = next(iter(synth_records.items()))
    before, counts = keys_of(reg), table_counts(reg)
    changed = dict(recs[0], attributes={"program": "housing"})
    tokens = dict(recs[1]["tokens"])
    dropped = [n for n in ("email", "phone", "sex") if n in tokens]
    assert dropped
    tokens.pop(dropped[0])
    changed_tokens = dict(recs[1], tokens=tokens)
    res = enrol(reg, agency, [changed, changed_tokens, recs[2]])
    assert [r.outcome for r in res.results] == ["updated", "updated", "unchanged"]
    # An attribute-only change keeps the key.
    assert res.results[0].person_key == before[(agency, recs[0]["source_record_id"])]
    for rec in (changed, changed_tokens):
        row = record(reg, agency, rec["source_record_id"])
        assert row is not None and row["version"] == 2 and row["status"] == "active"
        assert versions(reg, row["record_seq"]) == 2
    assert record(reg, agency, recs[2]["source_record_id"])["version"] == 1  # type: ignore[index]
    after = table_counts(reg)
    assert after["source_record"] == counts["source_record"]
    assert after["record_version"] == counts["record_version"] + 2
    assert_consistent(reg)
    # Sending the changed version again is now a no-op.
    again = enrol(reg, agency, [changed, changed_tokens])
    assert [r.outcome for r in again.results] == ["unchanged", "unchanged"]
    assert table_counts(reg) == after


def test_withdraw_keeps_tombstone_and_retires_a_key_left_alone(open_registry: Callable[..., Registry]
                                                               ) -> None:
    reg = open_registry()
    x0, y0, _z0 = triple(0)
    x1, _y1, _z1 = triple(1)
    res = enrol(reg, "a", tok([x0, y0, x1]))
    shared, _, alone = (r.person_key for r in res.results)
    assert res.results[1].person_key == shared and alone != shared
    out = reg.withdraw_records("a", ["x1"])
    assert out.problems == [] and [r.outcome for r in out.results] == ["withdrawn"]
    row = record(reg, "a", "x1")
    assert row is not None and row["status"] == "withdrawn" and row["version"] == 2
    assert versions(reg, row["record_seq"]) == 2
    person = reg.get_person(alone)
    assert person["status"] == "retired"
    assert person["superseded_by"] == [] and person["records"] == []
    assert ("a", "x1") not in keys_of(reg)
    kinds = {t for k, t, _r in events_after(reg, 0) if k == alone}
    assert {"minted", "retired", "withdrawn"} <= kinds
    # Withdrawing one of two records keeps the key.
    reg.withdraw_records("a", ["x0"])
    assert reg.get_person(shared)["status"] == "active"
    assert reg.get_person(shared)["records"] == [("a", "y0")]
    assert_consistent(reg)
    # Unknown or already withdrawn ids are problems, not changes.
    counts = table_counts(reg)
    bad = reg.withdraw_records("a", ["x1", "nope"])
    assert [(p.row, p.field) for p in bad.problems] == [(1, "source_record_id"), (2, "source_record_id")]
    assert bad.results == [] and table_counts(reg) == counts
    # A withdrawn record sent again comes back as a new version.
    back = enrol(reg, "a", tok([x1]))
    assert back.results[0].outcome in {"new", "linked"}
    row = record(reg, "a", "x1")
    assert row is not None and row["status"] == "active" and row["version"] == 3
    assert_consistent(reg)


def test_withdrawing_the_same_id_twice_in_one_call(open_registry: Callable[..., Registry]) -> None:
    reg = open_registry()
    x, y, _z = triple(2)
    res = enrol(reg, "a", tok([x, y]))
    key = res.results[0].person_key
    assert res.results[1].person_key == key
    reg.withdraw_records("a", ["x2", "x2"])
    assert reg.get_person(key)["status"] == "active"   # y2 still has it
    assert_consistent(reg)


# ---- bad input -------------------------------------------------------------------------------
def test_duplicate_source_ids_in_a_batch_are_refused_together(open_registry: Callable[..., Registry],
                                                              synth_records: Records) -> None:
    reg = open_registry()
    recs = next(iter(synth_records.values()))
    batch = [recs[0], recs[1], dict(recs[2], source_record_id=recs[0]["source_record_id"]), recs[3]]
    res = enrol(reg, "a", batch)
    sid = recs[0]["source_record_id"]
    assert sorted((p.row, p.field) for p in res.problems) == [(1, "source_record_id"),
                                                             (3, "source_record_id")]
    for p in res.problems:
        assert "1" in p.reason and "3" in p.reason and p.source_record_id == sid
    assert record(reg, "a", sid) is None
    assert set(keys_of(reg)) == {("a", recs[1]["source_record_id"]), ("a", recs[3]["source_record_id"])}
    assert res.counts()["rejected"] == 2


def test_invalid_rows_are_named_and_valid_rows_in_the_same_call_are_stored(
        open_registry: Callable[..., Registry], synth_records: Records) -> None:
    reg = open_registry()
    recs = next(iter(synth_records.values()))
    bad_token = "not-a-token"
    batch = [
        recs[0],
        dict(recs[1], schema_version=2),
        dict(recs[2], tokens={**recs[2]["tokens"], "given_name": bad_token}),
        recs[3],
        ["not", "an", "object"],
        dict(recs[4], source_record_id=""),
        dict(recs[5], tokens={**recs[5]["tokens"], "shoe_size": recs[5]["tokens"]["given_name"]}),
        dict(recs[6], extra=1),
    ]
    res = reg.enrol_records("a", list(enumerate(batch, start=1)))
    located = {(p.row, p.field) for p in res.problems}
    assert (2, "schema_version") in located
    assert (3, "tokens.given_name") in located
    assert (5, None) in located
    assert (6, "source_record_id") in located
    assert (7, "tokens.shoe_size") in located
    assert (8, "extra") in located
    assert {p.row for p in res.problems} == {2, 3, 5, 6, 7, 8}
    assert all(bad_token not in p.reason for p in res.problems)
    assert [r.row for r in res.results] == [1, 4]
    assert set(keys_of(reg)) == {("a", recs[0]["source_record_id"]), ("a", recs[3]["source_record_id"])}
    for rec in (recs[1], recs[2], recs[5], recs[6]):
        assert record(reg, "a", rec["source_record_id"]) is None
    assert table_counts(reg)["source_record"] == 2
    assert_consistent(reg)


def test_record_with_too_little_evidence_is_refused(open_registry: Callable[..., Registry],
                                                    synth_records: Records) -> None:
    reg = open_registry()
    recs = next(iter(synth_records.values()))
    names_only = {k: v for k, v in recs[0]["tokens"].items()
                  if k.split(".")[0] in ("given_name", "family_name", "middle_name", "sex")}
    assert names_only
    res = enrol(reg, "a", [dict(recs[0], tokens=names_only), dict(recs[1], tokens={}), recs[2]])
    assert [(p.row, p.field) for p in res.problems] == [(1, "tokens"), (2, "tokens")]
    assert "too little" in res.problems[0].reason
    assert set(keys_of(reg)) == {("a", recs[2]["source_record_id"])}


def test_tokens_under_a_second_key_id_are_refused_once_the_first_is_pinned(
        open_registry: Callable[..., Registry]) -> None:
    reg = open_registry()
    rows = [r for i in range(4) for r in triple(i)[:1]]
    first = tok(rows[:2])
    other = tok(rows[2:], secret=OTHER_SECRET)
    # In one batch: the first valid record pins its key id; the others are refused.
    res = enrol(reg, "a", [first[0], other[0], first[1]])
    assert [(p.row, p.field) for p in res.problems] == [(2, "tokens")]
    assert "linkage key id" in res.problems[0].reason
    assert [r.row for r in res.results] == [1, 3]
    counts = table_counts(reg)
    res = enrol(reg, "b", other)
    assert [p.row for p in res.problems] == [1, 2] and res.results == []
    assert table_counts(reg) == counts
    # A record mixing two key ids is refused too.
    mixed = dict(first[0], source_record_id="mixed",
                 tokens={**first[0]["tokens"], "email": other[0]["tokens"]["given_name"]})
    assert [p.field for p in enrol(reg, "b", [mixed]).problems] == ["tokens"]
    # The pin survives a reopen.
    reg.close()
    reg = open_registry()
    assert [p.field for p in enrol(reg, "b", other).problems] == ["tokens", "tokens"]
    assert table_counts(reg) == counts


# ---- link ------------------------------------------------------------------------------------
@pytest.mark.integration
def test_link_twice_changes_no_key(open_registry: Callable[..., Registry],
                                   synth_records: Records) -> None:
    reg = open_registry()
    enrol_all(reg, synth_records)
    first = reg.link()
    assert first.records == sum(len(r) for r in synth_records.values())
    assert_consistent(reg)
    keys, counts = keys_of(reg), table_counts(reg)
    second = reg.link()
    assert (second.keys_changed, second.merges, second.splits, second.new_keys) == (0, 0, 0, 0)
    assert second.persons == first.persons
    assert keys_of(reg) == keys
    assert table_counts(reg) == counts
    # Online re-sends after a link report the linked keys.
    agency, recs = next(iter(synth_records.items()))
    res = enrol(reg, agency, recs)
    assert {r.outcome for r in res.results} == {"unchanged"}
    assert all(keys[(agency, r.source_record_id)] == r.person_key for r in res.results)


def test_merge_through_a_bridging_record_keeps_the_older_key(open_registry: Callable[..., Registry]
                                                             ) -> None:
    reg = open_registry()
    x, y, z = triple(3)
    kx = enrol(reg, "a", tok([x])).results[0].person_key
    kz = enrol(reg, "a", tok([z])).results[0].person_key
    assert kx != kz
    assert reg.link().keys_changed == 0
    mark = max_event(reg)
    assert enrol(reg, "b", tok([y])).results[0].outcome == "linked"
    s = reg.link()
    assert (s.merges, s.splits, s.persons) == (1, 0, 1)
    assert set(keys_of(reg).values()) == {kx}
    retired = reg.get_person(kz)
    assert retired["status"] == "retired" and retired["superseded_by"] == [kx]
    events = events_after(reg, mark)
    assert (kz, "retired", kx) in events and (kz, "records_merge", kx) in events
    lineage = reg.store.cursor().execute("SELECT from_key, to_key, kind FROM key_lineage").fetchall()
    assert lineage == [(kz, kx, "merge")]
    assert_consistent(reg)


def test_merge_survivor_follows_key_age_not_record_order(open_registry: Callable[..., Registry]) -> None:
    reg = open_registry()
    x, y, z = triple(4)
    kz = enrol(reg, "a", tok([z])).results[0].person_key
    kx = enrol(reg, "a", tok([x])).results[0].person_key
    enrol(reg, "b", tok([y]))
    reg.link()
    assert set(keys_of(reg).values()) == {kz}
    assert reg.get_person(kx)["superseded_by"] == [kz]


@pytest.mark.integration
def test_split_after_the_bridge_is_withdrawn(open_registry: Callable[..., Registry]) -> None:
    reg = open_registry()
    x, y, z = triple(5)
    res = enrol(reg, "a", tok([x, y, z]))
    key = res.results[0].person_key
    assert {r.person_key for r in res.results} == {key}
    reg.link()
    mark = max_event(reg)
    reg.withdraw_records("a", ["y5"])
    s = reg.link()
    assert (s.splits, s.new_keys, s.keys_changed) == (1, 1, 1)
    keys = keys_of(reg)
    assert keys[("a", "x5")] == key          # tie 1:1 -> the part with the oldest record
    new = keys[("a", "z5")]
    assert new != key
    events = events_after(reg, mark)
    assert (new, "split", key) in events and (key, "records_split", new) in events
    assert reg.get_person(new)["status"] == "active"
    assert_consistent(reg)


@pytest.mark.integration
def test_new_records_change_only_keys_with_key_events(open_registry: Callable[..., Registry],
                                                      synth_records: Records) -> None:
    reg = open_registry()
    agencies = list(synth_records)
    for agency in agencies[:2]:
        enrol(reg, agency, synth_records[agency])
    # Add bridged triples whose halves start under separate keys.
    enrol(reg, agencies[0], tok([r for i in range(6, 10) for r in (triple(i)[0], triple(i)[2])]),
          start=1000)
    reg.link()
    before, mark = keys_of(reg), max_event(reg)
    # Online enrolment of new records never changes an existing record's key.
    enrol(reg, agencies[2], synth_records[agencies[2]])
    enrol(reg, "bridges", tok([triple(i)[1] for i in range(6, 10)]))
    after_enrol = keys_of(reg)
    assert {k: after_enrol[k] for k in before} == before
    s = reg.link()
    assert s.merges >= 4
    after = keys_of(reg)
    events = events_after(reg, mark)
    touched = {k for k, _t, _r in events} | {r for _k, _t, r in events if r}
    moved = {(k, t, r) for k, t, r in events if t.startswith("records_")}
    changed = 0
    for rec, old in before.items():
        new = after[rec]
        if new != old:
            changed += 1
            assert any(k == old and r == new for k, _t, r in moved), (rec, old, new)
    assert changed >= 4
    # Keys with no event kept exactly their records.
    old_groups: dict[str, set[tuple[str, str]]] = {}
    for rec, key in before.items():
        old_groups.setdefault(key, set()).add(rec)
    for key, recs in old_groups.items():
        if key not in touched:
            assert all(after[r] == key for r in recs)
    # Every retired key has a 'retired' event naming its successor; every new key was minted.
    cur = reg.store.cursor()
    retired = {str(r[0]) for r in cur.execute("SELECT person_key FROM person WHERE status = 'retired'"
                                              ).fetchall()}
    assert retired
    for key in retired:
        assert any(k == key and t == "retired" and r for k, t, r in events)
    for key in set(after.values()) - set(after_enrol.values()):
        assert any(k == key and t in ("minted", "split") for k, t, _r in events)
    assert_consistent(reg)


def _enrol_in_order(reg: Registry, records: Records, rnd: random.Random, max_batch: int) -> None:
    items = [(agency, rec) for agency, recs in records.items() for rec in recs]
    rnd.shuffle(items)
    i = 0
    while i < len(items):
        size = rnd.randint(1, max_batch)
        agency = items[i][0]
        batch = []
        while i < len(items) and len(batch) < size and items[i][0] == agency:
            batch.append(items[i][1])
            i += 1
        res = enrol(reg, agency, batch)
        assert res.problems == []


@pytest.fixture(scope="module")
def reference_partition(tmp_path_factory: pytest.TempPathFactory, small_records: Records) -> Partition:
    reg = Registry(Settings(data_dir=tmp_path_factory.mktemp("reference")))
    enrol_all(reg, small_records)
    reg.link()
    out = partition(reg)
    reg.close()
    return out


@pytest.mark.integration
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), max_batch=st.integers(1, 40))
def test_same_data_in_any_order_links_to_the_same_partition(
        tmp_path_factory: pytest.TempPathFactory, small_records: Records,
        reference_partition: Partition, seed: int, max_batch: int) -> None:
    reg = Registry(Settings(data_dir=tmp_path_factory.mktemp("order")))
    try:
        _enrol_in_order(reg, small_records, random.Random(seed), max_batch)
        assert_consistent(reg)
        reg.link()
        assert partition(reg) == reference_partition
        assert_consistent(reg)
    finally:
        reg.close()


@pytest.fixture(scope="module")
def linked_registry(tmp_path_factory: pytest.TempPathFactory,
                    small_records: Records) -> Iterator[Registry]:
    reg = Registry(Settings(data_dir=tmp_path_factory.mktemp("linked")))
    enrol_all(reg, small_records)
    reg.link()
    yield reg
    reg.close()


@pytest.mark.integration
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), max_batch=st.integers(1, 30), share=st.floats(0.05, 1.0))
def test_resending_any_subset_in_any_order_is_a_no_op(linked_registry: Registry,
                                                      small_records: Records, seed: int,
                                                      max_batch: int, share: float) -> None:
    reg = linked_registry
    keys, counts = keys_of(reg), table_counts(reg)
    rnd = random.Random(seed)
    subset = {a: [r for r in recs if rnd.random() < share] for a, recs in small_records.items()}
    items = [(a, r) for a, recs in subset.items() for r in recs]
    rnd.shuffle(items)
    for start in range(0, len(items), max_batch):
        chunk = items[start:start + max_batch]
        for agency in {a for a, _ in chunk}:
            res = enrol(reg, agency, [r for a, r in chunk if a == agency])
            assert res.problems == []
            assert {r.outcome for r in res.results} <= {"unchanged"}
            assert all(keys[(agency, r.source_record_id)] == r.person_key for r in res.results)
    assert keys_of(reg) == keys
    assert table_counts(reg) == counts


# ---- reopen and failure ------------------------------------------------------------------------
def _history(reg: Registry, records: Records) -> None:
    agencies = list(records)
    enrol(reg, agencies[0], records[agencies[0]])
    enrol(reg, agencies[1], records[agencies[1]])
    reg.link()
    recs = records[agencies[0]]
    enrol(reg, agencies[0], [dict(recs[0], attributes={"program": "x"})])
    reg.withdraw_records(agencies[1], [records[agencies[1]][0]["source_record_id"]])


@pytest.mark.integration
def test_reopened_registry_has_the_same_state(open_registry: Callable[..., Registry],
                                              synth_records: Records) -> None:
    reg = open_registry("one")
    _history(reg, synth_records)
    keys, counts, stats = keys_of(reg), table_counts(reg), reg.stats()
    sample = sorted(set(keys.values()))[:10]
    people = [reg.get_person(k) for k in sample]
    reg.close()
    reg = open_registry("one")
    assert keys_of(reg) == keys
    assert table_counts(reg) == counts
    assert reg.stats() == stats
    assert [reg.get_person(k) for k in sample] == people
    assert_consistent(reg)
    # Behaves as the registry that never closed: re-sends, new records, link.
    twin = open_registry("two")
    _history(twin, synth_records)
    assert partition(twin) == partition(reg)
    agency, recs = next(iter(synth_records.items()))
    assert {r.outcome for r in enrol(reg, agency, recs[1:]).results} == {"unchanged"}
    third = list(synth_records)[2]
    for r in (reg, twin):
        enrol(r, third, synth_records[third])
    assert partition(reg) == partition(twin)
    s1, s2 = reg.link(), twin.link()
    assert partition(reg) == partition(twin)
    assert (s1.merges, s1.splits, s1.keys_changed) == (s2.merges, s2.splits, s2.keys_changed)


def test_merge_survivor_does_not_depend_on_a_restart(open_registry: Callable[..., Registry]) -> None:
    reg = open_registry()
    rows = [triple(i) for i in range(len(_GIVEN))]
    # All x and z records in one batch (x before z), then the bridges.
    first = enrol(reg, "a", tok([r for x, _y, z in rows for r in (x, z)]))
    key_x = {r.source_record_id: r.person_key for r in first.results}
    enrol(reg, "b", tok([y for _x, y, _z in rows]))
    reg.close()
    reg = open_registry()
    reg.link()
    keys = keys_of(reg)
    # Without the restart every merge keeps the first-minted key (x's); it must with one too.
    assert [keys[("a", f"x{i}")] for i in range(len(rows))] == \
        [key_x[f"x{i}"] for i in range(len(rows))]


def _block_next_record_seq(reg: Registry) -> int:
    """Put a row in the file under the record_seq the registry will use next (so its insert
    fails on the primary key); returns that seq."""
    seq = int(reg.store.cursor().execute(
        "SELECT coalesce(max(record_seq), 0) FROM source_record").fetchall()[0][0]) + 1
    now = dt.datetime(2020, 1, 1)
    reg.store.cursor().execute(
        "INSERT INTO source_record VALUES (?, 'blocker', 'blocker', 1, 'withdrawn', NULL, 0, "
        "'k', NULL, NULL, [1], ?, ?)", [seq, now, now])
    return seq


@contextlib.contextmanager
def _write_fails(reg: Registry, monkeypatch: pytest.MonkeyPatch, where: str) -> Iterator[None]:
    """Make the durable write of the next enrol fail: DuckDB refuses it (a direct write), or
    the journal's fdatasync fails (a journaled write)."""
    if where == "duckdb":
        monkeypatch.setattr(registry_module, "JOURNAL_MAX_RECORDS", 0)
        seq = _block_next_record_seq(reg)
        yield
        reg.store.cursor().execute("DELETE FROM source_record WHERE record_seq = ?", [seq])
        monkeypatch.setattr(registry_module, "JOURNAL_MAX_RECORDS", JOURNAL_MAX)
        return
    reg.store.flush_journal()  # nothing pending: no fold rotates the segment under the test
    segment = reg.store.journal.active
    assert segment is not None
    size = segment.stat().st_size

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "fdatasync", no_space)
    yield
    monkeypatch.undo()
    assert segment.stat().st_size == size  # no torn entry left behind


@pytest.mark.parametrize("where", ["duckdb", "journal"])
def test_failed_enrol_changes_neither_file_nor_matching(
        open_registry: Callable[..., Registry], monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    reg = open_registry()
    x, y, z = triple(7)
    kx = enrol(reg, "a", tok([x])).results[0].person_key
    counts, keys = table_counts(reg), keys_of(reg)
    with _write_fails(reg, monkeypatch, where), pytest.raises((OSError, duckdb.Error)):
        enrol(reg, "b", tok([y, z]))
    assert table_counts(reg) == counts and keys_of(reg) == keys
    # The failed records are unknown: sent again they are matched as new records.
    res = enrol(reg, "b", tok([y, z]))
    assert [r.outcome for r in res.results] == ["linked", "linked"]
    assert {r.person_key for r in res.results} == {kx}
    assert table_counts(reg)["source_record"] == counts["source_record"] + 2
    assert_consistent(reg)


@pytest.mark.parametrize("where", ["duckdb", "journal"])
def test_failed_enrol_leaves_person_counts_as_in_the_file(
        open_registry: Callable[..., Registry], monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    reg = open_registry()
    x, y, _z = triple(8)
    kx = enrol(reg, "a", tok([x])).results[0].person_key
    with _write_fails(reg, monkeypatch, where), pytest.raises((OSError, duckdb.Error)):
        enrol(reg, "b", tok([y]))      # y would link to x's person
    reg.withdraw_records("a", ["x8"])  # x was the key's only record
    assert reg.get_person(kx)["status"] == "retired"
    assert_consistent(reg)


def test_model_table_from_memory_equals_the_store_export(tmp_path: Path) -> None:
    """The link input built from memory is exactly what the registry file holds."""
    from mpi.agency.schema import TOKEN_COLUMNS
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    by_agency, _ = generate(people=300, agencies=2, seed=3)
    for agency, rows in by_agency.items():
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        reg.enrol_records(agency, list(enumerate(records, start=1)))
    first = next(iter(by_agency))
    reg.withdraw_records(first, [by_agency[first][0]["source_record_id"]])
    from mpi.linkage.definition import DEFINITIONS
    for definition in DEFINITIONS.values():  # the active model's, and any a candidate follows
        cols = definition.columns()
        exported = rstore.model_input(reg.store.cursor(), columns=cols,
                                      positions=[TOKEN_COLUMNS.index(c) for c in cols])
        assert reg.model_table(definition).equals(exported)
    assert reg.model_table().column_names[1:] == list(reg.model_definition.columns())
    reg.close()
