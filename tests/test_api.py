"""The app factory serves health, readiness and the schema (TestClient on the real app)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from mpi.config import Settings
from mpi.schema import SCHEMA_VERSION


def test_health_ready_schema(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path)))
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    body = client.get("/v1/schema").json()
    assert body["schema_version"] == SCHEMA_VERSION
    assert client.get("/openapi.json").status_code == 200
