"""Attacks on the online journal: a damaged segment must never lose an acknowledged write.

Owns: start-up behaviour on a journal segment with one flipped byte in every position class
(an entry's header: sequence, length and checksum fields; its JSON body; the first, a middle
and the last entry) and with a torn last entry, and the explicit ``mpi journal recover``
(report, keep valid entries, quarantine) with its audit event.

A child process enrols single records (journaled, never folded) and dies with ``os._exit``;
each test copies that data dir, damages the segment, and opens the registry. Only a damaged
*last* entry may be dropped (its fsync never completed, so it was never acknowledged); damage
before it stops the open with ``JournalCorrupt`` and leaves the file unchanged.
"""

from __future__ import annotations

import json
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mpi.cli.main import app
from mpi.config import Settings
from mpi.errors import ConfigurationError, JournalCorrupt
from mpi.identity.registry import Registry
from mpi.store.journal import encode, scan
from tests.support.paths import ROOT

_HEAD = struct.Struct("<QII")

_CHILD = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import mpi.store.db as db
    db._FOLD_EVERY_S, db._FOLD_AT = 3600.0, 10**9   # nothing is folded before the crash
    from mpi.config import Settings
    from mpi.identity.pipeline import demo_secret, tokenize_rows
    from mpi.identity.registry import Registry
    from mpi.synth import generate
    reg = Registry(Settings(data_dir=Path(sys.argv[1])))
    by_agency, _ = generate(people=12, agencies=1, seed=5)
    keys = []
    for agency, rows in by_agency.items():
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        for i, rec in enumerate(records, start=1):
            r = reg.enrol_records(agency, [(i, rec)]).results[0]   # one journal entry each
            keys.append([f"{agency}/{r.source_record_id}", r.person_key])
    print(json.dumps(keys))
    sys.stdout.flush()
    os._exit(0)   # a crash: the journal is never folded by this process
""")


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """A data dir whose acknowledged enrols are all still in one journal segment, in order."""
    data_dir = tmp_path_factory.mktemp("crashed") / "d"
    out = subprocess.run([sys.executable, "-c", _CHILD, str(data_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    keys = [(k, v) for k, v in json.loads(out.stdout.strip().splitlines()[-1])]
    assert len(keys) >= 10
    return data_dir, keys


def _copy(crashed: tuple[Path, list[tuple[str, str]]], tmp_path: Path) -> tuple[Path, Path]:
    data_dir = tmp_path / "d"
    shutil.copytree(crashed[0], data_dir)
    segments = [p for p in data_dir.glob("mpi.duckdb.journal.*") if p.stat().st_size]
    assert len(segments) == 1, segments
    return data_dir, segments[0]


def _frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every frame in an undamaged segment."""
    out, pos = [], 0
    while pos < len(data):
        _seq, length, _crc = _HEAD.unpack_from(data, pos)
        out.append((pos, _HEAD.size + length))
        pos += _HEAD.size + length
    return out


def _stored(data_dir: Path) -> dict[str, str]:
    reg = Registry(Settings(data_dir=data_dir))
    try:
        rows = reg.store.cursor().execute(
            "SELECT agency, source_record_id, person_key FROM source_record").fetchall()
    finally:
        reg.close()
    return {f"{a}/{s}": k for a, s, k in rows}


# (which entry, where in it): header fields are seq [0, 8), length [8, 12), crc [12, 16).
_PLACES = {"seq": 3, "length": 9, "crc": 13, "body": 40}
_EARLY = [(entry, place) for entry in ("first", "middle") for place in _PLACES]


def _entry_index(entry: str, n: int) -> int:
    return {"first": 0, "middle": n // 2, "last": n - 1}[entry]


@pytest.mark.integration
@pytest.mark.parametrize(("entry", "place"), _EARLY, ids=[f"{e}-{p}" for e, p in _EARLY])
def test_damage_before_the_last_entry_stops_start_up_and_keeps_the_file(
        crashed: tuple[Path, list[tuple[str, str]]], tmp_path: Path, entry: str,
        place: str) -> None:
    data_dir, seg = _copy(crashed, tmp_path)
    data = bytearray(seg.read_bytes())
    frames = _frames(bytes(data))
    offset, _length = frames[_entry_index(entry, len(frames))]
    data[offset + _PLACES[place]] ^= 0x5A
    seg.write_bytes(bytes(data))
    for _attempt in range(2):  # a failed open must not "repair" the journal for the next one
        with pytest.raises(JournalCorrupt) as info:
            Registry(Settings(data_dir=data_dir))
        exc = info.value
        assert isinstance(exc, ConfigurationError) and exc.code == "journal_corrupt"
        assert seg.name in exc.message and f"offset {offset}" in exc.message
        assert "mpi journal recover" in exc.message
        assert seg.read_bytes() == bytes(data)  # still there, unchanged


@pytest.mark.integration
@pytest.mark.parametrize("place", [*_PLACES, "torn"])
def test_a_damaged_or_torn_last_entry_is_dropped_and_every_earlier_write_is_kept(
        crashed: tuple[Path, list[tuple[str, str]]], tmp_path: Path, place: str) -> None:
    data_dir, seg = _copy(crashed, tmp_path)
    data = bytearray(seg.read_bytes())
    offset, length = _frames(bytes(data))[-1]
    if place == "torn":
        del data[offset + length - 5:]  # the crash cut the last append short
    else:
        data[offset + _PLACES[place]] ^= 0x5A
    seg.write_bytes(bytes(data))
    acked = crashed[1]
    assert _stored(data_dir) == dict(acked[:-1])  # the last write set never returned


def test_every_byte_of_a_small_journal_is_classified(tmp_path: Path) -> None:
    """Flip each byte of a five-entry segment: damage in the last entry is a tail, anything
    earlier is reported at the start of its entry with every later entry still readable."""
    frames = [encode(i, {"n": i, "pad": "x" * i}) for i in range(1, 6)]
    blob = b"".join(frames)
    starts = [sum(map(len, frames[:i])) for i in range(len(frames))]
    for pos in range(len(blob)):
        damaged = bytearray(blob)
        damaged[pos] ^= 0x01
        sc = scan(bytes(damaged))
        hit = max(i for i, s in enumerate(starts) if s <= pos)
        assert sc.first_bad == starts[hit], pos
        assert [seq for _o, seq, _p in sc.entries] == [i + 1 for i in range(5) if i != hit], pos
        assert sc.readable_after(starts[hit]) == len(frames) - 1 - hit


def _damage_middle(crashed: tuple[Path, list[tuple[str, str]]],
                   tmp_path: Path) -> tuple[Path, Path, bytes, int, int]:
    data_dir, seg = _copy(crashed, tmp_path)
    data = bytearray(seg.read_bytes())
    frames = _frames(bytes(data))
    hit = len(frames) // 2
    data[frames[hit][0] + 40] ^= 0x5A
    seg.write_bytes(bytes(data))
    return data_dir, seg, bytes(data), frames[hit][0], hit


def _recover_events(data_dir: Path) -> list[dict[str, Any]]:
    """The journal.recover audit events, with their detail parsed."""
    reg = Registry(Settings(data_dir=data_dir))
    try:
        return [{**e, "detail": json.loads(e["detail"])}
                for e in reg.list_audit(after=0, limit=100_000)
                if e["action"] == "journal.recover"]
    finally:
        reg.close()


def _quarantined(data_dir: Path, seg: Path, data: bytes) -> None:
    kept = data_dir / "journal-quarantine" / seg.name
    assert not seg.exists() and kept.read_bytes() == data
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


@pytest.mark.integration
def test_recover_report_names_segment_offset_and_what_follows(
        crashed: tuple[Path, list[tuple[str, str]]], tmp_path: Path) -> None:
    data_dir, seg, data, offset, hit = _damage_middle(crashed, tmp_path)
    n = len(crashed[1])
    res = CliRunner().invoke(app, ["journal", "recover", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert seg.name in res.output and f"first bad offset {offset}" in res.output
    assert f"{n - 1} entries" in res.output and f"{n - 1 - hit} readable after it" in res.output
    assert seg.read_bytes() == data  # a report changes nothing
    with pytest.raises(JournalCorrupt):
        Registry(Settings(data_dir=data_dir))


@pytest.mark.integration
def test_recover_keep_valid_folds_every_verified_entry_and_quarantines_the_segment(
        crashed: tuple[Path, list[tuple[str, str]]], tmp_path: Path) -> None:
    data_dir, seg, data, offset, hit = _damage_middle(crashed, tmp_path)
    acked = crashed[1]
    res = CliRunner().invoke(app, ["journal", "recover", "--data-dir", str(data_dir),
                                   "--keep-valid"])
    assert res.exit_code == 0, res.output
    _quarantined(data_dir, seg, data)
    assert _stored(data_dir) == dict(acked[:hit] + acked[hit + 1:])  # only the damaged one lost
    events = _recover_events(data_dir)
    assert len(events) == 1 and events[0]["outcome"] == "ok"
    detail = events[0]["detail"]
    assert detail["mode"] == "keep_valid" and detail["entries_folded"] == len(acked) - 1
    assert detail["damaged"] == [{"segment": seg.name, "offset": offset}]


@pytest.mark.integration
def test_recover_quarantine_keeps_the_consistent_prefix_and_the_whole_file(
        crashed: tuple[Path, list[tuple[str, str]]], tmp_path: Path) -> None:
    data_dir, seg, data, _offset, hit = _damage_middle(crashed, tmp_path)
    acked = crashed[1]
    res = CliRunner().invoke(app, ["journal", "recover", "--data-dir", str(data_dir),
                                   "--quarantine"])
    assert res.exit_code == 0, res.output
    _quarantined(data_dir, seg, data)
    assert _stored(data_dir) == dict(acked[:hit])
    reg = Registry(Settings(data_dir=data_dir))
    try:
        assert reg.verify_audit().ok  # a prefix: the audit chain has no gap
    finally:
        reg.close()
    assert [e["detail"]["mode"] for e in _recover_events(data_dir)] == ["quarantine"]


@pytest.mark.integration
def test_recover_on_a_healthy_journal_changes_nothing(
        crashed: tuple[Path, list[tuple[str, str]]], tmp_path: Path) -> None:
    data_dir, _seg = _copy(crashed, tmp_path)
    res = CliRunner().invoke(app, ["journal", "recover", "--data-dir", str(data_dir),
                                   "--keep-valid"])
    assert res.exit_code == 0, res.output
    assert "nothing to recover" in res.output
    assert _stored(data_dir) == dict(crashed[1])
    assert not (data_dir / "journal-quarantine").exists()
