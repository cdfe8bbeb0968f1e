"""Reliability of the real ``mpi serve`` (subprocess, default self-signed TLS, loopback):

- SIGKILL in the middle of an ingest, restart on the same data directory: every batch
  acknowledged before the kill is present with the key it was acknowledged with; resubmitting
  the whole file gives the same keys and no duplicates; ``mpi audit verify`` reports OK.
- ``mpi submit`` resume: a submit interrupted after some batches, and one interrupted between
  a batch's acknowledgement and its state write, resume without storing anything twice.

(The schemathesis run lives with the API tests.)
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from mpi.agency.client import MpiClient, read_api_key
from mpi.config import Settings
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.synth import generate
from tests.support.server import Served, clean_env, mpi_cmd, serve, ssl_context

pytestmark = pytest.mark.integration  # real `mpi serve` processes killed mid-ingest

AGENCY = "agency_a"  # the name mpi.synth gives the first agency
NEW_OUTCOMES = {"new", "linked", "review"}


def write_tokens(path: Path, *, people: int, seed: int) -> list[dict[str, Any]]:
    """Tokenize a seeded synthetic agency file agency-side and write it as JSONL."""
    rows, _truth = generate(people=people, agencies=1, seed=seed)
    records, _rejected = tokenize_rows(rows[AGENCY], secret=demo_secret(1))
    assert len({r["source_record_id"] for r in records}) == len(records)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def add_agency(s: Served, tmp: Path) -> Path:
    """Register AGENCY and an agency principal through the admin API; its key file (0600)."""
    with MpiClient(s.url, api_key=s.admin_key, ca_file=s.data_dir / "tls" / "ca.pem", max_retries=0) as c:
        c.request("POST", "/v1/agencies", json={"agency": AGENCY})
        made = c.request("POST", "/v1/principals",
                         json={"name": f"{AGENCY} system", "role": "agency", "agency": AGENCY})
    key_file = tmp / "agency.key"
    key_file.write_text(made["api_key"] + "\n")
    key_file.chmod(0o600)
    return key_file


def registry_contents(data_dir: Path) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(active source_record_id -> person_key for AGENCY, audit events) of a stopped server."""
    reg = Registry(Settings(data_dir=data_dir))
    try:
        keys = reg.export_keys()
        agencies = keys.column("agency").to_pylist()
        sids = keys.column("source_record_id").to_pylist()
        assert set(agencies) == {AGENCY}
        assert len(set(sids)) == len(sids), "duplicate active records"
        active = dict(zip(sids, keys.column("person_key").to_pylist(), strict=True))
        events = reg.list_audit(after=0, limit=1_000_000)
    finally:
        reg.close()
    return active, events


def audit_verify(data_dir: Path) -> None:
    r = subprocess.run(mpi_cmd("audit", "verify", "--data-dir", data_dir), capture_output=True,
                       text=True, timeout=120, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


def create_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in events:
        if e["action"] == "records.create" and e["outcome"] == "ok":
            out.append({**e, "detail": json.loads(e["detail"]) if e["detail"] else {}})
    return out


@pytest.mark.integration
@pytest.mark.parametrize(("batch_size", "people"), [(200, 6000), (1, 300)],
                         ids=["batches-direct", "single-records-journaled"])
def test_sigkill_mid_ingest_loses_nothing_acknowledged(tmp_path: Path, batch_size: int,
                                                       people: int) -> None:
    """200-record batches are written to DuckDB directly; single records go through the online
    journal (Decision 48) and must equally survive a SIGKILL once acknowledged."""
    tokens = tmp_path / "agency_a.tokens.jsonl"
    records = write_tokens(tokens, people=people, seed=5)
    batches = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    kill_after = math.ceil(0.4 * len(batches))
    data = tmp_path / "data"

    acknowledged: dict[str, str] = {}  # source_record_id -> person_key, from 200 responses only
    acked_batches: list[int] = []
    stopped_by: list[BaseException] = []
    reached = threading.Event()

    def ingest(url: str, key: str, ca: Path) -> None:
        try:
            with httpx.Client(verify=ssl_context(ca), timeout=60,
                              headers={"Authorization": f"Bearer {key}"}) as c:
                for number, batch in enumerate(batches):
                    r = c.post(f"{url}/v1/records", json={"records": batch})
                    if r.status_code != 200:
                        raise AssertionError(f"batch {number}: {r.status_code} {r.text[:300]}")
                    results = r.json()["results"]
                    assert [x["source_record_id"] for x in results] == [x["source_record_id"] for x in batch]
                    for x in results:
                        acknowledged[x["source_record_id"]] = x["person_key"]
                    acked_batches.append(number)
                    if len(acked_batches) >= kill_after:
                        reached.set()
        except (httpx.TransportError, AssertionError) as exc:
            stopped_by.append(exc)
        finally:
            reached.set()

    ca = data / "tls" / "ca.pem"
    with serve(data) as s:
        key = read_api_key(add_agency(s, tmp_path))
        worker = threading.Thread(target=ingest, args=(s.url, key, ca), daemon=True)
        worker.start()
        assert reached.wait(timeout=120), "the ingest did not progress"
        s.kill()  # SIGKILL while the worker keeps posting: no shutdown, no flush
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert s.proc.returncode == -9
    assert not any(isinstance(e, AssertionError) for e in stopped_by), stopped_by
    assert stopped_by and isinstance(stopped_by[0], httpx.TransportError), "the kill did not interrupt"
    assert acked_batches == list(range(len(acked_batches)))
    assert kill_after <= len(acked_batches) < len(batches)
    assert len(acknowledged) == len(acked_batches) * batch_size
    ca_before, admin_before = ca.read_bytes(), (data / "admin.key").read_bytes()

    with serve(data) as s:
        # the restart reuses the self-signed CA and the admin key
        assert "using a self-signed certificate" in " ".join(s.stdout().split())
        assert ca.read_bytes() == ca_before and (data / "admin.key").read_bytes() == admin_before
        with httpx.Client(verify=ssl_context(ca), timeout=30,
                          headers={"Authorization": f"Bearer {key}"}) as c:

            def check(item: tuple[str, str]) -> None:
                sid, person_key = item
                r = c.get(f"{s.url}/v1/records/{sid}")
                assert r.status_code == 200, (sid, r.text)
                got = r.json()
                assert got["person_key"] == person_key, sid
                assert got["agency"] == AGENCY and got["source_record_id"] == sid

            # every read is audited (a committed write each), so read with a few clients at once
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(check, acknowledged.items()))

        # resubmit the whole file from scratch (fresh state file)
        outcome: dict[str, tuple[str, str]] = {}

        def collect(results: list[dict[str, Any]]) -> None:
            for x in results:
                assert x["source_record_id"] not in outcome
                outcome[x["source_record_id"]] = (x["outcome"], x["person_key"])

        with MpiClient(s.url, api_key=key, ca_file=ca) as client:
            summary = client.submit_file(tokens, batch_size=1000, state_file=tmp_path / "resubmit.json",
                                         on_results=collect)
    assert summary.skipped_batches == 0 and not summary.rejected
    assert summary.records == len(records) == len(outcome)
    for sid, person_key in acknowledged.items():
        assert outcome[sid] == ("unchanged", person_key), sid
    rest = Counter(o for sid, (o, _k) in outcome.items() if sid not in acknowledged)
    # the batch in flight at the kill may or may not have been committed (then: unchanged)
    assert set(rest) <= NEW_OUTCOMES | {"unchanged"}
    assert rest["unchanged"] in (0, batch_size), rest
    assert sum(rest.values()) == len(records) - len(acknowledged)

    active, events = registry_contents(data)
    assert len(active) == len({r["source_record_id"] for r in records}) == len(records)
    assert active == {sid: k for sid, (_o, k) in outcome.items()}
    # every acknowledged batch has its audit event (written in the same transaction)
    before_resubmit = [e for e in create_events(events) if e["detail"].get("records") == batch_size]
    assert len(acked_batches) <= len(before_resubmit) <= len(acked_batches) + 1
    audit_verify(data)


class Interrupt(Exception):
    """Stands in for a crash or Ctrl-C of the agency's submit process."""


def test_submit_resumes_without_duplicates(tmp_path: Path) -> None:
    tokens = tmp_path / "agency_a.tokens.jsonl"
    records = write_tokens(tokens, people=1500, seed=11)
    batch_size = 100
    n_batches = math.ceil(len(records) / batch_size)
    state = tmp_path / "submit-state.json"
    data = tmp_path / "data"
    ca = data / "tls" / "ca.pem"
    seen: dict[str, str] = {}

    def collect(results: list[dict[str, Any]]) -> None:
        for x in results:
            assert x["source_record_id"] not in seen
            assert x["outcome"] in NEW_OUTCOMES
            seen[x["source_record_id"]] = x["person_key"]

    with serve(data) as s:
        key_file = add_agency(s, tmp_path)
        key = read_api_key(key_file)

        # run 1: interrupted after 5 batches were acknowledged and recorded in the state file
        progress_calls = 0

        def stop_after_five(_n: int) -> None:
            nonlocal progress_calls
            progress_calls += 1
            if progress_calls == 5:
                raise Interrupt

        with MpiClient(s.url, api_key=key, ca_file=ca) as c, pytest.raises(Interrupt):
            c.submit_file(tokens, batch_size=batch_size, state_file=state, progress=stop_after_five,
                          on_results=collect)
        assert json.loads(state.read_text())["batches_done"] == 5
        assert len(seen) == 5 * batch_size

        # run 2: resumes at batch 5; interrupted after batch 7 was acknowledged by the server but
        # before the state file recorded it (the worst moment for a crash)
        posted = 0

        def crash_after_ack(results: list[dict[str, Any]]) -> None:
            nonlocal posted
            collect(results)
            posted += 1
            if posted == 3:
                raise Interrupt

        with MpiClient(s.url, api_key=key, ca_file=ca) as c, pytest.raises(Interrupt):
            c.submit_file(tokens, batch_size=batch_size, state_file=state, on_results=crash_after_ack)
        assert json.loads(state.read_text())["batches_done"] == 7
        assert len(seen) == 8 * batch_size

        # run 3: the real `mpi submit` resumes from the state file and reports the skipped batches
        r = subprocess.run(mpi_cmd("submit", tokens, "--url", s.url, "--api-key-file", key_file,
                                   "--ca-file", ca, "--batch-size", str(batch_size),
                                   "--state-file", state),
                           capture_output=True, text=True, timeout=120, env=clean_env())
        assert r.returncode == 0, r.stdout + r.stderr
        text = " ".join(r.stdout.split())
        sent = len(records) - 7 * batch_size
        assert f"{sent} records in {n_batches - 7} batches (7 already sent)" in text, text
        assert json.loads(state.read_text())["batches_done"] == n_batches
        assert "unchanged" not in text  # nothing was sent twice as a new request

        # run 4: everything is done; nothing is posted
        with MpiClient(s.url, api_key=key, ca_file=ca) as c:
            again = c.submit_file(tokens, batch_size=batch_size, state_file=state)
        assert again.batches == 0 and again.skipped_batches == n_batches and again.outcomes == {}

    active, events = registry_contents(data)
    assert set(active) == {x["source_record_id"] for x in records}
    for sid, person_key in seen.items():
        assert active[sid] == person_key, sid
    creates = create_events(events)
    replays = [e for e in creates if e["detail"].get("idempotent_replay")]
    assert len(replays) == 1  # batch 7 was resent with its idempotency key and replayed
    assert len(creates) == n_batches + 1
    audit_verify(data)
