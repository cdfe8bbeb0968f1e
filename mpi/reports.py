"""The equity report: linkage quality per group of a record attribute, with small-cell
suppression and a test of each group against the rest.

Owns: checking the attribute name, turning per-group counts into rates, the two-proportion
z-tests (Bonferroni-corrected) that flag groups differing from the rest beyond chance,
disclosure suppression, and label precision / recall from labels the partition was not made
to agree with (no active constraint on either record), with their counts and Wilson score
intervals, withheld under ``MIN_LABELLED_PAIRS`` (Decision 87). The computation
(``build_linkage_quality``) is pure; the one use case (``linkage_quality``) reads the counts
through mpi/store/reports.py and appends an audit event.
Must not: run SQL, know about HTTP, or report a suppressed group's figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mpi.audit import AuditEntry
from mpi.errors import InvalidInput, MpiError, Problem
from mpi.store import reports as store_reports

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

ALPHA = 0.01
MIN_LABELLED_PAIRS = 10  # label precision / recall from fewer pairs is withheld (its count shown)
WILSON_Z = 1.959963984540054  # 95 % two-sided
MISSING_LABEL = "(missing)"
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ACTION = "reports.linkage_quality"
Suppression = Literal["small", "complementary"]
NOTES = (
    "mean_link_probability: mpi stores no match probability per link, so this is the mean of "
    "the stored review-item probability (record_person items) over records that are now "
    "linked to a person with other records, i.e. links that passed through the review band; "
    "null where a group has no such record (link_probability_records says how many).",
    "precision and recall: from steward labels (active labelled pairs of active records; a "
    "pair counts in the group of each of its records), only pairs neither of whose records is "
    "in an active constraint: a label that became a constraint (review decisions, merges, "
    "splits, imports with constraints) is one the partition was made to agree with, so it "
    "would measure itself (constrained_pairs counts those left out). precision = labelled "
    "matches among labelled pairs now linked, recall = labelled matches now linked among "
    "labelled matches, each with its pair count and a 95% Wilson score interval; null where "
    "the group has no such pair (and everywhere when no labels exist), and withheld "
    "(precision_withheld / recall_withheld, the count still shown) under "
    + str(MIN_LABELLED_PAIRS) + " pairs.",
    "flagged: two-sided two-proportion z-test of each reported group against all other active "
    "records, on cross-agency link share and on singleton rate; Bonferroni-corrected, flagged "
    "when p < 0.01 / tests. Both outcomes are the person's, so each side's variance carries "
    "the design effect sum(m^2)/n over the persons' record counts m in that side.",
    "suppressed: groups with fewer records than the disclosure threshold report no figures; "
    "when exactly one group is that small, the next smallest is suppressed too, so the total "
    "does not reveal it.",
)


@dataclass(frozen=True)
class ProportionTest:
    """A two-sided two-proportion z-test of one group against the rest."""

    z: float
    p: float


@dataclass(frozen=True)
class GroupQuality:
    """Linkage quality of one group (figures are None when suppressed)."""

    group: str | None
    label: str
    suppressed: bool
    suppression: Suppression | None
    records: int | None
    cross_agency_link_share: float | None
    review_share: float | None
    singleton_rate: float | None
    mean_link_probability: float | None
    link_probability_records: int | None
    precision: float | None
    recall: float | None
    cross_agency_test: ProportionTest | None
    singleton_test: ProportionTest | None
    flagged: bool
    precision_pairs: int | None = None  # labelled pairs now linked (the precision's n)
    recall_pairs: int | None = None  # labelled matches (the recall's n)
    precision_interval: tuple[float, float] | None = None
    recall_interval: tuple[float, float] | None = None
    precision_withheld: bool = False  # 0 < pairs < MIN_LABELLED_PAIRS
    recall_withheld: bool = False
    constrained_pairs: int | None = None  # labelled pairs left out: a record is constrained


@dataclass(frozen=True)
class LinkageQualityReport:
    """The equity report for one attribute."""

    attribute: str
    total_records: int
    disclosure_threshold: int
    alpha: float
    tests: int
    p_threshold: float | None
    labels_available: bool
    groups: list[GroupQuality]
    flagged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=lambda: list(NOTES))


def check_attribute(name: str) -> str:
    """The attribute name if it is an ASCII identifier (at most 64 characters); else raise."""
    if not _ATTRIBUTE.match(name):
        raise InvalidInput("invalid attribute name", problems=[Problem(
            None, "by", "must be an attribute name: letters, digits and _, not starting with "
            "a digit, at most 64 characters")])
    return name


def require_known_attribute(rows: list[dict[str, Any]], name: str) -> None:
    """Raise InvalidInput (field ``by``) when records exist but none carries ``name``: an
    unknown attribute, not one group "(missing)"."""
    if rows and all(r["grp"] is None for r in rows):
        raise InvalidInput("unknown attribute", problems=[Problem(
            None, "by", f"no active record has the attribute {name!r}")])


def two_proportion_test(x1: int, n1: int, x2: int, n2: int, *, deff1: float = 1.0,
                        deff2: float = 1.0) -> ProportionTest:
    """Pooled two-proportion z-test of x1/n1 against x2/n2 (two-sided p from the normal).

    ``deff1``/``deff2`` are design effects: each side's variance is multiplied by its own, for
    outcomes shared by clustered observations (1.0: independent observations).
    """
    if n1 == 0 or n2 == 0:
        return ProportionTest(0.0, 1.0)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (deff1 / n1 + deff2 / n2))
    if se == 0:
        return ProportionTest(0.0, 1.0)
    z = (x1 / n1 - x2 / n2) / se
    return ProportionTest(z, math.erfc(abs(z) / math.sqrt(2)))


def wilson_interval(successes: int, n: int, *, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) for n = 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _label_figure(tp: int, n: int) -> tuple[float | None, tuple[float, float] | None, bool]:
    """(value, interval, withheld) of one label figure from tp of n pairs."""
    if n == 0:
        return None, None, False
    if n < MIN_LABELLED_PAIRS:
        return None, None, True
    return tp / n, wilson_interval(tp, n), False


def _suppressed(rows: Sequence[Mapping[str, Any]], threshold: int) -> dict[int, Suppression]:
    """Row index -> suppression reason (small, or complementary for a lone small group)."""
    out: dict[int, Suppression] = {i: "small" for i, r in enumerate(rows)
                                   if int(r["records"]) < threshold}
    rest = [i for i in range(len(rows)) if i not in out]
    if len(out) == 1 and rest:
        out[min(rest, key=lambda i: (int(rows[i]["records"]), i))] = "complementary"
    return out


def _share(x: Any, n: int) -> float:
    return int(x) / n if n else 0.0


def build_linkage_quality(rows: Sequence[Mapping[str, Any]], *, attribute: str,
                          threshold: int, alpha: float = ALPHA,
                          labels: Mapping[str | None, Mapping[str, int]] | None = None
                          ) -> LinkageQualityReport:
    """The report from per-group counts (``mpi.store.reports.linkage_quality_counts`` rows)
    and per-group label counts (``mpi.store.reports.label_counts``; empty: no labels)."""
    labels = labels or {}
    total = sum(int(r["records"]) for r in rows)
    cross_total = sum(int(r["cross_agency"]) for r in rows)
    single_total = sum(int(r["singletons"]) for r in rows)
    sq_total = sum(int(r["cluster_sq"]) for r in rows)
    hidden = _suppressed(rows, threshold)
    tested = [i for i in range(len(rows)) if i not in hidden and int(rows[i]["records"]) < total]
    tests = 2 * len(tested)
    p_threshold = alpha / tests if tests else None
    groups: list[GroupQuality] = []
    for i, r in enumerate(rows):
        grp = None if r["grp"] is None else str(r["grp"])
        label = MISSING_LABEL if grp is None else grp
        if i in hidden:
            groups.append(GroupQuality(grp, label, True, hidden[i], None, None, None, None,
                                       None, None, None, None, None, None, False))
            continue
        n, cross, single = int(r["records"]), int(r["cross_agency"]), int(r["singletons"])
        ct = st = None
        if i in tested:
            # Both outcomes belong to the person, so a person's records in a group move
            # together: Kish's design effect for whole-cluster outcomes, sum(m^2) / n.
            sq = int(r["cluster_sq"])
            deffs = {"deff1": sq / n, "deff2": (sq_total - sq) / (total - n)}
            ct = two_proportion_test(cross, n, cross_total - cross, total - n, **deffs)
            st = two_proportion_test(single, n, single_total - single, total - n, **deffs)
        flagged = p_threshold is not None and ct is not None and st is not None and \
            (ct.p < p_threshold or st.p < p_threshold)
        prob_n = int(r["link_probability_n"])
        label_stats = labels.get(r["grp"], {})
        tp, fp, fn = (int(label_stats.get(k, 0)) for k in ("true_links", "false_links", "missed_links"))
        precision, p_int, p_held = _label_figure(tp, tp + fp)
        recall, r_int, r_held = _label_figure(tp, tp + fn)
        groups.append(GroupQuality(
            grp, label, False, None, n, _share(cross, n), _share(r["in_review"], n),
            _share(single, n), float(r["link_probability_sum"]) / prob_n if prob_n else None,
            prob_n, precision, recall, ct, st, flagged, tp + fp, tp + fn, p_int, r_int,
            p_held, r_held, int(label_stats.get("constrained_pairs", 0))))
    return LinkageQualityReport(attribute, total, threshold, alpha, tests, p_threshold,
                                bool(labels), groups, [g.label for g in groups if g.flagged])


def linkage_quality(registry: Registry, *, attribute: str,
                    principal: str = "cli") -> LinkageQualityReport:
    """The equity report of the registry's active records by ``attribute``, audited as
    ``reports.linkage_quality`` on ``attribute:<name>`` (refusals too)."""
    target = f"attribute:{attribute}" if _ATTRIBUTE.match(attribute) else "attribute:(invalid)"
    try:
        name = check_attribute(attribute)
        cur = registry.store.cursor()
        rows = store_reports.linkage_quality_counts(cur, json_path=f"$.{name}")
        require_known_attribute(rows, name)
        labels = store_reports.label_counts(cur, json_path=f"$.{name}")
    except MpiError:
        registry.record_audit([AuditEntry(principal, ACTION, target, "invalid")])
        raise
    report = build_linkage_quality(rows, attribute=name,
                                   threshold=registry.settings.disclosure_threshold, labels=labels)
    registry.record_audit([AuditEntry(principal, ACTION, target, detail={
        "groups": len(report.groups), "flagged": len(report.flagged)})])
    return report
