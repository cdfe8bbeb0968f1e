"""Linkage accuracy: pairwise and exact-cluster precision / recall / F1.

Owns: comparing a predicted clustering of records (record -> person key) with
the ground truth (record -> person id), where a record is identified by
``(agency, source_record_id)``, and reading the two CSV shapes involved
(``truth.csv``: agency,source_record_id,person_id and ``keys.csv``:
agency,source_record_id,person_key).

Must not: do any linkage, hashing or I/O beyond ``read_truth``/``read_keys``,
or enumerate record pairs -- pair counts come from contingency counting
(sum of C(n, 2)) so a million records evaluate in seconds.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Evaluation", "Scores", "evaluate", "pair_counts", "read_keys", "read_truth"]

RecordKey = tuple[str, str]


@dataclass(frozen=True)
class Scores:
    """Precision, recall and their harmonic mean."""

    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Evaluation:
    """Pairwise and exact-cluster scores over every record of the truth.

    A truth record missing from the predicted keys (refused at intake, never enrolled) counts
    as a person of its own: a missed link, not a record to leave out. ``missing`` says how many.
    """

    pairwise: Scores
    cluster: Scores
    records: int
    true_clusters: int
    predicted_clusters: int
    missing: int = 0


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _ratio(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


def _scores(precision: float, recall: float) -> Scores:
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return Scores(precision=precision, recall=recall, f1=f1)


def _sum_pairs(counts: Iterable[int]) -> int:
    return sum(_pairs(c) for c in counts)


_MISSING = object()


def _contingency(
    truth: Mapping[RecordKey, Hashable], predicted: Mapping[RecordKey, Hashable]
) -> tuple[int, Counter[tuple[Hashable, Hashable]], Counter[Hashable], Counter[Hashable]]:
    """Return (missing count, cell sizes, true cluster sizes, predicted cluster sizes) over
    every truth record; a record without a predicted key is a singleton of its own."""
    get = predicted.get
    p_labels: list[Hashable] = [get(k, _MISSING) for k in truth]
    missing = 0
    for i, label in enumerate(p_labels):
        if label is _MISSING:
            p_labels[i] = ("missing", i)
            missing += 1
    t_labels = list(truth.values())
    cells: Counter[tuple[Hashable, Hashable]] = Counter(zip(t_labels, p_labels, strict=True))
    return missing, cells, Counter(t_labels), Counter(p_labels)


def pair_counts(
    truth: Mapping[RecordKey, Hashable], predicted: Mapping[RecordKey, Hashable]
) -> tuple[int, int, int]:
    """Return (true-positive pairs, predicted pairs, true pairs) over the truth's records."""
    _, cells, true_sizes, pred_sizes = _contingency(truth, predicted)
    return _sum_pairs(cells.values()), _sum_pairs(pred_sizes.values()), _sum_pairs(true_sizes.values())


def evaluate(truth: Mapping[RecordKey, str], predicted: Mapping[RecordKey, str]) -> Evaluation:
    """Score predicted clusters against every truth record; records without a key are
    singletons (counted in ``missing``), predicted records absent from the truth are ignored."""
    missing, cells, true_sizes, pred_sizes = _contingency(truth, predicted)
    if missing == len(truth):
        raise ValueError(
            f"no records in common between truth ({len(truth)} records) "
            f"and predicted ({len(predicted)} records)"
        )
    tp = _sum_pairs(cells.values())
    pred_pairs = _sum_pairs(pred_sizes.values())
    true_pairs = _sum_pairs(true_sizes.values())
    pairwise = _scores(_ratio(tp, pred_pairs), _ratio(tp, true_pairs))

    # A predicted cluster is exactly a true cluster iff all its records share one
    # true id and that true cluster has the same size (cell count == both sizes).
    correct = sum(1 for (t, p), c in cells.items() if c == true_sizes[t] and c == pred_sizes[p])
    cluster = _scores(correct / len(pred_sizes), correct / len(true_sizes))
    return Evaluation(
        pairwise=pairwise,
        cluster=cluster,
        records=len(truth),
        true_clusters=len(true_sizes),
        predicted_clusters=len(pred_sizes),
        missing=missing,
    )


def _read_mapping(path: Path, value_column: str) -> dict[RecordKey, str]:
    required = ("agency", "source_record_id", value_column)
    out: dict[RecordKey, str] = {}
    with Path(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in required:
            if col not in header:
                raise ValueError(f"{path}: missing required column {col!r} (header: {header})")
        for row_number, row in enumerate(reader, start=1):
            key = (row["agency"], row["source_record_id"])
            if key in out:
                raise ValueError(
                    f"{path}: row {row_number} (line {reader.line_num}): duplicate record "
                    f"(agency={key[0]!r}, source_record_id={key[1]!r})"
                )
            out[key] = row[value_column]
    return out


def read_truth(path: Path) -> dict[RecordKey, str]:
    """Read truth.csv (agency,source_record_id,person_id) into {(agency, record_id): person_id}."""
    return _read_mapping(path, "person_id")


def read_keys(path: Path) -> dict[RecordKey, str]:
    """Read keys.csv (agency,source_record_id,person_key) into {(agency, record_id): person_key}."""
    return _read_mapping(path, "person_key")
