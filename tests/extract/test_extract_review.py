"""Review fixes of the research-extract workflow (issue #5): a package is delivered only while
every released attribute still has its dictionary entry and nobody in it has opted out since
the build; a build that races a close leaves no project secret; a failed local build ends
``failed``; out-of-range expiry dates are a 422; dictionary defaults never fall back to a less
protective release than the issue's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from mpi.extract.datasets import validate_dictionary
from mpi.extract.delivery import read_project_secret, secret_path
from mpi.extract.generalize import default_generalization
from mpi.extract.pseudonym import pseudonymize
from mpi.extract.workflow import ExtractWorkflow
from mpi.principals import Principal
from tests.support.api import A, B, World
from tests.support.extracts import (
    DICTIONARY,
    RECORDS,
    approve_all,
    audit_events,
    decide,
    extract_flow,
    package_data,
    pseudonyms,
    request_extract,
    route_cli_to,
)

STEWARD = Principal("cli", "cli", "steward")


def _download(w: World, xid: str) -> Any:
    return w.client.get(f"/v1/extracts/{xid}/download", headers=w.h("researcher"))


@pytest.mark.integration
@pytest.mark.parametrize("expires_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_an_expiry_without_a_utc_date_is_a_422_naming_the_field(xw: World, expires_at: str) -> None:
    r = xw.client.post("/v1/extracts", headers=xw.h("researcher"), json={
        "title": "t", "purpose": "p", "agreement_ref": "a", "cohort": {"agency": A},
        "attributes": [{"agency": A, "dataset": "enrolment", "name": "program"}],
        "expires_at": expires_at})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["expires_at"]


def test_a_package_is_not_delivered_after_its_dictionary_entry_is_withdrawn(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)
    # agency A withdraws birth_year (a released attribute) after the build
    assert xw.client.put("/v1/datasets/enrolment", headers=xw.h(A),
                         json={"attributes": DICTIONARY[2:]}).status_code == 200
    r = _download(xw, xid)
    assert r.status_code == 409 and "agency_a.birth_year" in r.json()["detail"]
    refused = [e for e in audit_events(xw, "extracts.download") if e["outcome"] == "denied"]
    assert refused and "dictionary entry" in refused[-1]["detail"]
    # narrowing the allowed generalizations refuses it too; restoring the entry delivers again
    narrowed = [DICTIONARY[0], {**DICTIONARY[1], "allowed_generalizations": ["suppress"],
                                "default_generalization": "suppress"}, *DICTIONARY[2:]]
    assert xw.client.put("/v1/datasets/enrolment", headers=xw.h(A),
                         json={"attributes": narrowed}).status_code == 200
    assert _download(xw, xid).status_code == 409
    assert xw.client.put("/v1/datasets/enrolment", headers=xw.h(A),
                         json={"attributes": DICTIONARY}).status_code == 200
    assert _download(xw, xid).status_code == 200


@pytest.mark.integration
def test_a_package_is_not_delivered_after_an_included_person_opts_out(xw: World) -> None:
    program_only = [{"agency": a, "dataset": "enrolment", "name": "program"} for a in (A, B)]
    xid = request_extract(xw, attributes=program_only)["extract_id"]  # no quasi-identifier but agency
    approve_all(xw, xid)
    first = _download(xw, xid)
    assert first.status_code == 200
    # a record of an included person now says research_consent = false (issue #16: program
    # is a quasi-identifier now, so pick a person the build included)
    reg = xw.client.app.state.mpi.registry  # type: ignore[attr-defined]
    included = {r[0] for r in reg.store.cursor().execute(
        "SELECT s.source_record_id FROM source_record s JOIN extract_person p "
        "ON p.person_key = s.person_key WHERE s.agency = ? AND p.extract_id = ?",
        [A, xid]).fetchall()}
    rec = next(r for r in RECORDS[A] if r.get("research_consent") is not False
               and r["source_record_id"] in included)
    sid = rec["source_record_id"]
    body = {k: v for k, v in {**rec, "research_consent": False}.items() if k != "source_record_id"}
    assert xw.client.put(f"/v1/records/{sid}", json=body, headers=xw.h(A)).status_code == 200
    r = _download(xw, xid)
    assert r.status_code == 409 and "opted out" in r.json()["detail"]
    assert audit_events(xw, "extracts.download")[-1]["outcome"] == "denied"
    # a rebuild leaves the person out, and is delivered
    assert xw.client.post(f"/v1/extracts/{xid}/build",
                          headers=xw.h("researcher")).status_code == 202
    extract_flow(xw).wait(60)
    second = _download(xw, xid)
    assert second.status_code == 200
    key = xw.registry.get_record(A, sid)["person_key"]
    secret = read_project_secret(xw.data_dir, xid)
    gone = pseudonymize(pa.array([key]), secret).to_pylist()[0]
    before, after = pseudonyms(package_data(first.content)), pseudonyms(package_data(second.content))
    # who left is one of at least k = 2 (Decision 78): others are withheld with them
    assert gone in before - after and len(before - after) >= 2
    assert len(after - before) in (0,) or len(after - before) >= 2


@pytest.mark.integration
def test_a_build_racing_a_close_leaves_no_project_secret(
        xw: World, monkeypatch: pytest.MonkeyPatch) -> None:
    xid = request_extract(xw)["extract_id"]
    flow: ExtractWorkflow = extract_flow(xw)
    original = ExtractWorkflow._check_still_in_dictionary

    def close_first(self: ExtractWorkflow, spec: Any) -> None:
        self.close(STEWARD, xid)  # the close lands after the build started, before its secret
        original(self, spec)

    monkeypatch.setattr(ExtractWorkflow, "_check_still_in_dictionary", close_first)
    for who in ("approver", "approver_b", "steward"):
        assert decide(xw, who, xid).status_code == 200
    flow.wait(60)
    out = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()
    assert out["status"] == "closed" and out["build_state"] == "failed"
    assert out["latest_build"] is None
    assert not secret_path(xw.data_dir, xid).exists()
    assert not (xw.data_dir / "extracts").exists() or not list((xw.data_dir / "extracts").iterdir())


def test_a_failed_local_build_ends_failed_not_running(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)
    assert xw.client.put("/v1/datasets/enrolment", headers=xw.h(A),
                         json={"attributes": DICTIONARY[2:]}).status_code == 200
    with pytest.raises(Exception, match="dictionary entry"):
        extract_flow(xw).build(xid, actor="cli")
    out = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()
    assert out["build_state"] == "failed" and "agency_a.birth_year" in out["build_error"]


@pytest.mark.parametrize(("name", "expected"), [("dob", "year"), ("client_dob", "year"),
                                                ("birth_date", "year"), ("doberman_seen", "month")])
def test_birth_dates_named_dob_default_to_year(name: str, expected: str) -> None:
    assert default_generalization(name, "date", "quasi_identifier") == expected


@pytest.mark.integration
def test_no_silent_fallback_to_exact_dates(xw: World) -> None:
    entry = {"name": "enrolled_on", "type": "date", "class": "quasi_identifier",
             "description": "Enrolment date.", "allowed_generalizations": ["none", "year"]}
    with pytest.raises(Exception) as info:
        validate_dictionary([entry])
    assert [(p.row, p.field) for p in info.value.problems] == [  # type: ignore[attr-defined]
        (1, "default_generalization")]
    r = xw.client.put("/v1/datasets/d2", headers=xw.h(A), json={"attributes": [entry]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "default_generalization"
    ok = validate_dictionary([{**entry, "default_generalization": "year"}])
    assert ok[0]["default_generalization"] == "year"
    # when the default is allowed it is still chosen without being named
    month = validate_dictionary([{**entry, "allowed_generalizations": ["none", "month"]}])
    assert month[0]["default_generalization"] == "month"


@pytest.mark.integration
def test_the_whole_workflow_works_from_the_command_line(
        xw: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #5: everything works over the API and as `mpi extract ...` commands."""
    import json

    from typer.testing import CliRunner

    from api.cli import app
    route_cli_to(xw, monkeypatch)
    runner = CliRunner()

    def run(who: str, *args: str) -> Any:
        key = xw.data_dir / f"{who}.key"
        key.write_text(xw.keys[who] + "\n")
        return runner.invoke(app, ["extract", *args, "--url", "https://testserver",
                                   "--api-key-file", str(key)])

    bad = xw.data_dir / "bad.json"
    bad.write_text(json.dumps({"attributes": [{**DICTIONARY[0], "allowed_generalizations": ["zip9"]}]}))
    r = run(A, "dataset", "enrolment", "--file", str(bad))
    assert r.exit_code == 1 and "422" in r.output and "row 1 allowed_generalizations" in r.output
    good = xw.data_dir / "dict.json"
    good.write_text(json.dumps({"description": "Program enrolment", "attributes": DICTIONARY}))
    r = run(A, "dataset", "enrolment", "--file", str(good))
    assert r.exit_code == 0 and "4 attributes" in r.output, r.output
    r = run("researcher", "datasets")
    assert r.exit_code == 0 and f"{A}/enrolment" in r.output and "enrolled_on (date, other)" in r.output
    body = {"title": "Jobs and Medicaid", "purpose": "Program evaluation", "agreement_ref": "DUA-9",
            "attributes": [{"agency": A, "dataset": "enrolment", "name": "program"}],
            "cohort": {"agency": A}, "k": 2, "expires_at": "2999-01-01T00:00:00Z"}
    req = xw.data_dir / "req.json"
    req.write_text(json.dumps(body))
    r = run("researcher", "request", str(req))
    assert r.exit_code == 1 and "expires_at" in r.output  # more than 730 days ahead
    body["expires_at"] = (xw.registry.clock().replace(microsecond=0)
                          + dt.timedelta(days=30)).isoformat() + "Z"
    req.write_text(json.dumps(body))
    r = run("researcher", "request", str(req))
    assert r.exit_code == 0, r.output
    xid = r.output.split()[1]
    assert xid.startswith("x_") and f"pending=agency:{A},steward" in r.output
    r = run("researcher", "decide", xid, "--decision", "approve", "--reason", "mine")
    assert r.exit_code == 1 and "403" in r.output
    for who in ("approver", "steward"):
        r = run(who, "decide", xid, "--decision", "approve", "--reason", "fine")
        assert r.exit_code == 0, r.output
    extract_flow(xw).wait(60)
    r = run("researcher", "show", xid)
    assert r.exit_code == 0 and json.loads(r.output)["build_state"] == "built"
    assert run("researcher", "show", "a/b").exit_code == 2  # never a different route
    assert _download(xw, xid).status_code == 200
    person = xw.registry.get_record(A, RECORDS[A][0]["source_record_id"])["person_key"]
    r = run("steward", "disclosures", person)
    assert r.exit_code == 0 and "Jobs and Medicaid" in r.output and f"{A}.program" in r.output
    assert person not in r.output
    only_a = {row["person_key"] for row in xw.registry.export_keys().to_pylist()
              if row["agency"] == A} - {row["person_key"] for row in
                                        xw.registry.export_keys().to_pylist() if row["agency"] == B}
    r = run(B, "disclosures", sorted(only_a)[0])
    assert r.exit_code == 1 and "404" in r.output
    r = run("steward", "report")
    assert r.exit_code == 0 and json.loads(r.output)["by_status"] == {"approved": 1}


@pytest.mark.integration
def test_after_a_split_each_side_keeps_the_history_before_it_and_only_its_own_after(
        xw: World) -> None:
    both = [{"agency": a, "dataset": "enrolment", "name": "program"} for a in (A, B)]
    x1 = request_extract(xw, attributes=both)["extract_id"]
    approve_all(xw, x1)
    assert _download(xw, x1).status_code == 200
    consenting = {(a, r["source_record_id"]) for a in (A, B) for r in RECORDS[a]
                  if r.get("research_consent") is not False}
    person = next(k for k in sorted({str(r["person_key"]) for r in
                                     xw.registry.export_keys().to_pylist()})
                  if {a for a, _ in xw.registry.get_person(k)["records"]} == {A, B}
                  and set(xw.registry.get_person(k)["records"]) <= consenting)
    records = xw.registry.get_person(person)["records"]
    groups = [[{"agency": a, "source_record_id": s} for a, s in records if a == agency]
              for agency in (A, B)]
    r = xw.client.post(f"/v1/persons/{person}/split", headers=xw.h("steward"),
                       json={"groups": groups, "reason": "two people"})
    assert r.status_code == 200, r.text
    side = {agency: xw.registry.get_record(agency, g[0]["source_record_id"])["person_key"]
            for agency, g in zip((A, B), groups, strict=True)}
    assert side[A] != side[B] and person in side.values()
    # after the split, an extract over agency A's cohort includes only the A side
    x2 = request_extract(xw, attributes=both[:1])["extract_id"]
    approve_all(xw, x2)
    assert _download(xw, x2).status_code == 200

    def listed(key: str, who: str = "steward") -> set[str]:
        r = xw.client.get(f"/v1/persons/{key}/disclosures", headers=xw.h(who))
        assert r.status_code == 200, r.text
        return {d["extract_id"] for d in r.json()["disclosures"]}

    assert listed(side[A]) == {x1, x2} == listed(side[A], A)
    assert listed(side[B]) == {x1} == listed(side[B], B)  # x2 never held the B side's records
    # an agency reads only the persons its records are linked to now
    assert xw.client.get(f"/v1/persons/{side[A]}/disclosures", headers=xw.h(B)).status_code == 404
    assert xw.client.get(f"/v1/persons/{side[B]}/disclosures", headers=xw.h(A)).status_code == 404


def test_disclosure_windows_follow_moves_back_in_time() -> None:
    from mpi.extract.accounting import windows
    t = [dt.datetime(2030, 1, d) for d in range(1, 6)]
    # u moved into m at t0; m merged into p at t1; p split q off at t3; s moved into m at t4,
    # after m's records had gone to p (its builds are never p's or q's)
    edges = [("m", "p", t[1]), ("p", "q", t[3]), ("s", "m", t[4]), ("u", "m", t[0])]
    assert windows(["p"], edges) == {"p": None, "m": t[1], "u": t[0]}
    assert windows(["q"], edges) == {"q": None, "p": t[3], "m": t[1], "u": t[0]}
    # an edge with no event time bounds nothing more than its successor
    assert windows(["q"], [("p", "q", None)]) == {"q": None, "p": None}
    # a key reached along two paths keeps the later bound
    assert windows(["a", "b"], [("c", "a", t[0]), ("c", "b", t[2])])["c"] == t[2]


@pytest.mark.integration
def test_a_counted_download_is_delivered_even_if_a_close_removes_the_file(xw: World) -> None:
    from mpi.extract.package import verify_package
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)
    who = Principal(xw.ids["researcher"], "researcher", "researcher")
    package, name = extract_flow(xw).download(who, xid)
    # the steward closes the project while the bytes are still on their way
    xw.client.post(f"/v1/extracts/{xid}/close", headers=xw.h("steward")).raise_for_status()
    assert not list((xw.data_dir / "extracts").iterdir())
    with package:
        copy = xw.data_dir / name
        copy.write_bytes(package.read())
    assert verify_package(copy).ok
    # over HTTP the package arrives whole, named and sized
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)
    r = _download(xw, xid)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert int(r.headers["content-length"]) == len(r.content) > 0
    assert f'filename="{xid}-b1.zip"' in r.headers["content-disposition"]


@pytest.mark.integration
def test_an_aggregate_accounts_for_the_attributes_it_released_only(xw: World) -> None:
    attrs = [{"agency": A, "dataset": "enrolment", "name": n} for n in ("race_ethnicity", "program")]
    attrs.append({"agency": B, "dataset": "enrolment", "name": "birth_year"})
    xid = request_extract(xw, kind="aggregate", attributes=attrs, dimensions=[f"{A}.race_ethnicity"],
                   demographics=[f"{B}.birth_year"])["extract_id"]
    approve_all(xw, xid)
    assert _download(xw, xid).status_code == 200
    sid = next(r["source_record_id"] for r in RECORDS[A] if r.get("research_consent") is not False)
    key = xw.registry.get_record(A, sid)["person_key"]
    r = xw.client.get(f"/v1/persons/{key}/disclosures", headers=xw.h("steward"))
    [d] = r.json()["disclosures"]
    assert d["kind"] == "aggregate"
    # program was requested but never counted by or grouped by: not released
    assert {(a["agency"], a["name"]) for a in d["attributes"]} == {
        (A, "race_ethnicity"), (B, "birth_year")}


@pytest.mark.integration
def test_the_manifest_names_the_extract_and_build_it_signs(xw: World) -> None:
    import io
    import json
    import zipfile
    xid = request_extract(xw)["extract_id"]
    out = approve_all(xw, xid)
    r = _download(xw, xid)
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["metadata"] == {"extract_id": xid, "build_seq": 1, "kind": "rows",
                                    "rows": out["latest_build"]["rows"],
                                    "built_at": manifest["metadata"]["built_at"]}
    assert manifest["metadata"]["built_at"].startswith(out["latest_build"]["built_at"][:19])
