"""Disclosure control of a rows extract over every released column (issue #16).

Owns: which released columns are quasi-identifiers (all but the pseudonym, except attributes a
steward signed off as non-identifying; dates, ZIPs, ages and birth fields always; the agency
and the link probability always), which are l-diversity targets (``sensitive`` ones), and
``protect_rows``: hierarchies -> global + local recoding (mpi/extract/recoding.py) -> person
signatures (cohort-agency rows kept first) -> the policy gate (largest prosecutor risk at most
the request's maximum, default 1/k; k; l; something released: else ``PolicyNotMet``, nothing
is released; Decision 94), with the risk report before and after and the utility report.
Must not: run SQL, read the registry, or put a value in the report or a refusal (counts, level
names and column names only).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mpi.errors import Conflict
from mpi.extract.files import AGENCY, LINK_PROBABILITY, PERSON_ID
from mpi.extract.hierarchy import (
    Hierarchy,
    build_hierarchy,
    fixed_hierarchy,
    identifying_kind,
    link_hierarchy,
    release,
)
from mpi.extract.ldiversity import SensitiveColumn
from mpi.extract.recoding import (
    Policy,
    Rows,
    class_ids,
    failing,
    l_report,
    protect_persons,
    row_class_ids,
    search,
    signature_shared,
)
from mpi.extract.risk import risk_measures, utility_measures


class Attribute(Protocol):
    """What protection needs of a released attribute (mpi/extract/build.py's AttributeSpec)."""

    @property
    def agency(self) -> str:
        """The agency holding it."""

    @property
    def name(self) -> str:
        """The attribute's name."""

    @property
    def type(self) -> str:
        """Its dictionary type."""

    @property
    def klass(self) -> str:
        """quasi_identifier, sensitive or other."""

    @property
    def generalization(self) -> str:
        """The requested generalization."""

    @property
    def non_identifying_signed_off_by(self) -> str | None:
        """The steward who signed it off as non-identifying, if one did."""

    @property
    def hierarchy(self) -> Any:
        """The dictionary's grouping maps (strings)."""


def is_quasi_identifier(a: Attribute) -> bool:
    """Every released attribute is a quasi-identifier (sensitive ones too: an attacker may know
    them) unless a steward signed it off as non-identifying; a date, ZIP, age or birth field
    always is."""
    if identifying_kind(a.name, a.type):
        return True
    return not a.non_identifying_signed_off_by


class PolicyNotMet(Conflict):
    """The released rows would not meet the request's disclosure policy (largest prosecutor
    risk, k, l), or only by suppressing every row: nothing is released (Decision 94)."""

    code = "policy_not_met"


def _gate(ids: npt.NDArray[np.int64], records_in: int, *, threshold: float, k: int,
          l_fails: bool) -> dict[str, Any]:
    """The policy check after the search: the largest prosecutor risk of a released row at
    most ``threshold``, every class at least k rows, every sensitive column l-diverse, and
    something left to release. PolicyNotMet (counts and ratios only) when it fails."""
    worst = round(1.0 / float(np.bincount(ids).min()), 6) if len(ids) else 0.0
    reasons = []
    if worst > threshold + 1e-12:
        reasons.append(f"the largest prosecutor risk of a released row would be {worst}, above "
                       f"the maximum {round(threshold, 6)}")
    if len(ids) and np.bincount(ids).min() < k:
        reasons.append(f"a class would have fewer than k = {k} rows")
    if l_fails:
        reasons.append("a sensitive column would not be l-diverse in every class")
    if records_in and not len(ids):
        reasons.append(f"all {records_in} rows would have to be suppressed to meet it")
    if reasons:
        raise PolicyNotMet("the extract cannot meet its disclosure policy (maximum prosecutor "
                           f"risk {round(threshold, 6)}, k = {k}): " + "; ".join(reasons)
                           + "; nothing is released (ask for coarser generalizations, fewer "
                           "attributes or a larger cohort)")
    return {"max_prosecutor_risk": round(threshold, 6), "prosecutor_max": worst,
            "k": k, "meets": True}


@dataclass
class Protected:
    """The rows to release (hidden columns kept) and the report of what was done."""

    table: pa.Table
    report: dict[str, Any]
    generalized_further: dict[str, str]


def _codes(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int64]:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    enc = pc.dictionary_encode(arr, null_encoding="encode")
    return np.asarray(enc.indices.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _final_check(hs: Sequence[Hierarchy], levels: npt.NDArray[np.int64], keep: npt.NDArray[np.bool_],
                 persons: npt.NDArray[np.int64], cohort: npt.NDArray[np.bool_],
                 sensitive: list[SensitiveColumn], policy: Policy
                 ) -> tuple[npt.NDArray[np.bool_], dict[str, int]]:
    """Person signatures, then classes failing k or l after that, until nothing changes."""
    totals = {"rows_removed_other_agencies": 0, "persons_removed": 0, "rows_removed_persons": 0,
              "rows_removed_recheck": 0, "rows_fully_generalized_other_agencies": 0}
    keep = keep.copy()
    idx = np.flatnonzero(keep)
    if len(idx):   # a person at risk: their other agencies' rows go to the top level first
        shared, _ = signature_shared(persons[idx], row_class_ids(hs, levels, idx))
        lift = idx[(shared < policy.k) & ~cohort[idx]]
        top = np.array([h.height for h in hs], dtype=np.int64)
        lift = lift[np.any(levels[:, lift] != top[:, None], axis=0)]
        levels[:, lift] = top[:, None]
        totals["rows_fully_generalized_other_agencies"] = int(len(lift))
    while True:
        idx = np.flatnonzero(keep)
        if not len(idx):
            break
        ids = row_class_ids(hs, levels, idx)
        kept, counts = protect_persons(persons[idx], ids, cohort[idx], policy.k)
        for key, v in counts.items():
            totals[key] += v
        keep[idx[~kept]] = False
        idx = np.flatnonzero(keep)
        if not len(idx):
            break
        bad = failing(hs, levels, idx, sensitive, policy)
        if not bad.any():
            break
        keep[idx[bad]] = False
        totals["rows_removed_recheck"] += int(bad.sum())
    return keep, totals


def _population_rows(hs: Sequence[Hierarchy], levels: npt.NDArray[np.int64], idx: Rows,
                     n: int, n_total: int) -> npt.NDArray[np.int64] | None:
    """Per released row: how many population rows (positions n..n_total) share its class at its
    own levels; None without a population table."""
    if n_total == n:
        return None
    pop = np.arange(n, n_total, dtype=np.int64)
    out = np.zeros(len(idx), dtype=np.int64)
    vectors, which = np.unique(levels[:, idx].T, axis=0, return_inverse=True)
    for v, vector in enumerate(vectors):
        mine = np.flatnonzero(which.reshape(-1) == v)
        ids = class_ids(hs, tuple(int(x) for x in vector), np.concatenate([idx[mine], pop]))
        counts = np.bincount(ids[len(mine):], minlength=int(ids.max()) + 1)
        out[mine] = counts[ids[:len(mine)]]
    return out


def protect_rows(table: pa.Table, attributes: Mapping[str, Attribute], released: Sequence[str], *,
                 cohort_agency: str, policy: Policy, risk_threshold: float | None = None,
                 population: pa.Table | None = None) -> Protected:
    """Generalize and suppress until every class of the released rows has at least k rows (and
    k persons by signature) and every sensitive column is l-diverse in it. ``population``: the
    same columns for the cohort agency's consented population (journalist risk), when the
    cohort is narrower than it."""
    n = table.num_rows
    sample = table
    if population is not None:   # hierarchies over sample + population; the search on the sample
        cols = [PERSON_ID, AGENCY, *released, LINK_PROBABILITY]
        table = pa.concat_tables([table.select(cols), population.select(cols)],
                                 promote_options="permissive")
    n_total = table.num_rows
    qi_cols = [c for c in released if is_quasi_identifier(attributes[c])]
    sensitive_cols = [c for c in qi_cols if attributes[c].klass == "sensitive"]
    signed_off = [c for c in released if c not in qi_cols]
    hs: list[Hierarchy] = [fixed_hierarchy(AGENCY, table.column(AGENCY))]
    for c in qi_cols:
        a = attributes[c]
        hs.append(build_hierarchy(c, table.column(c), name=a.name, type=a.type,
                                  generalization=a.generalization, grouping=a.hierarchy))
    hs.append(link_hierarchy(LINK_PROBABILITY, table.column(LINK_PROBABILITY)))
    agency = table.column(AGENCY).combine_chunks() if n else pa.array([], pa.string())
    sensitive = [SensitiveColumn(c, 1 + qi_cols.index(c),
                                 np.asarray(pc.equal(agency, attributes[c].agency).fill_null(False)
                                            .to_numpy(zero_copy_only=False), dtype=bool))
                 for c in sensitive_cols]
    cohort = np.asarray(pc.equal(agency, cohort_agency).fill_null(False)
                        .to_numpy(zero_copy_only=False), dtype=bool) if n else np.zeros(0, bool)
    persons = _codes(table.column(PERSON_ID)) if n else np.zeros(0, np.int64)
    rows = np.arange(n, dtype=np.int64)
    threshold = risk_threshold if risk_threshold is not None else 1.0 / policy.k
    # a maximum risk stricter than 1/k is met by larger classes, then checked by the gate
    policy = dataclasses.replace(policy, k=max(policy.k, math.ceil(1.0 / threshold - 1e-9)))
    zero = np.zeros((len(hs), n_total), dtype=np.int64)
    before_ids = row_class_ids(hs, zero, rows)
    before = risk_measures(before_ids, threshold=threshold,
                           population_rows=_population_rows(hs, zero, rows, n, n_total))
    rec = search(hs, sensitive, rows, policy, n_rows=n_total)
    keep0 = ~rec.dropped[:n]
    keep, person_counts = _final_check(hs, rec.row_levels, keep0, persons[:n], cohort[:n],
                                       sensitive, policy)
    idx = np.flatnonzero(keep)
    ids = row_class_ids(hs, rec.row_levels, idx)
    verdict = _gate(ids, n, threshold=threshold, k=policy.k,
                    l_fails=bool(len(ids)) and bool(failing(hs, rec.row_levels, idx, sensitive,
                                                            policy).any()))
    out = sample
    further: dict[str, str] = {}
    levels_report: dict[str, Any] = {}
    for q, h in enumerate(hs):
        if h.kind == "fixed":
            continue
        lv = rec.row_levels[q]
        kept_levels = lv[idx]
        hist = np.bincount(kept_levels, minlength=len(h.levels)) if len(idx) else \
            np.zeros(len(h.levels), dtype=np.int64)
        levels_report[h.column] = {
            "hierarchy": list(h.names), "global_level": h.names[rec.global_node[q]],
            "rows_per_level": {h.names[i]: int(c) for i, c in enumerate(hist) if c}}
        if rec.global_node[q] > 0 or (len(kept_levels) and kept_levels.max() > 0):
            used = sorted({h.names[i] for i, c in enumerate(hist) if c and i > 0})
            further[h.column] = h.names[rec.global_node[q]] if len(used) <= 1 and \
                rec.global_node[q] > 0 else "per row: " + ", ".join(used)
            out = out.set_column(out.column_names.index(h.column), h.column, release(h, lv[:n]))
    out = out.filter(pa.array(keep))
    top = np.array([h.height for h in hs], dtype=np.int64)
    fully = int(np.count_nonzero(np.all(rec.row_levels[:, idx] == top[:, None], axis=0))) \
        if len(idx) and len(hs) > 1 else 0
    cohort_in, cohort_out = int(cohort[:n].sum()), int(cohort[idx].sum())
    dropped_row = int(rec.dropped[:n].sum())
    report = {
        "k": policy.k, "l": policy.l, "l_model": "entropy and distinct" if policy.entropy
        else "distinct", "max_suppression": policy.max_suppression,
        "quasi_identifiers": [AGENCY, *qi_cols, LINK_PROBABILITY],
        "sensitive": sensitive_cols, "signed_off_non_identifying": signed_off,
        "records_in": n, "records_out": int(len(idx)), "records_suppressed": n - int(len(idx)),
        "records_suppressed_row_level": dropped_row,
        "records_suppressed_person_level": n - int(len(idx)) - dropped_row,
        "records_fully_generalized": fully,
        "cohort_agency_rows": {"in": cohort_in, "out": cohort_out},
        "suppression": {
            "rows_no_node_could_release": dropped_row,
            "rows_removed_other_agencies_for_person_signature":
                person_counts["rows_removed_other_agencies"],
            "persons_removed_for_person_signature": person_counts["persons_removed"],
            "rows_removed_with_those_persons": person_counts["rows_removed_persons"],
            "rows_removed_by_final_k_l_check": person_counts["rows_removed_recheck"],
            "rows_at_other_agencies_fully_generalized_for_person_signature":
                person_counts["rows_fully_generalized_other_agencies"],
            "why": "rows whose class failed k or l even with every quasi-identifier suppressed "
                   "are dropped; a person whose set of row classes fewer than k persons share "
                   "first has their rows at other agencies fully generalized, then loses "
                   "those rows, then all rows: the cohort agency's row goes last"},
        "generalized_further": further,
        "generalization_levels": levels_report,
        "search": {"global_node": {h.column: h.names[rec.global_node[q]]
                                   for q, h in enumerate(hs) if h.kind != "fixed"},
                   "rows_failing_at_global_node": rec.failing_at_global,
                   "local_recoding_passes": rec.passes, "nodes_evaluated": rec.evaluations},
        "policy": verdict,
        "risk_before": before,
        "risk": risk_measures(ids, threshold=threshold, population_rows=_population_rows(
            hs, rec.row_levels, idx, n, n_total)),
        "population_rows": n_total - n if population is not None else None,
        "utility": utility_measures(ids, records_in=n, suppressed=n - int(len(idx))),
        "l_diversity": l_report(hs, rec.row_levels, idx, sensitive),
        "method": "every released column but person_id is a quasi-identifier unless sensitive "
                  "(then l-diverse) or signed off as non-identifying by a steward; global "
                  "recoding over the hierarchy lattice minimising loss, local recoding of the "
                  "rows left at risk, suppression of what no node releases, then person "
                  "signatures (decision 0075)",
    }
    return Protected(out, report, further)
