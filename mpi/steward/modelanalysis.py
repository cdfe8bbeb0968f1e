"""What a model version does to the registry's records, computed without changing anything.

Owns: scoring every candidate pair of the registry (the in-memory blocking index + the scorer,
the same weights as Splink) and the partition a re-link with a version would produce (through
relink.link_result, so constraints apply exactly as in a promotion), scoring the labelled
pairs, and the label metrics and unsupervised diagnostics derived from them; a small cache per
registry state. Must not: write to the registry, run SQL or import splink.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mpi.identity import relink
from mpi.linkage.modelfile import ModelVersion
from mpi.linkage.scorer import Scorer
from mpi.linkage.splink_engine import LinkResult
from mpi.store import labels as lstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_CACHE_SIZE = 4


def _probability(weight: F64) -> F64:
    p: F64 = 1.0 / (1.0 + np.exp2(-weight))
    return p


@dataclass
class Analysis:
    """One version over one registry state: every candidate pair's weight and the partition."""

    version: str
    pair_l: I64          # record_seq of the left record of every candidate pair (l < r)
    pair_r: I64
    weight: F64          # match weight of every candidate pair under the version
    result: LinkResult   # what relink would compute (canonical clusters, constraints applied)

    @property
    def probability(self) -> F64:
        """Match probability of every candidate pair."""
        return _probability(self.weight)

    def cluster_of(self) -> tuple[I64, I64]:
        """(record_seq sorted, cluster label) of every record."""
        seq = self.result.clusters.column("unique_id").to_numpy().astype(np.int64)
        cl = self.result.clusters.column("cluster_id").to_numpy().astype(np.int64)
        return seq, cl


@dataclass
class LabelScores:
    """The active labelled pairs whose records are both active, scored under one version."""

    seq_a: I64
    seq_b: I64
    is_match: npt.NDArray[np.bool_]
    weight: F64
    skipped: int      # labels naming a record that is no longer active

    @property
    def probability(self) -> F64:
        """Match probability of every labelled pair."""
        return _probability(self.weight)


_caches: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Analysis]] = \
    weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _state_key(reg: Registry, model: ModelVersion) -> tuple[Any, ...]:
    n = reg.index.n
    return (model.version, n, int(reg.index.active[:n].sum()), reg.event_seq,
            lstore.count_labels(reg.store.cursor()), frozenset(reg.constraints.items))


def candidate_pairs(reg: Registry) -> tuple[I64, I64, dict[str, I64], dict[str, I64]]:
    """Every candidate pair of active records under the blocking rules, as record_seqs (l < r)
    with the token columns of both sides."""
    with reg.store.write_lock:
        n = reg.index.n
        rows = np.flatnonzero(reg.index.active[:n]).astype(np.int64)
        left, right = reg.index.candidates(rows)
        lcols, rcols = reg.index.gather(left), reg.index.gather(right)
        ls, rs = reg.row_seq[left].copy(), reg.row_seq[right].copy()
    swap = ls > rs
    ls[swap], rs[swap] = rs[swap], ls[swap].copy()
    return ls, rs, lcols, rcols


def analyse(reg: Registry, model: ModelVersion) -> Analysis:
    """The version's pair weights and partition over the registry now (cached per state)."""
    key = _state_key(reg, model)
    with _cache_lock:
        cached = _caches.setdefault(reg, {}).get(key)
    if cached is not None:
        return cached
    with reg.store.write_lock:  # the pairs and the re-link input are one registry state
        key = _state_key(reg, model)
        ls, rs, lcols, rcols = candidate_pairs(reg)
        table: pa.Table = reg.model_table(model.definition)
    weight = Scorer(model.definition, model.params).weights(lcols, rcols)
    if table.num_rows:
        result = relink.link_result(reg, table, model=model)
    else:
        empty = pa.array([], pa.int64())
        result = LinkResult(edges=pa.table({"unique_id_l": empty, "unique_id_r": empty}),
                            clusters=pa.table({"unique_id": empty, "cluster_id": empty}))
    out = Analysis(model.version, ls, rs, weight, result)
    with _cache_lock:
        cache = _caches.setdefault(reg, {})
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = out
    return out


def score_labels(reg: Registry, model: ModelVersion) -> LabelScores:
    """Score the active labelled pairs under ``model`` (pairs with a withdrawn record skipped)."""
    labels = lstore.active_labels(reg.store.cursor())
    a = labels.column("record_seq_a").to_numpy().astype(np.int64)
    b = labels.column("record_seq_b").to_numpy().astype(np.int64)
    is_match = labels.column("is_match").to_numpy(zero_copy_only=False).astype(bool)
    with reg.store.write_lock:
        ra, fa = reg.state.rows_for(a)
        rb, fb = reg.state.rows_for(b)
        ok = fa & fb
        lcols, rcols = reg.index.gather(ra[ok]), reg.index.gather(rb[ok])
    weight = Scorer(model.definition, model.params).weights(lcols, rcols) if ok.any() \
        else np.empty(0, dtype=np.float64)
    return LabelScores(a[ok], b[ok], is_match[ok], weight, int((~ok).sum()))


def pair_metrics(is_match: npt.NDArray[np.bool_], predicted: npt.NDArray[np.bool_]
                 ) -> dict[str, Any]:
    """Confusion counts and precision, recall, F1 (None where undefined)."""
    tp = int((is_match & predicted).sum())
    fp = int((~is_match & predicted).sum())
    fn = int((is_match & ~predicted).sum())
    tn = int((~is_match & ~predicted).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else
          (0.0 if precision is not None and recall is not None else None))
    return {"precision": precision, "recall": recall, "f1": f1, "true_positives": tp,
            "false_positives": fp, "false_negatives": fn, "true_negatives": tn}


def precision_recall_curve(scores: LabelScores, *, steps: int = 99) -> list[dict[str, Any]]:
    """Precision and recall of the labelled pairs at thresholds 0.01 .. 0.99."""
    prob = scores.probability
    out = []
    for t in np.linspace(0.01, 0.99, steps):
        m = pair_metrics(scores.is_match, prob >= t)
        out.append({"threshold": round(float(t), 4), "precision": m["precision"],
                    "recall": m["recall"]})
    return out


def cluster_sizes(analysis: Analysis) -> list[dict[str, int]]:
    """Persons per cluster size."""
    _seq, cl = analysis.cluster_of()
    if len(cl) == 0:
        return []
    _ids, counts = np.unique(cl, return_counts=True)
    sizes, persons = np.unique(counts, return_counts=True)
    return [{"size": int(s), "persons": int(p)} for s, p in zip(sizes, persons, strict=True)]


def histogram_edges(*, bins: int = 50, cuts: Sequence[float] = ()) -> npt.NDArray[np.float64]:
    """Bin edges of width 1/bins over [0, 1] with every cut (a threshold) added as an edge, so
    no bin straddles a threshold."""
    grid = np.linspace(0.0, 1.0, bins + 1)
    extra = [float(c) for c in cuts if 0.0 < c < 1.0]
    edges: npt.NDArray[np.float64] = np.unique(
        np.round(np.concatenate([grid, np.array(extra, dtype=np.float64)]), 12))
    return edges


def probability_histogram(analysis: Analysis, *, bins: int = 50,
                          cuts: Sequence[float] = ()) -> list[dict[str, Any]]:
    """Candidate pairs per match-probability bin of width 1/bins, split at each cut (e.g. the
    link and review thresholds) so that a bin lies wholly on one side of it. A bin holds
    probabilities in [start, end) (the last one also 1.0), as the thresholds compare."""
    edges = histogram_edges(bins=bins, cuts=cuts)
    p = analysis.probability
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1)
    return [{"start": round(float(edges[i]), 6), "end": round(float(edges[i + 1]), 6),
             "pairs": int(c)} for i, c in enumerate(counts)]


def review_pairs(analysis: Analysis, *, link: float, review: float) -> set[tuple[int, int]]:
    """Record pairs in the review band [review, link) whose records are in different persons."""
    p = analysis.probability
    band = (p >= review) & (p < link)
    seq, cl = analysis.cluster_of()
    if not band.any() or len(seq) == 0:
        return set()
    left, right = analysis.pair_l[band], analysis.pair_r[band]
    cl_l = cl[np.searchsorted(seq, left)]
    cl_r = cl[np.searchsorted(seq, right)]
    apart = cl_l != cl_r
    return set(zip(left[apart].tolist(), right[apart].tolist(), strict=True))


def diagnostics(analysis: Analysis, *, link: float, review: float) -> dict[str, Any]:
    """Unsupervised diagnostics: pair and person counts, uncertainty, cluster shape."""
    p = analysis.probability
    seq, cl = analysis.cluster_of()
    _ids, counts = np.unique(cl, return_counts=True) if len(cl) else (cl, cl)
    linked = p >= link
    in_review = review_pairs(analysis, link=link, review=review)
    review_records = {s for pair in in_review for s in pair}
    records = len(seq)
    return {
        "records": records,
        "candidate_pairs": int(len(p)),
        "pairs_at_or_above_link": int(linked.sum()),
        "pairs_in_review_band": int(((p >= review) & (p < link)).sum()),
        "uncertain_pair_share": float(((p > 0.05) & (p < 0.95)).mean()) if len(p) else None,
        "mean_link_probability": float(p[linked].mean()) if linked.any() else None,
        "persons": int(len(counts)),
        "singleton_rate": float((counts == 1).sum() / len(counts)) if len(counts) else None,
        "mean_records_per_person": float(records / len(counts)) if len(counts) else None,
        "largest_person": int(counts.max()) if len(counts) else 0,
        "review_items": len(in_review),
        "records_in_review_share": len(review_records) / records if records else None,
    }
