"""Small NumPy helpers shared by the pure modules.

Owns: array idioms that NumPy's own functions do slowly here. Pure: no I/O.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa


def sorted_unique(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Sorted distinct values (np.unique's result; sort + neighbour compare is ~40x faster)."""
    if len(values) == 0:
        return values.copy()
    s = np.sort(values)
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    out: npt.NDArray[np.int64] = s[keep]
    return out


def zero_as_null(values: npt.NDArray[np.int64]) -> pa.Array:
    """An Arrow int64 array of ``values`` with 0 as NULL (validity bitmap via np.packbits,
    ~20x faster than ``pa.array(values, mask=...)``). The buffer is copied, not shared."""
    data = np.ascontiguousarray(values, dtype=np.int64).copy()
    bitmap = np.packbits(data != 0, bitorder="little")
    return pa.Array.from_buffers(pa.int64(), len(data), [pa.py_buffer(bitmap), pa.py_buffer(data)])
