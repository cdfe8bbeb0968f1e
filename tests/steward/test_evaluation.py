"""Tests for mpi.steward.evaluation: hand-computed scores, CSV reading errors, brute-force properties.

Owns: checks of evaluate / pair_counts / read_truth / read_keys.  Must not
rely on anything but the public API and small literal or generated inputs.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpi.steward.evaluation import Evaluation, Scores, evaluate, pair_counts, read_keys, read_truth
from mpi.synth import synthesize

R = tuple[str, str]


def _rec(i: int) -> R:
    return ("agency_a", f"A{i:06d}")


def test_perfect_match() -> None:
    truth = {_rec(1): "P1", _rec(2): "P1", _rec(3): "P2", ("agency_b", "B1"): "P2"}
    predicted = {k: f"key-{v}" for k, v in truth.items()}
    ev = evaluate(truth, predicted)
    assert ev == Evaluation(
        pairwise=Scores(1.0, 1.0, 1.0),
        cluster=Scores(1.0, 1.0, 1.0),
        records=4,
        true_clusters=2,
        predicted_clusters=2,
    )


def test_one_wrong_merge() -> None:
    # truth: {1,2} {3} {4}; predicted wrongly merges 3 and 4.
    truth = {_rec(1): "P1", _rec(2): "P1", _rec(3): "P2", _rec(4): "P3"}
    predicted = {_rec(1): "X", _rec(2): "X", _rec(3): "Y", _rec(4): "Y"}
    ev = evaluate(truth, predicted)
    # pairs: true {12}; predicted {12, 34}; TP = 1
    assert ev.pairwise.precision == pytest.approx(0.5)
    assert ev.pairwise.recall == pytest.approx(1.0)
    assert ev.pairwise.f1 == pytest.approx(2 / 3)
    # clusters: {1,2} exact; 2 predicted, 3 true
    assert ev.cluster.precision == pytest.approx(1 / 2)
    assert ev.cluster.recall == pytest.approx(1 / 3)
    assert ev.cluster.f1 == pytest.approx(0.4)
    assert (ev.records, ev.true_clusters, ev.predicted_clusters) == (4, 3, 2)


def test_one_wrong_split() -> None:
    # truth: {1,2,3} {4}; predicted splits 3 off.
    truth = {_rec(1): "P1", _rec(2): "P1", _rec(3): "P1", _rec(4): "P2"}
    predicted = {_rec(1): "X", _rec(2): "X", _rec(3): "Y", _rec(4): "Z"}
    ev = evaluate(truth, predicted)
    # pairs: true {12,13,23}; predicted {12}; TP = 1
    assert ev.pairwise.precision == pytest.approx(1.0)
    assert ev.pairwise.recall == pytest.approx(1 / 3)
    assert ev.pairwise.f1 == pytest.approx(0.5)
    # clusters: only {4} exact; 3 predicted, 2 true
    assert ev.cluster.precision == pytest.approx(1 / 3)
    assert ev.cluster.recall == pytest.approx(1 / 2)
    assert ev.cluster.f1 == pytest.approx(0.4)


def test_all_singletons_have_no_pairs() -> None:
    truth = {_rec(i): f"P{i}" for i in range(5)}
    ev = evaluate(truth, {k: "k" + v for k, v in truth.items()})
    assert ev.pairwise == Scores(1.0, 1.0, 1.0)
    lumped = evaluate(truth, {k: "one" for k in truth})
    assert lumped.pairwise.precision == 0.0
    assert lumped.pairwise.recall == 1.0
    assert lumped.pairwise.f1 == 0.0
    assert lumped.cluster == Scores(0.0, 0.0, 0.0)


def test_records_without_a_key_count_as_singletons() -> None:
    truth = {_rec(1): "P1", _rec(2): "P1", _rec(3): "P2", _rec(4): "P2"}
    predicted = {_rec(1): "X", _rec(2): "X", _rec(3): "Y", _rec(99): "X"}
    ev = evaluate(truth, predicted)
    assert ev.records == 4 and ev.missing == 1
    # P2's pair (3, 4) is missed: record 4 was never keyed
    assert ev.pairwise == Scores(1.0, 0.5, 2 / 3)
    assert ev.predicted_clusters == 3 and ev.cluster.recall == 0.5
    with pytest.raises(ValueError, match="no records in common"):
        evaluate(truth, {_rec(50): "X"})


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_truth_and_keys(tmp_path: Path) -> None:
    truth = read_truth(
        _write(tmp_path / "truth.csv", "agency,source_record_id,person_id\na,1,P1\na,2,P1\nb,1,P2\n")
    )
    keys = read_keys(
        _write(tmp_path / "keys.csv", "agency,source_record_id,person_key\nb,1,K2\na,2,K1\na,1,K1\n")
    )
    assert truth == {("a", "1"): "P1", ("a", "2"): "P1", ("b", "1"): "P2"}
    assert keys[("b", "1")] == "K2"
    assert evaluate(truth, keys).cluster.f1 == 1.0


def test_read_rejects_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "keys.csv", "agency,source_record_id,person_id\na,1,P1\n")
    with pytest.raises(ValueError, match=r"keys\.csv.*person_key"):
        read_keys(path)
    path = _write(tmp_path / "truth.csv", "agency,person_id\na,P1\n")
    with pytest.raises(ValueError, match=r"truth\.csv.*source_record_id"):
        read_truth(path)


def test_read_rejects_duplicate_record(tmp_path: Path) -> None:
    path = _write(tmp_path / "truth.csv", "agency,source_record_id,person_id\na,1,P1\na,2,P1\na,1,P2\n")
    with pytest.raises(ValueError, match=r"truth\.csv.*row 3"):
        read_truth(path)


def test_synthetic_truth_scores_perfectly(tmp_path: Path) -> None:
    summary = synthesize(people=200, agencies=3, seed=3, out_dir=tmp_path)
    truth = read_truth(summary.truth)
    assert len(truth) == summary.records
    ev = evaluate(truth, dict(truth))
    assert ev.pairwise.f1 == ev.cluster.f1 == 1.0
    assert ev.true_clusters <= 200


@pytest.mark.integration
def test_large_input_is_fast() -> None:
    n = 300_000
    truth = {("a", str(i)): f"P{i // 2}" for i in range(n)}
    predicted = {("a", str(i)): f"K{i // 3}" for i in range(n)}
    start = time.perf_counter()
    ev = evaluate(truth, predicted)
    assert time.perf_counter() - start < 5.0
    # blocks of 6 records: true pairs {01,23,45}, predicted {012,345} -> 6 pairs, TP {01,45}
    assert ev.pairwise.precision == pytest.approx(2 / 6)
    assert ev.pairwise.recall == pytest.approx(2 / 3)


def _brute(labels_t: list[int], labels_p: list[int]) -> tuple[int, int, int]:
    tp = pp = tt = 0
    for i, j in itertools.combinations(range(len(labels_t)), 2):
        same_t = labels_t[i] == labels_t[j]
        same_p = labels_p[i] == labels_p[j]
        tp += same_t and same_p
        pp += same_p
        tt += same_t
    return tp, pp, tt


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=40).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 6), min_size=n, max_size=n),
            st.lists(st.integers(0, 6), min_size=n, max_size=n),
        )
    )
)
def test_pair_counts_match_brute_force(labels: tuple[list[int], list[int]]) -> None:
    labels_t, labels_p = labels
    truth = {_rec(i): f"P{v}" for i, v in enumerate(labels_t)}
    predicted = {_rec(i): f"K{v}" for i, v in enumerate(labels_p)}
    tp, pp, tt = _brute(labels_t, labels_p)
    assert pair_counts(truth, predicted) == (tp, pp, tt)
    ev = evaluate(truth, predicted)
    assert ev.pairwise.precision == pytest.approx(1.0 if pp == 0 else tp / pp)
    assert ev.pairwise.recall == pytest.approx(1.0 if tt == 0 else tp / tt)
    # exact-cluster matches by brute force over record sets
    def clusters(lab: list[int]) -> set[frozenset[int]]:
        return {frozenset(i for i, v in enumerate(lab) if v == c) for c in set(lab)}

    ct, cp = clusters(labels_t), clusters(labels_p)
    correct = len(ct & cp)
    assert ev.cluster.precision == pytest.approx(correct / len(cp))
    assert ev.cluster.recall == pytest.approx(correct / len(ct))
    assert (ev.true_clusters, ev.predicted_clusters) == (len(ct), len(cp))
