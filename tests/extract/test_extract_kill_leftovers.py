"""What a build killed by SIGKILL leaves in ``extracts/`` is removed at the next start: the
temporary file of a package write (``.<name>.<pid>.tmp``) and a package renamed into place
whose build was never recorded; the latest recorded build's package stays and still verifies
(scripts/chaos.py kills real builds over HTTP, RELIABILITY.md)."""

from __future__ import annotations

import pytest

from mpi.extract import delivery
from mpi.extract.package import verify_package
from mpi.extract.workflow import ExtractWorkflow
from tests.support.api import World
from tests.support.extracts import approve_all, request_extract


@pytest.mark.integration
def test_start_removes_what_a_killed_build_left(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)  # builds b1
    built = delivery.package_path(xw.data_dir, xid, 1)
    assert built.exists()
    unrecorded = delivery.package_path(xw.data_dir, xid, 2)  # killed before its transaction
    unrecorded.write_bytes(built.read_bytes())
    half = built.with_name(f".{unrecorded.name}.4242.tmp")  # killed inside the write
    half.write_bytes(b"half a package")
    stranger = delivery.package_path(xw.data_dir, "x_0123456789abcdef", 1)  # no such extract
    stranger.write_bytes(b"?")
    ExtractWorkflow(xw.registry, data_dir=xw.data_dir)
    assert sorted(p.name for p in built.parent.iterdir()) == [built.name]
    pem = xw.client.get("/v1/keys/signing").json()["public_key_pem"]
    assert verify_package(built, public_key_pem=pem).ok
    r = xw.client.get(f"/v1/extracts/{xid}/download", headers=xw.h("researcher"))
    assert r.status_code == 200 and r.content == built.read_bytes()
