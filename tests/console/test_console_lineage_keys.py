"""A person's lineage graph (JSON route and console drawing) and the console's keys export,
through the real app over a real registry (``TestClient``, no browser).
"""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import pytest

from api.console.lineage_svg import layout
from mpi.principals import Principals
from mpi.steward.desk import StewardDesk
from mpi.steward.lineage import generations
from mpi.store import review as review_store
from tests.support.api import RECORDS, A, B, World
from tests.support.console import browser, sign_in


def _records(world: World) -> None:
    for agency in (A, B):
        assert world.post_records(agency, RECORDS[agency]).status_code == 200


def _two_record_person(world: World) -> tuple[str, list[dict[str, str]]]:
    for key in list(world.registry.persons):
        recs = world.client.get(f"/v1/persons/{key}", headers=world.h("steward")).json()
        if recs["status"] == "active" and len(recs["records"]) >= 2:
            return key, recs["records"]
    raise AssertionError("no person with two records")


def _split_then_merge(world: World) -> tuple[str, str, str]:
    """Split a two-record person; merge the split-off key with a third person. The keys:
    (split source, split-off key, merge survivor)."""
    source, recs = _two_record_person(world)
    r = world.client.post(f"/v1/persons/{source}/split", headers=world.h("steward"), json={
        "groups": [[recs[0]], recs[1:]], "reason": "two people"})
    assert r.status_code == 200, r.text
    new = r.json()["new_keys"][0]
    third = next(k for k in world.registry.persons if k not in (source, new))
    r = world.client.post(f"/v1/persons/{new}/merge", headers=world.h("steward"), json={
        "person_keys": [third], "reason": "one person"})
    assert r.status_code == 200, r.text
    return source, new, r.json()["person_key"]


@pytest.mark.integration  # posts records, splits and merges (> 0.5 s on this VM)
def test_lineage_route_shows_split_and_merge_with_generations(world: World) -> None:
    _records(world)
    source, new, survivor = _split_then_merge(world)
    retired = new if survivor != new else None
    look = retired or survivor
    r = world.client.get(f"/v1/persons/{look}/lineage", headers=world.h("steward"))
    assert r.status_code == 200, r.text
    body = r.json()
    kinds = {(e["kind"], e["side"]) for e in body["events"]}
    assert ("split", "ancestry") in kinds  # source -> new happened before ``look``'s merge
    assert any(e["kind"] == "merge" for e in body["events"])
    assert all(e["occurred_at"] and e["cause"] for e in body["events"])
    gen = {n["person_key"]: n["generation"] for n in body["nodes"]}
    assert gen[look] == 0
    assert gen[source] < gen[new] or look == source
    assert body["truncated"] is False
    # Agencies, researchers and unknown keys: refused or 404, the problem names no key.
    for who in (A, "researcher", "auditor"):
        assert world.client.get(f"/v1/persons/{look}/lineage",
                                headers=world.h(who)).status_code == 403
    r = world.client.get("/v1/persons/pk_nope/lineage", headers=world.h("steward"))
    assert r.status_code == 404 and "pk_nope" not in r.text
    reads = [e for e in world.audit() if e["action"] == "persons.lineage"]
    assert reads and reads[-1]["principal"] == world.ids["steward"]


@pytest.mark.integration  # posts records, splits and merges (> 0.5 s on this VM)
def test_person_page_draws_the_lineage_with_a_text_alternative(world: World) -> None:
    _records(world)
    source, new, survivor = _split_then_merge(world)
    c = browser(world)
    sign_in(c, world.keys["steward"])
    page = c.get(f"/console/persons/{survivor}")
    assert page.status_code == 200
    html = page.text
    svg = re.search(r"<svg[^>]*role=\"img\".*?</svg>", html, re.S)
    assert svg, html[:3000]
    assert html.count("<title>") >= 3  # the drawing, each key and each arrow
    assert "had records split off into" in html and "was merged into" in html
    assert f'<a href="/console/persons/{source}"><code>{source}</code></a>' in html
    assert "<script" not in svg.group(0)
    untouched = next(k for k in world.registry.persons if k not in (source, new, survivor))
    plain = c.get(f"/console/persons/{untouched}")
    assert "No merges or splits involve this key." in plain.text


def test_layout_places_ancestors_left_and_descendants_right() -> None:
    events = [{"side": "ancestry", "kind": "merge", "from_key": "pk_a", "to_key": "pk_b",
               "cause": "merge", "occurred_at": None},
              {"side": "descendants", "kind": "split", "from_key": "pk_b", "to_key": "pk_c",
               "cause": "split", "occurred_at": None}]
    gen = generations("pk_b", events)
    assert gen == {"pk_a": -1, "pk_b": 0, "pk_c": 1}
    nodes: list[dict[str, Any]] = [{"person_key": k, "generation": g, "status": "active"}
                                   for k, g in gen.items()]
    drawing = layout({"person_key": "pk_b", "nodes": nodes, "events": events})
    assert drawing is not None
    x = {b["key"]: b["x"] for b in drawing["boxes"]}
    assert x["pk_a"] < x["pk_b"] < x["pk_c"]
    assert [a["kind"] for a in drawing["arrows"]] == ["merge", "split"]
    assert layout({"person_key": "pk_b", "nodes": nodes[:1], "events": []}) is None


def _wait_completed(c: Any, job_id: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        html = str(c.get(f"/console/jobs/{job_id}").text)
        if "completed" in html or "failed" in html:
            return html
        time.sleep(0.1)
    raise AssertionError("the export did not finish")


@pytest.mark.integration  # posts records and runs an export job
def test_keys_export_page_starts_follows_and_downloads_for_its_starter_only(world: World) -> None:
    _records(world)
    c = browser(world)
    csrf = sign_in(c, world.keys["steward"])
    assert "Start a keys export" in c.get("/console/keys").text
    assert c.post("/console/keys/export", data={}).status_code == 403  # no CSRF token
    r = c.post("/console/keys/export", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    job_id = r.headers["location"].rsplit("/", 1)[-1]
    html = _wait_completed(c, job_id)
    assert f'href="/console/jobs/{job_id}/result"' in html, html
    got = c.get(f"/console/jobs/{job_id}/result")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert len(rows) == len(RECORDS[A]) + len(RECORDS[B])
    assert set(rows[0]) == {"agency", "source_record_id", "person_key"}
    # Another steward's session gets the same 404 as for an unknown job.
    r = world.client.post("/v1/principals", headers=world.h("admin"), json={
        "name": "steward2", "role": "steward", "human_email": "s2@example.org"})
    other = browser(world)
    sign_in(other, r.json()["api_key"])
    assert other.get(f"/console/jobs/{job_id}/result").status_code == 404
    assert other.get("/console/jobs/job_nope/result").status_code == 404
    downloads = [e for e in world.audit() if e["action"] == "keys.download"]
    assert [e["principal"] for e in downloads] == [world.ids["steward"]]


@pytest.mark.integration  # posts records
def test_queue_page_lists_items_without_scoring_their_best_pairs(world: World) -> None:
    _records(world)
    desk = StewardDesk(world.registry)
    principal = Principals(world.registry).authenticate(world.keys["steward"])
    assert principal is not None
    full = desk.list_review(principal, status="all", limit=200)["items"]
    brief = desk.list_review(principal, status="all", limit=200, explained=False)["items"]
    assert full and [i["item_id"] for i in brief] == [i["item_id"] for i in full]
    assert all(i["explanation"] is None for i in brief)
    for a, b in zip(full, brief, strict=True):
        assert (a["agencies"], a["person_key"], a["current_probability"]) == (
            b["agencies"], b["person_key"], b["current_probability"])
    # A page's records are read with a bound IN list; many records with a join: same rows.
    cur = world.registry.store.cursor()
    many = review_store.records_by_seq(cur, list(range(1, 1500)))
    few = {}
    for lo in range(1, 1500, 500):
        few.update(review_store.records_by_seq(cur, list(range(lo, min(lo + 500, 1500)))))
    assert many == few and len(many) == len(RECORDS[A]) + len(RECORDS[B])
