"""Model lifecycle on a real registry: training jobs, inspection, charts, evaluation against
labels, impact preview (changes nothing, predicts the promotion exactly), promotion (no-op
changes zero keys; a retrained model changes keys only where clusters changed, bounded churn,
audited, the online scorer switches) and the ``mpi model`` commands."""

from __future__ import annotations

import getpass
import json
import math
import random
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mpi.cli.main import app
from mpi.config import Settings
from mpi.errors import InvalidInput, NotFound
from mpi.identity import keys as keyrules
from mpi.identity import relink
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.jobs import JobRunner
from mpi.linkage.catalog import candidates_dir
from mpi.linkage.modelfile import save_version
from mpi.linkage.scorer import Scorer
from mpi.principals import Principal
from mpi.steward import modelops
from mpi.steward.modeljobs import trainer_for
from mpi.steward.training import train_candidate
from mpi.store import labels as lstore
from mpi.synth import generate
from tests.support.models import LATEST_DEFAULT, SHIPPED_DEFAULTS

pytestmark = pytest.mark.integration  # the base registry trains a Splink candidate

TRUTH: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A linked registry of ~2,000 records with one trained candidate, built once."""
    d = tmp_path_factory.mktemp("models") / "d"
    reg = Registry(Settings(data_dir=d))
    by_agency, truth = generate(people=1000, agencies=3, seed=21)
    TRUTH.update({(a, s): p for a, s, p in truth})
    for agency, rows in by_agency.items():
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        reg.enrol_records(agency, list(enumerate(records, start=1)))
    reg.link()
    train_candidate(reg, out_dir=candidates_dir(reg.settings), seed=3)
    reg.close()
    return d


@pytest.fixture
def reg(base: Path, tmp_path: Path) -> Iterator[Registry]:
    """A fresh copy of the base registry."""
    d = tmp_path / "d"
    shutil.copytree(base, d)
    r = Registry(Settings(data_dir=d))
    yield r
    r.close()


def _keys(reg: Registry) -> dict[tuple[str, str], str]:
    t = reg.export_keys()
    return dict(zip(zip(t.column("agency").to_pylist(), t.column("source_record_id").to_pylist(),
                        strict=True), t.column("person_key").to_pylist(), strict=True))


def _groups(keys: dict[tuple[str, str], str]) -> dict[tuple[str, str], frozenset[Any]]:
    by_key: dict[str, set[Any]] = defaultdict(set)
    for rec, k in keys.items():
        by_key[k].add(rec)
    return {rec: frozenset(by_key[k]) for rec, k in keys.items()}


def test_list_and_show_mark_the_active_version_and_give_weights_per_level(reg: Registry) -> None:
    listed = {m["version"]: m for m in modelops.list_models(reg)}
    assert set(listed) == {*SHIPPED_DEFAULTS, "candidate-v001"}
    assert not listed["default-v001"]["active"]  # the shipped earlier version stays listed
    assert listed[LATEST_DEFAULT]["active"] and not listed["candidate-v001"]["active"]
    assert listed["candidate-v001"]["location"] == "registry"
    assert listed[LATEST_DEFAULT]["activated_at"]
    m = modelops.get_model(reg, "candidate-v001")
    # thresholds come from the candidate's own estimate (Decision 56), recorded with it
    from mpi.linkage.thresholds import LINK_GRID, REVIEW_GRID
    assert m["thresholds"]["link"] in LINK_GRID and m["thresholds"]["review"] in REVIEW_GRID
    meta = modelops.load_model(reg, "candidate-v001").meta
    assert meta["threshold_estimate"]["at_link"]["threshold"] == m["thresholds"]["link"]
    assert len(m["comparisons"]) == len(reg.model_definition.comparisons)
    assert m["level_order_violations"] == []  # training pools out-of-order levels (Decision 89)
    for comp in m["comparisons"]:
        null, *levels = comp["levels"]
        assert null["level"] == -1 and null["match_weight"] == 0.0
        for lv in levels:
            assert lv["match_weight"] == pytest.approx(math.log2(lv["m_probability"]
                                                                 / lv["u_probability"]))
    assert m["training_data"]["fingerprint"].startswith("sha256:")
    assert m["training_data"]["labels"] == 0 and m["parent_version"] == LATEST_DEFAULT
    with pytest.raises(NotFound):
        modelops.get_model(reg, "nothing-v001")
    with pytest.raises(InvalidInput):
        modelops.get_model(reg, "../escape")


def test_training_job_reports_progress_and_never_activates(reg: Registry) -> None:
    seqs = sorted(v[0] for v in reg.by_sid.values())
    with reg.store.transaction() as cur:
        lstore.insert_labels(cur, [{"record_seq_a": seqs[0], "record_seq_b": seqs[1],
                                    "is_match": False}], principal_id="p", source="import",
                             now=reg.clock())
    before = _keys(reg)
    trainer = trainer_for(reg)
    job_id = trainer.submit("p_steward", seed=5, sample=0.9, link=0.995)
    trainer.wait(120)
    job = JobRunner(reg, uploads_dir=reg.settings.data_dir / "u", chunk=10).get_job(
        Principal("p_steward", "steward", None), job_id)
    assert job["kind"] == "model_train" and job["state"] == "completed", job
    assert job["done"] == job["total"] > 3 and job["message"].startswith("trained")
    assert str(reg.settings.data_dir) not in json.dumps(job, default=str)
    version = job["result"]["version"]
    m = modelops.get_model(reg, version)
    assert not m["active"] and reg.model.version == LATEST_DEFAULT
    assert m["thresholds"]["link"] == 0.995 and m["training_data"]["labels"] == 1
    assert m["training"]["seed"] == 5 and m["training_data"]["sample_fraction"] == 0.9
    assert _keys(reg) == before
    with pytest.raises(InvalidInput):
        trainer.submit("p_steward", sample=0)
    with pytest.raises(InvalidInput):
        trainer.submit("p_steward", name="default")  # a shipped name
    with pytest.raises(InvalidInput):
        trainer.submit("p_steward", link=0.4, review=0.5)


def test_no_op_promote_changes_zero_keys(reg: Registry) -> None:
    """A version with the active parameters (a copy under another name) changes no key."""
    copy = save_version(candidates_dir(reg.settings), name="copy", model=reg.model.model,
                        meta=reg.model.meta)
    impact = modelops.model_impact(reg, copy, principal="t")
    assert impact["same_parameters"] and impact["pairs"]["changed_decision"] == 0
    before, events = _keys(reg), reg.event_seq
    res = modelops.promote_model(reg, copy, principal="t")
    assert res["mode"] == "activation_only" and res["records_changing_key"] == 0
    assert res["key_events"] == 0 and reg.event_seq == events
    assert _keys(reg) == before and reg.model.version == copy
    again = modelops.promote_model(reg, copy, principal="t")
    assert again["mode"] == "already_active" and _keys(reg) == before
    assert [m["version"] for m in modelops.list_models(reg) if m["active"]] == [copy]
    promotes = [e for e in reg.list_audit(limit=10_000) if e["action"] == "models.promote"]
    assert len(promotes) == 2 and reg.verify_audit().ok
    settings_ = reg.settings
    reg.close()
    reopened = Registry(settings_)  # the activation survives a restart (model in DATA_DIR)
    try:
        assert reopened.model.version == copy and _keys(reopened) == before
    finally:
        reopened.close()


def test_impact_changes_nothing_and_predicts_the_promotion(reg: Registry,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = relink.apply_constraints

    def spy(r: Registry, result: Any, **kw: Any) -> Any:
        calls.append(result.clusters.num_rows)
        return real(r, result, **kw)

    monkeypatch.setattr(relink, "apply_constraints", spy)
    before, audit_n = _keys(reg), len(reg.list_audit(limit=10_000))
    imp = modelops.model_impact(reg, "candidate-v001", principal="t", sample=5)
    assert calls, "impact must pass through apply_constraints"
    assert _keys(reg) == before and reg.model.version == LATEST_DEFAULT
    assert len(reg.list_audit(limit=10_000)) == audit_n + 1  # the models.impact read event
    assert not imp["same_parameters"] and imp["records"] == len(before)
    assert imp["pairs"]["changed_decision"] >= len(imp["sample"]) > 0
    tokenish = re.compile(r"[A-Za-z0-9_-]{20,}:")
    text = json.dumps(imp)
    assert not tokenish.search(text) and "pk_" not in text
    s = imp["sample"][0]
    for side in ("active", "candidate"):
        parts = s[side]["comparisons"]
        total = s[side]["prior_weight"] + sum(p["match_weight"] for p in parts)
        assert total == pytest.approx(s[side]["match_weight"])
        assert {p["comparison"] for p in parts} == {c.name for c in reg.model_definition.comparisons}
    assert s["active"]["decision"] != s["candidate"]["decision"]
    assert {r["agency"] for r in s["records"]} <= {"agency_a", "agency_b", "agency_c"}

    calls.clear()
    res = modelops.promote_model(reg, "candidate-v001", principal="t")
    assert calls, "promote must pass through apply_constraints"
    after = _keys(reg)
    p = imp["promote"]
    assert res["mode"] == "relink"
    assert res["records_changing_key"] == p["records_changing_key"]
    assert (res["persons_merging"], res["persons_splitting"], res["new_keys"]) == \
        (p["persons_merging"], p["persons_splitting"], p["new_keys"])
    changed = [rec for rec in before if before[rec] != after[rec]]
    assert len(changed) == res["records_changing_key"]
    # Keys change only where clusters changed; churn is bounded and reported.
    old_groups, new_groups = _groups(before), _groups(after)
    for rec in before:
        if old_groups[rec] == new_groups[rec]:
            assert after[rec] == before[rec]
    assert 0 < len(changed) <= 0.01 * len(before)  # this candidate does move a few records
    assert (res["key_events"] > 0) == (len(changed) > 0)
    entry = [e for e in reg.list_audit(limit=10_000) if e["action"] == "models.promote"][-1]
    detail = json.loads(entry["detail"]) if isinstance(entry["detail"], str) else entry["detail"]
    assert detail["records_changing_key"] == len(changed) and detail["mode"] == "relink"
    # The online scorer follows the promoted version.
    assert reg.model.version == "candidate-v001"
    cand = modelops.load_model(reg, "candidate-v001")
    assert reg.scorer.params == cand.params
    assert modelops.model_impact(reg, "candidate-v001", principal="t")["promote"][
        "records_changing_key"] == 0


def test_evaluate_scores_labels_at_the_thresholds(reg: Registry) -> None:
    by_person: dict[str, list[int]] = defaultdict(list)
    for (agency, sid), (seq, row, *_rest) in reg.by_sid.items():
        if row >= 0:
            by_person[TRUTH[(agency, sid)]].append(seq)
    rng = random.Random(4)
    multi = [s for s in by_person.values() if len(s) > 1]
    matches = [(s[0], s[1], True) for s in rng.sample(multi, 40)]
    people = list(by_person.values())
    non = []
    while len(non) < 40:
        a, b = rng.sample(people, 2)
        non.append((a[0], b[0], False))
    with reg.store.transaction() as cur:
        lstore.insert_labels(cur, [{"record_seq_a": a, "record_seq_b": b, "is_match": m}
                                   for a, b, m in matches + non], principal_id="p",
                             source="import", now=reg.clock())
    ev = modelops.evaluate_model(reg, "candidate-v001", principal="t")
    assert ev["labels"] == {"pairs": 80, "matches": 40, "non_matches": 40, "skipped_inactive": 0}
    # Expected figures from the scorer directly.
    cand = modelops.load_model(reg, "candidate-v001")
    scorer = Scorer(reg.model_definition, cand.params)
    row_of = {ref.record_seq: ref.row for ref in reg.by_sid.values()}
    pairs = matches + non
    w = scorer.weights(reg.index.gather(np.array([row_of[a] for a, _, _ in pairs])),
                       reg.index.gather(np.array([row_of[b] for _, b, _ in pairs])))
    linked = 1 / (1 + 2.0 ** -w) >= cand.thresholds.link
    truth = np.array([m for _, _, m in pairs])
    tp = int((linked & truth).sum())
    fp = int((linked & ~truth).sum())
    got = ev["at_link_threshold"]
    assert (got["true_positives"], got["false_positives"]) == (tp, fp)
    assert got["recall"] == pytest.approx(tp / 40)
    assert got["recall"] > 0.8 and got["precision"] == 1.0
    assert got["f1"] == pytest.approx(2 * got["precision"] * got["recall"]
                                      / (got["precision"] + got["recall"]))
    d = ev["diagnostics"]
    assert d["records"] == len(row_of) and 0 < d["singleton_rate"] < 1
    assert d["pairs_at_or_above_link"] <= d["candidate_pairs"]
    stored = modelops.get_model(reg, "candidate-v001")["metrics"]["latest_evaluation"]
    assert stored["evaluation_seq"] == ev["evaluation_seq"]
    assert stored["at_link_threshold"] == ev["at_link_threshold"]
    # Charts: self-contained HTML (no script loaded over the network) and PNG.
    for name in ("match-weights", "m-u", "probability-histogram", "precision-recall",
                 "cluster-sizes"):
        html, media = modelops.chart(reg, "candidate-v001", name, "html")
        assert media.startswith("text/html")
        assert not re.search(rb"<script[^>]*src=[\"']?https?:", html, re.I)
        assert b"candidate-v001" in html and len(html) > 100_000  # Vega is inlined
    png, media = modelops.chart(reg, "candidate-v001", "precision-recall", "png")
    assert media == "image/png" and png.startswith(b"\x89PNG")
    with pytest.raises(InvalidInput):
        modelops.chart(reg, "candidate-v001", "pie", "html")


def test_model_commands(base: Path, tmp_path: Path) -> None:
    d = tmp_path / "d"
    shutil.copytree(base, d)
    run = CliRunner().invoke
    r = run(app, ["model", "list", "--data-dir", str(d)])
    assert r.exit_code == 0 and "candidate-v001" in r.output, r.output
    r = run(app, ["model", "show", "candidate-v001", "--json", "--data-dir", str(d)])
    assert r.exit_code == 0 and json.loads(r.output)["version"] == "candidate-v001"
    r = run(app, ["model", "chart", "candidate-v001", "m-u", "--out", str(tmp_path / "c.png"),
                  "--data-dir", str(d)])
    assert r.exit_code == 0 and (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
    r = run(app, ["model", "evaluate", "candidate-v001", "--data-dir", str(d)])
    assert r.exit_code == 0 and "diagnostics" in r.output, r.output
    r = run(app, ["model", "impact", "candidate-v001", "--json", "--data-dir", str(d)])
    assert r.exit_code == 0, r.output
    expected = json.loads(r.output)["promote"]["records_changing_key"]
    r = run(app, ["model", "promote", "candidate-v001", "--data-dir", str(d)])
    assert r.exit_code == 0 and f"{expected} of" in r.output, r.output
    r = run(app, ["model", "list", "--data-dir", str(d)])
    line = next(x for x in r.output.splitlines() if "candidate-v001" in x)
    assert "*" in line


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.data())
def test_keys_follow_unchanged_clusters(old: list[int], data: st.DataObject) -> None:
    """Reconciliation (what a promotion commits): a cluster equal to a key's whole group keeps
    that key, and only records in changed clusters can change key."""
    n = len(old)
    new = data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    seq = np.arange(1, n + 1, dtype=np.int64)
    old_key = np.array(old, dtype=np.int64)
    labels = np.array(new, dtype=np.int64)
    # clusters labelled by their smallest member, as relink hands them over
    first = {c: int(seq[labels == c].min()) for c in set(new)}
    cluster = np.array([first[c] for c in new], dtype=np.int64)
    rec = keyrules.reconcile(record_seq=seq, old_key=old_key, cluster=cluster,
                             key_rank=np.arange(7, dtype=np.int64))
    for i in range(n):
        old_group = set(np.flatnonzero(old_key == old_key[i]).tolist())
        new_group = set(np.flatnonzero(cluster == cluster[i]).tolist())
        if old_group == new_group:
            assert rec.record_key[i] == old_key[i]


def test_promote_and_impact_honour_steward_constraints(reg: Registry) -> None:
    """A cannot-link between two records of one person and a must-link between two persons
    hold after promoting a retrained model, and the preview already shows it."""
    from mpi.steward.labels import LabelRow, import_labels
    keys = _keys(reg)
    by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rec, k in sorted(keys.items()):
        by_key[k].append(rec)
    together = next(recs for recs in by_key.values() if len(recs) >= 2)
    x, y = next(recs[0] for recs in by_key.values() if len(recs) == 1 and recs != together), \
        next(recs[0] for recs in reversed(list(by_key.values())) if len(recs) == 1)
    assert x != y and keys[x] != keys[y]  # two persons, so the must-link has work to do
    import_labels(reg, [LabelRow(*together[0], *together[1], False, "not the same person"),
                        LabelRow(*x, *y, True, "the same person")], principal="t")
    imp = modelops.model_impact(reg, "candidate-v001", principal="t")
    res = modelops.promote_model(reg, "candidate-v001", principal="t")
    after = _keys(reg)
    assert after[together[0]] != after[together[1]]
    assert after[x] == after[y]
    assert res["records_changing_key"] == imp["promote"]["records_changing_key"]
    assert res["labels"] == 2


def test_cli_train_takes_thresholds(base: Path, tmp_path: Path) -> None:
    d = tmp_path / "d"
    shutil.copytree(base, d)
    r = CliRunner().invoke(app, ["model", "train", "--seed", "2", "--link", "0.998",
                                 "--review", "0.6", "--data-dir", str(d)])
    assert r.exit_code == 0 and "candidate-v002" in r.output, r.output
    r = CliRunner().invoke(app, ["model", "show", "candidate-v002", "--json", "--data-dir", str(d)])
    th = json.loads(r.output)["thresholds"]
    assert (th["link"], th["review"]) == (0.998, 0.6)
    r = CliRunner().invoke(app, ["model", "train", "--link", "0.5", "--review", "0.9",
                                 "--data-dir", str(d)])
    assert r.exit_code != 0
    # the CLI keeps the names the API keeps: no shipped model's name (Decision 31), no path
    for bad in ("default", "../escape", "Upper"):
        r = CliRunner().invoke(app, ["model", "train", "--name", bad, "--data-dir", str(d)])
        assert isinstance(r.exception, InvalidInput), (bad, r.output)
        assert [p.field for p in r.exception.problems] == ["name"]
    assert sorted(p.name for p in (d / "models").glob("*-v*.json")
                  if not p.name.endswith(".meta.json")) == ["candidate-v001.json",
                                                             "candidate-v002.json"]
    # Issue 17: the command line audits training as the OS user, refusals too.
    reg = Registry(Settings(data_dir=d))
    try:
        trained = [e for e in reg.list_audit(limit=100_000) if e["action"] == "models.train"]
    finally:
        reg.close()
    assert {e["principal"] for e in trained} == {f"os:{getpass.getuser()}"}
    assert [json.loads(e["detail"])["version"] for e in trained if e["outcome"] == "ok"] \
        == ["candidate-v002"]
    assert [e["outcome"] for e in trained if e["outcome"] != "ok"] == ["invalid"] * 4


def test_impact_of_a_same_parameter_version_agrees_with_its_activation_only_promote(
        reg: Registry) -> None:
    """With drift pending (an imported cannot-link inside one person, effective at the next
    re-link), a version with the active parameters is promoted by activation only, changing
    no key; its preview must say so (the drift shows under ``active_relink``)."""
    from mpi.steward.labels import LabelRow, import_labels
    keys = _keys(reg)
    by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rec, k in sorted(keys.items()):
        by_key[k].append(rec)
    pair = next(recs for recs in by_key.values() if len(recs) >= 2)
    out = import_labels(reg, [LabelRow(*pair[0], *pair[1], False, "two people")],
                        principal="t")
    assert out["unmet"] == 1
    copy = save_version(candidates_dir(reg.settings), name="copy", model=reg.model.model,
                        meta=reg.model.meta)
    for version in (reg.model.version, copy):  # already active, then activation only
        imp = modelops.model_impact(reg, version, principal="t")
        assert imp["active_relink"]["records_changing_key"] >= 1
        res = modelops.promote_model(reg, version, principal="t")
        assert res["mode"] in ("already_active", "activation_only")
        for figure in ("records_changing_key", "keys_affected", "persons_merging",
                       "persons_splitting", "new_keys"):
            assert imp["promote"][figure] == res[figure] == 0, (version, figure)
        assert imp["promote"]["persons_after"] == len(set(_keys(reg).values()))
    assert _keys(reg) == keys


def test_impact_refuses_when_records_are_withdrawn_while_it_computes(
        reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The preview re-links outside the write lock; a record withdrawn meanwhile must give a
    clear conflict (run it again), never an index error or figures for the wrong records."""
    from mpi.steward import modelanalysis as ma
    real = ma.analyse
    last = max(reg.by_sid, key=lambda k: reg.by_sid[k][0])  # the newest record

    def analyse_then_withdraw(r: Registry, model: Any) -> Any:
        out = real(r, model)
        if model.version == "candidate-v001" and last in r.by_sid and r.by_sid[last][1] >= 0:
            r.withdraw_records(last[0], [last[1]])
        return out

    monkeypatch.setattr(ma, "analyse", analyse_then_withdraw)
    from mpi.errors import Conflict
    with pytest.raises(Conflict, match="changed"):
        modelops.model_impact(reg, "candidate-v001", principal="t")
    monkeypatch.setattr(ma, "analyse", real)
    again = modelops.model_impact(reg, "candidate-v001", principal="t")  # a fresh preview works
    assert again["records"] == len(_keys(reg))
    # Records enrolled meanwhile are simply outside the preview: no refusal.
    rows, _ = generate(people=3, agencies=1, seed=99)
    fresh, _ = tokenize_rows(next(iter(rows.values())), secret=demo_secret(1))

    def analyse_then_enrol(r: Registry, model: Any) -> Any:
        out = real(r, model)
        if model.version == "candidate-v001" and ("agency_new", fresh[0]["source_record_id"]) \
                not in r.by_sid:
            assert not r.enrol_records("agency_new", list(enumerate(fresh, start=1))).problems
        return out

    monkeypatch.setattr(ma, "analyse", analyse_then_enrol)
    late = modelops.model_impact(reg, "candidate-v001", principal="t")
    assert late["records"] == again["records"] < len(_keys(reg))


def test_analysis_pairs_and_partition_are_one_registry_state(
        reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record withdrawn by another thread while the candidate pairs are scored must not
    leave pairs naming a record the partition lacks (review pairs, diagnostics and charts
    index one with the other)."""
    import threading

    from mpi.steward import modelanalysis as ma
    victim = max(reg.by_sid, key=lambda k: reg.by_sid[k][0])

    class SlowScorer(Scorer):
        def weights(self, *args: Any, **kw: Any) -> Any:
            t = threading.Thread(target=reg.withdraw_records, args=(victim[0], [victim[1]]))
            t.start()
            t.join(5)  # another writer gets in while the pairs are scored (if it can)
            return super().weights(*args, **kw)

    monkeypatch.setattr(ma, "Scorer", SlowScorer)
    an = ma.analyse(reg, modelops.load_model(reg, "candidate-v001"))
    seq, _cl = an.cluster_of()
    assert set(an.pair_l.tolist()) | set(an.pair_r.tolist()) <= set(seq.tolist())
    ma.diagnostics(an, link=0.99, review=0.5)


def test_a_failed_training_job_ends_failed_without_data_and_frees_the_runner(
        reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """One job at a time (409 while it runs); a crash ends the job ``failed`` with only the
    exception's type (its text may hold data or a server path), and the next job may start."""
    import threading

    from mpi.errors import Conflict
    from mpi.steward import modeljobs
    started, release = threading.Event(), threading.Event()

    def crash(*_a: Any, **_k: Any) -> str:
        started.set()
        release.wait(30)
        raise RuntimeError(f"boom in {reg.settings.data_dir} pk_secret")

    monkeypatch.setattr(modeljobs, "train_candidate", crash)
    trainer = trainer_for(reg)
    job_id = trainer.submit("p_steward")
    assert started.wait(30)
    with pytest.raises(Conflict):
        trainer.submit("p_steward")
    release.set()
    trainer.wait(30)
    job = JobRunner(reg, uploads_dir=reg.settings.data_dir / "u", chunk=10).get_job(
        Principal("p_steward", "steward", None), job_id)
    assert job["state"] == "failed" and job["result"] is None
    assert job["errors"] == [{"row": None, "field": None,
                              "reason": "training failed (RuntimeError)"}]
    assert "pk_secret" not in json.dumps(job, default=str)
    second = trainer.submit("p_steward")  # the runner is free again
    trainer.wait(30)
    assert second != job_id


def test_evaluate_skips_labels_naming_a_withdrawn_record(reg: Registry) -> None:
    (agency, sid), (seq_a, *_rest) = next(iter(reg.by_sid.items()))
    seq_b = next(v[0] for k, v in reg.by_sid.items() if v[0] != seq_a and v[1] >= 0)
    seq_c = next(v[0] for v in reg.by_sid.values() if v[0] not in (seq_a, seq_b) and v[1] >= 0)
    with reg.store.transaction() as cur:
        lstore.insert_labels(cur, [{"record_seq_a": seq_a, "record_seq_b": seq_b,
                                    "is_match": False},
                                   {"record_seq_a": seq_b, "record_seq_b": seq_c,
                                    "is_match": False}],
                             principal_id="p", source="import", now=reg.clock())
    reg.withdraw_records(agency, [sid])
    ev = modelops.evaluate_model(reg, "candidate-v001", principal="t")
    assert ev["labels"] == {"pairs": 1, "matches": 0, "non_matches": 1, "skipped_inactive": 1}


def test_promoting_another_version_on_an_empty_registry_activates_it(tmp_path: Path) -> None:
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    try:
        meta = {**reg.model.meta, "thresholds": {"link": 0.999, "review": 0.5}}
        other = save_version(candidates_dir(reg.settings), name="stricter",
                             model=reg.model.model, meta=meta)
        res = modelops.promote_model(reg, other, principal="t")
        assert (res["mode"], res["records"], res["key_events"]) == ("relink", 0, 0)
        assert reg.model.version == other and reg.model.thresholds.link == 0.999
        assert [m["version"] for m in modelops.list_models(reg) if m["active"]] == [other]
    finally:
        reg.close()
    reopened = Registry(Settings(data_dir=tmp_path / "d"))  # the activation was committed
    try:
        assert reopened.model.version == other
    finally:
        reopened.close()


def test_impact_refuses_when_records_are_enrolled_between_the_two_analyses(
        reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The active and the candidate version are analysed one after the other; a record
    enrolled in between changes the candidate pairs, so the two cannot be compared pair by
    pair: a clear conflict (run it again), never a 500 or a comparison of different pairs."""
    from mpi.errors import Conflict
    from mpi.steward import modelanalysis as ma
    real = ma.analyse
    by_agency, _ = generate(people=1000, agencies=3, seed=21)  # the base registry's people
    again, _ = tokenize_rows(next(iter(by_agency.values()))[:5], secret=demo_secret(1))

    def analyse_active_then_enrol(r: Registry, model: Any) -> Any:
        out = real(r, model)
        if model.version == LATEST_DEFAULT and ("agency_new", again[0]["source_record_id"]) \
                not in r.by_sid:
            assert not r.enrol_records("agency_new", list(enumerate(again, start=1))).problems
        return out

    monkeypatch.setattr(ma, "analyse", analyse_active_then_enrol)
    with pytest.raises(Conflict, match="changed"):
        modelops.model_impact(reg, "candidate-v001", principal="t")
    monkeypatch.setattr(ma, "analyse", real)
    assert modelops.model_impact(reg, "candidate-v001", principal="t")["records"] == \
        len(_keys(reg))
