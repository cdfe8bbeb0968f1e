"""SQL for aggregate reports over the registry (the equity report's per-group counts).

Owns: reading per-group counts of active records. Must not: compute rates or tests, suppress
small groups or decide what is flagged (mpi/reports.py does); take an attribute name that has
not been checked (the JSON path goes in as a parameter, never into the SQL text).
"""

from __future__ import annotations

from typing import Any

import duckdb

from mpi.store.labels import ACTIVE_LABELS_SQL
from mpi.store.rows import dict_rows

_LINKAGE_QUALITY_SQL = """
WITH raw AS (
    SELECT record_seq, agency, person_key, json_extract_string(attributes, ?) AS grp
    FROM source_record WHERE status = 'active'),
act AS (
    SELECT *, count(*) OVER (PARTITION BY grp, person_key) AS m FROM raw),
per AS (
    SELECT person_key, count(*) AS n, count(DISTINCT agency) AS agencies
    FROM act GROUP BY person_key),
open_record AS (
    SELECT DISTINCT record_seq FROM review_item
    WHERE status = 'open' AND kind = 'record_person' AND record_seq IS NOT NULL),
open_person AS (
    SELECT person_key AS k FROM review_item
    WHERE status = 'open' AND kind = 'possible_duplicate'
    UNION
    SELECT other_person_key FROM review_item
    WHERE status = 'open' AND kind = 'possible_duplicate' AND other_person_key IS NOT NULL),
prob AS (
    SELECT record_seq, avg(match_probability) AS p FROM review_item
    WHERE kind = 'record_person' AND record_seq IS NOT NULL GROUP BY record_seq)
SELECT act.grp AS grp,
       count(*) AS records,
       count(*) FILTER (WHERE per.agencies >= 2) AS cross_agency,
       count(*) FILTER (WHERE open_record.record_seq IS NOT NULL OR open_person.k IS NOT NULL)
           AS in_review,
       count(*) FILTER (WHERE per.n = 1) AS singletons,
       sum(act.m) AS cluster_sq,
       coalesce(sum(prob.p) FILTER (WHERE per.n >= 2), 0) AS link_probability_sum,
       count(prob.p) FILTER (WHERE per.n >= 2) AS link_probability_n
FROM act
JOIN per ON per.person_key = act.person_key
LEFT JOIN open_record ON open_record.record_seq = act.record_seq
LEFT JOIN open_person ON open_person.k = act.person_key
LEFT JOIN prob ON prob.record_seq = act.record_seq
GROUP BY act.grp
ORDER BY act.grp NULLS LAST
"""


def linkage_quality_counts_sql() -> str:
    """The per-group count query (one parameter: the JSON path, e.g. ``$.race_ethnicity``)."""
    return _LINKAGE_QUALITY_SQL


def linkage_quality_counts(cur: duckdb.DuckDBPyConnection, *,
                           json_path: str) -> list[dict[str, Any]]:
    """Per value of one record attribute (``None``: attribute missing), over active records:
    ``records``; ``cross_agency`` (the record's person has active records at two or more
    agencies); ``in_review`` (an open ``record_person`` item on the record, or an open
    ``possible_duplicate`` item naming its person); ``singletons`` (its person has no other
    active record); ``cluster_sq`` (the sum over the group's persons of the square of their
    record count in the group, for the design effect); and the sum and count of stored
    ``record_person`` review probabilities of records whose person has other records
    (``link_probability_sum``/``_n``).
    """
    return dict_rows(cur.execute(linkage_quality_counts_sql(), [json_path]))


_LABEL_COUNTS_SQL = """
WITH label_stats AS (""" + ACTIVE_LABELS_SQL + """),
r AS (
    SELECT record_seq, person_key, json_extract_string(attributes, ?) AS grp
    FROM source_record WHERE status = 'active'),
constrained AS (
    SELECT record_seq_a AS record_seq FROM link_constraint WHERE revoked_at IS NULL
    UNION
    SELECT record_seq_b FROM link_constraint WHERE revoked_at IS NULL),
pair AS (
    SELECT label_stats.is_match, ra.person_key = rb.person_key AS linked, ra.grp AS ga,
           rb.grp AS gb,
           (ca.record_seq IS NOT NULL OR cb.record_seq IS NOT NULL) AS held
    FROM label_stats JOIN r ra ON ra.record_seq = label_stats.record_seq_a
             JOIN r rb ON rb.record_seq = label_stats.record_seq_b
             LEFT JOIN constrained ca ON ca.record_seq = label_stats.record_seq_a
             LEFT JOIN constrained cb ON cb.record_seq = label_stats.record_seq_b),
per_group AS (
    SELECT ga AS grp, is_match, linked, held FROM pair
    UNION ALL
    SELECT gb, is_match, linked, held FROM pair WHERE gb IS DISTINCT FROM ga)
SELECT grp,
       count(*) FILTER (WHERE NOT held AND is_match AND linked) AS true_links,
       count(*) FILTER (WHERE NOT held AND NOT is_match AND linked) AS false_links,
       count(*) FILTER (WHERE NOT held AND is_match AND NOT linked) AS missed_links,
       count(*) FILTER (WHERE held) AS constrained_pairs
FROM per_group GROUP BY grp
"""


def label_counts(cur: duckdb.DuckDBPyConnection, *, json_path: str) -> dict[str | None, dict[str, int]]:
    """Per value of one record attribute: active labelled pairs of active records that are
    linked and labelled a match (``true_links``), linked but labelled a non-match
    (``false_links``) and labelled a match but not linked (``missed_links``), counting only
    pairs neither of whose records is in an active constraint (those the partition was made
    to agree with); ``constrained_pairs`` counts the pairs left out. A pair counts in the group
    of each of its two records (once when both share the group).
    """
    rows = cur.execute(_LABEL_COUNTS_SQL, [json_path]).fetchall()
    return {grp: {"true_links": int(tp), "false_links": int(fp), "missed_links": int(fn),
                  "constrained_pairs": int(held)}
            for grp, tp, fp, fn, held in rows}
