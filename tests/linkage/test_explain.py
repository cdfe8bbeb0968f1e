"""explain_pair: the per-comparison waterfall sums to the in-process scorer's weight, tokenless.

Owns: checking on seeded synthetic pairs (every blocked pair of ~600 people plus random pairs)
that ``explain_pair`` gives the scorer's total match weight, levels and contributions exactly,
labels every level from the definition, and never carries a token value.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpi.agency.schema import TOKEN_COLUMNS
from mpi.identity import pipeline
from mpi.linkage.definition import DEFAULT_DEFINITION
from mpi.linkage.explain import ELSE_LABEL, NULL_LABEL, explain_pair, explain_with
from mpi.linkage.index import BlockingIndex
from mpi.linkage.modelfile import ModelVersion, default_models_dir, latest_version, load_version
from mpi.linkage.params import probability
from mpi.linkage.scorer import Scorer
from mpi.synth import generate

_POS = {c: i for i, c in enumerate(TOKEN_COLUMNS)}


@pytest.fixture(scope="module")
def model() -> ModelVersion:
    return load_version(default_models_dir(), latest_version(default_models_dir(), name="default"))


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    records, _truth = generate(people=600, agencies=3, seed=3)
    rows = [r for agency_rows in records.values() for r in agency_rows]
    tokens, _ = pipeline.tokenize_rows(rows, secret=pipeline.demo_secret(1))
    parsed = pipeline.parse_all(tokens, server_secret=bytes(range(32)))
    matrix = np.stack([p.tokens for p in parsed])
    return {c: np.ascontiguousarray(matrix[:, _POS[c]]) for c in DEFAULT_DEFINITION.columns()}


def _row(columns: dict[str, np.ndarray], i: int) -> dict[str, int]:
    return {c: int(v[i]) for c, v in columns.items()}


def test_waterfall_equals_scorer(model: ModelVersion, columns: dict[str, np.ndarray]) -> None:
    index = BlockingIndex(DEFAULT_DEFINITION)
    n = len(next(iter(columns.values())))
    index.append(columns, np.arange(n, dtype=np.int64))
    left, right = index.candidates(np.arange(n, dtype=np.int64))
    rng = np.random.default_rng(5)
    left = np.concatenate([left, rng.integers(0, n, 300)])
    right = np.concatenate([right, rng.integers(0, n, 300)])
    scorer = Scorer(DEFAULT_DEFINITION, model.params)
    lc = {c: v[left] for c, v in columns.items()}
    rc = {c: v[right] for c, v in columns.items()}
    expected = scorer.weights(lc, rc)
    levels = scorer.levels(lc, rc)
    assert len(left) > 1000
    seen_labels: set[str] = set()
    for k, (i, j) in enumerate(zip(left.tolist(), right.tolist(), strict=True)):
        ex = explain_with(_row(columns, i), _row(columns, j), scorer=scorer)
        assert ex.match_weight == expected[k]
        assert ex.match_probability == probability(float(expected[k]))
        assert [c.level for c in ex.comparisons] == [int(lv[k]) for lv in levels]
        assert abs(ex.prior_weight + sum(c.match_weight for c in ex.comparisons) - ex.match_weight) < 1e-9
        seen_labels.update(c.label for c in ex.comparisons)
    assert NULL_LABEL in seen_labels and ELSE_LABEL in seen_labels and "exact" in seen_labels


def test_no_token_in_output(model: ModelVersion, columns: dict[str, np.ndarray]) -> None:
    left, right = _row(columns, 0), _row(columns, 1)
    ex = explain_pair(left, right, definition=DEFAULT_DEFINITION, params=model.params)
    body = json.dumps(ex.as_dict())
    for tok in list(left.values()) + list(right.values()):
        if tok:
            assert str(tok) not in body
    assert [c["comparison"] for c in ex.as_dict()["comparisons"]] == [  # type: ignore[union-attr]
        c.name for c in DEFAULT_DEFINITION.comparisons]


def test_identical_and_empty_records(model: ModelVersion, columns: dict[str, np.ndarray]) -> None:
    row = _row(columns, 7)
    same = explain_pair(row, row, definition=DEFAULT_DEFINITION, params=model.params)
    for c, d in zip(same.comparisons, DEFAULT_DEFINITION.comparisons, strict=True):
        has = any(row.get(col) for col in d.null_columns)
        assert c.agrees == has and (c.level == -1) == (not has)
        assert (c.level == 0 and c.match_weight > 0.0) if has else c.match_weight == 0.0
    empty = explain_pair({}, row, definition=DEFAULT_DEFINITION, params=model.params)
    assert all(c.level == -1 and c.match_weight == 0.0 for c in empty.comparisons)
    assert empty.match_weight == model.params.prior_weight
