"""FastAPI app factory. Routes stay thin: each calls one mpi function.

The full agency API (records, match, persons, bulk, auth, audit) is the HTTPS service issue;
this module so far serves health, readiness and the linkage schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from mpi.config import Settings
from mpi.schema import schema_document


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for the given settings (built from the environment when omitted)."""
    settings = settings or Settings()
    app = FastAPI(title="mpi", version="0.1.0",
                  description="Privacy-preserving master person index (token-only linkage).")

    @app.get("/healthz", summary="Liveness", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness", tags=["ops"])
    def readyz() -> dict[str, Any]:
        """Settings are loaded and the data directory is known."""
        return {"status": "ready", "data_dir_exists": settings.data_dir.exists()}

    @app.get("/v1/schema", summary="The linkage schema (token contract)", tags=["schema"])
    def get_schema() -> dict[str, Any]:
        """Agencies check their tokenizer's schema version against this."""
        return schema_document()

    return app
