"""The app factory: health, readiness and the schema; the lifespan opens and closes the registry."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from mpi.agency.schema import SCHEMA_VERSION
from mpi.config import Settings


def test_health_ready_schema(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    assert TestClient(app).get("/readyz").status_code == 503  # lifespan not run: no registry
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        body = client.get("/v1/schema").json()
        assert body["schema_version"] == SCHEMA_VERSION
        assert client.get("/openapi.json").status_code == 200
        assert (tmp_path / "admin.key").stat().st_mode & 0o777 == 0o600
    with TestClient(app) as client:  # a second start reopens the registry, no second admin key
        assert client.get("/readyz").status_code == 200
