"""NumPy helpers agree with the NumPy functions they replace."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mpi.arrays import positions, sorted_unique, zero_as_null

ints = st.lists(st.integers(min_value=-50, max_value=500), max_size=200)


@given(ints)
def test_sorted_unique_matches_numpy(values: list[int]) -> None:
    a = np.array(values, dtype=np.int64)
    assert np.array_equal(sorted_unique(a), np.unique(a))


@given(st.sets(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=300),
       st.data())
def test_positions_matches_searchsorted(keys: set[int], data: st.DataObject) -> None:
    sorted_keys = np.array(sorted(keys), dtype=np.int64)
    probe = np.array(data.draw(st.lists(st.sampled_from(sorted(keys)), max_size=100)),
                     dtype=np.int64)
    assert np.array_equal(positions(sorted_keys, probe), np.searchsorted(sorted_keys, probe))


@given(ints)
def test_zero_as_null_matches_masked_array(values: list[int]) -> None:
    import pyarrow as pa
    a = np.array(values, dtype=np.int64)
    assert zero_as_null(a).equals(pa.array(a, pa.int64(), mask=a == 0))
