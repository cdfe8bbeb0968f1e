"""Accuracy machinery: cautious batch clustering, thresholds from a model's own estimate, the
blocking guard, and registries of the earlier token contract.

Owns: the pure pieces on constructed inputs (a bridging record between twins, a clear link,
a chain of bridges; thresholds for calibrated probability sets; an exploding blocking rule),
and the real registry around them: a re-link never undoes what online matching kept apart and
is idempotent; a registry written under contract revision 1 with default-v001 active opens,
links and promotes a revision-2 model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mpi.config import Settings
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.linkage.blocking import count_comparisons, guard
from mpi.linkage.clustering import cautious_clusters
from mpi.linkage.definition import DEFAULT_DEFINITION, DEFINITION_V1
from mpi.linkage.thresholds import DEFAULT, LINK_GRID, LINK_PRECISION, choose_thresholds
from mpi.steward.evaluation import evaluate
from mpi.synth import generate
from tests.support.models import LATEST_DEFAULT


def _edges(pairs: list[tuple[int, int, float]]) -> pa.Table:
    return pa.table({"unique_id_l": [a for a, _b, _p in pairs],
                     "unique_id_r": [b for _a, b, _p in pairs],
                     "match_probability": [p for _a, _b, p in pairs]})


def _components(n: int, pairs: list[tuple[int, int, float]], link: float) -> np.ndarray:
    parent = list(range(n + 1))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x
    for a, b, p in pairs:
        if p >= link:
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
    out = np.zeros(n, dtype=np.int64)
    for s in range(1, n + 1):  # label = smallest member
        out[s - 1] = min(x for x in range(1, n + 1) if find(x) == find(s))
    return out


def test_a_bridging_record_does_not_merge_twins_kept_apart() -> None:
    # twin A: records 1, 2; twin B: records 3, 4; record 5 links to both (above 0.9)
    pairs = [(1, 2, 0.9999), (3, 4, 0.9999), (1, 5, 0.97), (3, 5, 0.95)]
    seq = np.arange(1, 6, dtype=np.int64)
    comp = _components(5, pairs, 0.9)
    assert len(set(comp.tolist())) == 1  # connected components joins everyone
    current = np.array([0, 0, 1, 1, 0], dtype=np.int64)  # online put 5 with A, queued (A, B)
    apart = [(np.array([1, 2, 5]), np.array([3, 4]))]
    out = cautious_clusters(seq, comp, _edges(pairs), link_threshold=0.9, apart=apart,
                            current=current)
    assert out.tolist() == [1, 1, 3, 3, 1]
    # however strong a bridge, only the steward's answer joins them
    clear = [*pairs, (2, 4, 1.0)]
    out = cautious_clusters(seq, _components(5, clear, 0.9), _edges(clear), link_threshold=0.9,
                            apart=apart, current=current)
    assert out.tolist() == [1, 1, 3, 3, 1]
    # without an open item there is nothing to keep apart
    assert cautious_clusters(seq, comp, _edges(pairs), link_threshold=0.9, apart=[],
                             current=current) is comp


def test_a_chain_of_bridges_and_a_new_record_stay_on_their_sides() -> None:
    # persons A {1}, B {2}; new records 3 and 4 (no person yet) chain 1-3-4-2
    pairs = [(1, 3, 0.99), (3, 4, 0.98), (4, 2, 0.97)]
    seq = np.arange(1, 5, dtype=np.int64)
    current = np.array([0, 1, -1, -1], dtype=np.int64)
    out = cautious_clusters(seq, _components(4, pairs, 0.9), _edges(pairs), link_threshold=0.9,
                            apart=[(np.array([1]), np.array([2]))], current=current)
    assert out[0] != out[1]  # A and B apart
    assert out[2] == out[0] and out[3] == out[0]  # strongest edges first: 3 then 4 join A


def test_thresholds_follow_the_models_estimate() -> None:
    rng = np.random.default_rng(1)
    confident = np.concatenate([np.full(5000, 0.9995), rng.uniform(0.001, 0.2, 20000)])
    th, est = choose_thresholds(confident)
    assert th.link == 0.9 and est["at_link"]["precision"] >= 0.999
    assert th.review < th.link
    doubtful = np.concatenate([np.full(500, 0.999), rng.uniform(0.85, 0.999, 5000)])
    th2, est2 = choose_thresholds(doubtful)
    assert th2.link > th.link  # less confident pairs: a higher link threshold
    assert est2["at_link"]["precision"] >= LINK_PRECISION or th2.link == LINK_GRID[-1]
    too_few = choose_thresholds(np.array([0.99, 0.5]))
    assert too_few[0] == DEFAULT and "too few" in too_few[1]["reason"]


def test_guard_leaves_out_an_exploding_rule_and_says_so() -> None:
    n = 2000
    rng = np.random.default_rng(3)
    table = pa.table({
        "unique_id": np.arange(1, n + 1),
        "city": np.full(n, 7, dtype=np.int64),  # one value everyone shares
        "date_of_birth": rng.integers(1, 10**9, n),
        "address_line": pa.array(rng.integers(1, 400, n), mask=rng.random(n) < 0.5)})
    counts = {c.rule: c for c in count_comparisons(table, [("city",), ("address_line",)])}
    assert counts[("city",)].comparisons == n * (n - 1) // 2
    assert counts[("city",)].largest_block == n
    nulls = int(pa.compute.sum(pa.compute.is_null(table.column("address_line"))).as_py())
    assert counts[("address_line",)].comparisons < (n - nulls) ** 2 // 2
    # on an evenly spaced sample the counts scale back close to the exact ones
    sampled = {c.rule: c for c in count_comparisons(table, [("city",), ("address_line",)],
                                                    sample=500)}
    for rule in (("city",), ("address_line",)):
        exact = counts[rule].comparisons
        assert 0.7 * exact <= sampled[rule].comparisons <= 1.3 * exact
    definition = DEFAULT_DEFINITION.__class__(
        comparisons=DEFAULT_DEFINITION.comparisons,
        blocking_rules=(("city",), ("address_line",), ("city", "date_of_birth")),
        training_blocking_rules=())
    kept, said = guard(table, definition, max_per_record=50)
    assert kept.blocking_rules == (("address_line",), ("city", "date_of_birth"))
    assert len(said) == 1 and "city" in said[0] and "comparisons per record" in said[0]


def _enrolled(data_dir: Path, *, people: int, seed: int) -> tuple[Registry, dict[tuple[str, str], str]]:
    by_agency, truth_rows = generate(people=people, agencies=3, seed=seed)
    reg = Registry(Settings(data_dir=data_dir))
    for agency, rows in by_agency.items():
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        reg.enrol_records(agency, list(enumerate(records, start=1)))
    return reg, {(a, s): p for a, s, p in truth_rows}


def _keys(reg: Registry) -> dict[tuple[str, str], str]:
    k = reg.export_keys()
    return dict(zip(zip(k.column("agency").to_pylist(), k.column("source_record_id").to_pylist(),
                        strict=True), k.column("person_key").to_pylist(), strict=True))


def _open_duplicates(reg: Registry) -> list[tuple[str, str]]:
    return [(str(a), str(b)) for a, b in reg.store.cursor().execute(
        "SELECT person_key, other_person_key FROM review_item WHERE kind = 'possible_duplicate' "
        "AND status = 'open' ORDER BY item_seq").fetchall()]


@pytest.mark.integration
def test_relink_keeps_what_online_kept_apart_and_is_idempotent(tmp_path: Path) -> None:
    reg, truth = _enrolled(tmp_path / "d", people=4000, seed=23)
    try:
        online = evaluate(truth, _keys(reg))
        items = _open_duplicates(reg)
        assert items, "the synthetic registry should queue possible duplicates"
        reg.link()
        linked = evaluate(truth, _keys(reg))
        assert linked.cluster.f1 >= online.cluster.f1
        still = _open_duplicates(reg)
        assert len(still) >= len(items)  # a re-link settles none (splits copy them)
        persons = set(reg.export_keys().column("person_key").to_pylist())
        for a, b in still:  # every open question is still between two live persons
            assert a != b and a in persons and b in persons
        again = reg.link()
        assert (again.merges, again.splits, again.keys_changed) == (0, 0, 0)
        assert _open_duplicates(reg) == still
    finally:
        reg.close()


@pytest.mark.integration
def test_a_revision_1_registry_opens_links_and_promotes_revision_2(tmp_path: Path) -> None:
    """A registry whose stored token lists are 27 long and whose active model follows
    definition v1 keeps working, and promoting a v2 model re-blocks it with the v2 rules."""
    data = tmp_path / "d"
    reg, truth = _enrolled(data, people=300, seed=5)
    before = _keys(reg)
    reg.close()
    # write the registry back to the earlier shape: v001 active, token lists cut to 27
    import duckdb
    con = duckdb.connect(str(data / "mpi.duckdb"))
    con.execute("UPDATE source_record SET tokens = tokens[1:27]")
    con.execute("UPDATE record_version SET tokens = tokens[1:27]")
    con.execute("DELETE FROM model_activation")
    con.execute("INSERT INTO model_activation VALUES ('default-v001', now())")
    con.execute("DELETE FROM schema_version WHERE version >= 8")  # as before the upgrade
    con.close()
    reg = Registry(Settings(data_dir=data))
    try:
        cur = reg.store.cursor()
        assert reg.model.version == "default-v001" and reg.model_definition is DEFINITION_V1
        widths = {int(w) for (w,) in cur.execute(
            "SELECT DISTINCT len(tokens) FROM source_record").fetchall()}
        assert widths == {50}  # the migrations padded them (revisions 2 and 3)
        assert _keys(reg) == before
        reg.link()
        from mpi.steward.modelops import promote_model
        res = promote_model(reg, LATEST_DEFAULT, principal="test")
        assert res["mode"] == "relink"
        assert reg.model_definition is DEFAULT_DEFINITION
        assert reg.index.definition is DEFAULT_DEFINITION  # re-blocked with the newer rules
        after = evaluate(truth, _keys(reg))
        assert after.pairwise.precision >= 0.99
    finally:
        reg.close()
