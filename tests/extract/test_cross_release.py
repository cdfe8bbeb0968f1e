"""The cross-release rules on their own (Decisions 77 and 78): the differencing rule over person
sets and the joint protection of aggregate tables. The attackers through the real workflow are
in test_linked_table_attack.py."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from mpi.errors import Conflict
from mpi.extract.aggregate import aggregate
from mpi.extract.differencing import isolating, keyed_rank, to_withhold
from mpi.extract.linked_tables import PROTECTION_WIDTH, PublishedTable, attack, dumps, loads

K = 5
RANK = keyed_rank(b"s" * 32)


def _groups(keys: set[str]) -> list[frozenset[str]]:
    return [frozenset({k}) for k in sorted(keys)]


def test_newcomers_wait_until_there_are_k() -> None:
    earlier = {f"p{i}" for i in range(40)}
    for new in (1, K - 1):
        now = earlier | {f"n{i}" for i in range(new)}
        assert isolating(now, [_groups(earlier)], k=K) == 1
        held = to_withhold(now, [_groups(earlier)], k=K, rank=RANK)
        assert held == {f"n{i}" for i in range(new)}
    now = earlier | {f"n{i}" for i in range(K)}
    assert isolating(now, [_groups(earlier)], k=K) == 0


def test_one_opt_out_is_hidden_among_k_and_the_same_ones_every_time() -> None:
    earlier = {f"p{i}" for i in range(40)}
    now = earlier - {"p7"}
    held = to_withhold(now, [_groups(earlier)], k=K, rank=RANK)
    assert len(held) == K - 1 and "p7" not in held
    assert held == to_withhold(now, [_groups(earlier)], k=K, rank=RANK)
    rebuilt = now - held
    assert isolating(rebuilt, [_groups(earlier)], k=K) == 0
    # the next rebuild, against both deliveries, withholds nobody else
    both = [_groups(earlier), _groups(rebuilt)]
    assert to_withhold(now, both, k=K, rank=RANK) == held
    # another project's rank withholds others
    assert to_withhold(now, [_groups(earlier)], k=K, rank=keyed_rank(b"t" * 32)) != held


def test_a_merge_or_split_since_is_not_a_difference() -> None:
    earlier = [frozenset({"a"}), frozenset({"b", "b2"}), *_groups({f"p{i}" for i in range(20)})]
    now = {"a", "b", "b2"} | {f"p{i}" for i in range(20)}
    assert isolating(now, [earlier], k=K) == 0
    assert isolating(now - {"b2"}, [earlier], k=K) == 0   # b is still there (split side gone)
    assert isolating(now - {"b", "b2"}, [earlier], k=K) == 1


def test_random_histories_never_isolate_after_withholding() -> None:
    rng = random.Random(16)
    for _ in range(200):
        universe = [f"p{i}" for i in range(60)]
        earlier = [set(rng.sample(universe, rng.randint(K, 60))) for _ in range(rng.randint(1, 4))]
        now = set(rng.sample(universe, rng.randint(0, 60)))
        releases = [_groups(e) for e in earlier]
        kept = now - to_withhold(now, releases, k=K, rank=RANK)
        assert kept <= now
        assert isolating(kept, releases, k=K) == 0, (sorted(now), [sorted(e) for e in earlier])


def _table(rng: np.random.Generator, n: int) -> pa.Table:
    return pa.table({d: pa.array([f"{d}{v}" for v in rng.integers(0, size, n)])
                     for d, size in (("r", 4), ("p", 3), ("s", 2))})


@pytest.mark.integration
def test_tables_released_one_after_another_leave_every_range_wide() -> None:
    rng = np.random.default_rng(77)
    rows = _table(rng, 160)
    released: list[PublishedTable] = []
    for dims in (["r", "p", "s"], ["r", "p"], ["r", "s"], ["p"], ["r"]):
        res = aggregate(rows.select(dims), dims, threshold=11, linked=released, population="pop")
        assert res.published is not None
        released.append(res.published)
        # the registry keeps the true counts; the files never hold a suppressed one
        assert res.cells.column("count").null_count == sum(
            res.published.suppressed[:res.cells.num_rows])
    assert loads("pop", dumps(released)) == released
    ranges = attack(released)
    assert ranges and all(hi - lo >= PROTECTION_WIDTH for lo, hi in ranges.values())


def test_tables_over_different_persons_are_not_linked() -> None:
    rng = np.random.default_rng(3)
    first = aggregate(_table(rng, 120).select(["r", "p"]), ["r", "p"], threshold=11, linked=[],
                      population="one")
    assert first.published is not None
    second = aggregate(_table(rng, 150).select(["r"]), ["r"], threshold=11,
                       linked=[first.published], population="two")
    assert second.report["audit"]["joint"]["linked_tables"] == 0


def test_a_small_count_pinned_by_earlier_tables_is_refused() -> None:
    # an earlier table (hand-made, as an old release may be) published the margin r = a as 7,
    # with its cells suppressed: a one-way table of the same persons cannot hide its count of 7
    old = PublishedTable(dims=("r", "s"), levels=(("a", "b"), ("x", "y")),
                         values=(3, 4, 20, 30, 7, 50, 23, 34, 57),
                         suppressed=(True, True, True, True, False, False, False, False, False),
                         population="pop")
    rows = pa.table({"r": ["a"] * 7 + ["b"] * 50})
    with pytest.raises(Conflict):
        aggregate(rows, ["r"], threshold=11, linked=[old], population="pop")
    # over other persons the two are not linked, and it is released
    other = aggregate(rows, ["r"], threshold=11, linked=[old], population="other")
    assert other.published is not None and other.published.suppressed[0]
