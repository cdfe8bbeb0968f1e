"""Settings, read from the environment (prefix ``MPI_``) by whoever builds them.

Owns: every setting and its default. The only module that reads the environment. Nothing
builds settings at import time: the CLI commands and ``api.main:create_app`` do.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """mpi settings; each field can be set as ``MPI_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MPI_", extra="ignore")

    data_dir: Path = Field(Path("mpi-data"), description="Directory holding the registry "
                           "(mpi.duckdb), the server secret, the audit key and checkpoints, "
                           "the first admin key, generated "
                           "TLS certificates, bulk uploads, trained model versions, extract "
                           "packages, their pseudonym secrets and the signing key, and Spark "
                           "work files.")
    server_secret_file: Path | None = Field(None, description="File holding the server re-key "
                                            "secret; default <data_dir>/server.secret, created "
                                            "0600 on first use.")
    key_scope_secret_file: Path | None = Field(None, description="File holding the secret that "
                                               "derives agency-scoped person keys (agencies "
                                               "with key_scope `agency`); default "
                                               "<data_dir>/key-scope.secret, created 0600 on "
                                               "first use. Losing it changes every scoped key.")
    audit_key_file: Path | None = Field(None, description="File holding the audit-log keys "
                                        "(the HMAC key of the audit chain and the Ed25519 key "
                                        "that signs audit checkpoints); default "
                                        "<data_dir>/audit.key, created 0600 on first use. Keep "
                                        "it off the registry's disk and out of its backups.")
    audit_checkpoints_file: Path | None = Field(None, description="Append-only file of signed "
                                                "audit checkpoints (event count and head hash); "
                                                "default <data_dir>/audit-checkpoints.jsonl, "
                                                "0600.")
    audit_checkpoint_every: int = Field(1000, ge=1, description="Write a signed audit "
                                        "checkpoint after this many new audit events (and at "
                                        "every open, clean close and checkpoint fetch).")
    models_dir: Path | None = Field(None, description="Directory of versioned model files; "
                                    "default: the linkage_models/ shipped with mpi.")
    model_name: str = Field("default", description="Model name whose newest version is used "
                            "when the registry has no active model yet.")
    accepted_key_ids: list[str] = Field(default_factory=list, description="Linkage key ids "
                                        "accepted from agencies; empty: pin the first one seen.")
    duckdb_memory_limit: str = Field("1GB", description="DuckDB buffer memory limit for the "
                                     "registry connection (the in-memory matching index is "
                                     "separate).")
    ingest_chunk: int = Field(10_000, description="Records per ingest transaction (CLI).")
    # A contract-revision-2 record with every field is ~3.5 KB of JSON: the largest batch
    # (max_batch_records) must fit with margin.
    max_body_bytes: int = Field(64 * 2**20, description="Largest request body the API accepts "
                                "(bytes); larger ones get 413.")
    max_bulk_body_bytes: int = Field(64 * 2**20, description="Largest upload to POST /v1/bulk "
                                     "(bytes); larger ones get 413.")
    max_batch_records: int = Field(10_000, description="Most records in one POST /v1/records.")
    bulk_chunk: int = Field(5_000, description="Records per transaction in a bulk upload job.")
    rate_limit_per_second: float = Field(2_000.0, description="Sustained requests per second "
                                         "per principal (token bucket); 0 turns it off.")
    rate_limit_burst: int = Field(4_000, description="Requests a principal may send at once "
                                  "before the rate limit applies.")
    idempotency_retention_hours: float = Field(
        168.0, gt=0, description="How long the response to an Idempotency-Key is kept and "
        "replayed (7 days); after that the key is forgotten and may be used again.")
    console_idle_minutes: float = Field(15.0, gt=0, le=24 * 60, description="Web console "
                                        "(/console): a signed-in session ends after this many "
                                        "minutes without a request.")
    disclosure_threshold: int = Field(11, ge=1, description="Linkage-quality (equity) reports, "
                                      "including the one in an extract package, suppress groups "
                                      "with fewer records than this.")

    @property
    def registry_path(self) -> Path:
        """The DuckDB registry file."""
        return self.data_dir / "mpi.duckdb"

    @property
    def secret_path(self) -> Path:
        """Where the server re-key secret lives."""
        return self.server_secret_file or self.data_dir / "server.secret"

    @property
    def key_scope_secret_path(self) -> Path:
        """Where the secret of agency-scoped person keys lives."""
        return self.key_scope_secret_file or self.data_dir / "key-scope.secret"

    @property
    def audit_key_path(self) -> Path:
        """Where the audit-log keys live (outside the registry file)."""
        return self.audit_key_file or self.data_dir / "audit.key"

    @property
    def audit_checkpoints_path(self) -> Path:
        """Where signed audit checkpoints are appended (outside the registry file)."""
        return self.audit_checkpoints_file or self.data_dir / "audit-checkpoints.jsonl"
