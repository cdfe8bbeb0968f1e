"""Definition v4 and the name-order-free similarity token of contract revision 3 (Decision 91).

Owns: the level "given and family names swapped, with a typo" (the order-free name filter
similar while neither name filter is): it holds for "Mason Blake" / "Blakf Mason" and not for
siblings or exact names; it is one predicate in both name comparisons (counted once); Splink on
DuckDB (and Spark SQL) and the in-process scorer give the same weights on it (|delta| < 1e-9);
a record without the token (a revision-2 agency) is simply not comparable on it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from mpi.agency.schema import TOKEN_COLUMNS
from mpi.identity import pipeline
from mpi.linkage import splink_engine
from mpi.linkage.definition import DEFINITION_V4, DEFINITIONS, Level
from mpi.linkage.modelfile import default_models_dir, load_version
from mpi.linkage.monotone import stronger_pairs
from mpi.linkage.params import ComparisonParams, ModelParams
from mpi.linkage.scorer import Scorer, level_holds
from mpi.linkage.shared_levels import shared_levels
from mpi.synth import error_profile, generate
from tests.support.models import LATEST_DEFAULT

_TYPO = "given and family names swapped, with a typo"
_POS = {c: i for i, c in enumerate(TOKEN_COLUMNS)}
_SERVER = bytes(range(32))
_BLOOMS = ("family_name_name_set_bloom", "given_name_bloom", "family_name_bloom")


def _columns(rows: list[dict[str, str]]) -> dict[str, npt.NDArray[np.int64]]:
    """Stored token columns (server side: permuted filters) of plaintext rows, in order."""
    tokens, rejected = pipeline.tokenize_rows(rows, secret=pipeline.demo_secret(1))
    assert not rejected
    parsed = pipeline.parse_all(tokens, server_secret=_SERVER)
    matrix = np.stack([p.tokens for p in parsed])
    return {c: np.ascontiguousarray(matrix[:, _POS[c]]) for c in DEFINITION_V4.columns()}


def _row(i: int, given: str, family: str, dob: str = "1980-02-03") -> dict[str, str]:
    return {"source_record_id": f"r{i}", "given_name": given, "family_name": family,
            "date_of_birth": dob}


def _level(comparison: str) -> tuple[int, Level]:
    comp = next(c for c in DEFINITION_V4.comparisons if c.name == comparison)
    i = next(i for i, lv in enumerate(comp.levels) if lv.label == _TYPO)
    return i, comp.levels[i]


def _v4_params() -> ModelParams:
    """default-v004's trained weights (definition v3) with the new level inserted (m 0.004,
    u 4e-6 per comparison, taken from "else"): a v4 model of known weights, for the parity
    checks (the shipped v4 model's parity: test_scorer_equivalence.py)."""
    v004 = load_version(default_models_dir(), "default-v004")
    assert v004.definition is DEFINITIONS["v3"]
    base = v004.params
    comps = []
    for cp in base.comparisons:
        comp = next(c for c in DEFINITION_V4.comparisons if c.name == cp.name)
        labels = [lv.label for lv in comp.levels]
        if _TYPO not in labels:
            comps.append(cp)
            continue
        i = labels.index(_TYPO)
        m = [*cp.m[:i], 0.004, *cp.m[i:]]
        u = [*cp.u[:i], 4e-6, *cp.u[i:]]
        m[-1], u[-1] = m[-1] - 0.004, u[-1] - 4e-6
        comps.append(ComparisonParams(cp.name, tuple(m), tuple(u)))
    return ModelParams(base.probability_two_random_records_match, tuple(comps))


def test_the_level_holds_for_swapped_names_with_a_typo_only() -> None:
    rows = [_row(0, "Mason", "Blake"), _row(1, "Blakf", "Mason"),  # swapped, with a typo
            _row(2, "Blake", "Mason"),                              # swapped exactly
            _row(3, "Sophie", "Blake"),                             # a sibling
            _row(4, "Masom", "Blake"),                              # a typo, in order
            _row(5, "Ethan", "Zimmermann")]                         # someone else
    cols = _columns(rows)

    def holds(a: int, b: int) -> bool:
        _i, lv = _level("given_name")
        return level_holds(lv, {c: int(v[a]) for c, v in cols.items()},
                           {c: int(v[b]) for c, v in cols.items()})
    assert holds(0, 1) and holds(1, 0)
    assert holds(0, 2)  # reached only below the exact swap level, which takes this pair first
    assert not holds(0, 3) and not holds(0, 4) and not holds(0, 5) and not holds(0, 0)
    scorer = Scorer(DEFINITION_V4, _v4_params())
    left = {c: v[[0, 0, 0]] for c, v in cols.items()}
    right = {c: v[[1, 2, 4]] for c, v in cols.items()}
    levels = dict(zip([c.name for c in DEFINITION_V4.comparisons], scorer.levels(left, right),
                      strict=True))
    for name in ("given_name", "family_name"):
        i, _lv = _level(name)
        assert levels[name][0] == i  # the typo swap, in both name comparisons
        assert levels[name][1] == i - 1  # the exact swap comes first
    assert levels["given_name"][2] != _level("given_name")[0]


def test_a_name_filter_missing_on_a_side_never_reaches_the_level() -> None:
    """As in SQL (NOT of a NULL is NULL): with the order-free filters similar but one side's
    given-name or family-name filter missing, the level does not hold, in plain Python and in
    NumPy alike (a tokenizer may send the pair filter without a name's own filter)."""
    cols = _columns([_row(0, "Mason", "Blake"), _row(1, "Blakf", "Mason")])
    for missing in _BLOOMS[1:]:
        one = {c: v.copy() for c, v in cols.items()}
        one[missing][1] = 0
        i, lv = _level("given_name")
        assert not level_holds(lv, {c: int(v[0]) for c, v in one.items()},
                               {c: int(v[1]) for c, v in one.items()})
        levels = Scorer(DEFINITION_V4, _v4_params()).levels(
            {c: v[[0]] for c, v in one.items()}, {c: v[[1]] for c, v in one.items()})
        assert levels[[c.name for c in DEFINITION_V4.comparisons].index("given_name")][0] != i


def test_one_predicate_in_both_name_comparisons_so_training_counts_it_once() -> None:
    groups = shared_levels(DEFINITION_V4)
    assert [("given_name", _level("given_name")[0]),
            ("family_name", _level("family_name")[0])] in groups
    assert DEFINITIONS["v4"] is DEFINITION_V4
    for name in ("given_name", "family_name"):  # nothing is assumed to imply it (no pooling)
        comp = next(c for c in DEFINITION_V4.comparisons if c.name == name)
        i = _level(name)[0]
        assert [p for p in stronger_pairs(comp) if p[1] == i] == []


def _synthetic() -> tuple[dict[str, npt.NDArray[np.int64]], pa.Table]:
    """~1,200 people at twice the error rates with 5% swapped names (swaps with typos among
    them); every fifth record without the new token, as a revision-2 agency sends it."""
    with error_profile(2.0, name_swap=0.05):
        records, _truth = generate(people=1200, agencies=3, seed=11)
    rows = [r for agency_rows in records.values() for r in agency_rows]
    cols = _columns(rows)
    old = np.arange(len(cols[_BLOOMS[0]])) % 5 == 0
    cols[_BLOOMS[0]] = np.where(old, 0, cols[_BLOOMS[0]])
    n = len(cols[_BLOOMS[0]])
    table = pa.table({"unique_id": pa.array(np.arange(1, n + 1)),
                      **{c: pa.array(v, pa.int64(), mask=v == 0) for c, v in cols.items()}})
    return cols, table


@pytest.mark.integration
def test_scorer_matches_splink_on_duckdb_with_the_new_level() -> None:
    """|delta weight| < 1e-9 on every edge Splink scores, the new level reached in both name
    comparisons, and a record without the token never reaching it."""
    cols, table = _synthetic()
    params = _v4_params()
    edges = splink_engine.predict_and_cluster(table, params, edge_threshold=0.0,
                                              cluster_threshold=0.97,
                                              definition=DEFINITION_V4).edges
    left = edges.column("unique_id_l").to_numpy() - 1
    right = edges.column("unique_id_r").to_numpy() - 1
    scorer = Scorer(DEFINITION_V4, params)
    lc = {c: v[left] for c, v in cols.items()}
    rc = {c: v[right] for c, v in cols.items()}
    ours = scorer.weights(lc, rc)
    delta = np.abs(ours - edges.column("match_weight").to_numpy())
    assert len(left) > 1000 and delta.max() < 1e-9, delta.max()
    levels = dict(zip([c.name for c in DEFINITION_V4.comparisons], scorer.levels(lc, rc),
                      strict=True))
    without = (lc[_BLOOMS[0]] == 0) | (rc[_BLOOMS[0]] == 0)
    for name in ("given_name", "family_name"):
        at = levels[name] == _level(name)[0]
        assert at.sum() >= 5, f"{name}: too few edges reach the new level"
        assert not (at & without).any()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
                    reason="Spark needs a Java runtime")
def test_spark_sql_evaluates_the_new_level_as_the_scorer_does() -> None:
    """The level's SQL (bit_count, &, NOT) holds in Spark on exactly the pairs where the
    scorer's does, over pairs of swapped, typo'd, sibling and unrelated names and missing
    filters."""
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession
    rows = [_row(0, "Mason", "Blake"), _row(1, "Blakf", "Mason"), _row(2, "Blake", "Mason"),
            _row(3, "Sophie", "Blake"), _row(4, "Masom", "Blake"), _row(5, "Ethan", "Zimmer"),
            _row(6, "Zimmer", "Ethen"), _row(7, "Riley", "Speight"), _row(8, "Speiggt", "Riley")]
    cols = _columns(rows)
    cols[_BLOOMS[0]][8] = 0  # a revision-2 record
    _i, lv = _level("family_name")
    n = len(rows)
    data = []
    expected = []
    for a in range(n):
        for b in range(n):
            data.append(tuple(int(cols[c][x]) or None for c in _BLOOMS for x in (a, b)))
            expected.append(level_holds(lv, {c: int(v[a]) for c, v in cols.items()},
                                        {c: int(v[b]) for c, v in cols.items()}))
    names = [f"{c}_{s}" for c in _BLOOMS for s in ("l", "r")]
    spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "1").getOrCreate())
    try:
        df = spark.createDataFrame(data, schema=", ".join(f"{c} BIGINT" for c in names))
        got = [bool(r[0]) for r in df.selectExpr(f"coalesce({lv.sql()}, false) AS h").collect()]
    finally:
        spark.stop()
    assert got == expected
    assert sum(expected) >= 4  # (0,1), (1,0), (6,5)... and the exact swaps


def test_revision_2_records_are_accepted_and_not_comparable_on_the_level() -> None:
    """A token record without ``family_name.name_set_bloom`` (an older agency) is kept, and
    the new level never holds against it; the other levels still do."""
    tokens, _rejected = pipeline.tokenize_rows([_row(0, "Mason", "Blake"), _row(1, "Blakf", "Mason")],
                                               secret=pipeline.demo_secret(1))
    old = [dict(t, tokens={k: v for k, v in t["tokens"].items()
                           if k != "family_name.name_set_bloom"}) for t in tokens]
    parsed = pipeline.parse_all(old, server_secret=_SERVER)
    assert len(parsed) == 2
    matrix = np.stack([p.tokens for p in parsed])
    assert (matrix[:, _POS[_BLOOMS[0]]] == 0).all()
    cols = {c: matrix[:, _POS[c]] for c in DEFINITION_V4.columns()}
    _i, lv = _level("given_name")
    assert not level_holds(lv, {c: int(v[0]) for c, v in cols.items()},
                           {c: int(v[1]) for c, v in cols.items()})
    lower = replace(lv, kind="similar", columns=(_BLOOMS[1],))  # the per-name filters are there
    assert cols[_BLOOMS[1]][0] != 0 and not level_holds(
        lower, {c: int(v[0]) for c, v in cols.items()}, {c: int(v[1]) for c, v in cols.items()})


def test_latest_default_weighs_a_swap_with_a_typo_between_else_and_an_exact_swap() -> None:
    """The shipped default follows v4: the new level, counted once, is evidence for a match
    (both comparisons together), and less than the same names swapped exactly."""
    mv = load_version(default_models_dir(), LATEST_DEFAULT)
    assert mv.definition is DEFINITION_V4
    total_typo = total_exact = 0.0
    for name in ("given_name", "family_name"):
        i, _lv = _level(name)
        weights = next(c for c in mv.params.comparisons if c.name == name).weights
        total_typo += weights[i]
        total_exact += weights[i - 1]
        assert weights[-1] < 0 < weights[i] < weights[i - 1]
    assert 0 < total_typo < total_exact
    assert any(_TYPO in line for line in mv.meta["training"]["counted_once"])
