"""A served registry for the console's browser tests and screenshots.

Starts the real ``mpi serve`` over TLS on a fresh data directory (``tests.support.server``)
and fills it over HTTPS the way agencies and an admin would: two agencies, one principal per
role (approvers at both agencies), the 400-person synthetic population at both agencies (with
research attributes, so the review queue and the extract workflow both have work), and each
agency's data dictionary. Used by tests/console/test_console_browser.py and
scripts/console_screenshots.py; ``browser`` and ``sign_in`` are the in-process equivalents the
``TestClient`` console tests use. No fixtures and no tests here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.support.api import A, B, World
from tests.support.extracts import ATTRS, DICTIONARY
from tests.support.records import Records, token_records
from tests.support.server import Served, serve, ssl_context

PEOPLE = 400
SEED = 13
PRINCIPALS: tuple[tuple[str, str, str | None], ...] = (
    (A, "agency", A), (B, "agency", B), ("steward", "steward", None), ("approver", "approver", A),
    ("approver_b", "approver", B), ("researcher", "researcher", None),
    ("auditor", "auditor", None))


def console_records() -> Records:
    """The population every console site holds (review items at both kinds, attributes)."""
    return token_records(people=PEOPLE, agencies=2, seed=SEED, attributes=ATTRS)


@dataclass
class ConsoleSite:
    """A running, filled service: its URL, CA file, and an API key and id per principal."""

    served: Served
    ca: Path
    records: Records
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.served.url

    def client(self, who: str) -> httpx.Client:
        """An HTTPS client authenticated as ``who``."""
        return httpx.Client(base_url=self.url, verify=ssl_context(self.ca), timeout=120.0,
                            headers={"Authorization": f"Bearer {self.keys[who]}"})


def _ok(r: httpx.Response) -> Any:
    assert r.status_code < 300, (r.request.url, r.status_code, r.text[:500])
    return r.json() if r.content else None


def fill(site: ConsoleSite) -> None:
    """Agencies, principals, records and dictionaries, through the public API."""
    with site.client("admin") as admin:
        for agency in (A, B):
            _ok(admin.post("/v1/agencies", json={"agency": agency}))
        for name, role, bound in PRINCIPALS:
            human: str | None = None if role == "agency" else f"{name}@example.org"
            out = _ok(admin.post("/v1/principals", json={"name": name, "role": role,
                                                         "agency": bound, "human_email": human}))
            site.keys[name], site.ids[name] = out["api_key"], out["principal"]["principal_id"]
    for agency in (A, B):
        with site.client(agency) as c:
            _ok(c.post("/v1/records", json={"records": site.records[agency]}))
            _ok(c.put("/v1/datasets/enrolment", json={"description": "Program enrolment",
                                                      "attributes": DICTIONARY}))


@contextmanager
def console_site(tmp_path: Path, *args: str) -> Iterator[ConsoleSite]:
    """``mpi serve`` on a fresh data directory under ``tmp_path``, filled; stopped at exit."""
    with serve(tmp_path / "data", *args) as served:
        site = ConsoleSite(served, served.data_dir / "tls" / "ca.pem", console_records())
        site.keys["admin"] = served.admin_key
        fill(site)
        yield site


def browser(w: World) -> TestClient:
    """A cookie-keeping client on https (Secure cookies are only sent over https)."""
    return TestClient(w.client.app, base_url="https://testserver")


def sign_in(c: TestClient, key: str) -> str:
    """Sign in with ``key``; the CSRF token of the session (read from the home page)."""
    form = c.get("/console/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token, form.text
    r = c.post("/console/login", data={"login_token": token.group(1), "api_key": key},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console", r.text
    home = c.get("/console")
    assert home.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
    assert csrf
    return csrf.group(1)
