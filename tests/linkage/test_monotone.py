"""Model sanity (Decision 89): a stronger agreement never weighs less than a weaker one.

Owns: the level partial order derived from the definition, the pooling that enforces it, the
shipped model satisfying it, and ``mpi model show`` flagging a model that does not.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from typer.testing import CliRunner

from mpi.cli.main import app
from mpi.config import Settings
from mpi.identity.registry import Registry
from mpi.linkage.definition import DEFAULT_DEFINITION, DEFINITIONS, Level
from mpi.linkage.modelfile import default_models_dir, load_version
from mpi.linkage.monotone import enforce_monotone, implies, pool, stronger_pairs, violations
from mpi.linkage.params import params_from_splink
from tests.support.models import LATEST_DEFAULT


def _comparison(name: str):  # type: ignore[no-untyped-def]
    return next(c for c in DEFAULT_DEFINITION.comparisons if c.name == name)


def test_the_latest_shipped_model_has_every_level_in_order() -> None:
    """The model a fresh registry scores with: no stronger level weighs less than a weaker one
    (default-v003 broke it twice: "phone equal" over "address line and phone equal", a masked
    SSN over the exact SSN)."""
    mv = load_version(default_models_dir(), LATEST_DEFAULT)
    assert violations(mv.definition, mv.params) == []


def test_v003_is_flagged_and_pooling_fixes_exactly_its_two_blocks() -> None:
    mv = load_version(default_models_dir(), "default-v003")
    found = {(v["comparison"], v["stronger"], v["weaker"]) for v in violations(mv.definition,
                                                                               mv.params)}
    assert found == {("household", "address line and phone equal", "phone equal"),
                     ("national_id", "exact", "one digit or two neighbours differ (not the last)")}
    model = copy.deepcopy(mv.model)
    pooled = enforce_monotone(model, mv.definition)
    assert pooled == ["national_id: exact, one digit or two neighbours differ (not the last)",
                      "household: address line and phone equal, phone equal"]
    after = params_from_splink(model, mv.definition)
    assert violations(mv.definition, after) == []
    for old, new in zip(mv.params.comparisons, after.comparisons, strict=True):
        assert new.u == old.u  # u never moves
        assert math.isclose(sum(new.m), sum(old.m), rel_tol=1e-12)  # nor a comparison's total m
    hh = next(c for c in after.comparisons if c.name == "household").weights
    assert math.isclose(hh[0], hh[2], rel_tol=1e-12)  # one pooled weight for the block
    assert enforce_monotone(model, mv.definition) == []  # idempotent


def test_implication_between_levels() -> None:
    both = Level("address line and phone equal", "all_equal", ("address_line", "phone"))
    phone = Level("phone equal", "equal", ("phone",))
    addr = Level("address line equal", "equal", ("address_line",))
    similar = Level("address similar", "similar", ("address_line_bloom",), 75)
    assert implies(both, phone) and implies(both, addr) and implies(addr, similar)
    assert not implies(phone, both) and not implies(addr, phone)
    ssn = Level("exact", "equal", ("national_id",))
    masks = Level("masked", "any_equal", tuple(f"national_id_mask{i}" for i in range(1, 8)))
    assert implies(ssn, masks) and not implies(masks, ssn)
    zip_alone = Level("ZIP, no address", "equal_unknown", ("postal_code", "address_line"))
    assert implies(zip_alone, Level("ZIP3", "equal", ("postal_code_zip3",)))
    assert not implies(Level("ZIP", "equal", ("postal_code",)), zip_alone)
    # the unordered name pair is not a function of one name: swapped names stay unordered
    swapped = Level("swapped", "equal", ("family_name_name_set",))
    assert not implies(Level("exact", "equal", ("family_name",)), swapped)
    assert not implies(swapped, Level("exact", "equal", ("family_name",)))


def test_every_level_is_stronger_than_else_and_unrelated_levels_stay_free() -> None:
    for definition in DEFINITIONS.values():
        for comp in definition.comparisons:
            pairs = set(stronger_pairs(comp))
            assert {(i, len(comp.levels)) for i in range(len(comp.levels))} <= pairs
            assert all(i != j for i, j in pairs)
    household = set(stronger_pairs(_comparison("household")))
    assert (0, 2) in household and (1, 2) not in household and (2, 1) not in household
    given = set(stronger_pairs(_comparison("given_name")))
    assert (0, 2) not in given  # exact vs. names swapped: neither implies the other


def test_pool_is_pool_adjacent_violators_on_a_chain() -> None:
    m, u = [0.5, 0.3, 0.15, 0.05], [0.01, 0.001, 0.09, 0.899]
    chain = [(0, 1), (1, 2), (2, 3), (0, 2), (0, 3), (1, 3)]
    new = pool(m, u, chain)
    w = [math.log2(a / b) for a, b in zip(new, u, strict=True)]
    assert w[0] == w[1] == math.log2(0.8 / 0.011)  # the one violating pair, pooled
    assert w[1] >= w[2] >= w[3] and new[2:] == m[2:]
    assert math.isclose(sum(new), sum(m), rel_tol=1e-12)
    # a level under "else" pools with it
    new = pool([0.9, 0.01, 0.09], [0.01, 0.5, 0.49], [(0, 2), (1, 2)])
    assert math.log2(new[1] / 0.5) == math.log2(new[2] / 0.49) == math.log2(0.1 / 0.99)
    assert pool(m, u, []) == m


def test_model_show_flags_levels_out_of_order(tmp_path: Path) -> None:
    Registry(Settings(data_dir=tmp_path / "d")).close()
    runner = CliRunner()
    old = runner.invoke(app, ["model", "show", "default-v003", "--data-dir", str(tmp_path / "d")])
    assert old.exit_code == 0, old.output
    assert "2 level pair(s) out of order" in old.output
    assert "household: address line and phone equal +15.079 < phone equal +15.149" in old.output
    new = runner.invoke(app, ["model", "show", LATEST_DEFAULT, "--data-dir", str(tmp_path / "d")])
    assert new.exit_code == 0 and "out of order" not in new.output
    assert "every stronger agreement weighs at least as much" in new.output
