"""Must-link and cannot-link constraints: held in memory, checked, and honoured by clustering.

Owns: the in-memory set of active constraints (record pairs by ``record_seq``), the consistency
rule (no cannot-link pair may end up joined through must-links), constrained clustering of a
link result, and the online rule for one record. Pure apart from ``ConstraintSet.load`` (which
asks mpi/store). Must not: run SQL itself or import splink.

Constrained clustering (used by ``mpi link`` and every promote through
``relink.apply_constraints``): only clusters holding a constrained record are re-clustered.
Their records start as singletons; every must-link is unioned first, then the link result's
edges at or above the cluster threshold are added in descending match probability (ties by
record pair), and a union that would put a cannot-linked pair in one cluster is refused. Every
other cluster is exactly Splink's connected component.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa

if TYPE_CHECKING:
    import duckdb

MUST = "must_link"
CANNOT = "cannot_link"
KINDS = (MUST, CANNOT)
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Constraint:
    """One active constraint between two records (``a < b``)."""

    constraint_seq: int
    a: int
    b: int
    kind: str


class _Union:
    """Union-find over arbitrary ints with per-root cannot-link partner sets."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.cannot: dict[int, set[int]] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def forbid(self, a: int, b: int) -> None:
        self.cannot.setdefault(self.find(a), set()).add(b)
        self.cannot.setdefault(self.find(b), set()).add(a)

    def allowed(self, ra: int, rb: int) -> bool:
        ca, cb = self.cannot.get(ra, set()), self.cannot.get(rb, set())
        if len(cb) < len(ca):
            ca, rb = cb, ra
        return all(self.find(x) != rb for x in ca)

    def union(self, a: int, b: int, *, check: bool = True) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if check and not self.allowed(ra, rb):
            return False
        if ra > rb:
            ra, rb = rb, ra
        self.parent[rb] = ra
        moved = self.cannot.pop(rb, None)
        if moved:
            self.cannot.setdefault(ra, set()).update(moved)
        return True


@dataclass
class ConstraintSet:
    """Active constraints, indexed by record for the online path."""

    items: dict[int, Constraint] = field(default_factory=dict)
    by_seq: dict[int, list[Constraint]] = field(default_factory=dict)

    @classmethod
    def load(cls, cur: duckdb.DuckDBPyConnection) -> ConstraintSet:
        """Every active constraint in the registry."""
        from mpi.store import constraints as cstore
        out = cls()
        out.add(Constraint(s, a, b, k) for s, a, b, k in cstore.active_constraints(cur))
        return out

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, constraints: Iterable[Constraint]) -> None:
        """Add constraints (after the transaction that stored them committed)."""
        for c in constraints:
            self.items[c.constraint_seq] = c
            self.by_seq.setdefault(c.a, []).append(c)
            self.by_seq.setdefault(c.b, []).append(c)

    def remove(self, constraint_seq: int) -> None:
        """Forget a revoked constraint."""
        c = self.items.pop(constraint_seq, None)
        if c is None:
            return
        for s in (c.a, c.b):
            rest = [x for x in self.by_seq.get(s, []) if x.constraint_seq != constraint_seq]
            if rest:
                self.by_seq[s] = rest
            else:
                self.by_seq.pop(s, None)

    def partners(self, record_seq: int) -> list[tuple[int, str]]:
        """(other record, kind) for every constraint on a record."""
        return [(c.b if c.a == record_seq else c.a, c.kind)
                for c in self.by_seq.get(record_seq, ())]

    def between(self, a: int, b: int, kind: str) -> Constraint | None:
        """The active constraint of ``kind`` between two records, if any."""
        lo, hi = min(a, b), max(a, b)
        return next((c for c in self.by_seq.get(lo, ()) if c.b == hi and c.kind == kind), None)

    def blocking(self, new: Sequence[tuple[int, int, str]], *,
                 limit: int = 10) -> list[Constraint]:
        """The active constraints that make ``new`` inconsistent (up to ``limit``, oldest first):
        the cannot-links must-links would join, and the must-links joining a contradicted pair."""
        uf = _Union()
        every = [(c.a, c.b, c.kind) for c in self.items.values()] + list(new)
        for a, b, kind in every:
            if kind == MUST:
                uf.union(a, b, check=False)
        roots = {uf.find(a) for a, b, kind in every if kind == CANNOT and uf.find(a) == uf.find(b)}
        found = [c for c in self.items.values()
                 if uf.find(c.a) in roots and (c.kind == MUST or uf.find(c.b) == uf.find(c.a))]
        return sorted(found, key=lambda c: c.constraint_seq)[:limit]

    def conflicts(self, new: Sequence[tuple[int, int, str]]) -> list[tuple[int, int]]:
        """Cannot-link pairs that would be joined through must-links if ``new`` were added.

        Returns the offending (a, b) cannot-link pairs (existing or new); empty when consistent.
        """
        uf = _Union()
        every = [(c.a, c.b, c.kind) for c in self.items.values()] + list(new)
        for a, b, kind in every:
            if kind == MUST:
                uf.union(a, b, check=False)
        return [(min(a, b), max(a, b)) for a, b, kind in every
                if kind == CANNOT and uf.find(a) == uf.find(b)]


def constrain_clusters(seq: I64, cluster: I64, edges: pa.Table, constraints: ConstraintSet, *,
                       threshold: float) -> I64:
    """Cluster labels (smallest member) honouring the constraints; see the module docstring.

    ``seq`` is sorted and ``cluster`` labels each record by its cluster's smallest member;
    ``edges`` has unique_id_l, unique_id_r, match_probability. Returns ``cluster`` itself when
    no constraint touches these records.
    """
    if not constraints or len(seq) == 0:
        return cluster
    pairs = [(c.a, c.b, c.kind) for c in constraints.items.values()]
    ends = np.array([(a, b) for a, b, _k in pairs], dtype=np.int64)
    pos = np.minimum(np.searchsorted(seq, ends), len(seq) - 1)
    present = (seq[pos] == ends).all(axis=1)
    if not present.any():
        return cluster
    live = [p for p, ok in zip(pairs, present.tolist(), strict=True) if ok]
    touched = np.unique(cluster[pos[present].ravel()])
    inside = np.isin(cluster, touched)
    members = seq[inside]
    uf = _Union()
    for a, b, kind in live:
        if kind == CANNOT:
            uf.forbid(a, b)
    for a, b, kind in live:
        if kind == MUST:
            uf.union(a, b)
    left = edges.column("unique_id_l").to_numpy().astype(np.int64)
    right = edges.column("unique_id_r").to_numpy().astype(np.int64)
    prob = edges.column("match_probability").to_numpy().astype(np.float64)
    keep = (prob >= threshold) & np.isin(left, members) & np.isin(right, members)
    left, right, prob = left[keep], right[keep], prob[keep]
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    for i in np.lexsort((hi, lo, -prob)).tolist():
        uf.union(int(lo[i]), int(hi[i]))
    out = cluster.copy()
    roots = np.array([uf.find(int(s)) for s in members.tolist()], dtype=np.int64)
    smallest: dict[int, int] = {}
    for s, r in zip(members.tolist(), roots.tolist(), strict=True):
        if r not in smallest:
            smallest[r] = s  # members ascend, so the first one seen is the smallest
    out[inside] = np.array([smallest[r] for r in roots.tolist()], dtype=np.int64)
    return out


def online_rule(constraints: ConstraintSet, record_seq: int,
                label_of: dict[int, int]) -> tuple[int | None, set[int]]:
    """For one record being (re)assigned online: the person it must join (or None) and the
    persons it must not join, given ``label_of`` (partner record -> its current person, for
    partners that are active and assigned)."""
    must: int | None = None
    must_seq = -1
    banned: set[int] = set()
    for other, kind in constraints.partners(record_seq):
        person_ix = label_of.get(other)
        if person_ix is None:
            continue
        if kind == CANNOT:
            banned.add(person_ix)
        elif must is None or other < must_seq:  # the oldest must-linked record's person
            must, must_seq = person_ix, other
    if must is not None and must in banned:
        must = None
    return must, banned
