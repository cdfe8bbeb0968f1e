"""The research-extract workflow through the real app: data dictionaries, requests, approvals
(every contributing agency + a steward, separation of duties, denial ends it), background
builds with per-project secrets, download rules (requester only, full approval, expiry, limit;
refusals audited), close, the accounting of disclosures and the turnaround report.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpi.extract.delivery import secret_path
from tests.support.api import A, B, World, build_world, close_world
from tests.support.extracts import (
    DICTIONARY,
    RECORDS,
    add_principal,
    approve_all,
    audit_events,
    decide,
    extract_flow,
    package_data,
    pseudonyms,
    request_extract,
    route_cli_to,
    zip_member,
)


# ---- dictionaries ---------------------------------------------------------------------------
def test_dictionary_validation_and_catalogue(xw: World) -> None:
    bad = [{"name": "birth_year", "type": "integer", "class": "quasi_identifier",
            "description": "x", "allowed_generalizations": ["month"]},
           {"name": "when", "type": "date", "class": "other", "description": "d",
            "allowed_generalizations": ["none"], "default_generalization": "year"},
           {"name": "9bad", "type": "string", "class": "other", "description": "d",
            "allowed_generalizations": ["none"]}]
    r = xw.client.put("/v1/datasets/enrolment", headers=xw.h(A), json={"attributes": bad})
    assert r.status_code == 422
    where = {(e["row"], e["field"]) for e in r.json()["errors"]}
    assert where == {(1, "allowed_generalizations"), (2, "default_generalization"), (3, "name")}
    r = xw.client.put("/v1/datasets/enrolment", headers=xw.h(A),
                      json={"attributes": [{**DICTIONARY[0], "class": "secret"}]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "attributes.0.class"
    assert xw.client.put("/v1/datasets/bad-name", headers=xw.h(A),
                         json={"attributes": DICTIONARY}).status_code == 422
    cat = xw.client.get("/v1/datasets", headers=xw.h("researcher")).json()["datasets"]
    assert {(d["agency"], d["dataset"]) for d in cat} == {(A, "enrolment"), (B, "enrolment")}
    entry = next(e for e in cat[0]["attributes"] if e["name"] == "enrolled_on")
    assert entry["class"] == "other" and entry["default_generalization"] == "month"
    assert any(e["outcome"] == "invalid" for e in audit_events(xw, "datasets.put"))
    # an attribute without a dictionary entry can never be requested
    r = xw.client.post("/v1/extracts", headers=xw.h("researcher"), json={
        "title": "t", "purpose": "p", "agreement_ref": "a", "cohort": {"agency": A},
        "attributes": [{"agency": A, "dataset": "enrolment", "name": "postal_code"},
                       {"agency": A, "dataset": "enrolment", "name": "program",
                        "generalization": "suppress"}],
        "expires_at": "2999-01-01T00:00:00Z"})
    assert r.status_code == 422
    fields = {(e["row"], e["field"]) for e in r.json()["errors"]}
    assert {(1, "attributes"), (2, "attributes.generalization"), (None, "expires_at")} <= fields


# ---- approvals ------------------------------------------------------------------------------
def test_every_agency_and_a_steward_must_approve(xw: World) -> None:
    x = request_extract(xw)
    xid = x["extract_id"]
    assert x["status"] == "pending" and x["agencies"] == [A, B]
    assert x["pending_approvals"] == [f"agency:{A}", f"agency:{B}", "steward"]
    for who in ("approver", "steward"):
        assert decide(xw, who, xid).status_code == 200
    out = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()
    assert out["status"] == "pending" and out["pending_approvals"] == [f"agency:{B}"]
    r = decide(xw, "approver", xid)
    assert r.status_code == 409  # a capacity decides once
    assert decide(xw, "approver_b", xid).json()["status"] == "approved"
    assert len(audit_events(xw, "extracts.approve")) == 4


@pytest.mark.integration
def test_separation_of_duties(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]
    # the researcher role may not decide at all (policy), and it is audited
    assert decide(xw, "researcher", xid).status_code == 403
    # the same person holding an approver principal: refused and audited
    requester_name = "researcher"
    add_principal(xw, "twin", "approver", A)
    twin = xw.client.get("/v1/principals", headers=xw.h("admin")).json()["principals"]
    assert any(p["name"] == requester_name for p in twin)
    add_principal(xw, requester_name.upper(), "approver", B)  # "RESEARCHER": same name, case-folded
    r = decide(xw, requester_name.upper(), xid)
    assert r.status_code == 403 and "same person" in r.json()["detail"]
    refused = [e for e in audit_events(xw, "extracts.approve") if e["outcome"] == "denied"]
    assert refused and refused[-1]["principal"] == xw.ids[requester_name.upper()]
    # an approver of an agency that does not contribute cannot see or approve it
    xid2 = request_extract(xw, attributes=[{"agency": A, "dataset": "enrolment", "name": "program"}])[
        "extract_id"]
    assert decide(xw, "approver_b", xid2).status_code == 404
    assert xw.client.get(f"/v1/extracts/{xid2}", headers=xw.h("approver_b")).status_code == 404
    assert xw.client.get(f"/v1/extracts/{xid2}", headers=xw.h("researcher_2")).status_code == 404
    assert xid2 not in json.dumps(xw.client.get("/v1/extracts", headers=xw.h("approver_b")).json())


@pytest.mark.integration
def test_denial_ends_the_request(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]
    assert decide(xw, "approver", xid).status_code == 200
    r = decide(xw, "approver_b", xid, "deny")
    assert r.status_code == 200 and r.json()["status"] == "denied"
    assert r.json()["pending_approvals"] == []
    assert decide(xw, "steward", xid).status_code == 409
    r = xw.client.post(f"/v1/extracts/{xid}/build", headers=xw.h("steward"))
    assert r.status_code == 409
    r = xw.client.get(f"/v1/extracts/{xid}/download", headers=xw.h("researcher"))
    assert r.status_code == 409
    assert audit_events(xw, "extracts.deny")[0]["principal"] == xw.ids["approver_b"]


# ---- download rules -------------------------------------------------------------------------
def test_download_rules_are_enforced_and_audited(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]
    url = f"/v1/extracts/{xid}/download"
    assert xw.client.get(url, headers=xw.h("researcher")).status_code == 409  # not approved
    assert decide(xw, "approver", xid).status_code == 200
    assert decide(xw, "approver_b", xid).status_code == 200
    assert xw.client.get(url, headers=xw.h("researcher")).status_code == 409  # steward missing
    decide(xw, "steward", xid)
    extract_flow(xw).wait(60)
    assert xw.client.get(url, headers=xw.h("researcher_2")).status_code == 403  # not requester
    assert xw.client.get(url, headers=xw.h("steward")).status_code == 403       # policy
    r = xw.client.get(url, headers=xw.h("researcher"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert package_data(r.content).num_rows > 0
    assert xw.client.get(url, headers=xw.h("researcher")).status_code == 200
    r = xw.client.get(url, headers=xw.h("researcher"))
    assert r.status_code == 409 and "limit" in r.json()["detail"]  # limit 2 used up
    events = audit_events(xw, "extracts.download")
    assert [e["outcome"] for e in events] == ["denied"] * 3 + ["ok", "ok", "denied"]
    assert events[2]["principal"] == xw.ids["researcher_2"]
    assert json.loads(events[3]["detail"])["download"] == 1
    assert any(e["action"] == "auth" and e["principal"] == xw.ids["steward"]
               and e["outcome"] == "denied" for e in xw.audit())  # the policy's refusal
    out = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()
    assert out["downloads"] == 2 and out["delivered_at"] is not None
    # after expiry: refused, audited
    xid2 = request_extract(xw)["extract_id"]
    approve_all(xw, xid2)
    real = xw.registry.clock
    xw.registry.clock = lambda: real() + dt.timedelta(days=31)  # type: ignore[method-assign]
    try:
        r = xw.client.get(f"/v1/extracts/{xid2}/download", headers=xw.h("researcher"))
        assert r.status_code == 409 and "expired" in r.json()["detail"]
    finally:
        xw.registry.clock = real  # type: ignore[method-assign]
    last = audit_events(xw, "extracts.download")[-1]
    assert last["outcome"] == "denied" and last["target"] == f"extract:{xid2}"
    # a pending request cannot be approved after its expiry
    xid3 = request_extract(xw)["extract_id"]
    xw.registry.clock = lambda: real() + dt.timedelta(days=31)  # type: ignore[method-assign]
    try:
        r = decide(xw, "steward", xid3)
        assert r.status_code == 409 and "expired" in r.json()["detail"]
    finally:
        xw.registry.clock = real  # type: ignore[method-assign]
    assert xw.registry.verify_audit().ok


# ---- pseudonyms, rebuild, close -------------------------------------------------------------
@pytest.mark.integration
def test_projects_share_no_pseudonym_rebuild_reproduces_close_destroys(xw: World) -> None:
    x1, x2 = request_extract(xw)["extract_id"], request_extract(xw)["extract_id"]
    approve_all(xw, x1)
    approve_all(xw, x2)
    get = lambda x: xw.client.get(f"/v1/extracts/{x}/download",  # noqa: E731
                                  headers=xw.h("researcher")).content
    z1 = get(x1)
    d1, d2 = package_data(z1), package_data(get(x2))
    p1, p2 = pseudonyms(d1), pseudonyms(d2)
    assert len(p1) == len(p2) > 10 and not p1 & p2
    # nothing identifying in the delivered package: no person key, source id or token
    keys = xw.registry.export_keys()
    secrets_ = {*keys.column("person_key").to_pylist(), *keys.column("source_record_id").to_pylist()}
    with zipfile.ZipFile(io.BytesIO(z1)) as z:
        for name in z.namelist():
            text = z.read(name).decode("latin-1")
            assert "pk_" not in text and not any(v in text for v in secrets_), name
    # a rebuild within the project reproduces the ids (and the data file, byte for byte)
    r = xw.client.post(f"/v1/extracts/{x1}/build", headers=xw.h("researcher"))
    assert r.status_code == 202
    extract_flow(xw).wait(60)
    out = xw.client.get(f"/v1/extracts/{x1}", headers=xw.h("researcher")).json()
    assert out["latest_build"]["build_seq"] == 2 and out["build_state"] == "built"
    z1_again = get(x1)
    for name in ("data.parquet", "data.csv"):
        assert zip_member(z1_again, name) == zip_member(z1, name)
    # close: the secret is destroyed, later builds and downloads refused
    path = secret_path(xw.data_dir, x1)
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    assert xw.client.post(f"/v1/extracts/{x1}/close", headers=xw.h("researcher_2")).status_code == 404
    r = xw.client.post(f"/v1/extracts/{x1}/close", headers=xw.h("researcher"))
    assert r.status_code == 200 and r.json()["status"] == "closed"
    assert not path.exists() and not list((xw.data_dir / "extracts").glob(f"{x1}-*"))
    assert xw.client.post(f"/v1/extracts/{x1}/build", headers=xw.h("steward")).status_code == 409
    assert xw.client.get(f"/v1/extracts/{x1}/download", headers=xw.h("researcher")).status_code == 409
    assert xw.client.post(f"/v1/extracts/{x1}/close", headers=xw.h("steward")).status_code == 409
    assert [e["outcome"] for e in audit_events(xw, "extracts.close")] == ["not_found", "ok", "denied"]


# ---- accounting of disclosures --------------------------------------------------------------
def _pseudonym_of(xw: World, xid: str, keys: list[str]) -> dict[str, str]:
    from mpi.extract.pseudonym import pseudonymize
    secret = bytes.fromhex(secret_path(xw.data_dir, xid).read_text().strip())
    return dict(zip(keys, pseudonymize(keys, secret).to_pylist(), strict=True))


@pytest.mark.integration
def test_accounting_lists_exactly_the_delivered_extracts(xw: World) -> None:
    x_rows = request_extract(xw)["extract_id"]                                   # downloaded
    x_b = request_extract(xw, cohort={"agency": A, "attribute": "enrolled_on",  # downloaded, recent
                               "start": "2016-01-01", "end": "2030-12-31"})["extract_id"]
    x_kept = request_extract(xw)["extract_id"]                                   # built, never downloaded
    for x in (x_rows, x_b, x_kept):
        approve_all(xw, x)
    data = {x: package_data(xw.client.get(f"/v1/extracts/{x}/download", headers=xw.h("researcher")).content)
            for x in (x_rows, x_b)}
    keys = sorted({str(k) for k in xw.registry.export_keys().column("person_key").to_pylist()})
    included = {x: {k for k, p in _pseudonym_of(xw, x, keys).items() if p in pseudonyms(data[x])}
                for x in data}
    assert included[x_b] and included[x_rows] - included[x_b]  # k-anonymity may drop others
    for key in keys:
        r = xw.client.get(f"/v1/persons/{key}/disclosures", headers=xw.h("steward"))
        assert r.status_code == 200
        got = {d["extract_id"] for d in r.json()["disclosures"]}
        assert got == {x for x in data if key in included[x]}, key
    opted_out = {xw.registry.get_record(a, r["source_record_id"])["person_key"]
                 for a in (A, B) for r in RECORDS[a] if r.get("research_consent") is False}
    assert opted_out and not opted_out & (included[x_rows] | included[x_b])
    one = next(iter(included[x_rows] - included[x_b]))
    d = xw.client.get(f"/v1/persons/{one}/disclosures", headers=xw.h("steward")).json()["disclosures"]
    assert d[0]["recipient"]["principal_id"] == xw.ids["researcher"]
    assert d[0]["project"] == "Jobs and Medicaid" and d[0]["disclosed_at"]
    assert {(a["agency"], a["name"]) for a in d[0]["attributes"]} == {
        (A, "program"), (A, "birth_year"), (B, "program")}
    # an agency sees it only for a person linked to one of its own records
    records = xw.registry.get_person(one)["records"]
    own = {a for a, _ in records}
    for agency in (A, B):
        r = xw.client.get(f"/v1/persons/{one}/disclosures", headers=xw.h(agency))
        assert r.status_code == (200 if agency in own else 404)
    # a merged person's history is still found from either key (the retired one forwards)
    from mpi.steward.stewardship import merge_persons
    two = sorted(opted_out)[0]
    merged = merge_persons(xw.registry, one, others=[two], reason="same person",
                           principal=xw.ids["steward"])
    survivor = merged["person_key"]
    assert xw.registry.get_person(two if survivor == one else one)["status"] == "retired"
    for key in (one, two):
        r = xw.client.get(f"/v1/persons/{key}/disclosures", headers=xw.h("steward"))
        assert {d["extract_id"] for d in r.json()["disclosures"]} == {x_rows}, key
    assert xw.client.get("/v1/persons/pk_nobody/disclosures",
                         headers=xw.h("steward")).status_code == 404
    assert all(e["target"].startswith("person:") for e in audit_events(xw, "persons.disclosures"))


# ---- turnaround report, signing key ---------------------------------------------------------
@pytest.mark.integration
def test_request_turnaround_report(xw: World) -> None:
    t0 = dt.datetime(2030, 1, 1)
    now = {"t": t0}
    xw.registry.clock = lambda: now["t"]  # type: ignore[method-assign]
    ids = [request_extract(xw)["extract_id"] for _ in range(3)]
    for hours, xid in zip((2, 4, 10), ids, strict=True):
        now["t"] = t0 + dt.timedelta(hours=hours)
        for who in ("approver", "approver_b", "steward"):
            decide(xw, who, xid, "deny" if xid == ids[2] else "approve")
            if xid == ids[2]:
                break
    extract_flow(xw).wait(60)
    now["t"] = t0 + dt.timedelta(hours=12)
    assert xw.client.get(f"/v1/extracts/{ids[0]}/download", headers=xw.h("researcher")).status_code == 200
    rep = xw.client.get("/v1/reports/requests", headers=xw.h("steward")).json()
    assert rep["requests"] == 3 and rep["by_status"] == {"approved": 2, "denied": 1}
    assert rep["request_to_decision"] == {"count": 3, "median_hours": 4.0, "p90_hours": 8.8}
    assert rep["approval_to_delivery"] == {"count": 1, "median_hours": 10.0, "p90_hours": 10.0}
    assert xw.client.get("/v1/reports/requests", headers=xw.h("researcher")).status_code == 403


@pytest.mark.integration
def test_signing_key_is_published_and_signs_packages(xw: World) -> None:
    r = xw.client.get("/v1/keys/signing")
    assert r.status_code == 200
    key = r.json()
    assert key["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)
    content = xw.client.get(f"/v1/extracts/{xid}/download", headers=xw.h("researcher")).content
    path = xw.data_dir / "x.zip"
    path.write_bytes(content)
    from mpi.extract.package import verify_package
    check = verify_package(path, public_key_pem=key["public_key_pem"])
    assert check.ok and check.fingerprint == key["fingerprint"]
    assert (xw.data_dir / "signing.key").stat().st_mode & 0o777 == 0o600


# ---- the CLI on a stopped registry ----------------------------------------------------------
@pytest.mark.integration
def test_cli_list_build_close_on_a_stopped_registry(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from api.cli import app
    w = build_world(tmp_path)
    try:
        for agency in (A, B):
            assert w.post_records(agency, RECORDS[agency][:40]).status_code == 200
            assert w.client.put("/v1/datasets/enrolment", headers=w.h(agency),
                                json={"attributes": DICTIONARY}).status_code == 200
        add_principal(w, "approver_b", "approver", B)
        xid = request_extract(w)["extract_id"]
        approve_all(w, xid)
        first = extract_flow(w).get_request(_principal(w, "steward"), xid)["latest_build"]
        before = package_data((w.data_dir / "extracts" / f"{xid}-b1.zip").read_bytes())
    finally:
        extract_flow(w).wait(60)
        close_world(w)
    runner = CliRunner()
    data = ["--data-dir", str(w.data_dir)]
    r = runner.invoke(app, ["extract", "list", *data])
    assert r.exit_code == 0 and xid in r.output and "approved" in r.output
    r = runner.invoke(app, ["extract", "build", xid, *data])
    assert r.exit_code == 0, r.output
    assert first["build_seq"] == 1 and "manifest sha256" in r.output
    assert package_data((w.data_dir / "extracts" / f"{xid}-b2.zip").read_bytes()).equals(before)
    r = runner.invoke(app, ["extract", "close", xid, *data])
    assert r.exit_code == 0 and "closed" in r.output
    r = runner.invoke(app, ["extract", "build", xid, *data])
    assert r.exit_code == 1 and "closed" in r.output


def _principal(w: World, name: str) -> Any:
    from mpi.principals import Principal
    return Principal(w.ids[name], name, "steward")


@pytest.mark.integration
def test_aggregate_request_builds_a_signed_package(xw: World) -> None:
    xid = request_extract(xw, kind="aggregate", dimensions=["agency_a.program", "birth_year"],
                   attributes=[{"agency": A, "dataset": "enrolment", "name": "program"},
                               {"agency": A, "dataset": "enrolment", "name": "birth_year",
                                "generalization": "year"}])["extract_id"]
    out = approve_all(xw, xid)
    assert out["kind"] == "aggregate" and out["dimensions"] == [f"{A}.program", f"{A}.birth_year"]
    r = xw.client.get(f"/v1/extracts/{xid}/download", headers=xw.h("researcher"))
    assert r.status_code == 200
    path = xw.data_dir / "agg.zip"
    path.write_bytes(r.content)
    from mpi.extract.package import verify_package
    assert verify_package(path).ok
    cells = package_data(r.content)
    assert "count" in cells.column_names and cells.num_rows > 0
    counts = [c for c in cells.column("count").to_pylist() if c is not None]
    assert all(c == 0 or c >= 11 for c in counts)  # cells of 1-10 are never published


@pytest.mark.integration
def test_request_validation_names_fields(xw: World) -> None:
    base = {"title": "t", "purpose": "p", "agreement_ref": "a", "expires_at": "2999-01-01T00:00:00Z",
            "attributes": [{"agency": A, "dataset": "enrolment", "name": "program"}]}
    cases = [({"cohort": {"agency": A, "attribute": "program", "start": "2020-01-01"}},
              "cohort.attribute"),
             ({"cohort": {"agency": "nowhere"}}, "cohort.agency"),
             ({"cohort": {"agency": A, "attribute": "enrolled_on", "start": "2021-01-01",
                          "end": "2020-01-01"}}, "cohort.end"),
             ({"cohort": {"agency": A}, "dimensions": ["program"]}, "dimensions"),
             ({"cohort": {"agency": A}, "kind": "aggregate", "dimensions": ["nope"]}, "dimensions"),
             ({"cohort": {"agency": A}, "k": 1}, "k"),
             ({"cohort": {"agency": A}, "threshold": 5}, "threshold"),
             ({"cohort": {"agency": A}, "download_limit": 0}, "download_limit"),
             ({"cohort": {"agency": A}, "expires_at": "2001-01-01T00:00:00Z"}, "expires_at")]
    for extra, field in cases:
        r = xw.client.post("/v1/extracts", headers=xw.h("researcher"), json={**base, **extra})
        assert r.status_code == 422, (field, r.text)
        assert field in {e["field"] for e in r.json()["errors"]}, (field, r.json())
    assert all(e["outcome"] == "invalid" for e in audit_events(xw, "extracts.request"))


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50),
       st.floats(0, 100))
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    import numpy as np

    from mpi.extract.accounting import percentile
    got = percentile(values, q)
    assert got is not None and abs(got - float(np.percentile(values, q))) <= 1e-6 * (1 + max(values))


@pytest.mark.integration
def test_cli_download_then_verify(xw: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mpi extract download` through MpiClient (its HTTP client is the app's TestClient)."""
    from typer.testing import CliRunner

    from api.cli import app
    route_cli_to(xw, monkeypatch)
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)
    keys = {}
    for who in ("researcher", "researcher_2"):
        keys[who] = xw.data_dir / f"{who}.key"
        keys[who].write_text(xw.keys[who] + "\n")
    pem = xw.data_dir / "signing.pub.pem"
    pem.write_text(xw.client.get("/v1/keys/signing").json()["public_key_pem"])
    out = xw.data_dir / "pkg.zip"
    runner = CliRunner()
    common = ["--url", "https://testserver", "--out", str(out)]
    r = runner.invoke(app, ["extract", "download", xid, *common, "--api-key-file",
                            str(keys["researcher_2"])])
    assert r.exit_code == 1 and "403" in r.output and not out.exists()
    r = runner.invoke(app, ["extract", "download", xid, *common, "--api-key-file",
                            str(keys["researcher"])])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["extract", "verify", str(out), "--public-key", str(pem)])
    assert r.exit_code == 0 and "OK" in r.output
    server = ["--url", "https://testserver", "--api-key-file", str(keys["researcher"])]
    r = runner.invoke(app, ["extract", "list", *server])
    assert r.exit_code == 0 and xid in r.output and "downloads=1/2" in r.output
    r = runner.invoke(app, ["extract", "build", xid, *server])
    assert r.exit_code == 0 and "build started" in r.output
    extract_flow(xw).wait(60)
    r = runner.invoke(app, ["extract", "close", xid, *server])
    assert r.exit_code == 0 and "closed" in r.output
    # an id that would change the route is refused before any request; a refusal is one line
    for cmd in (["build", "../datasets", *server], ["close", "a/b", *server],
                ["download", "x?y", *common, "--api-key-file", str(keys["researcher"])]):
        r = runner.invoke(app, ["extract", *cmd])
        assert r.exit_code == 2 and "not a valid extract id" in r.output, r.output
    bad = xw.data_dir / "bad.key"
    bad.write_text("mpi_not_a_key\n")
    r = runner.invoke(app, ["extract", "list", "--url", "https://testserver", "--api-key-file",
                            str(bad)])
    assert r.exit_code == 1 and "refused (401)" in r.output, r.output
    xw.client.headers.pop("Authorization", None)


@pytest.mark.integration
def test_concurrent_downloads_never_exceed_the_limit(xw: World) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from mpi.errors import Conflict
    from mpi.principals import Principal
    xid = request_extract(xw, download_limit=3)["extract_id"]
    approve_all(xw, xid)
    who = Principal(xw.ids["researcher"], "researcher", "researcher")

    def attempt(_i: int) -> str:
        try:
            package, _name = extract_flow(xw).download(who, xid)
            package.close()
            return "ok"
        except Conflict:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert sorted(results) == ["ok"] * 3 + ["refused"] * 5
    assert xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()["downloads"] == 3
    outcomes = [e["outcome"] for e in audit_events(xw, "extracts.download")]
    assert sorted(outcomes) == ["denied"] * 5 + ["ok"] * 3


@pytest.fixture(scope="module")
def sod_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("sod"))
    for agency in (A, B):
        assert w.post_records(agency, RECORDS[agency][:30]).status_code == 200
        assert w.client.put("/v1/datasets/enrolment", headers=w.h(agency),
                            json={"attributes": DICTIONARY}).status_code == 200
    add_principal(w, "approver_b", "approver", B)
    add_principal(w, "researcher_2", "researcher")
    add_principal(w, "Researcher", "approver", B)  # the requester's name on an approver principal
    yield w
    extract_flow(w).wait(60)
    close_world(w)


CAPACITY = {"approver": f"agency:{A}", "approver_b": f"agency:{B}", "steward": "steward"}


@pytest.mark.integration
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["approver", "approver_b", "steward", "researcher",
                                                 "researcher_2", "Researcher", A]),
                                st.sampled_from(["approve", "deny"])), max_size=7))
def test_decision_sequences_follow_the_rules(sod_world: World, steps: list[tuple[str, str]]) -> None:
    """Any sequence of decisions: approved iff every capacity approved before any denial; the
    first denial is final; a capacity decides once; SoD and role refusals never count."""
    w = sod_world
    xid = request_extract(w)["extract_id"]
    status, done = "pending", set()
    for who, decision in steps:
        r = decide(w, who, xid, decision)
        if who not in CAPACITY:
            assert r.status_code == 403, (who, r.text)
        elif status != "pending" or CAPACITY[who] in done:
            assert r.status_code == 409, (who, r.text)
        else:
            assert r.status_code == 200, r.text
            done.add(CAPACITY[who])
            if decision == "deny":
                status = "denied"
            elif done == set(CAPACITY.values()):
                status = "approved"
    out = w.client.get(f"/v1/extracts/{xid}", headers=w.h("steward")).json()
    assert out["status"] == status
    assert {a["capacity"] for a in out["approvals"]} == done
    assert w.ids["researcher"] not in {a["principal_id"] for a in out["approvals"]}
    assert w.ids["Researcher"] not in {a["principal_id"] for a in out["approvals"]}


@pytest.mark.integration
def test_failed_builds_are_reported_and_release_nothing(xw: World) -> None:
    # a value that does not parse for its dictionary type fails the build, naming the attribute
    bad = {**RECORDS[A][0], "attributes": {**RECORDS[A][0]["attributes"], "birth_year": "soon"}}
    assert xw.client.put(f"/v1/records/{bad['source_record_id']}", json=bad,
                         headers=xw.h(A)).status_code == 200
    xid = request_extract(xw)["extract_id"]
    for who in ("approver", "approver_b", "steward"):
        assert decide(xw, who, xid).status_code == 200
    extract_flow(xw).wait(60)
    out = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()
    assert out["build_state"] == "failed" and "birth_year" in out["build_error"]
    assert "soon" not in out["build_error"] and out["latest_build"] is None
    r = xw.client.get(f"/v1/extracts/{xid}/download", headers=xw.h("researcher"))
    assert r.status_code == 409 and "not been built" in r.json()["detail"]
    # an attribute whose dictionary entry was withdrawn after approval is never released
    good = {**bad, "attributes": RECORDS[A][0]["attributes"]}
    assert xw.client.put(f"/v1/records/{bad['source_record_id']}", json=good,
                         headers=xw.h(A)).status_code == 200
    assert xw.client.put("/v1/datasets/enrolment", headers=xw.h(A),
                         json={"attributes": DICTIONARY[2:]}).status_code == 200
    assert xw.client.post(f"/v1/extracts/{xid}/build", headers=xw.h("researcher")).status_code == 202
    extract_flow(xw).wait(60)
    out = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()
    assert out["build_state"] == "failed" and "agency_a.birth_year" in out["build_error"]
    assert not (xw.data_dir / "extracts").exists() or not list((xw.data_dir / "extracts").iterdir())
