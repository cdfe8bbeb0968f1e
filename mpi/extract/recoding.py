"""The information-loss-minimising generalization search of a rows extract: global recoding over
the hierarchy lattice, local recoding of the rows it leaves at risk, then suppression, then the
person-level check.

Owns: the ``Policy`` (k, l, entropy or distinct l-diversity, the global suppression budget),
equivalence classes over hierarchy codes, the loss of a lattice node, ``search`` (global node +
local recoding passes) and ``protect_persons`` (person signatures; a person's other agencies'
rows go before their cohort-agency row). Must not: run SQL, read the registry, build hierarchies
(mpi/extract/hierarchy.py) or hold values (it sees integer codes only).

Method. A lattice node gives each quasi-identifier a hierarchy level. A row *fails* at a node
when its class (rows with equal codes on every quasi-identifier) has fewer than k rows, or its
class over the other quasi-identifiers fails l-diversity on a sensitive column it carries. Loss
of a node = s + (1 - s) * weighted mean(level / height), s the failing share (failing rows count as fully
generalized, as in ARX). Global recoding: when the lattice is small for the rows (nodes x rows
under ``EXHAUSTIVE_ROW_EVALUATIONS``), every node not above one already meeting the budget is
tried (Flash-like pruning) and the least loss among those meeting it wins; otherwise, from the
bottom node, step to the neighbour (one column one level up) of least loss until at most
``max_suppression`` of the rows fail and no neighbour lowers the loss; then lower single columns
again while the budget holds and the loss falls. Local recoding: the rows still failing are
lifted, as a group, one column at a time (the neighbour leaving fewest of them failing), and
released at the first node where their class passes among them; at the top node (every quasi-
identifier suppressed but the agency) rows whose class still fails are dropped. Classes on
different nodes never share codes, so each released class is a class of the released table.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mpi.extract.hierarchy import Hierarchy
from mpi.extract.ldiversity import SensitiveColumn
from mpi.extract.ldiversity import failing as l_failing
from mpi.extract.ldiversity import summary as l_summary

Node = tuple[int, ...]
Rows = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Policy:
    """What every released class must meet."""

    k: int
    l: int = 2                     # noqa: E741  (the l of l-diversity)
    entropy: bool = False          # entropy l-diversity as well as distinct
    max_suppression: float = 0.05  # share of rows global recoding may leave to local recoding


@dataclass
class Recoding:
    """Per-row levels of every quasi-identifier and what the search did."""

    row_levels: npt.NDArray[np.int64]    # (quasi-identifiers, rows)
    dropped: npt.NDArray[np.bool_]       # rows no node could release
    global_node: Node
    failing_at_global: int
    passes: list[dict[str, int | list[int]]] = field(default_factory=list)
    evaluations: int = 0


def _dense(key: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.unique(key, return_inverse=True)[1].astype(np.int64).reshape(-1)


def _combine(parts: Sequence[tuple[npt.NDArray[np.int64], int]], n: int) -> npt.NDArray[np.int64]:
    """Dense class ids over code columns (each with its cardinality)."""
    key = np.zeros(n, dtype=np.int64)
    span = 1
    for codes, card in parts:
        if span * card >= 1 << 62:
            key = _dense(key)
            span = int(key.max()) + 1 if n else 1
        key = key * card + codes
        span *= card
    return _dense(key) if n else key


def _cards(h: Hierarchy) -> int:
    return int(h.codes[-1].max()) + 1 if len(h.codes[-1]) else 1


Levels = npt.NDArray[np.int64] | Node   # per quasi-identifier: one level, or one per row


def _codes_at(h: Hierarchy, levels: npt.NDArray[np.int64] | int, rows: Rows) -> npt.NDArray[np.int64]:
    if isinstance(levels, int | np.integer):
        return h.codes[int(levels)][rows]
    codes = np.empty(len(rows), dtype=np.int64)
    for lv in np.unique(levels):
        at = levels == lv
        codes[at] = h.codes[int(lv)][rows[at]]
    return codes


def _parts(hs: Sequence[Hierarchy], levels: Levels, rows: Rows
           ) -> list[tuple[npt.NDArray[np.int64], int]]:
    if isinstance(levels, tuple):   # one level per column: its own codes, its own cardinality
        return [(h.codes[lv][rows] - h.bases[lv], h.sizes[lv]) for h, lv in zip(hs, levels, strict=True)]
    return [(_codes_at(h, levels[q, rows], rows), _cards(h)) for q, h in enumerate(hs)]


def class_ids(hs: Sequence[Hierarchy], node: Node, rows: Rows) -> npt.NDArray[np.int64]:
    """Dense class ids of ``rows`` with every quasi-identifier at the node's level."""
    return _combine(_parts(hs, node, rows), len(rows))


def row_class_ids(hs: Sequence[Hierarchy], row_levels: npt.NDArray[np.int64],
                  rows: Rows) -> npt.NDArray[np.int64]:
    """Dense class ids of ``rows`` with each row at its own levels (``row_levels``: (q, n))."""
    return _combine(_parts(hs, row_levels, rows), len(rows))


def _level_of(levels: Levels, q: int, rows: Rows) -> npt.NDArray[np.int64]:
    if isinstance(levels, tuple):
        return np.full(len(rows), levels[q], dtype=np.int64)
    return np.asarray(levels[q, rows], dtype=np.int64)


def failing(hs: Sequence[Hierarchy], levels: Levels, rows: Rows,
            sensitive: list[SensitiveColumn], policy: Policy,
            weights: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.bool_]:
    """Rows whose class is under k, or whose class over the other quasi-identifiers fails
    l-diversity on a sensitive column they carry (unless it is suppressed on that row).
    ``weights``: each row stands for that many rows (class representatives)."""
    if not len(rows):
        return np.zeros(0, dtype=bool)
    parts = _parts(hs, levels, rows)
    ids = _combine(parts, len(rows))
    bad = np.bincount(ids, weights=weights)[ids] < policy.k
    for s in sensitive:
        q = s.position
        judged = s.applies[rows] & (_level_of(levels, q, rows) < hs[q].height)
        if not judged.any():
            continue
        others = _combine([(c[judged], card) for i, (c, card) in enumerate(parts) if i != q],
                          int(judged.sum()))
        fail = l_failing(others, parts[q][0][judged], l=policy.l, entropy=policy.entropy,
                         weights=None if weights is None else weights[judged])
        bad[np.flatnonzero(judged)[fail]] = True
    return bad


def l_report(hs: Sequence[Hierarchy], levels: npt.NDArray[np.int64], rows: Rows,
             sensitive: list[SensitiveColumn]) -> dict[str, dict[str, float | int | None]]:
    """Per sensitive column over the released rows: smallest distinct and entropy l."""
    out: dict[str, dict[str, float | int | None]] = {}
    parts = _parts(hs, levels, rows)
    for s in sensitive:
        q = s.position
        judged = s.applies[rows] & (levels[q, rows] < hs[q].height)
        others = _combine([(c[judged], card) for i, (c, card) in enumerate(parts) if i != q],
                          int(judged.sum()))
        out[s.column] = l_summary(others, parts[q][0][judged])
    return out


def precision_loss(hs: Sequence[Hierarchy], node: Node) -> float:
    """Weighted mean over generalizable quasi-identifiers of level / height (0 = as
    requested)."""
    parts = [(h.weight * lv / h.height, h.weight) for h, lv in zip(hs, node, strict=True)
             if h.height]
    total = sum(w for _, w in parts)
    return float(sum(p for p, _ in parts) / total) if total else 0.0


class _Evaluator:
    def __init__(self, hs: Sequence[Hierarchy], sensitive: list[SensitiveColumn],
                 policy: Policy) -> None:
        self.hs, self.sensitive, self.policy = hs, sensitive, policy
        self.count = 0

    def fails(self, node: Node, rows: Rows,
              weights: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.bool_]:
        self.count += 1
        return failing(self.hs, node, rows, self.sensitive, self.policy, weights)

    def failed_rows(self, node: Node, reps: Rows, weights: npt.NDArray[np.int64]) -> int:
        return int(weights[self.fails(node, reps, weights)].sum())

    def roll_up(self, node: Node, reps: Rows, weights: npt.NDArray[np.int64]
                ) -> tuple[Rows, npt.NDArray[np.int64]]:
        """One representative row per class of ``node`` and the rows it stands for (every
        hierarchy level is a function of the level below, so classes of a higher node are
        unions of classes of a lower one)."""
        ids = class_ids(self.hs, node, reps)
        first = np.unique(ids, return_index=True)[1]
        return reps[first], np.bincount(ids, weights=weights).astype(np.int64)

    def neighbours(self, node: Node) -> list[Node]:
        return [node[:q] + (node[q] + 1,) + node[q + 1:] for q, h in enumerate(self.hs)
                if node[q] < h.height]

    def loss(self, node: Node, failed: int, n: int) -> float:
        s = failed / n if n else 0.0
        return s + (1 - s) * precision_loss(self.hs, node)


EXHAUSTIVE_ROW_EVALUATIONS = 40_000_000   # lattice size x rows under which every node is tried


def _exhaustive(ev: _Evaluator, base: tuple[Rows, npt.NDArray[np.int64]], n: int,
                budget: int) -> tuple[Node, int] | None:
    """Every node not above one already meeting the budget (Flash-like pruning), the least
    loss among those meeting it; None when the lattice is too large for the rows. ``base``:
    the bottom node's class representatives and their row counts."""
    sizes = [h.height + 1 for h in ev.hs]
    if int(np.prod(sizes, dtype=np.float64)) * len(base[0]) > EXHAUSTIVE_ROW_EVALUATIONS:
        return None
    nodes = sorted(itertools.product(*(range(s) for s in sizes)), key=lambda nd: (sum(nd), nd))
    meeting: list[tuple[Node, int]] = []
    for node in nodes:
        if any(all(a >= b for a, b in zip(node, m, strict=True)) for m, _f in meeting):
            continue
        f = ev.failed_rows(node, *base)
        if f <= budget:
            meeting.append((node, f))
    if not meeting:
        return None
    return min(meeting, key=lambda t: (ev.loss(t[0], t[1], n), t[0]))


def _global(ev: _Evaluator, rows: Rows) -> tuple[Node, int]:
    n = len(rows)
    budget = int(np.floor(ev.policy.max_suppression * n))
    seen: dict[Node, int] = {}
    node: Node = tuple(0 for _ in ev.hs)
    base = ev.roll_up(node, rows, np.ones(len(rows), dtype=np.int64))
    found = _exhaustive(ev, base, n, budget)
    if found is not None:
        return found
    current = base

    def failed(nd: Node, on: tuple[Rows, npt.NDArray[np.int64]] | None = None) -> int:
        if nd not in seen:
            seen[nd] = ev.failed_rows(nd, *(on or base))
        return seen[nd]

    while True:   # greedy ascent, each step evaluated on the current node's classes
        here = ev.loss(node, failed(node, current), n)
        options = sorted((ev.loss(nb, failed(nb, current), n), failed(nb, current), nb)
                         for nb in ev.neighbours(node))
        if not options:
            break
        best_loss, _f, best = options[0]
        if failed(node, current) <= budget and best_loss >= here:
            break
        node = best
        current = ev.roll_up(node, *current)
    meeting = [(ev.loss(nd, f, n), nd) for nd, f in seen.items() if f <= budget]
    node = min(meeting)[1] if meeting else min((ev.loss(nd, f, n), nd) for nd, f in seen.items())[1]
    improved = True
    while improved:   # lower single columns while the budget holds and the loss falls
        improved = False
        for q in range(len(node)):
            if node[q] == 0:
                continue
            lower = node[:q] + (node[q] - 1,) + node[q + 1:]
            if (failed(lower) <= budget or failed(lower) <= failed(node)) and \
                    ev.loss(lower, failed(lower), n) < ev.loss(node, failed(node), n):
                node, improved = lower, True
    return node, failed(node)


def search(hs: Sequence[Hierarchy], sensitive: list[SensitiveColumn], rows: Rows,
           policy: Policy, *, n_rows: int) -> Recoding:
    """Global recoding, then local recoding of the failing rows, then what is left is dropped.
    ``rows``: the positions (of ``n_rows``) the extract releases from."""
    ev = _Evaluator(hs, sensitive, policy)
    levels = np.zeros((len(hs), n_rows), dtype=np.int64)
    dropped = np.zeros(n_rows, dtype=bool)
    if not len(rows):
        return Recoding(levels, dropped, tuple(0 for _ in hs), 0)
    node, n_failing = _global(ev, rows)
    levels[:, rows] = np.asarray(node, dtype=np.int64)[:, None]
    rest = rows[ev.fails(node, rows)]
    out = Recoding(levels, dropped, node, n_failing)
    current = node
    while len(rest):
        options = ev.neighbours(current)
        if not options:
            dropped[rest] = True
            out.passes.append({"node": list(current), "released": 0, "dropped": int(len(rest))})
            break
        trials = [(int(f.sum()), precision_loss(hs, nb), nb, f)
                  for nb in options for f in [ev.fails(nb, rest)]]
        n_fail, _loss, current, fail = min(trials, key=lambda t: (t[0], t[1]))
        released = rest[~fail]
        if len(released):
            levels[:, released] = np.asarray(current, dtype=np.int64)[:, None]
            out.passes.append({"node": list(current), "released": int(len(released))})
        rest = rest[fail]
    out.evaluations = ev.count
    return out


# ---- persons ----------------------------------------------------------------------------------
def signature_shared(persons: npt.NDArray[np.int64], classes: npt.NDArray[np.int64]
                     ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per row: the number of persons sharing its person's signature (set of classes); and per
    person code: the same number."""
    pairs = pa.table({"p": pa.array(persons), "c": pa.array(classes)})
    distinct = pairs.group_by(["p", "c"], use_threads=False).aggregate([])
    distinct = distinct.sort_by([("p", "ascending"), ("c", "ascending")])
    sig = distinct.group_by("p", use_threads=False).aggregate([("c", "list")])
    text = pc.binary_join(pc.cast(sig.column("c_list"), pa.list_(pa.string())), ",")
    enc = pc.dictionary_encode(text).combine_chunks()
    sig_ids = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    shared = np.bincount(sig_ids)[sig_ids]
    person_ids = np.asarray(sig.column("p").to_numpy(), dtype=np.int64)
    per_person = np.zeros(int(persons.max()) + 1, dtype=np.int64)
    per_person[person_ids] = shared
    return per_person[persons], per_person


def protect_persons(persons: npt.NDArray[np.int64], classes: npt.NDArray[np.int64],
                    cohort: npt.NDArray[np.bool_], k: int) -> tuple[npt.NDArray[np.bool_], dict[str, int]]:
    """Rows to keep so that every person's signature (the set of their rows' classes) is shared
    by at least k persons: a person at risk first loses their rows at other agencies than the
    cohort's; a person still at risk is removed whole."""
    keep = np.ones(len(persons), dtype=bool)
    counts = {"rows_removed_other_agencies": 0, "persons_removed": 0, "rows_removed_persons": 0}
    trimmed = np.zeros(int(persons.max()) + 1 if len(persons) else 0, dtype=bool)
    while keep.any():
        idx = np.flatnonzero(keep)
        shared, _ = signature_shared(persons[idx], classes[idx])
        risky = idx[shared < k]
        if not len(risky):
            break
        risky_persons = np.unique(persons[risky])
        has_cohort = np.zeros_like(trimmed)
        has_cohort[persons[idx[cohort[idx]]]] = True
        trim = risky_persons[has_cohort[risky_persons] & ~trimmed[risky_persons]]
        if len(trim):
            drop = risky[np.isin(persons[risky], trim) & ~cohort[risky]]
            trimmed[trim] = True
            if len(drop):
                keep[drop] = False
                counts["rows_removed_other_agencies"] += int(len(drop))
                continue
        remove = risky_persons[~np.isin(risky_persons, trim) | trimmed[risky_persons]]
        drop = idx[np.isin(persons[idx], remove)]
        keep[drop] = False
        counts["persons_removed"] += int(len(remove))
        counts["rows_removed_persons"] += int(len(drop))
    return keep, counts
