"""SQL that reads a research extract's rows out of the registry (issue #5 §3).

Owns: selecting the cohort (persons with an active record at one agency, optionally with a date
attribute in a range), excluding research opt-outs, and reading the requested attributes of all
active records of the remaining persons at the requested agencies. Must not: pseudonymize,
generalize, suppress or write files (mpi/extract/ does); put a value or an attribute name into
SQL text (agencies, JSON paths and dates are parameters; the SQL text is fixed fragments).

Consent rule: a person is opted out when any record that names them, active or withdrawn, has
``research_consent = false`` in its current version. A withdrawn record still names the key it
last had; that key is followed forward through ``key_lineage`` (merges and splits) so that an
opt-out survives re-linking. A later version of a record with consent true or unknown replaces
an earlier ``false`` (the agency corrected it or the person consented again).
A person is also opted out by a person-level consent record (mpi/store/consent.py, Decision 79).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from mpi.store.consent import OPTED_OUT_CTES
from mpi.store.rows import first_row


@dataclass(frozen=True)
class CohortFilter:
    """Persons with an active record at ``agency``; with ``json_path``, that record's date
    attribute must parse (ISO 8601) and lie within [start, end] (either bound optional)."""

    agency: str
    json_path: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None


_OPTED_OUT = OPTED_OUT_CTES  # the consent rule, record- and person-level (store/consent.py)

_COHORT = """
cohort AS (
    SELECT DISTINCT person_key FROM source_record
    WHERE status = 'active' AND person_key IS NOT NULL AND agency = ?{date})"""

_DATE = " AND try_cast(json_extract_string(attributes, ?) AS DATE) BETWEEN ? AND ?"
_NO_LOW, _NO_HIGH = dt.date(1, 1, 1), dt.date(9999, 12, 31)


def _cohort_cte(cohort: CohortFilter) -> tuple[str, list[object]]:
    if cohort.json_path is None:
        return _COHORT.format(date=""), [cohort.agency]
    return _COHORT.format(date=_DATE), [cohort.agency, cohort.json_path,
                                        cohort.start or _NO_LOW, cohort.end or _NO_HIGH]


def extract_rows_sql(n_columns: int, n_agencies: int, *, dated: bool) -> str:
    """The row query: record_seq, person_key, agency and ``c0..c{n-1}`` (VARCHAR), over active
    records at ``n_agencies`` agencies of cohort persons who have not opted out.

    Parameters, in order: the cohort agency (and JSON path, start, end when ``dated``), per
    column its agency and JSON path, then the agencies. A column is NULL on other agencies' rows.
    """
    cohort = _COHORT.format(date=_DATE if dated else "")
    cols = "".join(f",\n       CASE WHEN r.agency = ? THEN json_extract_string(r.attributes, ?) "
                   f"END AS c{i}" for i in range(n_columns))
    marks = ", ".join("?" * n_agencies)
    return (f"WITH RECURSIVE {_OPTED_OUT},{cohort}\n"
            f"SELECT r.record_seq, r.person_key, r.agency{cols}\n"
            "FROM source_record r JOIN cohort c ON c.person_key = r.person_key\n"
            f"WHERE r.status = 'active' AND r.agency IN ({marks})\n"
            "  AND r.person_key NOT IN (SELECT person_key FROM opted_out)\n"
            "ORDER BY r.record_seq")


def extract_rows(cur: duckdb.DuckDBPyConnection, *, cohort: CohortFilter,
                 agencies: Sequence[str], columns: Sequence[tuple[str, str]]) -> pa.Table:
    """Rows of the extract before disclosure control (see ``extract_rows_sql``); ``columns``
    are (agency, JSON path) pairs, returned as ``c0..`` in that order; rows by record_seq (so
    every later step sees one order for one registry state)."""
    _cte, cohort_params = _cohort_cte(cohort)
    params: list[object] = list(cohort_params)
    for agency, path in columns:
        params += [agency, path]
    params += agencies
    sql = extract_rows_sql(len(columns), len(agencies), dated=cohort.json_path is not None)
    return cur.sql(sql, params=params).to_arrow_table()


def cohort_counts(cur: duckdb.DuckDBPyConnection, *, cohort: CohortFilter) -> dict[str, int]:
    """``cohort_persons`` (before consent) and ``opted_out_persons`` among them."""
    cte, params = _cohort_cte(cohort)
    row = first_row(cur.execute(
        f"WITH RECURSIVE {_OPTED_OUT},{cte}\n"
        "SELECT count(*), count(*) FILTER (WHERE person_key IN (SELECT person_key FROM opted_out))"
        " FROM cohort", params).fetchall())
    return {"cohort_persons": int(row[0]), "opted_out_persons": int(row[1])}


def build_has_opted_out(cur: duckdb.DuckDBPyConnection, *, extract_id: str, build_seq: int) -> bool:
    """Whether a person a build included has opted out since (the keys it stored, followed
    forward through merges and splits to today's keys, meet the consent rule above)."""
    row = first_row(cur.execute(
        f"WITH RECURSIVE {_OPTED_OUT},\n"
        "included(k) AS (\n"
        "    SELECT person_key FROM extract_person WHERE extract_id = ? AND build_seq = ?\n"
        "    UNION\n"
        "    SELECT l.to_key FROM key_lineage l JOIN included i ON l.from_key = i.k)\n"
        "SELECT count(*) FROM included WHERE k IN (SELECT person_key FROM opted_out)",
        [extract_id, build_seq]).fetchall())
    return bool(row and row[0])
