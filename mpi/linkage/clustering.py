"""Batch clustering that does not undo what online matching kept apart.

Owns: refining the connected components of the link graph (every engine's clusters) so that
persons online matching deliberately kept apart stay apart (the caller passes the open items
whose persons contradict each other: mpi/relink.py kept_apart). Splink's clustering is connected
components: one record that links above the threshold to two people (a twin's record, a
parent's and a child's) joins them, and so does a chain of such records. Online matching
instead puts a record with the person it matches best and queues the pair of persons for a
steward (a ``possible_duplicate`` review item). Here each such open item keeps the records of
its two persons apart:

- in a component that holds both sides of an open item, each person's records start as one
  group (a re-link does not split a person a steward is asked about);
- edges are taken in descending match probability (ties by record ids) and join groups as in
  connected components,
- except that a union which would put both sides of an open item in one cluster is refused,
  however strong the edge: no bridging pair merges two people a steward is asked about (a
  "clear link" exception was measured and dropped: twins who share name group, date of
  birth and address score 27 bits and above, and the demo's cluster F1 fell below online).

Starting from the current persons makes a re-link idempotent: a second run starts from the
first one's groups, and every union it could make was made or refused the first time (the
sides only grow as persons merge). A component that no item touches is kept as the engine
clustered it, without a Python loop. The steward's
answer settles it: ``match`` merges the persons, ``non_match`` becomes a cannot-link
constraint (mpi/constraints.py). Pure: NumPy in, NumPy out, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

I64 = npt.NDArray[np.int64]


def cautious_clusters(seq: I64, cluster: I64, edges: pa.Table, *, link_threshold: float,
                      apart: Sequence[tuple[I64, I64]], current: I64) -> I64:
    """Cluster labels (smallest member), refining the components ``cluster`` labels.

    ``seq`` is sorted and ``cluster`` labels each record by its component's smallest member;
    ``edges`` has unique_id_l, unique_id_r and match_probability; ``apart`` lists, per open
    item, the record seqs of its two persons; ``current`` is each record's person now (-1:
    none). Returns ``cluster`` itself when no component joins both sides of an item.
    """
    if len(seq) == 0 or edges.num_rows == 0 or not apart:
        return cluster
    side_of: dict[int, dict[int, int]] = {}  # record -> item -> side bits (1: a, 2: b)
    for item, (a, b) in enumerate(apart):
        for bit, records in ((1, a), (2, b)):
            for s in records.tolist():
                side_of.setdefault(s, {})[item] = side_of.get(s, {}).get(item, 0) | bit
    tagged = np.fromiter(side_of, dtype=np.int64, count=len(side_of))
    pos = np.minimum(np.searchsorted(seq, tagged), len(seq) - 1)
    tagged_comp = cluster[pos[seq[pos] == tagged]]
    comps, counts = np.unique(tagged_comp, return_counts=True)
    suspect = comps[counts > 1]  # only a component holding records of two persons can conflict
    if len(suspect) == 0:
        return cluster
    left = edges.column("unique_id_l").to_numpy().astype(np.int64)
    right = edges.column("unique_id_r").to_numpy().astype(np.int64)
    prob = edges.column("match_probability").to_numpy().astype(np.float64)
    keep = prob >= link_threshold
    left, right, prob = left[keep], right[keep], prob[keep]
    edge_comp = cluster[np.minimum(np.searchsorted(seq, left), len(seq) - 1)]
    sel = np.isin(edge_comp, suspect)
    lo, hi = np.minimum(left[sel], right[sel]), np.maximum(left[sel], right[sel])
    members = np.flatnonzero(np.isin(cluster, suspect))
    # each current person's records in a suspect component start as one group
    person = current[members]
    order = np.lexsort((seq[members], cluster[members], person))
    grouped = members[order]
    keys = np.stack([person[order], cluster[grouped]], axis=1)
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
    first = np.repeat(seq[grouped][starts], np.diff(np.r_[starts, len(grouped)]))
    assigned = person[order] >= 0
    prelo, prehi = first[assigned], seq[grouped][assigned]
    roots = _greedy(lo, hi, prob[sel], side_of, groups=(prelo, prehi))
    out = cluster.copy()
    smallest: dict[int, int] = {}
    member_seqs = seq[members].tolist()
    for s in member_seqs:  # ascending: the first member seen is the smallest
        smallest.setdefault(roots.get(s, s), s)
    out[members] = np.array([smallest[roots.get(s, s)] for s in member_seqs], dtype=np.int64)
    return out


def _greedy(lo: I64, hi: I64, prob: npt.NDArray[np.float64], side_of: dict[int, dict[int, int]],
            *, groups: tuple[I64, I64]) -> dict[int, int]:
    """Record -> root after joining ``groups`` (pairs: a person's first record, its other
    records) unconditionally, then edges in descending probability, refusing joins that put
    both sides of an item in one cluster."""
    parent: dict[int, int] = {}
    sides: dict[int, dict[int, int]] = {r: dict(s) for r, s in side_of.items()}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:
            parent[x], x = root, parent.get(x, x)
        return root

    def union(ra: int, rb: int, sa: dict[int, int], sb: dict[int, int]) -> None:
        parent[rb] = ra
        if sb:
            merged = sides.setdefault(ra, {})
            for item, bits in sb.items():
                merged[item] = merged.get(item, 0) | bits
            sides.pop(rb, None)

    for a, b in zip(groups[0].tolist(), groups[1].tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            union(ra, rb, sides.get(ra, {}), sides.get(rb, {}))
    lo_l, hi_l = lo.tolist(), hi.tolist()
    for i in np.lexsort((hi, lo, -prob)).tolist():
        ra, rb = find(lo_l[i]), find(hi_l[i])
        if ra == rb:
            continue
        sa, sb = sides.get(ra, {}), sides.get(rb, {})
        if len(sa) < len(sb):
            ra, rb, sa, sb = rb, ra, sb, sa
        if any((sa.get(item, 0) | bits) == 3 for item, bits in sb.items()):
            continue
        union(ra, rb, sa, sb)
    return {x: find(x) for x in parent}
