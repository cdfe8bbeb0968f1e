"""The model lifecycle over HTTP: a steward trains a candidate (job with progress), lists,
inspects, charts (offline HTML, PNG), evaluates, previews and promotes it; other roles are
refused; bad versions are 4xx problems that echo nothing."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.synth import generate
from tests.support.api import World, build_world
from tests.support.models import LATEST_DEFAULT


def _world(tmp_path: Path) -> World:
    w = build_world(tmp_path)
    by_agency, _ = generate(people=1500, agencies=2, seed=8)
    for agency, rows in by_agency.items():
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        w.registry.enrol_records(agency, list(enumerate(records, start=1)))
    return w


def _wait_job(w: World, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job = w.client.get(f"/v1/jobs/{job_id}", headers=w.h("steward")).json()
        if job["state"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.1)
    raise AssertionError("training job did not finish")


@pytest.mark.integration
def test_steward_trains_inspects_evaluates_previews_and_promotes(tmp_path: Path) -> None:
    w = _world(tmp_path)
    c, h = w.client, w.h("steward")
    r = c.post("/v1/models/train", json={"seed": 9, "link": 0.995}, headers=h)
    assert r.status_code == 202, r.text
    job = _wait_job(w, r.json()["job_id"])
    assert job["state"] == "completed" and job["kind"] == "model_train", job
    assert job["done"] == job["total"] and job["message"]
    version = job["result"]["version"]
    assert version == "candidate-v001"

    models = c.get("/v1/models", headers=h).json()["models"]
    assert [m["version"] for m in models if m["active"]] == [LATEST_DEFAULT]
    assert version in {m["version"] for m in models}
    m = c.get(f"/v1/models/{version}", headers=h).json()
    assert m["thresholds"]["link"] == 0.995 and not m["active"]
    assert all(lv["match_weight"] is not None for comp in m["comparisons"] for lv in comp["levels"])
    assert m["level_order_violations"] == []  # training pooled them (Decision 89)
    old = c.get("/v1/models/default-v003", headers=h).json()["level_order_violations"]
    assert {(v["comparison"], v["weaker"]) for v in old} == {
        ("household", "phone equal"),
        ("national_id", "one digit or two neighbours differ (not the last)")}

    html = c.get(f"/v1/models/{version}/charts/cluster-sizes", headers=h)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert not re.search(r"<script[^>]*src=[\"']?https?:", html.text, re.I)
    png = c.get(f"/v1/models/{version}/charts/match-weights?format=png", headers=h)
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")

    ev = c.post(f"/v1/models/{version}/evaluate", headers=h)
    assert ev.status_code == 200, ev.text
    assert ev.json()["labels"]["pairs"] == 0 and ev.json()["diagnostics"]["records"] > 2000
    imp = c.get(f"/v1/models/{version}/impact?sample=3", headers=h)
    assert imp.status_code == 200, imp.text
    assert "pk_" not in imp.text
    promoted = c.post(f"/v1/models/{version}/promote", headers=h)
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert body["records_changing_key"] == imp.json()["promote"]["records_changing_key"]
    assert body["mode"] == "relink" and body["to_version"] == version
    models = c.get("/v1/models", headers=h).json()["models"]
    assert [m["version"] for m in models if m["active"]] == [version]
    actions = {e["action"] for e in w.audit()}
    assert {"models.train", "models.evaluate", "models.impact", "models.promote"} <= actions
    assert w.registry.verify_audit().ok
    w.registry.close()


def test_refusals_and_bad_input(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    c = w.client
    for who in ("agency", "researcher", "auditor", "approver"):
        assert c.post(f"/v1/models/{LATEST_DEFAULT}/promote", headers=w.h(who)).status_code == 403
    assert c.post("/v1/models/train", headers=w.h("admin")).status_code == 403
    assert c.get("/v1/models", headers=w.h("admin")).status_code == 200
    h = w.h("steward")
    r = c.get("/v1/models/nothing-v009", headers=h)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = c.get("/v1/models/Bad..Name/impact", headers=h)
    assert r.status_code == 422 and "Bad..Name" not in r.text
    assert c.get(f"/v1/models/{LATEST_DEFAULT}/charts/pie", headers=h).status_code == 422
    assert c.get(f"/v1/models/{LATEST_DEFAULT}/charts/m-u?format=svg", headers=h).status_code == 422
    r = c.post("/v1/models/train", json={"sample": 0}, headers=h)
    assert r.status_code == 422
    r = c.post("/v1/models/train", json={"name": "default"}, headers=h)
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    assert [e["field"] for e in r.json()["errors"]] == ["name"]
    r = c.post("/v1/models/train", json={"link": 0.5, "review": 0.9}, headers=h)
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["review"]
    noop = c.post(f"/v1/models/{LATEST_DEFAULT}/promote", headers=h).json()
    assert noop["mode"] == "already_active" and noop["records_changing_key"] == 0
    w.registry.close()
