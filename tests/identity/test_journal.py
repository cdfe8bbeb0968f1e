"""The online write journal: acknowledged small writes survive a crash, exactly once.

Owns: the journal's framing (round trip, torn tails) and crash recovery of a real registry: a
child process enrols single records (journaled, not yet folded into DuckDB) and dies with
``os._exit``; the next open must hold every acknowledged record, key, event and audit row, and
folding the same entries twice must not duplicate anything.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mpi.store.db as db
from mpi.config import Settings
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.store import journal as journal_module
from mpi.store.journal import Journal, decode, encode
from mpi.synth import generate
from tests.support.paths import ROOT

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8)
    | st.datetimes(min_value=dt.datetime(1900, 1, 1)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3), max_leaves=10)
_payloads = st.lists(st.dictionaries(st.text(min_size=2, max_size=6), _values, max_size=4),
                     min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(_payloads, st.data())
def test_frames_round_trip_and_a_torn_tail_yields_only_whole_entries(
        payloads: list[dict[str, Any]], data: st.DataObject) -> None:
    frames = [encode(i + 1, p) for i, p in enumerate(payloads)]
    blob = b"".join(frames)
    entries, end = decode(blob)
    assert [seq for seq, _ in entries] == list(range(1, len(payloads) + 1))
    assert [p for _, p in entries] == payloads and end == len(blob)
    cut = data.draw(st.integers(0, len(blob) - 1))
    whole = 0
    while whole < len(frames) and sum(map(len, frames[:whole + 1])) <= cut:
        whole += 1
    entries, end = decode(blob[:cut])
    assert [p for _, p in entries] == payloads[:whole]
    assert end == sum(map(len, frames[:whole]))


def test_an_append_that_cannot_be_cut_back_stops_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed append is cut back; if that fails too, no later entry may follow it (it could
    be whole on disk, with the sequence number the next append would reuse)."""
    journal = Journal(tmp_path / "r.duckdb")
    journal.start()
    assert journal.append({"n": 1}) == 1

    def fail(*_a: object) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(journal_module.os, "fdatasync", fail)
    with pytest.raises(OSError):
        journal.append({"n": 2})  # cut back: gone
    monkeypatch.setattr(journal_module.os, "ftruncate", fail)
    with pytest.raises(OSError):
        journal.append({"n": 3})  # could not be cut back
    monkeypatch.undo()
    with pytest.raises(OSError, match="restart"):
        journal.append({"n": 4})
    journal.close(all_folded=False)
    again = Journal(tmp_path / "r.duckdb")
    seqs = [s for s, _p in again.recover()]
    assert len(seqs) == len(set(seqs))  # no sequence number twice
    assert [p for _s, p in again.recover()] == [{"n": 1}, {"n": 3}]  # 3: a lost reply
    again.close(all_folded=True)


def test_a_flipped_byte_ends_the_readable_journal() -> None:
    frames = [encode(i, {"n": i}) for i in (1, 2, 3)]
    blob = bytearray(b"".join(frames))
    blob[len(frames[0]) + 20] ^= 0xFF  # inside the second entry
    entries, end = decode(bytes(blob))
    assert [s for s, _ in entries] == [1] and end == len(frames[0])


_CHILD = textwrap.dedent("""
    import json, os, shutil, sys
    from pathlib import Path
    import mpi.store.db as db
    db._FOLD_EVERY_S, db._FOLD_AT = 3600.0, 10**9   # nothing is folded before the crash
    from mpi.config import Settings
    from mpi.identity.pipeline import demo_secret, tokenize_rows
    from mpi.identity.registry import Registry
    from mpi.synth import generate
    data_dir, mode = Path(sys.argv[1]), sys.argv[2]
    reg = Registry(Settings(data_dir=data_dir))
    by_agency, _ = generate(people=40, agencies=2, seed=11)
    keys = {}
    for agency, rows in by_agency.items():
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        for i, rec in enumerate(records, start=1):
            res = reg.enrol_records(agency, [(i, rec)])   # one journaled write set each
            r = res.results[0]
            keys[f"{agency}/{r.source_record_id}"] = r.person_key
    if mode == "folded-but-kept":
        # the fold commits, but the crash comes before the journal segment is deleted
        seg = reg.store.journal.active
        shutil.copy(seg, str(seg) + ".keep")
        reg.store.flush_journal()
        shutil.move(str(seg) + ".keep", seg)
    print(json.dumps(keys))
    sys.stdout.flush()
    os._exit(0)   # no close: the journal is never folded by this process
""")


def _crash_child(data_dir: Path, mode: str) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(data_dir), mode], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    keys: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return keys


def _stored_keys(reg: Registry) -> dict[str, str]:
    rows = reg.store.cursor().execute(
        "SELECT agency, source_record_id, person_key FROM source_record").fetchall()
    return {f"{a}/{s}": k for a, s, k in rows}


@pytest.mark.integration
def test_acknowledged_single_record_enrols_survive_a_crash(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    acked = _crash_child(data_dir, "crash")
    assert len(acked) > 40
    segments = list(data_dir.glob("mpi.duckdb.journal.*"))
    assert segments and sum(p.stat().st_size for p in segments) > 0
    # An append that was cut short by the crash (never acknowledged) is ignored.
    with max(segments).open("ab") as fh:
        fh.write(encode(10**6, {"torn": True})[:-3])
    reg = Registry(Settings(data_dir=data_dir))
    try:
        assert _stored_keys(reg) == acked
        active = {k for k in acked.values()}
        stored = {str(r[0]) for r in reg.store.cursor().execute(
            "SELECT person_key FROM person WHERE status = 'active'").fetchall()}
        assert stored == active
        assert reg.verify_audit().ok
        assert reg.stats()["records"]["active"] == len(acked)
    finally:
        reg.close()
    assert not any(p.stat().st_size for p in data_dir.glob("mpi.duckdb.journal.*"))


@pytest.mark.integration
def test_entries_already_folded_are_not_applied_twice(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    acked = _crash_child(data_dir, "folded-but-kept")
    assert any(p.stat().st_size for p in data_dir.glob("mpi.duckdb.journal.*"))
    reg = Registry(Settings(data_dir=data_dir))
    try:
        assert _stored_keys(reg) == acked
        n = reg.store.cursor().execute("SELECT count(*) FROM source_record").fetchall()[0][0]
        assert n == len(acked)
    finally:
        reg.close()


def test_reads_see_every_acknowledged_write_at_once(tmp_path: Path) -> None:
    """Journaled writes are folded before any read, so a read right after an enrol sees it."""
    old = db._FOLD_EVERY_S
    db._FOLD_EVERY_S = 3600.0  # before the open: the flusher never folds during the test
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    try:
        by_agency, _ = generate(people=10, agencies=1, seed=2)
        (agency, rows), = by_agency.items()
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        for i, rec in enumerate(records, start=1):
            res = reg.enrol_records(agency, [(i, rec)])
            found = reg.store.cursor().execute(
                "SELECT person_key FROM source_record WHERE agency = ? AND source_record_id = ?",
                [agency, res.results[0].source_record_id]).fetchall()
            assert found == [(res.results[0].person_key,)]
    finally:
        db._FOLD_EVERY_S = old
        reg.close()


@pytest.mark.integration
def test_concurrent_enrols_reads_and_direct_batches_stay_in_order(tmp_path: Path) -> None:
    """Single-record enrols (journaled), 100-record batches (direct) and reads race; every
    acknowledged key is then in the file exactly as acknowledged, and reopening changes
    nothing."""
    import threading

    by_agency, _ = generate(people=400, agencies=2, seed=21)
    work: list[tuple[str, list[dict[str, Any]]]] = []
    for agency, rows in by_agency.items():
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        work.append((agency, records))
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    acked: dict[str, str] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def singles(agency: str, records: list[dict[str, Any]]) -> None:
        try:
            for i, rec in enumerate(records, start=1):
                r = reg.enrol_records(agency, [(i, rec)]).results[0]
                with lock:
                    acked[f"{agency}/{r.source_record_id}"] = str(r.person_key)
                if i % 7 == 0:  # a read right after a write sees it
                    got = reg.store.cursor().execute(
                        "SELECT person_key FROM source_record WHERE agency = ? AND "
                        "source_record_id = ?", [agency, r.source_record_id]).fetchall()
                    assert got == [(r.person_key,)]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def batches(agency: str, records: list[dict[str, Any]]) -> None:
        try:
            for start in range(0, len(records), 100):
                part = records[start:start + 100]
                res = reg.enrol_records(agency, list(enumerate(part, start=1)))
                with lock:
                    for r in res.results:
                        acked[f"{agency}/{r.source_record_id}"] = str(r.person_key)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    (a, recs_a), (b, recs_b) = work
    half_a, half_b = len(recs_a) // 2, len(recs_b) // 2
    threads = [threading.Thread(target=singles, args=(a, recs_a[:half_a])),
               threading.Thread(target=singles, args=(b, recs_b[:half_b])),
               threading.Thread(target=batches, args=(a, recs_a[half_a:])),
               threading.Thread(target=batches, args=(b, recs_b[half_b:]))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert _stored_keys(reg) == acked
        assert reg.verify_audit().ok
    finally:
        reg.close()
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    try:
        assert _stored_keys(reg) == acked
    finally:
        reg.close()


def test_folded_segments_are_deleted_and_a_clean_close_leaves_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    reg = Registry(Settings(data_dir=data_dir))
    by_agency, _ = generate(people=30, agencies=1, seed=4)
    (agency, rows), = by_agency.items()
    records, _ = tokenize_rows(rows, secret=demo_secret(1))
    try:
        for i, rec in enumerate(records, start=1):
            reg.enrol_records(agency, [(i, rec)])
            if i % 5 == 0:
                reg.store.flush_journal()
                reg.store.journal.prepare_spare()
        segments = list(data_dir.glob("mpi.duckdb.journal.*"))
        assert 1 <= len(segments) <= 3, segments  # active, a spare, one being folded
    finally:
        reg.close()
    assert not list(data_dir.glob("mpi.duckdb.journal.*"))
