"""Key and constraint invariants under random sequences of steward and online operations.

Owns: a hypothesis test that interleaves review decisions, manual merges and splits, label
imports, constraint revocations, online record updates (one record, or several in one batch), withdrawals and
(re-)enrolments,
``reg.link()`` and promotions (to a version with other parameters and thresholds, and back;
each previewed first) on a small synthetic registry and checks after every step: what is in
memory is what is stored; every key ever issued still exists, an active key holds records,
a retired key forwards (lineage) and never comes back; a constraint that held before a step
still holds after it (imports may add unmet ones, which the next re-link meets); after a
re-link or promote every active constraint holds, and the impact preview's churn equals the
promotion's.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mpi.config import Settings
from mpi.errors import Conflict, InvalidInput
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.linkage.catalog import candidates_dir
from mpi.linkage.modelfile import save_version
from mpi.steward import labels, modelops, review, stewardship
from mpi.steward.constraints import MUST
from mpi.store import review as review_store
from mpi.synth import generate
from tests.support.models import LATEST_DEFAULT

pytestmark = pytest.mark.integration  # a long hypothesis search over steward operations

ROWS, _TRUTH = generate(people=150, agencies=3, seed=33)
TOKENS = {a: {t["source_record_id"]: t for t in tokenize_rows(r, secret=demo_secret(1))[0]}
          for a, r in ROWS.items()}
OPS = ("decide", "merge", "split", "import", "revoke", "update", "batch", "link", "promote",
       "withdraw", "enrol")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry of the synthetic records enrolled online (review items queued), closed."""
    d = tmp_path_factory.mktemp("inv") / "data"
    reg = Registry(Settings(data_dir=d))
    for agency, toks in TOKENS.items():
        reg.enrol_records(agency, list(enumerate(toks.values(), start=1)))
    model = json.loads(json.dumps(reg.model.model))
    for comp in model["comparisons"]:
        for lvl in comp["comparison_levels"]:
            if not lvl.get("is_null_level") and isinstance(lvl.get("m_probability"), float):
                lvl["m_probability"] = min(0.999, lvl["m_probability"] * 1.3)
    meta = {**reg.model.meta, "thresholds": {"link": 0.9, "review": 0.3}}
    assert save_version(candidates_dir(reg.settings), name="perturbed", model=model,
                        meta=meta) == "perturbed-v001"
    reg.close()
    return d


@pytest.fixture
def fresh(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where each example copies the base registry."""
    yield tmp_path_factory.mktemp("ex")


def _persons(reg: Registry) -> dict[int, int]:
    n = reg.index.n
    live = np.flatnonzero(reg.index.active[:n])
    return dict(zip(reg.row_seq[live].tolist(), reg.index.label[live].tolist(), strict=True))


def _held(reg: Registry) -> set[int]:
    """Active constraints that hold now."""
    person = _persons(reg)
    return {c.constraint_seq for c in reg.constraints.items.values()
            if c.a in person and c.b in person
            and (person[c.a] == person[c.b]) == (c.kind == MUST)}


def _check_keys(reg: Registry, seen: set[str], retired_before: set[str], step: str) -> None:
    cur = reg.store.cursor()
    person = _persons(reg)
    stored = dict(cur.execute("SELECT record_seq, person_key FROM source_record "
                              "WHERE status = 'active'").fetchall())
    assert {s: reg.persons[p] for s, p in person.items()} == stored, step
    status = dict(cur.execute("SELECT person_key, status FROM person").fetchall())
    assert seen <= set(status), f"{step}: a key disappeared"
    seen.update(status)
    live_keys = {reg.persons[p] for p in person.values()}
    assert all(status[k] == "active" for k in live_keys), step
    counts = np.bincount(np.array(list(person.values()), dtype=np.int64),
                         minlength=len(reg.persons))
    assert counts.tolist() == list(reg.person_count), step
    retired = {k for k, s in status.items() if s == "retired"}
    assert retired_before <= retired, f"{step}: a retired key came back"
    assert not (retired & live_keys), step
    forwards = {k for (k,) in cur.execute("SELECT DISTINCT from_key FROM key_lineage").fetchall()}
    emptied = {k for (k,) in cur.execute("SELECT DISTINCT person_key FROM key_change "
                                         "WHERE event_type = 'withdrawn'").fetchall()}
    # A retired key forwards to its successor, unless its last record was withdrawn (then
    # there is nobody to forward to, and its history says so).
    assert retired <= forwards | emptied, f"{step}: a retired key without lineage"
    retired_before.update(retired)


def _online_change(reg: Registry, op: str, refs: dict[int, tuple[str, str]], seqs: list[int],
                   i: int, j: int) -> None:
    """An agency withdraws a record (its key retires if left empty), or sends one that is not
    active now (never sent, or withdrawn)."""
    if op == "withdraw":
        agency, sid = refs[seqs[i % len(seqs)]]
        assert not reg.withdraw_records(agency, [sid]).problems
        return
    active = set(refs.values())
    idle = [(a, s) for a in sorted(TOKENS) for s in sorted(TOKENS[a]) if (a, s) not in active]
    if idle:
        agency, sid = idle[(i + j) % len(idle)]
        assert not reg.enrol_records(agency, [(1, TOKENS[agency][sid])]).problems


def _promote_other(reg: Registry) -> None:
    """Promote the other version; the impact preview predicts the churn exactly."""
    other = "perturbed-v001" if reg.model.version == LATEST_DEFAULT else LATEST_DEFAULT
    preview = modelops.model_impact(reg, other, principal="p", sample=0)["promote"]
    done = modelops.promote_model(reg, other, principal="p")
    for figure in ("records_changing_key", "persons_merging", "persons_splitting", "new_keys"):
        assert preview[figure] == done[figure], figure


def _apply(reg: Registry, op: str, i: int, j: int, flag: bool) -> None:
    person = _persons(reg)
    seqs = sorted(person)
    by: dict[int, list[int]] = {}
    for s, p in person.items():
        by.setdefault(p, []).append(s)
    labs = sorted(by)
    refs = {int(s): (str(r["agency"]), str(r["source_record_id"]))
            for s, r in review_store.records_by_seq(reg.store.cursor(), seqs).items()}
    if op == "decide":
        items = review_store.list_review_items(reg.store.cursor(), statuses=("open", "deferred",
                                                                       "resolved"), limit=500)
        if items:
            item = items[i % len(items)]
            review.decide_review(reg, int(item["item_seq"]), principal="p",
                                 decision="match" if flag else "non_match", reason="test")
    elif op == "merge":
        a, b = labs[i % len(labs)], labs[j % len(labs)]
        stewardship.merge_persons(reg, reg.persons[a], others=[reg.persons[b]], reason="t",
                                  principal="p")
    elif op == "split":
        multi = [m for m in by.values() if len(m) > 1]
        if multi:
            members = multi[i % len(multi)]
            cut = 1 + j % (len(members) - 1)
            groups = [[refs[s] for s in members[:cut]], [refs[s] for s in members[cut:]]]
            stewardship.split_person(reg, reg.persons[person[members[0]]], groups=groups,
                                     reason="t", principal="p")
    elif op == "import":
        a, b = seqs[i % len(seqs)], seqs[j % len(seqs)]
        if a != b:
            labels.import_labels(reg, [labels.LabelRow(*refs[a], *refs[b], flag, "t")],
                                 principal="p")
    elif op == "revoke":
        active = sorted(reg.constraints.items)
        if active:
            labels.revoke_constraint(reg, active[i % len(active)], reason="t", principal="p")
    elif op == "update":
        agency, sid = refs[seqs[i % len(seqs)]]
        rec = {**TOKENS[agency][sid], "attributes": {"note": f"v{j}"}}
        res = reg.enrol_records(agency, [(1, rec)])
        assert not res.problems
    elif op == "batch":  # several records of one agency re-sent in one batch
        agency = refs[seqs[i % len(seqs)]][0]
        mine = [sid for s in seqs for ag, sid in [refs[s]] if ag == agency]
        picks = [mine[(j + k * 7) % len(mine)] for k in range(6)]
        recs = [{**TOKENS[agency][sid], "attributes": {"note": f"b{i}"}}
                for sid in dict.fromkeys(picks)]
        assert not reg.enrol_records(agency, list(enumerate(recs, start=1))).problems
    elif op in ("withdraw", "enrol"):
        _online_change(reg, op, refs, seqs, i, j)
    elif op == "promote":
        _promote_other(reg)
    else:
        reg.link()


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10_000), st.integers(0, 10_000),
                          st.booleans()), min_size=4, max_size=14))
def test_keys_and_constraints_hold_under_random_steward_work(
        base: Path, fresh: Path, steps: list[tuple[str, int, int, bool]]) -> None:
    d = fresh / f"r{abs(hash(tuple(steps))) % 10**9}"
    shutil.copytree(base, d)
    reg = Registry(Settings(data_dir=d))
    seen: set[str] = set()
    retired: set[str] = set()
    try:
        _check_keys(reg, seen, retired, "start")
        for n, (op, i, j, flag) in enumerate(steps):
            step = f"step {n} {op}"
            held = _held(reg)
            try:
                _apply(reg, op, i, j, flag)
                event(f"{op} done")
            except (Conflict, InvalidInput) as exc:
                event(f"{op} refused: {exc.message[:40]}")
            _check_keys(reg, seen, retired, step)
            lost = held & set(reg.constraints.items) - _held(reg)
            assert not lost, f"{step}: constraints {sorted(lost)} no longer hold"
            if op in ("link", "promote"):
                assert _held(reg) == set(reg.constraints.items), step
        reg.link()
        assert _held(reg) == set(reg.constraints.items), "final link"
        _check_keys(reg, seen, retired, "final link")
        keys = {s: reg.persons[p] for s, p in _persons(reg).items()}
        active = set(reg.constraints.items)
    finally:
        reg.close()
    reopened = Registry(Settings(data_dir=d))  # the stored state is the state in memory
    try:
        assert {s: reopened.persons[p] for s, p in _persons(reopened).items()} == keys
        assert set(reopened.constraints.items) == active
    finally:
        reopened.close()

