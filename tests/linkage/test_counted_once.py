"""Model sanity (Decision 90): a level in more than one comparison is counted once.

Owns: finding the shared levels of a definition, dividing their trained evidence among the
comparisons that hold them, the shipped model doing so, and a pair of different people whose
names are swapped ("Blake Mason" / "Mason Blake") not linking on that evidence alone.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import numpy.typing as npt

from mpi.agency.schema import TOKEN_COLUMNS
from mpi.identity import pipeline
from mpi.linkage.definition import DEFAULT_DEFINITION, DEFINITIONS
from mpi.linkage.modelfile import ModelVersion, default_models_dir, load_version
from mpi.linkage.monotone import enforce_monotone, violations
from mpi.linkage.params import params_from_splink, probability
from mpi.linkage.scorer import Scorer
from mpi.linkage.shared_levels import count_once, shared_levels
from tests.support.models import LATEST_DEFAULT

_SWAPPED = "given and family names swapped"
_POS = {c: i for i, c in enumerate(TOKEN_COLUMNS)}


def _weights(mv: ModelVersion, comparison: str) -> dict[str, float]:
    comp = next(c for c in mv.definition.comparisons if c.name == comparison)
    params = next(c for c in mv.params.comparisons if c.name == comparison)
    return dict(zip([lv.label for lv in comp.levels] + ["else"], params.weights, strict=True))


def _swap_evidence(mv: ModelVersion) -> tuple[float, float]:
    """(names swapped: given + family weight, both names exact: given + family weight)."""
    given, family = _weights(mv, "given_name"), _weights(mv, "family_name")
    return given[_SWAPPED] + family[_SWAPPED], given["exact"] + family["exact"]


def test_the_swapped_names_level_is_the_one_shared_level() -> None:
    assert shared_levels(DEFINITIONS["v3"]) == [[("given_name", 2), ("family_name", 2)]]
    assert shared_levels(DEFINITIONS["v4"]) == [[("given_name", 2), ("family_name", 2)],
                                                [("given_name", 3), ("family_name", 3)]]
    for definition in DEFINITIONS.values():  # v1 has no swap level; no other level is shared
        # (v4's swapped names with a typo is shared too, and counted once alike: Decision 91)
        for group in shared_levels(definition):
            labels = {next(c for c in definition.comparisons if c.name == n).levels[i].label
                      for n, i in group}
            assert labels in ({_SWAPPED}, {_SWAPPED + ", with a typo"})  # the latter: v4


def test_latest_shipped_model_counts_swapped_names_once() -> None:
    """Fails on a model that double counts: default-v003 gives swapped names 29.5 bits, more
    than both names exactly equal (16.3)."""
    swapped, exact = _swap_evidence(load_version(default_models_dir(), LATEST_DEFAULT))
    assert swapped <= exact, (swapped, exact)
    old_swapped, old_exact = _swap_evidence(load_version(default_models_dir(), "default-v003"))
    assert old_swapped > old_exact  # the double count this test exists to catch


def test_count_once_halves_the_shared_level_and_keeps_m_and_the_u_total() -> None:
    mv = load_version(default_models_dir(), "default-v003")
    model = copy.deepcopy(mv.model)
    done = count_once(model, mv.definition)
    assert [d.split(" (")[0] for d in done] == [f"given_name: {_SWAPPED}",
                                                 f"family_name: {_SWAPPED}"]
    after = params_from_splink(model, mv.definition)
    for old, new in zip(mv.params.comparisons, after.comparisons, strict=True):
        assert new.m == old.m  # m never moves
        assert math.isclose(sum(new.u), sum(old.u), rel_tol=1e-12)  # u taken from "else"
        if old.name in ("given_name", "family_name"):
            assert math.isclose(new.weights[2], old.weights[2] / 2, rel_tol=1e-12)
            assert abs(new.weights[-1] - old.weights[-1]) < 1e-3  # "else" barely moves
            assert new.weights[:2] == old.weights[:2] and new.weights[3:-1] == old.weights[3:-1]
        else:
            assert new.u == old.u


def test_the_shipped_latest_is_v003_counted_once_then_pooled() -> None:
    """default-v004 is default-v003's training (same mix, same seed) with the swapped-names
    evidence counted once and its out-of-order levels pooled; prior and thresholds as v003."""
    v3 = load_version(default_models_dir(), "default-v003")
    v4 = load_version(default_models_dir(), "default-v004")
    model = copy.deepcopy(v3.model)
    count_once(model, v3.definition)
    enforce_monotone(model, v3.definition)
    want = params_from_splink(model, v3.definition)
    assert v4.thresholds == v3.thresholds
    assert v4.meta["training"]["counted_once"]
    assert violations(v4.definition, v4.params) == []
    assert math.isclose(v4.params.prior_weight, want.prior_weight, rel_tol=1e-9)
    for a, b in zip(want.comparisons, v4.params.comparisons, strict=True):
        assert all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
                   for x, y in zip(a.weights, b.weights, strict=True)), a.name


def _columns(rows: list[dict[str, str]]) -> dict[str, npt.NDArray[np.int64]]:
    tokens, _ = pipeline.tokenize_rows(rows, secret=pipeline.demo_secret(1))
    parsed = pipeline.parse_all(tokens, server_secret=bytes(range(32)))
    matrix = np.stack([p.tokens for p in parsed])
    return {c: np.ascontiguousarray(matrix[:, _POS[c]]) for c in DEFAULT_DEFINITION.columns()}


def test_blake_mason_and_mason_blake_of_another_birth_date_are_not_linked() -> None:
    """FEBRL2's one false link under double counting: swapped names, a date of birth with two
    of its three parts equal, another SSN, ZIP and address. Different people."""
    base = {"middle_name": "", "sex": "", "city": "", "phone": "", "email": ""}
    rows = [
        {**base, "source_record_id": "1", "given_name": "Blake", "family_name": "Mason",
         "date_of_birth": "1961-07-14", "national_id": "412-55-1093", "postal_code": "04102",
         "address_line": "12 Harbor Street"},
        {**base, "source_record_id": "2", "given_name": "Mason", "family_name": "Blake",
         "date_of_birth": "1961-07-24", "national_id": "268-31-7740", "postal_code": "04240",
         "address_line": "7 Elm Avenue"},
    ]
    cols = _columns(rows)
    left = {c: v[:1] for c, v in cols.items()}
    right = {c: v[1:] for c, v in cols.items()}
    latest = load_version(default_models_dir(), LATEST_DEFAULT)
    scorer = Scorer(latest.definition, latest.params)
    levels = {c.name: int(lv[0]) for c, lv in zip(latest.definition.comparisons,
                                                    scorer.levels(left, right), strict=True)}
    assert levels["given_name"] == levels["family_name"] == 2  # both comparisons: swapped
    p = probability(float(scorer.weights(left, right)[0]))
    assert p < latest.thresholds.review, p
    # Under default-v003 (the swap counted twice) the same pair is a link.
    old = load_version(default_models_dir(), "default-v003")
    p_old = probability(float(Scorer(old.definition, old.params).weights(left, right)[0]))
    assert p_old >= old.thresholds.link, p_old


def test_an_untrained_shared_level_is_left_for_the_parent() -> None:
    """A level EM could not train is skipped (its m or u missing): `mpi model train` then
    inherits the parent's value, already counted once, instead of dividing it again."""
    mv = load_version(default_models_dir(), "default-v003")
    model = copy.deepcopy(mv.model)
    given = next(c for c in model["comparisons"] if c["output_column_name"] == "given_name")
    swapped = [lv for lv in given["comparison_levels"] if not lv.get("is_null_level")][2]
    swapped["m_probability"] = None
    assert [d.split(":")[0] for d in count_once(model, mv.definition)] == ["family_name"]
    assert swapped["m_probability"] is None
