"""The linkage-quality report shipped with every research extract (issue #5 §3).

Owns: each extract record's link match probability and probability of a missed match, scored
with the registry's in-memory blocking index and NumPy scorer (the online executor's exact
weights); the label-based, model-based and label-calibrated false- and missed-match rates,
overall and per demographic group with small-group suppression; the report's JSON shape and
Markdown text.
Must not: run SQL, write files, or put a record number, person key or token into the report
(groups are released attribute values; everything else is a count or a rate).

Estimators (repeated in the report's ``estimators`` and in README Decisions):
- link probability of a record: the highest match probability between it and any other active
  record of the same person, whether or not blocking would pair them (for a person with more
  than 200 active records, over the pairs blocking forms); null for a record whose person has no
  other active record (a singleton).
- model false-match rate: mean of (1 - link probability) over linked records, the expected share
  of linked records whose strongest link is a false match.
- model missed-match rate: mean over records of min(1, sum over other persons A of the highest
  match probability between the record and a record of A), over the pairs the model's blocking
  rules produce. A record belongs to at most one true person, so these events are exclusive and
  their probabilities add; the sum is the chance the record has a true match outside its person.
- label rates: over active labels whose two records are both still active and at least one is
  an extract row: false-match rate = pairs linked (same person) but labelled different / pairs
  linked; missed-match rate = pairs labelled the same person but not linked / pairs labelled
  the same person. Null when there are no such pairs.
- label-calibrated model rates: Fellegi-Sunter probabilities are often over-confident, so every
  active label (anywhere in the registry) calibrates them: per probability bin, the labelled
  pairs' share of true matches, shrunk towards the bin's mean model probability with the weight
  of 10 pairs; the two model rates are then recomputed with each probability replaced by its
  bin's calibrated one (bins without labels keep the model's). Null without labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mpi.linkage.index import BlockingIndex
from mpi.linkage.scorer import Scorer

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
MISSING_GROUP = "(missing)"
_CHUNK = 500_000  # pairs scored at once (bounds the gathered token columns' memory)
MAX_PAIRED_PERSON = 200  # persons up to this many records get all their pairs scored
_DIGITS = 6

ESTIMATORS: dict[str, str] = {
    "link_probability": "Highest match probability (registry's active model, in-memory scorer) "
                        "between the record and any other active record of the same person "
                        "(for a person with more than 200 active records, among the pairs the "
                        "blocking rules form); null when the person has no other active record "
                        "(singleton).",
    "model_false_match_rate": "Mean of (1 - link probability) over linked records: the expected "
                              "share of linked records whose strongest link is a false match.",
    "model_missed_match_rate": "Mean over records of min(1, sum over other persons of the "
                               "highest match probability between the record and that person's "
                               "records), over the candidate pairs the model's blocking rules "
                               "produce: the expected share of records with a true match outside "
                               "their person. Pairs blocking never produces are not counted.",
    "label_false_match_rate": "Among active steward labels whose records are both still active "
                              "and at least one is an extract row (in the group): pairs now "
                              "linked to one person but labelled different persons / pairs now "
                              "linked. Null without such labels.",
    "label_missed_match_rate": "Among the same labels: pairs labelled the same person but linked "
                               "to different persons / pairs labelled the same person. Null "
                               "without such labels. Both label rates carry a 95% Wilson score "
                               "interval (*_ci95); labelled pairs are rarely a random sample, so "
                               "read them as the quality on the kind of pairs stewards label.",
    "caution": "The raw model rates take the Fellegi-Sunter probabilities at face value; those "
               "are usually over-confident (independence of the comparisons), so the raw rates "
               "can be off by one or two orders of magnitude. Prefer the calibrated rates, and "
               "the label rates with their intervals, when labels exist.",
    "calibrated_rates": "The two model rates recomputed with each match probability replaced by "
                        "its bin's label-calibrated probability: (matches + 10 x mean model "
                        "probability) / (labelled pairs + 10) among the active labels whose "
                        "model probability falls in the bin (bins without labels keep the "
                        "model's probability); see calibration. Null without labels.",
    "groups": "A record's group is its person's value of the demographic attribute on any of "
              "their released rows: \"(multiple)\" when the person has several values, "
              "\"(missing)\" when none.",
    "suppression": "Groups with fewer persons than the disclosure threshold report no figures; "
                   "when exactly one group is that small, the next smallest is suppressed too "
                   "(as the equity report does), so the total does not reveal it. In an "
                   "aggregate extract groups report rates only, never counts, so the report "
                   "cannot undo the tables' cell suppression.",
}


CALIBRATION_EDGES = (0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0)
PRIOR_PAIRS = 10.0  # a bin's model probability counts as this many labelled pairs


@dataclass(frozen=True)
class Calibration:
    """Per probability bin: labelled pairs, true matches among them, their mean model
    probability and the calibrated match probability (NaN for a bin without labels)."""

    edges: F64
    pairs: I64
    matches: I64
    mean_probability: F64
    probability: F64

    @property
    def available(self) -> bool:
        """Whether any bin has labels."""
        return bool(self.pairs.sum())

    def apply(self, p: F64) -> F64:
        """Each probability replaced by its bin's calibrated one (kept where the bin has none)."""
        b = np.clip(np.searchsorted(self.edges, p, side="right") - 1, 0, len(self.pairs) - 1)
        cal = self.probability[b]
        out: F64 = np.where(np.isnan(cal), p, cal)
        return out


def calibration(probability: F64, is_match: npt.NDArray[np.bool_]) -> Calibration:
    """Bin labelled pairs by model probability; shrink each bin's match share to its mean."""
    edges = np.array(CALIBRATION_EDGES)
    nb = len(edges) - 1
    b = np.clip(np.searchsorted(edges, probability, side="right") - 1, 0, nb - 1)
    pairs = np.bincount(b, minlength=nb).astype(np.int64)
    matches = np.bincount(b, weights=is_match.astype(np.float64), minlength=nb).astype(np.int64)
    sums = np.bincount(b, weights=probability, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(pairs > 0, sums / np.maximum(pairs, 1), np.nan)
        cal = np.where(pairs > 0, (matches + PRIOR_PAIRS * mean) / (pairs + PRIOR_PAIRS), np.nan)
    return Calibration(edges, pairs, matches, mean, cal)


@dataclass(frozen=True)
class RecordEvidence:
    """Per extract record: link probability (NaN for singletons) and missed-match probability."""

    link_probability: F64
    missed_probability: F64
    missed_calibrated: F64  # the same with label-calibrated probabilities (= missed without labels)
    within_pairs: int
    candidate_pairs: int


def active_rows(index: BlockingIndex, record_seqs: I64) -> I64:
    """The index row of each active record (by record_seq); -1 where a record is not active."""
    rows, found = index.rows_for(record_seqs)
    out: I64 = np.where(found, rows, -1).astype(np.int64)
    return out


def _weights(index: BlockingIndex, scorer: Scorer, left: I64, right: I64) -> F64:
    """Match weights of index-row pairs, scored in chunks."""
    out = np.empty(len(left), dtype=np.float64)
    for s in range(0, len(left), _CHUNK):
        e = s + _CHUNK
        out[s:e] = scorer.weights(index.gather(left[s:e]), index.gather(right[s:e]))
    return out


def pair_probabilities(index: BlockingIndex, scorer: Scorer, left: I64, right: I64) -> F64:
    """The model's match probability of each pair of index rows."""
    return _probability(_weights(index, scorer, left, right))


def _probability(weights: F64) -> F64:
    p: F64 = 1.0 / (1.0 + np.exp2(-weights))
    return p


def _within_pairs(labels: I64) -> tuple[I64, I64]:
    """All (i, j), i < j, positions in a label-sorted array that share a label."""
    n = len(labels)
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group = np.repeat(np.arange(len(starts)), sizes)
    partners = sizes[group] - 1 - (np.arange(n) - starts[group])
    left = np.repeat(np.arange(n, dtype=np.int64), partners)
    first = np.cumsum(partners) - partners
    right = left + 1 + (np.arange(len(left), dtype=np.int64) - np.repeat(first, partners))
    return left, right


def _blocked_best(index: BlockingIndex, scorer: Scorer, rows: I64) -> tuple[F64, int]:
    """Per row, the best weight to another record of its person among blocked candidates."""
    q, cand = index.query(index.gather(rows))
    same = (index.label[cand] == index.label[rows[q]]) & (cand != rows[q])
    q, cand = q[same], cand[same]
    best = np.full(len(rows), -np.inf)
    if len(q):
        np.maximum.at(best, q, _weights(index, scorer, rows[q], cand))
    return best, len(q)


def link_probabilities(index: BlockingIndex, scorer: Scorer, rows: I64) -> tuple[F64, int]:
    """Per row (active index rows), the best match probability to another active record of the
    same person (NaN: none), and how many within-person pairs were scored.

    Persons with at most ``MAX_PAIRED_PERSON`` active records have every pair scored; for larger
    ones (a bridged cluster would need millions of pairs) only the pairs blocking forms.
    """
    n = index.n
    persons = np.unique(index.label[rows])
    live = np.flatnonzero(index.active[:n])
    members = live[np.isin(index.label[live], persons)]
    members = members[np.argsort(index.label[members], kind="stable")]
    labels = index.label[members]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if len(labels) else labels
    sizes = np.diff(np.r_[starts, len(labels)])
    large = np.repeat(sizes > MAX_PAIRED_PERSON, sizes)
    small = members[~large]
    left, right = _within_pairs(index.label[small])
    best = np.full(len(small), -np.inf)
    if len(left):
        w = _weights(index, scorer, small[left], small[right])
        np.maximum.at(best, left, w)
        np.maximum.at(best, right, w)
    chosen = np.full(len(rows), -np.inf)
    in_small = np.isin(rows, small)
    order = np.argsort(small, kind="stable")
    chosen[in_small] = best[order[np.searchsorted(small[order], rows[in_small])]]
    scored = len(left)
    if not in_small.all():
        blocked, extra = _blocked_best(index, scorer, rows[~in_small])
        chosen[~in_small] = blocked
        scored += extra
    finite = np.isfinite(chosen)
    out = np.where(finite, _probability(np.where(finite, chosen, 0.0)), np.nan)
    return out, scored


def missed_probabilities(index: BlockingIndex, scorer: Scorer, rows: I64,
                         cal: Calibration | None = None) -> tuple[F64, F64, int]:
    """Per row, min(1, sum over other persons of the best match probability to that person's
    records) over blocked candidate pairs; the same with calibrated probabilities (``cal``);
    and how many candidate pairs were scored."""
    q, cand = index.query(index.gather(rows))
    other = index.label[cand] != index.label[rows[q]]
    q, cand = q[other], cand[other]
    out = np.zeros(len(rows), dtype=np.float64)
    if len(q) == 0:
        return out, out.copy(), 0
    p = _probability(_weights(index, scorer, rows[q], cand))
    span = np.int64(int(index.label[cand].max()) + 1)
    key = q * span + index.label[cand]
    order = np.argsort(key, kind="stable")
    key, p = key[order], p[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    best = np.maximum.reduceat(p, starts)
    owner = key[starts] // span
    raw = np.bincount(owner, weights=best, minlength=len(rows))
    calibrated = raw if cal is None or not cal.available else np.bincount(
        owner, weights=cal.apply(best), minlength=len(rows))
    return np.minimum(raw, 1.0), np.minimum(calibrated, 1.0), len(q)


def record_evidence(index: BlockingIndex, scorer: Scorer, rows: I64,
                    cal: Calibration | None = None) -> RecordEvidence:
    """Link and missed-match probabilities of extract records (active index ``rows``).

    Reads the index: pass a snapshot (``BlockingIndex.snapshot``) or hold the write lock.
    """
    link, within = link_probabilities(index, scorer, rows)
    missed, missed_cal, candidates = missed_probabilities(index, scorer, rows, cal)
    return RecordEvidence(link, missed, missed_cal, within, candidates)


@dataclass(frozen=True)
class LabelPairs:
    """Active labels whose records are both active: record_seqs, label and current link."""

    seq_a: I64
    seq_b: I64
    is_match: npt.NDArray[np.bool_]
    linked: npt.NDArray[np.bool_]
    probability: F64  # the model's match probability of the pair


def label_pairs(index: BlockingIndex, scorer: Scorer, labels: pa.Table) -> LabelPairs:
    """Resolve ``mpi.store.labels.active_labels`` rows against the current persons and score
    each pair with the model."""
    a = np.asarray(labels.column("record_seq_a").to_numpy(), dtype=np.int64)
    b = np.asarray(labels.column("record_seq_b").to_numpy(), dtype=np.int64)
    match = np.asarray(labels.column("is_match").to_numpy(zero_copy_only=False), dtype=bool)
    ra, rb = active_rows(index, a), active_rows(index, b)
    keep = (ra >= 0) & (rb >= 0)
    ra, rb = ra[keep], rb[keep]
    linked = index.label[ra] == index.label[rb]
    p = _probability(_weights(index, scorer, ra, rb)) if len(ra) else np.empty(0)
    return LabelPairs(a[keep], b[keep], match[keep], linked, p)


# ---- the report ---------------------------------------------------------------------------
def _round(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), _DIGITS)


def _rate(num: int, den: int) -> float | None:
    return _round(num / den) if den else None


def wilson_interval(num: int, den: int, *, z: float = 1.959964) -> list[float] | None:
    """95% Wilson score interval of num/den ([low, high]); None when den is 0."""
    if not den:
        return None
    p = num / den
    centre = (p + z * z / (2 * den)) / (1 + z * z / den)
    half = z * np.sqrt(p * (1 - p) / den + z * z / (4 * den * den)) / (1 + z * z / den)
    return [max(0.0, round(float(centre - half), _DIGITS)),
            min(1.0, round(float(centre + half), _DIGITS))]


def _figures(link: F64, missed: F64, missed_cal: F64, cal: Calibration,
             pair_linked: npt.NDArray[np.bool_], pair_match: npt.NDArray[np.bool_]
             ) -> dict[str, Any]:
    """The figures of one set of records and the label pairs that touch it."""
    linked = ~np.isnan(link)
    calibrated: dict[str, Any] = {"false_match_rate": None, "missed_match_rate": None}
    if cal.available:
        calibrated = {
            "false_match_rate": _round(float((1.0 - cal.apply(link[linked])).mean()))
            if linked.any() else None,
            "missed_match_rate": _round(float(missed_cal.mean())) if len(missed_cal) else None}
    n_linked = int(linked.sum())
    linked_pairs = int(pair_linked.sum())
    false_pairs = int((pair_linked & ~pair_match).sum())
    match_pairs = int(pair_match.sum())
    missed_pairs = int((pair_match & ~pair_linked).sum())
    return {
        "records": len(link), "linked_records": n_linked, "singleton_records": len(link) - n_linked,
        "mean_link_probability": _round(float(link[linked].mean())) if n_linked else None,
        "model": {
            "false_match_rate": _round(float((1.0 - link[linked]).mean())) if n_linked else None,
            "missed_match_rate": _round(float(missed.mean())) if len(missed) else None,
            "expected_false_links": _round(float((1.0 - link[linked]).sum())),
            "expected_records_with_missed_match": _round(float(missed.sum())),
        },
        "calibrated": calibrated,
        "labels": {
            "pairs": len(pair_linked), "linked_pairs": linked_pairs,
            "false_matches": false_pairs, "false_match_rate": _rate(false_pairs, linked_pairs),
            "false_match_rate_ci95": wilson_interval(false_pairs, linked_pairs),
            "match_pairs": match_pairs, "missed_matches": missed_pairs,
            "missed_match_rate": _rate(missed_pairs, match_pairs),
            "missed_match_rate_ci95": wilson_interval(missed_pairs, match_pairs),
        },
    }


def _suppressed(sizes: Sequence[int], threshold: int) -> dict[int, str]:
    """Group index -> "small" or "complementary" (a lone small group takes the next smallest)."""
    out = {i: "small" for i, s in enumerate(sizes) if s < threshold}
    rest = [i for i in range(len(sizes)) if i not in out]
    if len(out) == 1 and rest:
        out[min(rest, key=lambda i: (sizes[i], i))] = "complementary"
    return out


def _pair_positions(seqs: I64, pairs: LabelPairs) -> tuple[I64, I64]:
    """Position of each label pair's records among the extract rows (-1: not an extract row)."""
    order = np.argsort(seqs, kind="stable")
    s = seqs[order]

    def find(x: I64) -> I64:
        if len(s) == 0:
            return np.full(len(x), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(s, x), len(s) - 1)
        found: I64 = np.where(s[pos] == x, order[pos], -1).astype(np.int64)
        return found

    return find(pairs.seq_a), find(pairs.seq_b)


def _group_codes(values: pa.Array | pa.ChunkedArray) -> tuple[list[str], I64]:
    """Sorted group labels (nulls as "(missing)") and each row's group index."""
    arr = pc.fill_null(pc.cast(values, pa.string()), MISSING_GROUP)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = pc.dictionary_encode(arr)
    names = enc.dictionary.to_pylist()
    order = sorted(range(len(names)), key=lambda i: (names[i] == MISSING_GROUP, names[i]))
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    codes: I64 = rank[np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)]
    return [names[i] for i in order], codes


_COUNTS = ("records", "linked_records", "singleton_records")
_MODEL_COUNTS = ("expected_false_links", "expected_records_with_missed_match")
_LABEL_COUNTS = ("pairs", "linked_pairs", "false_matches", "match_pairs", "missed_matches",
                 "false_match_rate_ci95", "missed_match_rate_ci95")  # an interval's width is a count


def _rates_only(figures: dict[str, Any]) -> dict[str, Any]:
    """A group's figures without any count (rates and means only)."""
    out = {k: v for k, v in figures.items() if k not in _COUNTS}
    out["model"] = {k: v for k, v in figures["model"].items() if k not in _MODEL_COUNTS}
    out["labels"] = {k: v for k, v in figures["labels"].items() if k not in _LABEL_COUNTS}
    return out


def _calibration_table(cal: Calibration, *, counts: bool) -> list[dict[str, Any]]:
    rows = []
    for i in range(len(cal.pairs)):
        row: dict[str, Any] = {"from": float(cal.edges[i]), "to": float(cal.edges[i + 1])}
        if counts:
            row.update(labelled_pairs=int(cal.pairs[i]), matches=int(cal.matches[i]))
        row.update(mean_model_probability=_round(float(cal.mean_probability[i])),
                   calibrated_probability=_round(float(cal.probability[i])))
        rows.append(row)
    return rows


def build_report(*, record_seqs: I64, person_codes: I64, link: F64, missed: F64,
                 missed_calibrated: F64, cal: Calibration,
                 pairs: LabelPairs, groups: Mapping[str, pa.Array | pa.ChunkedArray],
                 threshold: int, model_version: str, thresholds: Mapping[str, float],
                 scored: Mapping[str, int], group_counts: bool = True) -> dict[str, Any]:
    """The linkage-quality report over the extract's records (arrays aligned with the rows;
    ``person_codes`` numbers each row's person). Groups of fewer than ``threshold`` persons are
    suppressed; with ``group_counts`` false (aggregate extracts, whose rows are not released)
    the overall figures and the groups carry rates only, so the report adds no count to the
    published cells."""
    pa_pos, pb_pos = _pair_positions(record_seqs, pairs)
    touch = (pa_pos >= 0) | (pb_pos >= 0)
    overall = _figures(link, missed, missed_calibrated, cal, pairs.linked[touch],
                       pairs.is_match[touch])
    if not group_counts:
        overall = _rates_only(overall)
    by_group: dict[str, list[dict[str, Any]]] = {}
    for name, values in groups.items():
        labels, codes = _group_codes(values)
        span = np.int64(int(person_codes.max()) + 1) if len(person_codes) else np.int64(1)
        distinct = np.unique(codes * span + person_codes) // span if len(codes) else codes
        persons = np.bincount(distinct, minlength=len(labels)).tolist()
        hidden = _suppressed(persons, threshold)
        ga = np.where(pa_pos >= 0, codes[np.maximum(pa_pos, 0)], -1) if len(codes) else pa_pos
        gb = np.where(pb_pos >= 0, codes[np.maximum(pb_pos, 0)], -1) if len(codes) else pb_pos
        rows: list[dict[str, Any]] = []
        for g, label in enumerate(labels):
            if g in hidden:
                rows.append({"group": label, "suppressed": True, "suppression": hidden[g]})
                continue
            sel = codes == g
            pair_sel = (ga == g) | (gb == g)
            figures = _figures(link[sel], missed[sel], missed_calibrated[sel], cal,
                               pairs.linked[pair_sel], pairs.is_match[pair_sel])
            if group_counts:
                figures = {"persons": persons[g], **figures}
            rows.append({"group": label, "suppressed": False,
                         **(figures if group_counts else _rates_only(figures))})
        by_group[name] = rows
    return {
        "model": {"version": model_version, "thresholds": dict(thresholds)},
        "estimators": dict(ESTIMATORS),
        "disclosure_threshold": threshold,
        "group_counts": group_counts,
        "pairs_scored": dict(scored),
        "labels_available": bool(len(pairs.is_match)),
        "calibration": {"prior_pairs": PRIOR_PAIRS,
                        "bins": _calibration_table(cal, counts=group_counts)},
        "overall": overall,
        "by_group": by_group,
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _with_ci(labels: Mapping[str, Any], rate: str) -> str:
    ci = labels.get(f"{rate}_ci95")
    text = _fmt(labels[rate])
    return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text


def report_markdown(report: Mapping[str, Any], *, title: str) -> str:
    """The report as Markdown for people: model, overall figures, groups, calibration,
    estimators."""
    model = report["model"]
    th = model["thresholds"]
    lines = [f"# Linkage quality: {title}", "",
             f"Model `{model['version']}`; link threshold {th['link']}, review threshold "
             f"{th['review']} (match probability).", "",
             "| group | records | linked | mean link p | model false-match | model missed-match "
             "| calibrated false-match | calibrated missed-match | labelled pairs "
             "| label false-match | label missed-match |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def row(name: str, f: Mapping[str, Any]) -> str:
        if f.get("suppressed"):
            return f"| {name} | suppressed ({f['suppression']}) |" + "  |" * 9
        m, c, lab = f["model"], f["calibrated"], f["labels"]
        return (f"| {name} | {_fmt(f.get('records'))} | {_fmt(f.get('linked_records'))} | "
                f"{_fmt(f['mean_link_probability'])} | {_fmt(m['false_match_rate'])} | "
                f"{_fmt(m['missed_match_rate'])} | {_fmt(c['false_match_rate'])} | "
                f"{_fmt(c['missed_match_rate'])} | {_fmt(lab.get('pairs'))} | "
                f"{_with_ci(lab, 'false_match_rate')} | {_with_ci(lab, 'missed_match_rate')} |")

    lines.append(row("**all records**", report["overall"]))
    for attr, groups in report["by_group"].items():
        lines.extend(row(f"{attr} = {g['group']}", g) for g in groups)
    cal = report["calibration"]
    lines += ["", f"## Calibration by steward labels (prior weight {cal['prior_pairs']:g} pairs)",
              "", "| model probability | labelled pairs | matches | mean model p | calibrated p |",
              "| --- | --- | --- | --- | --- |"]
    lines.extend(f"| {b['from']:g}–{b['to']:g} | {_fmt(b.get('labelled_pairs'))} | "
                 f"{_fmt(b.get('matches'))} | {_fmt(b['mean_model_probability'])} | "
                 f"{_fmt(b['calibrated_probability'])} |" for b in cal["bins"])
    lines += ["", "## How each figure is estimated", ""]
    lines.extend(f"- **{k}**: {v}" for k, v in report["estimators"].items())
    return "\n".join(lines) + "\n"
