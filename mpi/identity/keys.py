"""Stable person keys: minting and reconciling a new partition with the keys already issued.

Owns: the key rules. Keys follow the majority of their records; on a merge the older key
survives and the others are retired with a successor; on a split the part holding the most
records keeps the key (tie: the part with the oldest record) and the other parts get new keys
with lineage. Pure: no I/O, no clock; randomness only in ``mint_key``.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mpi.arrays import sorted_unique

I64 = npt.NDArray[np.int64]
KEY_PREFIX = "pk_"


def mint_key() -> str:
    """A new opaque person key: 'pk_' + 20 base32 characters of fresh randomness (100 bits)."""
    return KEY_PREFIX + base64.b32encode(secrets.token_bytes(15)).decode().lower()[:20]


@dataclass
class Reconciliation:
    """How a new partition maps onto issued keys (keys are indices; new ones start at n_keys)."""

    record_key: I64                     # final key index of every record
    n_new: int                          # keys to mint: indices n_keys .. n_keys + n_new - 1
    retired: list[tuple[int, int]] = field(default_factory=list)   # (key, survivor)
    lineage: list[tuple[int, int, str]] = field(default_factory=list)  # (from, to, kind)
    minted_from: dict[int, list[int]] = field(default_factory=dict)  # new key -> source keys

    @property
    def merges(self) -> int:
        """Keys retired into a survivor."""
        return len(self.retired)

    @property
    def splits(self) -> int:
        """New keys minted for parts split off existing keys."""
        return sum(1 for srcs in self.minted_from.values() if srcs)


def reconcile(*, record_seq: I64, old_key: I64, cluster: I64, key_rank: I64) -> Reconciliation:
    """Assign a key to every cluster of a new partition, following the key rules.

    ``old_key[i]`` is record i's current key index (-1 if it has none); ``key_rank[k]`` orders
    keys by age (smaller is older); ``record_seq`` orders records by age.
    """
    n_keys = len(key_rank)
    n = len(record_seq)
    if n == 0:
        return Reconciliation(np.empty(0, dtype=np.int64), 0)
    has = old_key >= 0
    # Per (cluster, key): record count and oldest record.
    c_k, k_k, s_k = cluster[has], old_key[has], record_seq[has]
    order = np.lexsort((s_k, k_k, c_k))
    c_k, k_k, s_k = c_k[order], k_k[order], s_k[order]
    first = np.ones(len(c_k), dtype=bool)
    first[1:] = (c_k[1:] != c_k[:-1]) | (k_k[1:] != k_k[:-1])
    starts = np.flatnonzero(first)
    pc, pk, pmin = c_k[starts], k_k[starts], s_k[starts]
    pcount = np.diff(np.append(starts, len(c_k)))
    # Home of each key: most records, tie -> the part holding the key's oldest record.
    order = np.lexsort((pmin, -pcount, pk))
    hk, hc = pk[order], pc[order]
    is_home = np.ones(len(hk), dtype=bool)
    is_home[1:] = hk[1:] != hk[:-1]
    home_key, home_cluster = hk[is_home], hc[is_home]
    # Survivor per cluster: the oldest key homed there.
    order = np.lexsort((key_rank[home_key], home_cluster))
    sc, sk = home_cluster[order], home_key[order]
    lead = np.ones(len(sc), dtype=bool)
    lead[1:] = sc[1:] != sc[:-1]
    lead_c, lead_k = sc[lead], sk[lead]
    # Every cluster's key: its survivor, or a new key (numbered in cluster order).
    uniq = sorted_unique(cluster)
    pos = np.minimum(np.searchsorted(lead_c, uniq), max(len(lead_c) - 1, 0))
    has_key = (lead_c[pos] == uniq) if len(lead_c) else np.zeros(len(uniq), dtype=bool)
    ckey = np.where(has_key, lead_k[pos] if len(lead_k) else 0, -1).astype(np.int64)
    missing = ~has_key
    ckey[missing] = n_keys + np.arange(int(missing.sum()), dtype=np.int64)
    result = Reconciliation(ckey[np.searchsorted(uniq, cluster)], int(missing.sum()))
    result.minted_from = {int(k): [] for k in ckey[missing].tolist()}
    # Keys homed in a cluster whose survivor is another key are retired into it.
    surv = ckey[np.searchsorted(uniq, home_cluster)]
    gone = surv != home_key
    result.retired = list(zip(home_key[gone].tolist(), surv[gone].tolist(), strict=True))
    survivor_of = np.full(max(n_keys, 1), -1, dtype=np.int64)
    survivor_of[home_key] = surv
    # Lineage: wherever a key's records landed under another final key.
    to = ckey[np.searchsorted(uniq, pc)]
    moved = to != pk
    frm, dst = pk[moved], to[moved]
    merge = (survivor_of[frm] == dst) & (survivor_of[frm] != frm)
    for f, t, is_merge in zip(frm.tolist(), dst.tolist(), merge.tolist(), strict=True):
        if t >= n_keys:
            result.minted_from[t].append(f)
            result.lineage.append((f, t, "split"))
        else:
            result.lineage.append((f, t, "merge" if is_merge else "moved"))
    return result


@dataclass(frozen=True)
class OnlineDecision:
    """Which person one incoming record joins (Decisions 3-5), and what goes to review."""

    target: int | None  # person label to join; None: mint a new key for the record
    outcome: str  # new | linked | review | updated
    duplicates: tuple[tuple[int, float], ...]  # other persons at or above the link bar
    suggestion: tuple[int, float] | None  # best person in the review band (record_person item)
    retire_old: bool  # the record's previous person is left empty: retire it into the target


def decide_online(ranked: list[tuple[int, float]], *, link_weight: float, review_weight: float,
                  must: int | None = None, update: bool = False, old: int = -1,
                  old_emptied: bool = False) -> OnlineDecision:
    """The online key decision for one record, as a pure function.

    ``ranked`` is (person, best weight) by descending weight, persons a steward keeps apart
    already removed; ``must`` a person a must-link constraint binds it to; ``update`` whether
    it replaces an earlier version of the record, ``old`` the person that version counted for
    (-1 if none) and ``old_emptied`` whether that person has no other active record.

    A constraint wins; then the best person at or above the link bar (other persons at that
    bar become possible duplicates, never merged here); then an updated record keeps its own
    emptied key; else a new key is minted, with a ``record_person`` review item when the best
    person is in the review band."""
    outcome = "updated" if update else "new"
    duplicates: tuple[tuple[int, float], ...] = ()
    suggestion = None
    target: int | None
    if must is not None:
        target, outcome = must, outcome if update else "linked"
    elif ranked and ranked[0][1] >= link_weight:
        target, outcome = ranked[0][0], outcome if update else "linked"
        duplicates = tuple((o, w) for o, w in ranked[1:] if w >= link_weight)
    elif old >= 0 and old_emptied:
        target = old
    else:
        target = None
        if ranked and ranked[0][1] >= review_weight:
            suggestion = ranked[0]
            outcome = outcome if update else "review"
    return OnlineDecision(target, outcome, duplicates, suggestion,
                          old >= 0 and old_emptied and target != old)
