"""The in-process scorer and blocking index agree exactly with Splink on the default model.

Owns: checking, on a seeded synthetic set of ~3,000 people, that (1) ``Scorer.weights`` gives
Splink's match weight for every pair Splink scores (|delta| < 1e-9) and (2) the in-memory
``BlockingIndex`` produces exactly Splink's set of blocked pairs, whether rows are appended in
one go or in chunks (the online path).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from splink import DuckDBAPI, Linker

from mpi.agency.schema import TOKEN_COLUMNS
from mpi.identity import pipeline
from mpi.linkage import splink_engine
from mpi.linkage.definition import DEFAULT_DEFINITION
from mpi.linkage.index import BlockingIndex, rule_key, rule_keys
from mpi.linkage.modelfile import ModelVersion, default_models_dir, latest_version, load_version
from mpi.linkage.scorer import Scorer
from mpi.synth import error_profile, generate

_POS = {c: i for i, c in enumerate(TOKEN_COLUMNS)}
Pairs = set[tuple[int, int]]


@dataclass(frozen=True)
class Data:
    columns: dict[str, np.ndarray]   # model column -> int64 per record (0 = missing), row i = id i+1
    table: pa.Table                  # unique_id (1..n) + model columns, null where missing
    model: ModelVersion


@pytest.fixture(scope="module")
def data() -> Data:
    # errors at twice the generator's rates, with swapped names and other values: every level
    # of every comparison is reached (test_every_level_is_exercised)
    with error_profile(2.0, name_swap=0.02, other=0.02):
        records, _truth = generate(people=3000, agencies=3, seed=7)
    rows = [r for agency_rows in records.values() for r in agency_rows]
    for i, r in enumerate(rows):  # some records without a street address (or ZIP): the
        if i % 4 == 0:            # household levels for agreement with nothing to compare
            r["address_line"] = ""
        if i % 12 == 0:
            r["postal_code"] = ""
    tokens, _rejected = pipeline.tokenize_rows(rows, secret=pipeline.demo_secret(1))
    parsed = pipeline.parse_all(tokens, server_secret=bytes(range(32)))
    assert len(parsed) > 5000
    cols = DEFAULT_DEFINITION.columns()
    table = pipeline.model_table(parsed, columns=cols)
    matrix = np.stack([p.tokens for p in parsed])
    columns = {c: np.ascontiguousarray(matrix[:, _POS[c]]) for c in cols}
    model = load_version(default_models_dir(), latest_version(default_models_dir(), name="default"))
    assert model.definition is DEFAULT_DEFINITION
    return Data(columns, table, model)


@pytest.fixture(scope="module")
def splink_edges(data: Data) -> pa.Table:
    result = splink_engine.predict_and_cluster(data.table, data.model.params, edge_threshold=0.0,
                                               cluster_threshold=data.model.thresholds.link)
    return result.edges


@pytest.fixture(scope="module")
def splink_blocked_pairs(data: Data) -> Pairs:
    """Every pair Splink's blocking produces: predict with no threshold on its own connection."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    api = DuckDBAPI(connection=con)
    sdf = api.register(data.table, dataset_display_name="equivalence")
    linker = Linker(sdf, splink_engine.splink_settings(DEFAULT_DEFINITION, data.model.params),
                    log_level=None)
    pred = linker.inference.predict()
    tab = pred.as_duckdbpyrelation().select("unique_id_l, unique_id_r").to_arrow_table()
    left = tab.column("unique_id_l").to_pylist()
    right = tab.column("unique_id_r").to_pylist()
    pairs = {(min(a, b), max(a, b)) for a, b in zip(left, right, strict=True)}
    assert len(pairs) == len(left), "Splink returned a pair twice"
    con.close()
    return pairs


def _gather(cols: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {c: v[idx] for c, v in cols.items()}


@pytest.mark.integration
def test_scorer_matches_splink_weights_on_every_edge(data: Data, splink_edges: pa.Table) -> None:
    left = splink_edges.column("unique_id_l").to_numpy() - 1
    right = splink_edges.column("unique_id_r").to_numpy() - 1
    splink_w = splink_edges.column("match_weight").to_numpy()
    assert len(left) > 3000, "too few edges to be a meaningful comparison"
    scorer = Scorer(DEFAULT_DEFINITION, data.model.params)
    ours = scorer.weights(_gather(data.columns, left), _gather(data.columns, right))
    delta = np.abs(ours - splink_w)
    worst = int(np.argmax(delta))
    assert delta.max() < 1e-9, (
        f"pair ({left[worst] + 1}, {right[worst] + 1}): scorer {ours[worst]!r}, "
        f"splink {splink_w[worst]!r}")
    # The comparison covers the whole range, not only obvious matches or non-matches.
    assert splink_w.min() < 0 < splink_w.max()
    assert (splink_w >= data.model.thresholds.link_weight).sum() > 1000


def test_every_level_is_exercised(data: Data, splink_edges: pa.Table) -> None:
    """The equivalence above covers every level of every comparison, the revision-2 ones
    (nickname groups, swapped names, letter-pair similarity, masked digits) and revision 3's
    (swapped names with a typo, on the name-order-free filter) included, and
    similarity tokens with the sign bit set (NumPy and SQL count those bits differently)."""
    left = splink_edges.column("unique_id_l").to_numpy() - 1
    right = splink_edges.column("unique_id_r").to_numpy() - 1
    scorer = Scorer(DEFAULT_DEFINITION, data.model.params)
    levels = scorer.levels(_gather(data.columns, left), _gather(data.columns, right))
    for comp, idx in zip(DEFAULT_DEFINITION.comparisons, levels, strict=True):
        seen = set(np.unique(idx).tolist())
        missing = [lvl.label for i, lvl in enumerate(comp.levels) if i not in seen]
        assert not missing, f"{comp.name}: no edge reaches {missing}"
    for col in ("given_name_bloom", "family_name_bloom", "address_line_bloom",
                "family_name_name_set_bloom"):
        assert (data.columns[col] < 0).any() and (data.columns[col] > 0).any()


def test_few_pair_scorer_is_bit_identical_to_the_array_path(data: Data,
                                                            splink_edges: pa.Table) -> None:
    """The online path scores a single record's few candidates in plain Python: the same
    levels and the same additions in the same order give exactly the array path's sums."""
    left = splink_edges.column("unique_id_l").to_numpy() - 1
    right = splink_edges.column("unique_id_r").to_numpy() - 1
    splink_w = splink_edges.column("match_weight").to_numpy()
    scorer = Scorer(DEFAULT_DEFINITION, data.model.params)
    ours = scorer.weights(_gather(data.columns, left), _gather(data.columns, right))
    sizes = [1, 2, 5, 24]
    few, start, k = [], 0, 0
    while start < len(left):
        stop = min(start + sizes[k % len(sizes)], len(left))
        few.append(scorer.weights(_gather(data.columns, left[start:stop]),
                                  _gather(data.columns, right[start:stop])))
        start, k = stop, k + 1
    few_w = np.concatenate(few)
    assert len(few_w) > 3000
    assert few_w.tolist() == ours.tolist()
    assert np.abs(few_w - splink_w).max() < 1e-9


def test_scorer_is_symmetric(data: Data, splink_edges: pa.Table) -> None:
    left = splink_edges.column("unique_id_l").to_numpy() - 1
    right = splink_edges.column("unique_id_r").to_numpy() - 1
    scorer = Scorer(DEFAULT_DEFINITION, data.model.params)
    a = scorer.weights(_gather(data.columns, left), _gather(data.columns, right))
    b = scorer.weights(_gather(data.columns, right), _gather(data.columns, left))
    assert np.abs(a - b).max() < 1e-12


@pytest.mark.integration
def test_splink_edges_with_tiny_threshold_are_all_blocked_pairs(splink_edges: pa.Table,
                                                               splink_blocked_pairs: Pairs) -> None:
    left = splink_edges.column("unique_id_l").to_pylist()
    right = splink_edges.column("unique_id_r").to_pylist()
    assert {(min(a, b), max(a, b)) for a, b in zip(left, right, strict=True)} == splink_blocked_pairs


def _index_pairs(left: np.ndarray, right: np.ndarray) -> Pairs:
    # rows are 0-based, unique_id = row + 1; candidates give (later row, earlier row).
    assert (right < left).all()
    pairs = set(zip((right + 1).tolist(), (left + 1).tolist(), strict=True))
    assert len(pairs) == len(left), "candidates returned a pair twice"
    return pairs


def test_blocking_index_all_at_once_equals_splink_blocking(data: Data,
                                                           splink_blocked_pairs: Pairs) -> None:
    n = data.table.num_rows
    index = BlockingIndex(DEFAULT_DEFINITION)
    rows = index.append(data.columns, np.full(n, -1, dtype=np.int64))
    ours = _index_pairs(*index.candidates(rows))
    assert len(splink_blocked_pairs) > 3000
    assert ours == splink_blocked_pairs, (
        f"only in index: {sorted(ours - splink_blocked_pairs)[:5]}, "
        f"only in Splink: {sorted(splink_blocked_pairs - ours)[:5]}")


@pytest.mark.parametrize("chunk", [1, 3, 700, 2500])
def test_blocking_index_incremental_equals_splink_blocking(data: Data, splink_blocked_pairs: Pairs,
                                                           chunk: int) -> None:
    """Appending in chunks (delta + merged sorted arrays) and asking for each chunk's candidates
    (the online path) finds the same pairs; so does asking once over all rows at the end."""
    n = data.table.num_rows
    if chunk == 1:
        n = 600  # one row at a time is slow-ish; check a prefix against Splink's pairs within it
    index = BlockingIndex(DEFAULT_DEFINITION)
    online: Pairs = set()
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        part = {c: v[start:stop] for c, v in data.columns.items()}
        rows = index.append(part, np.full(stop - start, -1, dtype=np.int64))
        online |= _index_pairs(*index.candidates(rows))
    expected = {(a, b) for a, b in splink_blocked_pairs if b <= n}
    assert online == expected
    at_end = _index_pairs(*index.candidates(np.arange(n, dtype=np.int64)))
    assert at_end == expected


def test_few_row_paths_equal_the_array_paths(data: Data) -> None:
    """Single online records take a plain-Python path (rule_key, lookup_one): same keys, same
    candidates and same query hits as the array path."""
    rng = np.random.default_rng(3)
    cols = {c: rng.integers(-2**63, 2**63 - 1, 500, dtype=np.int64) for c in data.columns}
    for c in cols:
        cols[c][rng.random(500) < 0.2] = 0
    for i, rule in enumerate(DEFAULT_DEFINITION.blocking_rules):
        vec = rule_keys(cols, rule, i).tolist()
        assert vec == [rule_key({c: int(v[j]) for c, v in cols.items()}, rule, i)
                       for j in range(500)]
    n = data.table.num_rows
    index = BlockingIndex(DEFAULT_DEFINITION)
    rows = index.append(data.columns, np.full(n, -1, dtype=np.int64))
    index.active[::5] = False
    sample = rows[7::41]
    left, right = index.candidates(sample)
    one = [index.candidates(sample[k:k + 1]) for k in range(len(sample))]
    assert len(left) > 100
    assert left.tolist() == [x for lf, _ in one for x in lf.tolist()]
    assert right.tolist() == [x for _, rt in one for x in rt.tolist()]
    outside = {c: v[sample] for c, v in data.columns.items()}
    q, hit = index.query(outside)
    singles = [index.query({c: v[k:k + 1] for c, v in outside.items()}) for k in range(len(sample))]
    assert sorted(zip(q.tolist(), hit.tolist(), strict=True)) == sorted(
        (k, h) for k, (_q, hs) in enumerate(singles) for h in hs.tolist())


def test_blocking_index_skips_inactive_rows(data: Data, splink_blocked_pairs: Pairs) -> None:
    n = data.table.num_rows
    index = BlockingIndex(DEFAULT_DEFINITION)
    rows = index.append(data.columns, np.full(n, -1, dtype=np.int64))
    dropped = np.arange(0, n, 3)
    index.active[dropped] = False
    ours = _index_pairs(*index.candidates(rows))
    gone = set((dropped + 1).tolist())
    # Only the earlier (right) row must be active; a query row may itself be inactive.
    expected = {(a, b) for a, b in splink_blocked_pairs if a not in gone}
    assert ours == expected


def test_truncate_forgets_uncommitted_rows(data: Data, splink_blocked_pairs: Pairs) -> None:
    n = data.table.num_rows
    half = n // 2
    index = BlockingIndex(DEFAULT_DEFINITION)
    index.append({c: v[:half] for c, v in data.columns.items()}, np.full(half, -1, dtype=np.int64))
    index.append({c: v[half:] for c, v in data.columns.items()},
                 np.full(n - half, -1, dtype=np.int64))
    index.truncate(half)
    assert index.n == half
    rows = index.append({c: v[half:] for c, v in data.columns.items()},
                        np.full(n - half, -1, dtype=np.int64))
    ours = _index_pairs(*index.candidates(np.arange(n, dtype=np.int64)))
    assert ours == splink_blocked_pairs
    assert rows[0] == half
