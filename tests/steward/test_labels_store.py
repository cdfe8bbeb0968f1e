"""The label table on a real registry file: pairs stored ascending, newest active label wins."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mpi.config import Settings
from mpi.identity.registry import Registry
from mpi.store import labels

NOW = dt.datetime(2026, 1, 1)


def test_labels_round_trip_newest_wins_and_revoked_hidden(tmp_path: Path) -> None:
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    try:
        with reg.store.transaction() as cur:
            seqs = labels.insert_labels(cur, [
                {"record_seq_a": 9, "record_seq_b": 3, "is_match": True},
                {"record_seq_a": 4, "record_seq_b": 5, "is_match": False, "reason": "twins"},
            ], principal_id="p1", source="import", now=NOW)
            assert seqs == [1, 2]
            labels.insert_labels(cur, [{"record_seq_a": 3, "record_seq_b": 9, "is_match": False}],
                                 principal_id="p1", source="review", now=NOW)
            labels.revoke_label(cur, 2, now=NOW)
        cur = reg.store.cursor()
        assert labels.active_labels(cur).to_pylist() == [
            {"record_seq_a": 3, "record_seq_b": 9, "is_match": False}]
        assert labels.count_labels(cur) == 1
    finally:
        reg.close()
