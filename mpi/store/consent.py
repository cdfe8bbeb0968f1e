"""SQL for person-level research consent and the recall of delivered extract builds.

Owns: the ``person_consent`` table (append-only: one row per recorded opt-out or opt-in, never
updated or deleted), the SQL fragment that turns it into today's opted-out person keys
(``PERSON_OPTED_OUT_CTES``, used by mpi/store/extracts_read.py's consent rule), and the counts
of persons in delivered builds who opted out since. Must not: decide who may record consent
(mpi/identity/consent.py does) or put a value into SQL text.

The rule, in SQL: an entry recorded on a key counts for every key that key leads to through
``key_lineage`` (merges and splits; so an opt-out follows the person into a merge and, on a
split, into every part). Per active key and per *scope* (the source agency, or the steward's
own scope when there is none) the latest entry (highest ``consent_seq``) decides; the key is
opted out when the latest entry of any scope is ``opt_out``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb

from mpi.store.rows import dict_rows, first_row

COLUMNS = ("consent_seq", "person_key", "decision", "source_agency", "effective_date", "reason",
           "recorded_by", "recorded_at")

PERSON_OPTED_OUT_CTES = """
consent_reach(consent_seq, k) AS (
    SELECT consent_seq, person_key FROM person_consent
    UNION
    SELECT r.consent_seq, l.to_key FROM key_lineage l JOIN consent_reach r ON l.from_key = r.k),
person_opted_out(person_key) AS (
    SELECT k FROM (
        SELECT r.k, c.decision, row_number() OVER (
            PARTITION BY r.k, coalesce(c.source_agency, '') ORDER BY c.consent_seq DESC) AS n
        FROM consent_reach r JOIN person_consent c ON c.consent_seq = r.consent_seq
        JOIN person p ON p.person_key = r.k AND p.status = 'active')
    WHERE n = 1 AND decision = 'opt_out')"""
"""CTEs (to follow ``WITH RECURSIVE``) defining ``person_opted_out(person_key)``: the active
keys whose person-level consent is an opt-out in some scope."""


def insert_entry(cur: duckdb.DuckDBPyConnection, *, person_key: str, decision: str,
                 source_agency: str | None, effective_date: dt.date, reason: str | None,
                 recorded_by: str, now: dt.datetime) -> int:
    """Append one consent entry; its ``consent_seq``."""
    row = first_row(cur.execute("SELECT coalesce(max(consent_seq), 0) + 1 FROM person_consent")
                    .fetchall())
    seq = int(row[0])
    cur.execute(f"INSERT INTO person_consent ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [seq, person_key, decision, source_agency, effective_date, reason, recorded_by, now])
    return seq


def entries_for(cur: duckdb.DuckDBPyConnection, person_key: str) -> list[dict[str, Any]]:
    """Every entry that counts for ``person_key``: recorded on it or on a key that leads to it
    through merges and splits; oldest first."""
    return dict_rows(cur.execute(
        "WITH RECURSIVE back(k) AS (SELECT ? UNION SELECT l.from_key FROM key_lineage l "
        "JOIN back b ON l.to_key = b.k) "
        f"SELECT {', '.join('c.' + c for c in COLUMNS)} FROM person_consent c "
        "WHERE c.person_key IN (SELECT k FROM back) ORDER BY c.consent_seq", [person_key]))


def record_opted_out(cur: duckdb.DuckDBPyConnection, person_key: str) -> bool:
    """Whether a record naming the key (now, or through lineage into it) has
    ``research_consent = false`` in its current version (the record-level rule)."""
    row = first_row(cur.execute(
        "WITH RECURSIVE back(k) AS (SELECT ? UNION SELECT l.from_key FROM key_lineage l "
        "JOIN back b ON l.to_key = b.k) "
        "SELECT count(*) FROM source_record WHERE research_consent = false "
        "AND person_key IN (SELECT k FROM back)", [person_key]).fetchall())
    return bool(row and row[0])


OPTED_OUT_CTES = PERSON_OPTED_OUT_CTES + """,
record_opted_out(person_key) AS (
    SELECT person_key FROM source_record
    WHERE research_consent = false AND person_key IS NOT NULL
    UNION
    SELECT l.to_key FROM key_lineage l JOIN record_opted_out o ON l.from_key = o.person_key),
opted_out(person_key) AS (
    SELECT person_key FROM record_opted_out UNION SELECT person_key FROM person_opted_out)"""
"""CTEs (to follow ``WITH RECURSIVE``) defining ``opted_out(person_key)``: the whole consent
rule, record-level (Decision 33: a ``false`` on any record naming the person, followed forward
through lineage) or person-level (above)."""

_RECALL = f"""
WITH RECURSIVE {OPTED_OUT_CTES},
included(build_seq, origin, k) AS (
    SELECT p.build_seq, p.person_key, p.person_key FROM extract_person p
    JOIN extract_build b ON b.extract_id = p.extract_id AND b.build_seq = p.build_seq
    WHERE p.extract_id = ? AND b.first_delivered_at IS NOT NULL
    UNION
    SELECT i.build_seq, i.origin, l.to_key FROM key_lineage l JOIN included i ON l.from_key = i.k)
SELECT b.build_seq, b.first_delivered_at,
       (SELECT count(DISTINCT i.origin) FROM included i
        WHERE i.build_seq = b.build_seq AND i.k IN (SELECT person_key FROM opted_out)) AS n
FROM extract_build b
WHERE b.extract_id = ? AND b.first_delivered_at IS NOT NULL
ORDER BY b.build_seq"""


def delivered_opted_out(cur: duckdb.DuckDBPyConnection,
                        extract_id: str) -> list[dict[str, Any]]:
    """Per delivered build of the extract: ``build_seq``, ``first_delivered_at`` and
    ``opted_out_persons``: how many persons it included (their keys followed through merges
    and splits) are opted out now, by the record-level or the person-level rule."""
    rows = cur.execute(_RECALL, [extract_id, extract_id]).fetchall()
    return [{"build_seq": int(b), "first_delivered_at": at, "opted_out_persons": int(n)}
            for b, at, n in rows]
