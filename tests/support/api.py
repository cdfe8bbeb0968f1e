"""A real app over a real registry in a temporary directory ("a world"): one principal per role
(agency principals for two agencies), and the synthetic token records the API tests send.

No tests and no fixtures live here: the ``world`` fixture is in ``tests/conftest.py``; tests
that need another scope or setup call ``build_world`` and ``close_world`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.main import create_app
from mpi.config import Settings
from mpi.identity.registry import Registry
from tests.support.records import Records, token_records

A, B = "agency_a", "agency_b"
ROLE_NAMES = ("agency", "steward", "approver", "researcher", "auditor", "admin")


def make_records() -> Records:
    """Token records for a small seeded population held by agency_a and agency_b."""
    return token_records(people=30, agencies=2, seed=5)


RECORDS = make_records()


@dataclass
class World:
    """The app, its registry and an API key per principal name."""

    client: TestClient
    registry: Registry
    data_dir: Path
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def h(self, who: str) -> dict[str, str]:
        """Bearer header for a principal name (``admin``, ``agency_a``, ``steward``, ...)."""
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def post_records(self, who: str, records: list[dict[str, Any]], **kw: Any) -> Any:
        """POST /v1/records as ``who``."""
        return self.client.post("/v1/records", json={"records": records}, headers=self.h(who), **kw)

    def audit(self) -> list[dict[str, Any]]:
        """Every audit event."""
        return self.registry.list_audit(after=0, limit=100_000)

    def get_json(self, url: str, who: str = "steward", status: int = 200) -> Any:
        """GET ``url`` as ``who``; its JSON body, once the status is ``status``."""
        r = self.client.get(url, headers=self.h(who))
        assert r.status_code == status, r.text
        return r.json()

    def post_json(self, url: str, body: dict[str, Any], who: str = "steward",
                  status: int = 200) -> Any:
        """POST ``body`` to ``url`` as ``who``; the JSON answer, once the status is ``status``."""
        r = self.client.post(url, json=body, headers=self.h(who))
        assert r.status_code == status, r.text
        return r.json()


def build_world(tmp_path: Path, **settings: Any) -> World:
    """Open a registry, build the app, create agencies and one principal per role."""
    reg = Registry(Settings(data_dir=tmp_path / "data", **settings))
    client = TestClient(create_app(reg.settings, registry=reg))
    w = World(client, reg, tmp_path / "data")
    w.keys["admin"] = (w.data_dir / "admin.key").read_text().strip()
    for agency in (A, B):
        assert client.post("/v1/agencies", json={"agency": agency}, headers=w.h("admin")).status_code == 201
    for name, role, agency in ((A, "agency", A), (B, "agency", B), ("steward", "steward", None),
                               ("approver", "approver", A), ("researcher", "researcher", None),
                               ("auditor", "auditor", None)):
        human: str | None = None if role == "agency" else f"{name}@example.org"  # Decision 80
        r = client.post("/v1/principals", json={"name": name, "role": role, "agency": agency,
                                                "human_email": human}, headers=w.h("admin"))
        assert r.status_code == 201, r.text
        w.keys[name], w.ids[name] = r.json()["api_key"], r.json()["principal"]["principal_id"]
    w.keys["agency"] = w.keys[A]
    w.ids["admin"] = next(p["principal_id"] for p in client.get(
        "/v1/principals", headers=w.h("admin")).json()["principals"] if p["role"] == "admin")
    return w


def enrolled_world(tmp_path: Path, tokens: dict[str, list[dict[str, Any]]]) -> World:
    """A world whose registry holds ``tokens`` (agency -> tokenized records), posted per agency."""
    w = build_world(tmp_path)
    for agency, records in tokens.items():
        r = w.post_records(agency, records)
        assert r.status_code == 200, r.text
    return w


def close_world(w: World) -> None:
    """Stop the app's background jobs, then close the registry."""
    w.client.app.state.mpi.registry.background.drain(timeout=10)  # type: ignore[attr-defined]
    w.registry.close()
