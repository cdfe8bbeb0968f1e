"""How common a record's name tokens are in the registry, as a band, for review explanations.

Owns: counting, per name column, how many active records share a token value (sorted arrays
built once and cached until the registry has changed by 1%), and turning a count into a band (``unique``,
``rare``, ``uncommon``, ``common``, ``very common``). A steward learns from the band whether
agreement on a name is strong or weak evidence; the output never holds a token or an exact
count. Must not: run SQL, write anything, or return a token value.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

NAME_COLUMNS = ("given_name", "family_name")
# (share of active records at or above which, band), checked from the top.
BANDS: tuple[tuple[float, str], ...] = ((0.01, "very common"), (0.001, "common"),
                                        (0.0001, "uncommon"))
STALE_SHARE = 0.01
STALE_ROWS = 1000
_lock = threading.Lock()
_Entry = tuple[int, dict[str, "npt.NDArray[np.int64]"], int]  # (index rows, values, total)
_cache: weakref.WeakKeyDictionary[Registry, _Entry] = weakref.WeakKeyDictionary()


def band(count: int, total: int) -> str:
    """The band of a token held by ``count`` of ``total`` active records."""
    if count <= 1:
        return "unique"
    share = count / max(total, 1)
    for floor, name in BANDS:
        if share >= floor:
            return name
    return "rare"


def _sorted_values(reg: Registry) -> tuple[dict[str, npt.NDArray[np.int64]], int]:
    """Per name column, the sorted non-missing values of the active records, and their number;
    cached per registry and rebuilt once the index has grown or shrunk by more than
    ``STALE_SHARE`` of its rows (bands are coarse: a 1% drift cannot move a token across one,
    and a busy registry does not sort a million values per page)."""
    index = reg.index
    n = index.n
    with _lock:
        hit = _cache.get(reg)
        if hit is not None and abs(n - hit[0]) <= max(STALE_ROWS, int(n * STALE_SHARE)):
            return hit[1], hit[2]
    active = index.active[:n]
    out = {}
    for col in NAME_COLUMNS:
        if col in index.data:
            vals = index.data[col][:n][active]
            out[col] = np.sort(vals[vals != 0])
    total = int(active.sum())
    with _lock:
        _cache[reg] = (n, out, total)
    return out, total


def name_bands(reg: Registry, rows: list[int]) -> list[dict[str, str | None]]:
    """For each index row, the frequency band of each name token (None when missing)."""
    values, total = _sorted_values(reg)
    result: list[dict[str, str | None]] = []
    for row in rows:
        bands: dict[str, str | None] = {}
        for col in NAME_COLUMNS:
            arr = values.get(col)
            v = int(reg.index.data[col][row]) if col in reg.index.data else 0
            if arr is None or v == 0:
                bands[col] = None
                continue
            count = int(np.searchsorted(arr, v, side="right") - np.searchsorted(arr, v))
            bands[col] = band(max(count, 1), total)  # a record newer than the cache: itself
        result.append(bands)
    return result
