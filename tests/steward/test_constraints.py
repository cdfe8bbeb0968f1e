"""Constraints hold: must-link and cannot-link decisions survive `mpi link`, a promote to another
model version and another `mpi link`, and the online path honours them.

Owns: (1) a property test of the pure constrained clustering (random graphs and consistent
random constraints: must pairs together, cannot pairs apart, untouched clusters exactly
Splink's, every cluster connected by must-links and edges above the threshold); (2) the issue's
"constraints hold" check as a property test on a small synthetic registry (random decisions,
then ``reg.link()``, a promote to a model version with other parameters and a lower link
threshold, and ``reg.link()`` again); (3) the online rule on record updates.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from mpi.config import Settings
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.linkage.catalog import candidates_dir
from mpi.linkage.modelfile import default_models_dir, save_version
from mpi.steward import labels, stewardship
from mpi.steward.constraints import CANNOT, MUST, Constraint, ConstraintSet, constrain_clusters
from mpi.store import labels as lstore
from mpi.store import review as review_store
from mpi.synth import generate

SECRET = demo_secret(1)


# ---- (1) the pure algorithm ------------------------------------------------------------
def _components(n: int, edges: list[tuple[int, int, float]], threshold: float) -> np.ndarray:
    parent = list(range(n + 1))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, p in edges:
        if p >= threshold:
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(1, n + 1)]
    smallest: dict[int, int] = {}
    for i, r in enumerate(roots, start=1):
        smallest.setdefault(r, i)
    return np.array([smallest[r] for r in roots], dtype=np.int64)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, list[tuple[int, int, float]], list[tuple[int, int, str]]]:
    n = draw(st.integers(2, 30))
    rec = st.integers(1, n)
    raw = draw(st.lists(st.tuples(rec, rec, st.sampled_from([0.3, 0.6, 0.9, 0.95, 0.99, 1.0])),
                        max_size=60))
    edges = [(min(a, b), max(a, b), p) for a, b, p in raw if a != b]
    cons_raw = draw(st.lists(st.tuples(rec, rec, st.sampled_from([MUST, CANNOT])), max_size=12))
    kept: list[tuple[int, int, str]] = []
    for a, b, kind in cons_raw:  # keep the set satisfiable, as the use cases do
        if a == b:
            continue
        trial = ConstraintSet()
        trial.add(Constraint(i, x, y, k) for i, (x, y, k) in enumerate(kept, start=1))
        if not trial.conflicts([(min(a, b), max(a, b), kind)]):
            kept.append((min(a, b), max(a, b), kind))
    return n, edges, kept


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_constrained_clustering_honours_constraints(
        g: tuple[int, list[tuple[int, int, float]], list[tuple[int, int, str]]]) -> None:
    n, edges, cons = g
    threshold = 0.95
    seq = np.arange(1, n + 1, dtype=np.int64)
    cluster = _components(n, edges, threshold)
    table = pa.table({"unique_id_l": pa.array([e[0] for e in edges], pa.int64()),
                      "unique_id_r": pa.array([e[1] for e in edges], pa.int64()),
                      "match_probability": pa.array([e[2] for e in edges], pa.float64())})
    cset = ConstraintSet()
    cset.add(Constraint(i, a, b, k) for i, (a, b, k) in enumerate(cons, start=1))
    out = constrain_clusters(seq, cluster, table, cset, threshold=threshold)
    for a, b, kind in cons:
        assert (out[a - 1] == out[b - 1]) == (kind == MUST), (a, b, kind)
    # Labels are each cluster's smallest member.
    for i, lab in enumerate(out.tolist(), start=1):
        assert lab <= i and out[lab - 1] == lab
    # Clusters no constraint touches are exactly the connected components.
    touched = {int(cluster[x - 1]) for a, b, _k in cons for x in (a, b)}
    for i in range(n):
        if int(cluster[i]) not in touched:
            assert out[i] == cluster[i]
    # Every output cluster is connected by must-links and edges at the threshold.
    joins = [(a, b) for a, b, p in edges if p >= threshold] + [(a, b) for a, b, k in cons if k == MUST]
    assert np.array_equal(_components(n, [(a, b, 1.0) for a, b in joins
                                          if out[a - 1] == out[b - 1]], 0.5), out)
    if not cons:
        assert out is cluster


# ---- (2) constraints hold through link, promote, link -----------------------------------
@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry of ~200 synthetic people at 3 agencies, plus a candidate model version with
    other m/u values and a lower link threshold in its DATA_DIR/models (closed, to copy)."""
    d = tmp_path_factory.mktemp("base") / "data"
    reg = Registry(Settings(data_dir=d))
    rows, _truth = generate(people=200, agencies=3, seed=21)
    for agency, agency_rows in rows.items():
        recs, _ = tokenize_rows(agency_rows, secret=SECRET)
        reg.enrol_records(agency, list(enumerate(recs, start=1)))
    reg.close()
    model = json.loads((default_models_dir() / "default-v002.json").read_text())
    for comp in model["comparisons"]:
        for lvl in comp["comparison_levels"]:
            if not lvl.get("is_null_level") and isinstance(lvl.get("m_probability"), float):
                lvl["m_probability"] = min(0.999, lvl["m_probability"] * 1.3)
    meta = json.loads((default_models_dir() / "default-v002.meta.json").read_text())
    meta["thresholds"] = {"link": 0.9, "review": 0.3}
    version = save_version(candidates_dir(Settings(data_dir=d)), name="perturbed", model=model,
                           meta=meta)
    assert version == "perturbed-v001"
    return d


@pytest.fixture
def registry(base_dir: Path, tmp_path: Path) -> Iterator[Registry]:
    d = tmp_path / "data"
    shutil.copytree(base_dir, d)
    reg = Registry(Settings(data_dir=d))
    yield reg
    reg.close()


def _refs(reg: Registry, seqs: list[int]) -> dict[int, tuple[str, str]]:
    info = review_store.records_by_seq(reg.store.cursor(), seqs)
    return {s: (str(r["agency"]), str(r["source_record_id"])) for s, r in info.items()}


def _persons(reg: Registry) -> dict[int, int]:
    n = reg.index.n
    live = np.flatnonzero(reg.index.active[:n])
    return dict(zip(reg.row_seq[live].tolist(), reg.index.label[live].tolist(), strict=True))


def _check(reg: Registry, stage: str) -> None:
    person = _persons(reg)
    assert reg.constraints, stage
    for c in reg.constraints.items.values():
        together = person[c.a] == person[c.b]
        assert together == (c.kind == MUST), (stage, c)
    # What is in memory is what is stored.
    stored = dict(zip(*[reg.export_keys().column(k).to_pylist() for k in ("source_record_id",
                                                                         "person_key")],
                      strict=True))
    assert len(stored) == len(person)


def _decisions(reg: Registry, draws: list[tuple[int, int, bool]]) -> list[labels.LabelRow]:
    """Turn random draws into a satisfiable list of labelled pairs: cannot-links mostly inside
    a current person (so a link must cut it), must-links mostly across persons."""
    person = _persons(reg)
    seqs = sorted(person)
    by_person: dict[int, list[int]] = {}
    for s, p in person.items():
        by_person.setdefault(p, []).append(s)
    multi = [m for m in by_person.values() if len(m) > 1]
    pairs: list[tuple[int, int, bool]] = []
    trial = ConstraintSet()
    for i, j, is_match in draws:
        if not is_match and multi:
            members = multi[i % len(multi)]
            a, b = members[0], members[1 + j % (len(members) - 1)]
        else:
            a, b = seqs[i % len(seqs)], seqs[j % len(seqs)]
        if a == b:
            continue
        kind = MUST if is_match else CANNOT
        if trial.conflicts([(min(a, b), max(a, b), kind)]):
            continue
        trial.add([Constraint(len(pairs) + 1, min(a, b), max(a, b), kind)])
        pairs.append((a, b, is_match))
    refs = _refs(reg, [s for a, b, _m in pairs for s in (a, b)])
    return [labels.LabelRow(*refs[a], *refs[b], is_match=m, reason="property test")
            for a, b, m in pairs]


@pytest.mark.integration
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.booleans()),
                min_size=3, max_size=25),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=3))
def test_constraints_hold_after_link_promote_link(base_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                                                  draws: list[tuple[int, int, bool]],
                                                  merges: list[tuple[int, int]]) -> None:
    from mpi.errors import Conflict
    from mpi.steward.modelops import promote_model
    d = tmp_path_factory.mktemp("prop") / "data"
    shutil.copytree(base_dir, d)
    reg = Registry(Settings(data_dir=d))
    try:
        rows = _decisions(reg, draws)
        assume(rows)
        event(f"{min(len(rows), 20) // 5 * 5}+ labelled pairs, {len(merges)} merges")
        res = labels.import_labels(reg, rows, principal="test")
        assert len(res["constraint_ids"]) == len(rows)
        for i, j in merges:  # manual merges of random persons (refused across cannot-links)
            live = sorted(set(_persons(reg).values()))
            a, b = reg.persons[live[i % len(live)]], reg.persons[live[j % len(live)]]
            if a != b:
                with contextlib.suppress(Conflict):
                    stewardship.merge_persons(reg, a, others=[b], reason="test", principal="t")
        reg.link()
        _check(reg, "after mpi link")
        promoted = promote_model(reg, "perturbed-v001", principal="test")
        assert promoted["mode"] == "relink" and reg.model.version == "perturbed-v001"
        _check(reg, "after promote")
        summary = reg.link()
        _check(reg, "after a second mpi link")
        assert summary.keys_changed == 0  # constrained clustering is stable
    finally:
        reg.close()
    reopened = Registry(Settings(data_dir=d))  # and the stored state agrees
    try:
        _check(reopened, "after reopening")
    finally:
        reopened.close()


def test_revoked_constraint_stops_counting(registry: Registry) -> None:
    person = _persons(registry)
    by: dict[int, list[int]] = {}
    for s, p in person.items():
        by.setdefault(p, []).append(s)
    members = next(m for m in by.values() if len(m) > 1)
    a, b = members[0], members[1]
    refs = _refs(registry, [a, b])
    out = labels.import_labels(registry, [labels.LabelRow(
        *refs[a], *refs[b], is_match=False)], principal="test")
    assert out["unmet"] == 1
    registry.link()
    assert _persons(registry)[a] != _persons(registry)[b]
    labelled = lstore.count_labels(registry.store.cursor())
    labels.revoke_constraint(registry, out["constraint_ids"][0], reason="wrong",
                                  principal="test")
    assert not registry.constraints
    assert lstore.count_labels(registry.store.cursor()) == labelled - 1  # its label too
    registry.link()
    assert _persons(registry)[a] == _persons(registry)[b]  # the model's own clustering again
    page = labels.list_constraints(registry, principal="test", status="revoked")
    assert [c["constraint_id"] for c in page["constraints"]] == out["constraint_ids"]
    with pytest.raises(Exception, match="already revoked"):
        labels.revoke_constraint(registry, out["constraint_ids"][0], reason="again",
                                      principal="test")


# ---- (3) the online path ------------------------------------------------------------------
def _resend(reg: Registry, agency: str, sid: str, tokens: dict[str, Any], note: str) -> str:
    """Re-send a record with a changed attribute (an update that re-matches it)."""
    rec = {**tokens, "source_record_id": sid, "attributes": {"note": note}}
    res = reg.enrol_records(agency, [(1, rec)])
    assert not res.problems, res.problems
    out = res.results[0]
    assert out.outcome == "updated" and out.person_key is not None
    return out.person_key


def test_online_update_honours_cannot_and_must_links(base_dir: Path, tmp_path: Path) -> None:
    rows, _truth = generate(people=200, agencies=3, seed=21)
    tokens = {a: {t["source_record_id"]: t for t in tokenize_rows(r, secret=SECRET)[0]}
              for a, r in rows.items()}
    d = tmp_path / "data"
    shutil.copytree(base_dir, d)
    reg = Registry(Settings(data_dir=d))
    try:
        person = _persons(reg)
        by: dict[int, list[int]] = {}
        for s, p in person.items():
            by.setdefault(p, []).append(s)
        members = next(m for m in by.values() if len(m) >= 2)
        r, mates = members[-1], members[:-1]
        other = next(s for s, p in person.items() if p != person[r] and len(by[p]) == 1)
        refs = _refs(reg, [r, *mates, other])
        key_before = reg.persons[person[r]]
        # Without constraints, an update of r re-joins its person.
        assert _resend(reg, *refs[r], tokens[refs[r][0]][refs[r][1]], "1") == key_before
        labels.import_labels(reg, [labels.LabelRow(*refs[r], *refs[m], is_match=False)
                                        for m in mates], principal="test")
        key = _resend(reg, *refs[r], tokens[refs[r][0]][refs[r][1]], "2")
        assert key != key_before
        # A must-link pulls r to the other person's key on its next update.
        labels.import_labels(reg, [labels.LabelRow(*refs[r], *refs[other], is_match=True)],
                                  principal="test")
        key = _resend(reg, *refs[r], tokens[refs[r][0]][refs[r][1]], "3")
        assert key == reg.persons[_persons(reg)[other]]
        _check(reg, "online")
    finally:
        reg.close()


def test_one_batch_updating_several_constrained_records_keeps_the_constraints(
        tmp_path: Path) -> None:
    """r must-link x, r cannot-link z, and x, z, w share their identifiers. After a re-link the
    persons are {r, x} and {z, w}. One batch then updates x, z and r (a full-file resubmission):
    a record re-matched before its partners must not lose them (their old rows are out of the
    index while the batch is matched), or x follows w to z's person and r cannot join x."""
    rows, _truth = generate(people=40, agencies=1, seed=5)
    toks = tokenize_rows(next(iter(rows.values())), secret=SECRET)[0]
    same, other = toks[0], toks[1]
    reg = Registry(Settings(data_dir=tmp_path / "data"))
    try:
        reg.enrol_records("agency_a", list(enumerate(toks[2:], start=1)))
        batch = [{**same, "source_record_id": sid} for sid in ("z", "w", "x")]
        batch.append({**other, "source_record_id": "r"})
        assert not reg.enrol_records("agency_a", list(enumerate(batch, start=1))).problems
        labels.import_labels(reg, [labels.LabelRow("agency_a", "r", "agency_a", "x", True),
                                   labels.LabelRow("agency_a", "r", "agency_a", "z", False)],
                             principal="test")
        reg.link()
        keys = {sid: reg.by_sid[("agency_a", sid)] for sid in "rxzw"}
        key = {sid: reg.persons[int(reg.index.label[ref.row])] for sid, ref
               in keys.items()}
        assert key["r"] == key["x"] != key["z"] == key["w"], key
        _check(reg, "after link")
        update = [{**rec, "attributes": {"note": "refreshed"}}
                  for rec in (batch[2], batch[0], batch[3])]  # x, z, r in one batch
        res = reg.enrol_records("agency_a", list(enumerate(update, start=1)))
        assert not res.problems
        _check(reg, "after one batch updating x, z and r")
    finally:
        reg.close()


@pytest.mark.parametrize("cannot", [1, 12])  # a few partners, and more than the isin cut-off
def test_online_rule_sees_every_partner_of_a_record(cannot: int) -> None:
    """``enrolment._constrained`` finds each partner's newest live row (an older version's row
    is inactive), and falls back to the person a partner is leaving in the same batch."""
    from types import SimpleNamespace

    from mpi.identity import enrolment
    seq, must_partner, leaving = 1, 2, 3
    banned = list(range(10, 10 + cannot))
    # rows: the must partner's old (inactive, person 90) and new (person 91) versions, the
    # leaving partner's row (out of the index: person 92 via old_labels), one row per banned
    # partner (person 100 + i), and an unrelated record.
    ident = [must_partner, must_partner, leaving, *banned, 999]
    label = [90, 91, 92, *[100 + i for i in range(cannot)], 7]
    active = [False, True, False, *[True] * cannot, True]
    idx = SimpleNamespace(n=len(ident), ident=np.array(ident, dtype=np.int64),
                          label=np.array(label, dtype=np.int64),
                          active=np.array(active, dtype=bool))
    cs = ConstraintSet()
    cs.add([Constraint(1, seq, must_partner, MUST), Constraint(2, seq, leaving, CANNOT)])
    cs.add(Constraint(3 + i, seq, b, CANNOT) for i, b in enumerate(banned))
    reg = SimpleNamespace(state=SimpleNamespace(index=idx), constraints=cs)
    must, out = enrolment._constrained(reg, seq, {2: 92})  # type: ignore[arg-type]
    assert must == 91
    assert out == {92, *[100 + i for i in range(cannot)]}
