"""The equity report's label figures are not circular (Decision 87).

Owns: label precision / recall count only labelled pairs whose records carry no active
constraint, with their counts and 95% Wilson intervals, withheld under ten pairs: on a real
registry, labels imported as constraints and then enforced by a re-link no longer read
1.000 / 1.000 (they are left out and counted), while labels kept as evidence only still show
the model's disagreements; the Wilson interval and the withholding on literal counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mpi.config import Settings
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.reports import (
    MIN_LABELLED_PAIRS,
    build_linkage_quality,
    linkage_quality,
    wilson_interval,
)
from mpi.steward.labels import LabelRow, import_labels
from mpi.synth import generate


def test_wilson_interval_known_answers() -> None:
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)  # not a point
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_label_figures_carry_counts_intervals_and_are_withheld_when_few() -> None:
    rows = [{"grp": g, "records": 100, "cross_agency": 50, "singletons": 10, "cluster_sq": 150,
             "in_review": 0, "link_probability_sum": 0.0, "link_probability_n": 0}
            for g in ("few", "many")]
    labels: dict[str | None, dict[str, int]] = {"few": {"true_links": 4, "false_links": 1, "missed_links": 0,
                      "constrained_pairs": 7},
              "many": {"true_links": 40, "false_links": 10, "missed_links": 5,
                       "constrained_pairs": 0}}
    rep = build_linkage_quality(rows, attribute="x", threshold=11, labels=labels)
    few, many = rep.groups
    assert few.precision is None and few.precision_withheld and few.precision_pairs == 5
    assert few.recall is None and few.recall_withheld and few.recall_pairs == 4
    assert few.constrained_pairs == 7 and MIN_LABELLED_PAIRS > 5
    assert many.precision == pytest.approx(0.8) and many.precision_pairs == 50
    assert many.precision_interval == pytest.approx(wilson_interval(40, 50))
    assert many.recall == pytest.approx(40 / 45) and not many.recall_withheld
    assert any("Wilson" in n for n in rep.notes)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    """A linked registry of ~800 records, every record in one attribute group."""
    r = Registry(Settings(data_dir=tmp_path / "d"))
    rows, _truth = generate(people=400, agencies=2, seed=5)
    for agency, plain in rows.items():
        for rec in plain:
            rec["region"] = "north"
        recs, _ = tokenize_rows(plain, secret=demo_secret(1), attributes=["region"])
        r.enrol_records(agency, list(enumerate(recs, start=1)))
    r.link()
    yield r
    r.close()


def _pairs(reg: Registry, n: int, *, offset: int) -> tuple[list[tuple[str, str, str, str]],
                                                           list[tuple[str, str, str, str]]]:
    """n linked pairs (same person) and n unlinked pairs (adjacent persons), disjoint records."""
    t = reg.export_keys()
    recs = list(zip(t.column("agency").to_pylist(), t.column("source_record_id").to_pylist(),
                    t.column("person_key").to_pylist(), strict=True))
    by_key: dict[str, list[tuple[str, str]]] = {}
    for a, s, k in recs:
        by_key.setdefault(k, []).append((a, s))
    multi = [v for v in by_key.values() if len(v) >= 2]
    single = [v[0] for v in by_key.values() if len(v) == 1]
    linked = [(*v[0], *v[1]) for v in multi[offset: offset + n]]
    apart = [(*single[2 * i], *single[2 * i + 1])
             for i in range(offset, offset + n)]
    assert len(linked) == n and len(apart) == n
    return linked, apart


def _rows(pairs: list[tuple[str, str, str, str]], is_match: bool) -> list[LabelRow]:
    return [LabelRow(a, s, b, t, is_match, "test") for a, s, b, t in pairs]


@pytest.mark.integration
def test_labels_enforced_by_a_relink_no_longer_read_as_perfect(reg: Registry) -> None:
    linked, apart = _pairs(reg, 12, offset=0)
    linked2, apart2 = _pairs(reg, 12, offset=40)  # other records, chosen before any change
    # Constrained labels that contradict the current partition: a re-link enforces them, so
    # measured against them the partition would read 1.000 / 1.000.
    import_labels(reg, _rows(linked, False) + _rows(apart, True), principal="t", constrain=True)
    reg.link()
    only = next(g for g in linkage_quality(reg, attribute="region").groups if g.label == "north")
    assert (only.precision, only.recall) == (None, None)  # was 1.000 / 1.000 from 24 pairs
    assert only.constrained_pairs == 24 and only.precision_pairs == 0
    # Evidence-only labels on other records: the model's own disagreements.
    import_labels(reg, _rows(linked2[:9], True) + _rows(linked2[9:], False)
                  + _rows(apart2[:3], True) + _rows(apart2[3:], False),
                  principal="t", constrain=False)
    reg.link()
    north = next(g for g in linkage_quality(reg, attribute="region").groups
                 if g.label == "north")
    assert north.constrained_pairs == 24  # left out: the partition was made to agree with them
    assert north.precision_pairs == 12 and north.precision == pytest.approx(9 / 12)
    assert north.recall_pairs == 12 and north.recall == pytest.approx(9 / 12)
    assert (north.precision, north.recall) != (1.0, 1.0)
    assert north.precision_interval is not None and north.precision_interval[1] < 1.0
