"""The anchored audit log (decision 0069), from the attacker's side.

Someone with write access to the registry file (not to the audit key) truncates the log or
edits an event and re-hashes the rest with the public SHA-256 rule: ``mpi audit verify`` fails
and the registry refuses to open. Auditors verify the signed checkpoints with the published
public key alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import duckdb
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.cli import app
from api.main import create_app
from mpi.audit import GENESIS, AuditChain, AuditEntry
from mpi.config import Settings
from mpi.errors import ConfigurationError
from mpi.identity.registry import Registry
from tests.support.api import RECORDS, A, World

EVENTS = 30


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    reg = Registry(Settings(data_dir=d))
    for i in range(EVENTS):
        reg.record_audit([AuditEntry("p1", "records.read", f"agency:a/records/{i}")])
    assert reg.verify_audit().ok
    reg.close()
    return d


def _cli_verify(data_dir: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", "verify", "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout + (result.stderr or "")


def _sql(data_dir: Path, sql: str) -> None:
    con = duckdb.connect(str(data_dir / "mpi.duckdb"))
    con.execute(sql)
    con.close()


def _plain_sha256(prev: str, row: dict[str, Any]) -> str:
    """The pre-0069 public chain rule, as an attacker would recompute it."""
    fields = {k: row[k] for k in ("audit_seq", "occurred_at", "principal", "action", "target",
                                  "outcome", "detail")}
    fields["occurred_at"] = fields["occurred_at"].isoformat()
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(prev.encode() + b"\x00" + body).hexdigest()


def _edit_and_rehash(data_dir: Path, seq: int) -> None:
    """Edit one event and recompute the plain SHA-256 chain from it to the end."""
    con = duckdb.connect(str(data_dir / "mpi.duckdb"))
    cur = con.execute("SELECT * FROM audit_event ORDER BY audit_seq")
    cols = [c[0] for c in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    prev = rows[seq - 2]["entry_hash"] if seq > 1 else GENESIS
    for row in rows[seq - 1:]:
        if row["audit_seq"] == seq:
            row["principal"] = "mallory"
        row["prev_hash"], row["entry_hash"] = prev, _plain_sha256(prev, row)
        prev = row["entry_hash"]
        con.execute("UPDATE audit_event SET principal = ?, prev_hash = ?, entry_hash = ? "
                    "WHERE audit_seq = ?", [row["principal"], row["prev_hash"],
                                            row["entry_hash"], row["audit_seq"]])
    con.close()


def _truncate(data_dir: Path, n: int) -> None:
    _sql(data_dir, f"DELETE FROM audit_event WHERE audit_seq > {EVENTS - n}")


# ---- (a) truncation -------------------------------------------------------------------------
def test_deleting_the_newest_events_fails_verify_naming_truncation(data_dir: Path) -> None:
    _truncate(data_dir, 10)
    code, text = _cli_verify(data_dir)
    assert code == 1, text
    assert "truncat" in text.lower() and str(EVENTS) in text
    assert len(text.strip().splitlines()) == 1


# ---- (b) edit + re-hash ---------------------------------------------------------------------
def test_editing_an_event_and_rehashing_the_rest_fails_verify(data_dir: Path) -> None:
    _edit_and_rehash(data_dir, 12)
    code, text = _cli_verify(data_dir)
    assert code == 1, text
    assert "audit event 12" in text


def test_intact_log_still_verifies(data_dir: Path) -> None:
    code, text = _cli_verify(data_dir)
    assert code == 0 and f"{EVENTS} audit events" in text and "checkpoint" in text


# ---- (c) start-up refuses a broken chain ----------------------------------------------------
@pytest.mark.parametrize("tamper", ["truncate", "rehash"])
def test_registry_refuses_to_open_on_a_broken_chain(data_dir: Path, tamper: str) -> None:
    if tamper == "truncate":
        _truncate(data_dir, 10)
    else:
        _edit_and_rehash(data_dir, 12)
    with pytest.raises(ConfigurationError, match="audit") as info:
        Registry(Settings(data_dir=data_dir))
    assert ("truncat" in str(info.value)) == (tamper == "truncate")
    # ... and so does the server: it does not start on a broken chain
    with pytest.raises(ConfigurationError, match="audit"), \
            TestClient(create_app(Settings(data_dir=data_dir))):
        pass


def test_a_crash_after_the_last_checkpoint_reopens_and_re_anchors(tmp_path: Path) -> None:
    """Events written after the latest checkpoint (no clean close) still open: the tail is
    verified from the checkpoint, and a new checkpoint anchors it."""
    d = tmp_path / "d"
    reg = Registry(Settings(data_dir=d, audit_checkpoint_every=1000))
    for i in range(5):
        reg.record_audit([AuditEntry("p1", "records.read", f"agency:a/records/{i}")])
    reg.store.close()  # the file is consistent, but no close-time checkpoint was written
    reg2 = Registry(Settings(data_dir=d))
    try:
        assert reg2.verify_audit().ok
        assert reg2.audit_anchor.latest() is not None
        assert reg2.audit_anchor.latest().count == 5  # type: ignore[union-attr]
    finally:
        reg2.close()


def test_pre_anchor_events_stay_verifiable(tmp_path: Path) -> None:
    """A registry written before 0069 (plain chain, no key, no checkpoints) upgrades: the old
    events verify with the plain rule, new ones are keyed, and an old one edited is named."""
    d = tmp_path / "d"
    Registry(Settings(data_dir=d)).close()
    (d / "audit.key").unlink()
    (d / "audit-checkpoints.jsonl").unlink()
    import datetime as dt
    rows, _ = AuditChain(seq=0, head=GENESIS).seal(
        [AuditEntry("old", "records.read", f"t{i}") for i in range(5)],
        now=dt.datetime(2025, 1, 1))
    con = duckdb.connect(str(d / "mpi.duckdb"))
    for r in rows:
        con.execute("INSERT INTO audit_event VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [r[k] for k in ("audit_seq", "occurred_at", "principal", "action", "target",
                                    "outcome", "detail", "prev_hash", "entry_hash")])
    con.close()
    reg = Registry(Settings(data_dir=d))
    reg.record_audit([AuditEntry("new", "records.read", "t6")])
    v = reg.verify_audit()
    assert v.ok and v.events == 6
    assert reg.audit_anchor.latest().keyed_from == 6  # type: ignore[union-attr]
    reg.close()
    _sql(d, "UPDATE audit_event SET principal = 'mallory' WHERE audit_seq = 2")
    code, text = _cli_verify(d)
    assert code == 1 and "audit event 2" in text


def test_the_audit_key_and_checkpoints_are_private_files(data_dir: Path) -> None:
    for name in ("audit.key", "audit-checkpoints.jsonl"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


def test_a_forged_checkpoint_line_is_refused(data_dir: Path) -> None:
    """Appending an unsigned (or wrongly signed) checkpoint to hide a truncation does not work."""
    path = data_dir / "audit-checkpoints.jsonl"
    last = json.loads(path.read_text().splitlines()[-1])
    _truncate(data_dir, 10)
    con = duckdb.connect(str(data_dir / "mpi.duckdb"))
    head = con.execute("SELECT entry_hash FROM audit_event ORDER BY audit_seq DESC LIMIT 1"
                       ).fetchall()[0][0]
    con.close()
    forged = {**last, "count": EVENTS - 10, "head": head}
    with path.open("a") as fh:
        fh.write(json.dumps(forged) + "\n")
    with pytest.raises(ConfigurationError, match="signature"):
        Registry(Settings(data_dir=data_dir))
    code, _ = _cli_verify(data_dir)
    assert code == 1


# ---- (d) published checkpoints --------------------------------------------------------------
def _message(cp: dict[str, Any]) -> bytes:
    body = {k: cp[k] for k in ("count", "head", "keyed_from", "at")}
    return b"mpi-audit-checkpoint:v1\n" + json.dumps(body, sort_keys=True,
                                                     separators=(",", ":")).encode()


def test_auditors_verify_published_checkpoints_with_the_public_key(world: World) -> None:
    assert world.post_records(A, RECORDS[A][:3]).status_code == 200
    r = world.client.get("/v1/audit/checkpoints", headers=world.h("auditor"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["algorithm"] == "Ed25519" and body["checkpoints"]
    public = serialization.load_pem_public_key(body["public_key_pem"].encode())
    assert isinstance(public, Ed25519PublicKey)
    for cp in body["checkpoints"]:
        public.verify(base64.b64decode(cp["signature"]), _message(cp))  # raises if forged
    # fetching anchors the head: the newest checkpoint covers every event written so far
    latest = body["checkpoints"][-1]
    events = world.audit()
    assert latest["count"] == len(events)
    assert next(e for e in events if e["audit_seq"] == latest["count"])["entry_hash"] \
        == latest["head"]
    # no secrets: neither the HMAC key nor any private key material
    key_text = (world.data_dir / "audit.key").read_text()
    assert "PRIVATE" not in r.text
    for value in json.loads(key_text).values():
        assert str(value) not in r.text or value == "mpi-audit-key"
    assert world.client.get("/v1/audit/checkpoints", headers=world.h("admin")).status_code == 200
    assert world.client.get("/v1/audit/checkpoints", headers=world.h(A)).status_code == 403
