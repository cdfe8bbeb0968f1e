"""Console steward and admin pages through ``TestClient`` (no browser): promote only after
the confirmation, evaluate, a chart inline, training options checked, rotate shows the new key
once, a conflict shown as the domain's message, and every change audited with the human's
principal.
"""

from __future__ import annotations

import re

import pytest

from tests.support.api import RECORDS, A, B, World
from tests.support.console import browser, sign_in


def _records(world: World) -> None:
    for agency in (A, B):
        assert world.post_records(agency, RECORDS[agency]).status_code == 200


@pytest.mark.integration  # a promote re-links (> 0.5 s)
def test_promote_needs_the_confirmation(world: World) -> None:
    _records(world)
    c = browser(world)
    csrf = sign_in(c, world.keys["steward"])
    models = c.get("/console/models").text
    versions = re.findall(r'href="/console/models/([^"?/]+)"', models)
    active = re.search(r'href="/console/models/([^"?/]+)">[^<]+</a></td>\s*<td>yes', models)
    assert versions and active
    other = next(v for v in versions if v != active.group(1))
    page = c.get(f"/console/models/{other}?impact=1")
    assert page.status_code == 200 and "records changing key" in page.text
    r = c.post(f"/console/models/{other}/promote", data={"csrf": csrf}, follow_redirects=True)
    assert "confirm: tick the box" in r.text
    assert not any(e["action"] == "models.promote" for e in world.audit())
    r = c.post(f"/console/models/{other}/promote", data={"csrf": csrf, "confirm": "yes"},
               follow_redirects=True)
    assert r.status_code == 200 and f"Promoted {other}" in r.text, r.text[:2000]
    promotes = [e for e in world.audit() if e["action"] == "models.promote"]
    assert promotes and promotes[-1]["principal"] == world.ids["steward"]
    r = c.post(f"/console/models/{other}/evaluate", data={"csrf": csrf})
    assert r.status_code == 200 and "Evaluation against the labels" in r.text


@pytest.mark.integration  # renders a chart with vl-convert
def test_a_chart_is_a_png(world: World) -> None:
    c = browser(world)
    sign_in(c, world.keys["steward"])
    version = re.findall(r'href="/console/models/([^"?/]+)"', c.get("/console/models").text)[-1]
    r = c.get(f"/console/models/{version}/charts/match-weights")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:4] == b"\x89PNG"
    assert c.get(f"/console/models/{version}/charts/nope").status_code == 422


@pytest.mark.integration  # posts records, merges and splits (> 0.5 s on this VM)
def test_merge_and_split_conflicts_are_shown(world: World) -> None:
    _records(world)
    c = browser(world)
    csrf = sign_in(c, world.keys["steward"])
    keys = list(world.registry.persons)[:2]
    r = c.post(f"/console/persons/{keys[0]}/split", data={
        "csrf": csrf, "reason": "x", "record_0": "agency_a:zz", "group_0": "1"})
    assert r.status_code == 422 and "at least two groups" in r.text
    r = c.post(f"/console/persons/{keys[0]}/merge", data={"csrf": csrf, "person_keys": keys[1],
                                                          "reason": "same"}, follow_redirects=True)
    assert r.status_code == 200 and "Merged:" in r.text
    survivor = re.search(r"/console/persons/(pk_[\w-]+)", str(r.url)).group(1)  # type: ignore[union-attr]
    page = c.get(f"/console/persons/{survivor}").text
    refs = re.findall(r'name="record_(\d+)" value="([^"]+)"', page)
    form = {"csrf": csrf, "reason": "two people"}
    for i, ref in refs:
        form[f"record_{i}"] = ref
        form[f"group_{i}"] = "2" if i == "0" else "1"
    r = c.post(f"/console/persons/{survivor}/split", data=form)
    assert r.status_code == 409 and 'role="alert"' in r.text and "must" in r.text.lower()


def test_rotate_shows_the_new_key_once(world: World) -> None:
    admin = browser(world)
    csrf = sign_in(admin, world.keys["admin"])
    r = admin.post(f"/console/admin/principals/{world.ids['auditor']}/rotate", data={"csrf": csrf})
    key = re.search(r'id="new-key" value="(mpi_[^"]+)"', r.text)
    assert r.status_code == 200 and key and key.group(1) != world.keys["auditor"]
    assert key.group(1) not in admin.get("/console/admin").text
    assert world.client.get("/v1/audit", headers={"X-API-Key": key.group(1)}).status_code == 200
    rotations = [e for e in world.audit() if e["action"] == "principals.rotate"]
    assert rotations and rotations[-1]["principal"] == world.ids["admin"]


def test_training_options_are_checked_by_the_api_schema(world: World) -> None:
    c = browser(world)
    csrf = sign_in(c, world.keys["steward"])
    r = c.post("/console/models/train", data={"csrf": csrf, "sample": "2", "name": "Bad Name"})
    assert r.status_code == 422 and "sample" in r.text and "name" in r.text
    assert not any(e["action"] == "models.train" for e in world.audit())


def test_a_domain_error_is_shown_like_the_api_shows_it() -> None:
    from api.console.render import failure
    from mpi.errors import InvalidInput, MpiError, Problem, RebuildRequired

    assert failure(RebuildRequired("rebuild first")) == (409, "rebuild first")
    bad = InvalidInput("not accepted", problems=[Problem(None, "role", "unknown role")])
    assert failure(bad) == (422, "not accepted; field 'role': unknown role")
    status, text = failure(MpiError("internal: /var/lib/mpi/registry.duckdb"))
    assert status == 500 and "registry.duckdb" not in text  # no more than the API says
