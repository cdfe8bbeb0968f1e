"""Disk full is a 503 with Retry-After, not a 500, and nothing half-written stays (issue 15).

Owns: the fault's test: the registry's storage refuses a write with ENOSPC (the way DuckDB or
the journal fails on a full disk) while an agency posts records; the client must get an
RFC 9457 problem with status 503 and ``Retry-After`` so it retries later, and nothing of the
refused request may be stored or visible.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from tests.support.api import RECORDS, A, World


def _full(*_a: Any, **_k: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_answers_503_with_retry_after_and_stores_nothing(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = RECORDS[A][0]
    with monkeypatch.context() as m:
        m.setattr(world.registry.store, "write_set", _full)
        r = world.client.post("/v1/records", json={"records": [rec]}, headers=world.h(A))
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) > 0
    body = r.json()
    assert body["code"] == "storage_full" and "space" in body["detail"].lower()
    sid = rec["source_record_id"]
    assert world.client.get(f"/v1/records/{sid}", headers=world.h(A)).status_code == 404
    r = world.client.post("/v1/records", json={"records": [rec]}, headers=world.h(A))
    assert r.status_code == 200, r.text  # once there is room again, the same post succeeds
    assert world.client.get(f"/v1/records/{sid}", headers=world.h(A)).status_code == 200


def test_other_failures_stay_500_without_details(world: World,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise OSError(errno.EIO, "I/O error at /secret/path")
    with monkeypatch.context() as m:
        m.setattr(world.registry.store, "write_set", broken)
        r = world.client.post("/v1/records", json={"records": [RECORDS[A][0]]},
                              headers=world.h(A))
    assert r.status_code == 500 and "/secret/path" not in r.text
