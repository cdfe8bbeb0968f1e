"""The research-extract workflow's shared setup: token records with attributes, the data
dictionary both agencies publish, and the requests, approvals and package readers that
tests/extract/test_extract_workflow.py and test_extract_review.py share (the ``xw`` fixture that
uses them is in tests/extract/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.api import A, B, World
from tests.support.records import Records, token_records

ATTRS = ("race_ethnicity", "birth_year", "program", "enrolled_on")


def _extract_records() -> Records:
    return token_records(people=80, agencies=2, seed=23, attributes=ATTRS)


RECORDS = _extract_records()
DICTIONARY = [
    {"name": "race_ethnicity", "type": "string", "class": "quasi_identifier",
     "description": "Self-reported race/ethnicity.", "allowed_generalizations": ["none", "suppress"]},
    {"name": "birth_year", "type": "integer", "class": "quasi_identifier",
     "description": "Year of birth.", "allowed_generalizations": ["year", "none", "suppress"],
     "default_generalization": "year"},
    {"name": "program", "type": "string", "class": "sensitive", "description": "Program code.",
     "allowed_generalizations": ["none"]},
    {"name": "enrolled_on", "type": "date", "class": "other", "description": "Enrolment date.",
     "allowed_generalizations": ["month", "year", "date_shift", "suppress"]},
]


def add_principal(w: World, name: str, role: str, agency: str | None = None, *,
                  human_email: str | None = None) -> None:
    """Create a principal (a human role gets a distinct address unless one is given)."""
    if human_email is None and role != "agency":
        human_email = f"{name.casefold().replace(' ', '.')}.{role}.{agency or 'any'}@example.org"
    r = w.client.post("/v1/principals", json={"name": name, "role": role, "agency": agency,
                                               "human_email": human_email},
                      headers=w.h("admin"))
    assert r.status_code == 201, r.text
    w.keys[name], w.ids[name] = r.json()["api_key"], r.json()["principal"]["principal_id"]


def extract_flow(w: World) -> Any:
    return w.client.app.state.mpi.extracts  # type: ignore[attr-defined]


def request_extract(w: World, who: str = "researcher", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Jobs and Medicaid", "purpose": "Program evaluation", "agreement_ref": "DUA-1",
        "attributes": [{"agency": A, "dataset": "enrolment", "name": "program"},
                       {"agency": A, "dataset": "enrolment", "name": "birth_year"},
                       {"agency": B, "dataset": "enrolment", "name": "program"}],
        "cohort": {"agency": A}, "k": 2,
        "expires_at": (w.registry.clock() + dt.timedelta(days=30)).isoformat() + "Z",
        "download_limit": 2}
    body.update(over)
    r = w.client.post("/v1/extracts", json=body, headers=w.h(who))
    assert r.status_code == 201, r.text
    return dict(r.json())


def decide(w: World, who: str, xid: str, decision: str = "approve") -> Any:
    return w.client.post(f"/v1/extracts/{xid}/approvals", headers=w.h(who),
                         json={"decision": decision, "reason": "ok"})


def approve_all(w: World, xid: str) -> dict[str, Any]:
    pending = w.client.get(f"/v1/extracts/{xid}", headers=w.h("steward")).json()["pending_approvals"]
    by = {f"agency:{A}": "approver", f"agency:{B}": "approver_b", "steward": "steward"}
    for capacity in pending:
        r = decide(w, by[capacity], xid)
        assert r.status_code == 200, r.text
    extract_flow(w).wait(60)
    out = w.client.get(f"/v1/extracts/{xid}", headers=w.h("researcher")).json()
    assert out["status"] == "approved" and out["build_state"] == "built", out
    return dict(out)


def audit_events(w: World, action: str) -> list[dict[str, Any]]:
    return [e for e in w.audit() if e["action"] == action]


def zip_member(content: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        return z.read(name)


def package_data(content: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(zip_member(content, "data.parquet")))


def pseudonyms(table: pa.Table) -> set[str]:
    """Values of the pseudonym column (strings starting p_)."""
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type):
            vals = [v for v in col.to_pylist() if v is not None]
            if vals and all(v.startswith("p_") for v in vals):
                return set(vals)
    raise AssertionError(f"no pseudonym column in {table.column_names}")


def route_cli_to(xw: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `mpi extract ... --url` commands talk to ``xw``'s app (MpiClient over its TestClient)."""
    import mpi.cli.extract as cli_extract
    from mpi.agency.client import MpiClient

    def client(_url: str, key_file: Path | None, _ca: Path | None) -> MpiClient:
        assert key_file is not None
        c = MpiClient("https://testserver", api_key=key_file.read_text().strip(), max_retries=0)
        c._http.close()
        c._http = xw.client
        c._http.headers["Authorization"] = f"Bearer {key_file.read_text().strip()}"
        monkeypatch.setattr(c, "close", lambda: None)  # the TestClient outlives the command
        return c

    monkeypatch.setattr(cli_extract, "_client", client)
