"""Tests for mpi.identity.keys: minting opaque keys and reconciling a new partition with issued keys.

Owns: the key rules on literal arrays (merge, split, tie, unchanged, new records) and
hypothesis properties over random old/new partitions.
"""

from __future__ import annotations

import inspect
import random
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpi.identity.keys import KEY_PREFIX, Reconciliation, mint_key, reconcile


def arr(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def run(seq: list[int], old: list[int], cluster: list[int], rank: list[int]) -> Reconciliation:
    return reconcile(record_seq=arr(*seq), old_key=arr(*old), cluster=arr(*cluster),
                     key_rank=arr(*rank))


# ---- literal cases ---------------------------------------------------------------------------
def test_merge_older_key_survives_other_retired_with_successor() -> None:
    rec = run([1, 2, 3, 4], [0, 0, 1, 1], [7, 7, 7, 7], [0, 1])
    assert rec.record_key.tolist() == [0, 0, 0, 0]
    assert rec.retired == [(1, 0)]
    assert rec.lineage == [(1, 0, "merge")]
    assert rec.n_new == 0
    assert (rec.merges, rec.splits) == (1, 0)


def test_merge_age_comes_from_key_rank_not_index() -> None:
    # Key 1 is older (rank 0) although its records are newer and fewer.
    rec = run([1, 2, 3], [0, 0, 1], [5, 5, 5], [1, 0])
    assert rec.record_key.tolist() == [1, 1, 1]
    assert rec.retired == [(0, 1)]
    assert rec.lineage == [(0, 1, "merge")]


def test_merge_of_three_keys() -> None:
    rec = run([1, 2, 3, 4, 5], [2, 0, 1, 1, 2], [3, 3, 3, 3, 3], [2, 0, 1])
    assert rec.record_key.tolist() == [1] * 5
    assert sorted(rec.retired) == [(0, 1), (2, 1)]
    assert sorted(rec.lineage) == [(0, 1, "merge"), (2, 1, "merge")]
    assert rec.merges == 2


def test_split_majority_part_keeps_key_other_part_gets_new_key_with_lineage() -> None:
    rec = run([1, 2, 3], [0, 0, 0], [10, 20, 20], [0])
    assert rec.n_new == 1
    assert rec.record_key.tolist() == [1, 0, 0]   # the two-record part keeps key 0
    assert rec.minted_from == {1: [0]}
    assert rec.lineage == [(0, 1, "split")]
    assert rec.retired == []
    assert (rec.merges, rec.splits) == (0, 1)


def test_split_tie_goes_to_part_with_oldest_record() -> None:
    # Records given out of age order: seq 1 and 2 are in cluster 9, seq 3 and 4 in cluster 8.
    rec = run([4, 1, 3, 2], [0, 0, 0, 0], [8, 9, 8, 9], [0])
    assert rec.record_key.tolist() == [1, 0, 1, 0]
    assert rec.minted_from == {1: [0]}
    assert rec.lineage == [(0, 1, "split")]


def test_split_in_three() -> None:
    rec = run([1, 2, 3, 4, 5, 6], [0] * 6, [1, 1, 1, 2, 2, 3], [0])
    assert rec.record_key[:3].tolist() == [0, 0, 0]
    assert rec.n_new == 2
    assert len(set(rec.record_key[3:5].tolist())) == 1
    new = {int(rec.record_key[3]), int(rec.record_key[5])}
    assert new == {1, 2}
    assert rec.minted_from == {1: [0], 2: [0]}
    assert sorted(rec.lineage) == [(0, 1, "split"), (0, 2, "split")]
    assert rec.splits == 2


def test_unchanged_partition_changes_nothing() -> None:
    old = [0, 0, 1, 2, 2, 2]
    rec = run([1, 2, 3, 4, 5, 6], old, [40, 40, 7, 1, 1, 1], [2, 0, 1])
    assert rec.record_key.tolist() == old
    assert (rec.n_new, rec.retired, rec.lineage, rec.minted_from) == (0, [], [], {})


def test_new_records_join_existing_key_or_get_new_key() -> None:
    rec = run([1, 2, 3, 4], [0, -1, -1, -1], [5, 5, 6, 6], [0])
    assert rec.record_key.tolist() == [0, 0, 1, 1]
    assert rec.n_new == 1
    assert rec.minted_from == {1: []}
    assert (rec.merges, rec.splits, rec.lineage) == (0, 0, [])


def test_keys_without_records_are_untouched_and_new_keys_start_after_all_keys() -> None:
    # Keys 0 and 2 have no records any more (retired earlier); new keys start at 3.
    rec = run([5, 6], [-1, 1], [0, 1], [0, 1, 2])
    assert rec.record_key.tolist() == [3, 1]
    assert rec.retired == []


def test_minority_part_moved_into_another_existing_key() -> None:
    # Key 0 has 3 records; one of them now clusters with key 1's records.
    rec = run([1, 2, 3, 4, 5], [0, 0, 0, 1, 1], [1, 1, 2, 2, 2], [0, 1])
    assert rec.record_key.tolist() == [0, 0, 1, 1, 1]
    assert rec.lineage == [(0, 1, "moved")]
    assert rec.retired == []
    assert rec.n_new == 0


def test_empty_input() -> None:
    rec = run([], [], [], [0, 1])
    assert rec.record_key.tolist() == []
    assert rec.n_new == 0


# ---- mint_key ---------------------------------------------------------------------------------
def test_mint_key_format_and_uniqueness() -> None:
    keys = [mint_key() for _ in range(20_000)]
    assert len(set(keys)) == len(keys)
    pattern = re.compile(rf"^{KEY_PREFIX}[a-z2-7]{{20}}$")
    assert all(pattern.match(k) for k in keys)
    # 100 bits of fresh randomness: every character position takes many values.
    for pos in range(len(KEY_PREFIX), len(KEY_PREFIX) + 20):
        assert len({k[pos] for k in keys}) >= 30


def test_mint_key_takes_no_input() -> None:
    assert inspect.signature(mint_key).parameters == {}


def test_reconcile_returns_indices_only() -> None:
    rec = run([1, 2], [0, -1], [1, 2], [0])
    assert rec.record_key.dtype == np.int64
    assert all(isinstance(k, int) for k in rec.minted_from)


# ---- properties -------------------------------------------------------------------------------
@st.composite
def scenarios(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 40))
    n_keys = draw(st.integers(0, 8))
    seq = draw(st.permutations(list(range(1, 3 * n + 2))))[:n]
    key_choice = st.integers(-1, n_keys - 1) if n_keys else st.just(-1)
    old = draw(st.lists(key_choice, min_size=n, max_size=n))
    cluster_ids = draw(st.lists(st.integers(-5, 10_000), min_size=1, max_size=10, unique=True))
    cluster = draw(st.lists(st.sampled_from(cluster_ids), min_size=n, max_size=n))
    rank = draw(st.permutations(list(range(n_keys))))
    return arr(*seq), arr(*old), arr(*cluster), arr(*rank)


def _check(seq: np.ndarray, old: np.ndarray, cluster: np.ndarray, rank: np.ndarray,
           rec: Reconciliation) -> None:
    n, n_keys = len(seq), len(rank)
    # Every record gets exactly one key, an old one or a new one in n_keys .. n_keys + n_new - 1.
    assert rec.record_key.shape == (n,)
    assert ((rec.record_key >= 0) & (rec.record_key < n_keys + rec.n_new)).all()
    # One key per cluster and never the same key for two clusters.
    key_of: dict[int, int] = {}
    for c, k in zip(cluster.tolist(), rec.record_key.tolist(), strict=True):
        assert key_of.setdefault(c, k) == k
    assert len(set(key_of.values())) == len(key_of)
    # Every new key is used (and by exactly one cluster).
    used_new = {k for k in key_of.values() if k >= n_keys}
    assert used_new == set(range(n_keys, n_keys + rec.n_new))
    assert set(rec.minted_from) == used_new
    # An old key is only kept by a cluster that held some of its records, and by the part
    # holding most of them (tie: the part with its oldest record).
    counts: dict[int, Counter[int]] = defaultdict(Counter)
    oldest: dict[tuple[int, int], int] = {}
    for s, k, c in zip(seq.tolist(), old.tolist(), cluster.tolist(), strict=True):
        if k >= 0:
            counts[k][c] += 1
            oldest[(k, c)] = min(oldest.get((k, c), s), s)
    for c, k in key_of.items():
        if k < n_keys:
            assert counts[k][c] > 0
            best = max(counts[k].values())
            assert counts[k][c] == best
            tied = [d for d, m in counts[k].items() if m == best]
            assert oldest[(k, c)] == min(oldest[(k, d)] for d in tied)
    # Retired keys: had records, no longer used, survivor older and used.
    retired = dict(rec.retired)
    assert len(retired) == len(rec.retired)
    final = set(key_of.values())
    for k, surv in retired.items():
        assert k in counts and k not in final and surv in final
        assert rank[surv] < rank[k]
    # A key that had records either still names some cluster or was retired (never vanishes).
    for k in counts:
        assert k in final or k in retired
    # Lineage only from keys that had records, to final keys, for records that moved.
    for frm, to, kind in rec.lineage:
        assert frm in counts and to in final and frm != to
        assert kind in {"merge", "split", "moved"}
        assert (kind == "split") == (to >= n_keys)
        if kind == "merge":
            assert retired[frm] == to
    for k, cs in counts.items():
        for c in cs:
            if key_of[c] != k:
                kind = "split" if key_of[c] >= n_keys else None
                assert any(f == k and t == key_of[c] and (kind is None or kd == kind)
                           for f, t, kd in rec.lineage)
    # A new key lists as sources exactly the old keys with records in its cluster.
    for c, k in key_of.items():
        if k >= n_keys:
            assert set(rec.minted_from[k]) == {kk for kk, cs in counts.items() if c in cs}


@pytest.mark.integration
@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_reconcile_properties(case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    seq, old, cluster, rank = case
    rec = reconcile(record_seq=seq, old_key=old, cluster=cluster, key_rank=rank)
    _check(seq, old, cluster, rank, rec)


@pytest.mark.integration
@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_reconcile_same_partition_changes_nothing(
        case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], rnd: random.Random) -> None:
    seq, old, _cluster, rank = case
    n_keys = len(rank)
    # Every record already has a key; the new partition is the old one under other labels.
    if n_keys == 0:
        old = np.zeros(len(seq), dtype=np.int64)
        rank = arr(0)
    else:
        old = np.where(old < 0, 0, old)
    relabel = {k: 1000 + 17 * i for i, k in enumerate(rnd.sample(range(len(rank)), len(rank)))}
    cluster = arr(*[relabel[k] for k in old.tolist()])
    rec = reconcile(record_seq=seq, old_key=old, cluster=cluster, key_rank=rank)
    assert rec.record_key.tolist() == old.tolist()
    assert (rec.n_new, rec.retired, rec.lineage, rec.minted_from) == (0, [], [], {})
    _check(seq, old, cluster, rank, rec)


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_reconcile_is_idempotent(case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Reconciling the result again with the same clusters changes nothing."""
    seq, old, cluster, rank = case
    first = reconcile(record_seq=seq, old_key=old, cluster=cluster, key_rank=rank)
    n_total = len(rank) + first.n_new
    rank2 = np.concatenate([rank, np.arange(len(rank), n_total, dtype=np.int64)])
    second = reconcile(record_seq=seq, old_key=first.record_key, cluster=cluster, key_rank=rank2)
    assert second.record_key.tolist() == first.record_key.tolist()
    assert (second.n_new, second.retired, second.lineage) == (0, [], [])


@pytest.mark.integration
@settings(max_examples=100, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_reconcile_does_not_depend_on_record_order(
        case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], rnd: random.Random) -> None:
    seq, old, cluster, rank = case
    perm = np.array(rnd.sample(range(len(seq)), len(seq)), dtype=np.int64)
    a = reconcile(record_seq=seq, old_key=old, cluster=cluster, key_rank=rank)
    b = reconcile(record_seq=seq[perm], old_key=old[perm], cluster=cluster[perm], key_rank=rank)
    assert b.record_key.tolist() == a.record_key[perm].tolist() or _same_up_to_new_labels(
        a.record_key[perm], b.record_key, len(rank))
    assert sorted(a.retired) == sorted(b.retired)


def _same_up_to_new_labels(a: np.ndarray, b: np.ndarray, n_keys: int) -> bool:
    """Equal where old keys are kept; new keys may be numbered differently."""
    mapping: dict[int, int] = {}
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        if (x < n_keys or y < n_keys) and x != y:
            return False
        if mapping.setdefault(x, y) != y:
            return False
    return True
