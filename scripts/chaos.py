"""Chaos test of the real ``mpi serve`` (TLS, loopback): no acknowledged record is ever lost.

  python scripts/chaos.py --kills 3 --records 2000 [--extract-kills 4] [--extract-records 3000]
      [--phases sigkill,extract,disk_full] [--seed S] [--work-dir DIR] [--out F.json]

1. SIGKILL: single-record ``POST /v1/records`` (three clients, half the records) and bulk
   uploads (``POST /v1/bulk``, 200 rows each, acknowledged when the job reports ``completed``)
   run while the server is killed with SIGKILL at a random moment, ``--kills`` times; it is restarted on
   the same data directory each time.
2. Journal byte flip: after a kill that left a journal segment with two or more entries, one byte
   of its first entry is flipped: start-up must refuse (``journal_corrupt``) and
   ``mpi journal recover --report`` must name the segment; the byte is flipped back and the
   server restarts with nothing lost.
3. SIGKILL during extract builds: a research extract (agency data dictionary, researcher,
   agency approver and steward, all through the HTTP API) is approved and built once to time a
   build; then ``--extract-kills`` times a rebuild is started with ``POST .../build`` and the
   server killed at a random moment inside the measured build time. After each restart the
   extract must be either built with a package that verifies (signature and every file's
   SHA-256, against ``GET /v1/keys/signing``) or refused for download without serving any
   file, and a new build through the API must succeed and verify; no temporary package file
   may be left in ``extracts/`` and, at the end, only the latest build's package; every
   acknowledged record is still there and the audit chain verifies.
4. Disk full: on a 32 MiB tmpfs (skipped with a message where ``mount`` is not permitted) the
   free space is filled up to ~1 MiB while single records are posted; once writes fail the space
   is freed and posting resumes.

At the end the server is stopped, the registry opened directly and every acknowledged (2xx)
record checked: present exactly once, with the key it was acknowledged with (single posts).
Prints a JSON summary (acknowledged, lost, duplicated, kills, ...) with machine info.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from bench_common import emit_after_run, log, machine_info  # noqa: E402

from mpi.agency.client import MpiClient  # noqa: E402
from mpi.config import Settings  # noqa: E402
from mpi.identity.pipeline import demo_secret, tokenize_rows  # noqa: E402
from mpi.identity.registry import Registry  # noqa: E402
from mpi.store.journal import inspect_segments  # noqa: E402
from mpi.synth import generate  # noqa: E402
from tests.support.server import Served, clean_env, mpi_cmd, serve, ssl_context  # noqa: E402

AGENCY = "agency_a"
BULK_ROWS = 200


class Ledger:
    """What the server acknowledged: sid -> person key (single posts) or None (bulk rows)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.lock = threading.Lock()
        half = len(records) // 2  # half posted one at a time, half in bulk uploads
        self.pools = {1: list(records[:half]), BULK_ROWS: list(records[half:])}
        self.acked: dict[str, str | None] = {}

    @property
    def todo(self) -> list[dict[str, Any]]:
        return self.pools[1] + self.pools[BULK_ROWS]

    def take(self, n: int) -> list[dict[str, Any]]:
        with self.lock:
            pool = self.pools[n]
            batch, self.pools[n] = pool[:n], pool[n:]
            return batch

    def give_back(self, n: int, batch: list[dict[str, Any]]) -> None:
        """A refused request's records: offered again later."""
        with self.lock:
            self.pools[n].extend(batch)

    def ack(self, sid: str, key: str | None) -> None:
        with self.lock:
            self.acked[sid] = key


def tokens(n: int, seed: int) -> list[dict[str, Any]]:
    """At least ``n`` distinct token records of one agency (seeded)."""
    people = max(200, int(n * 0.9))
    while True:
        rows, _truth = generate(people=people, agencies=1, seed=seed)
        records, _rejected = tokenize_rows(rows[AGENCY], secret=demo_secret(1))
        if len(records) >= n:
            return records[:n]
        people = int(people * 1.3)


def agency_key(s: Served) -> str:
    with MpiClient(s.url, api_key=s.admin_key, ca_file=s.data_dir / "tls" / "ca.pem",
                   max_retries=0) as c:
        c.request("POST", "/v1/agencies", json={"agency": AGENCY})
        made = c.request("POST", "/v1/principals",
                         json={"name": "chaos", "role": "agency", "agency": AGENCY})
    return str(made["api_key"])


def _client(s: Served, key: str) -> httpx.Client:
    return httpx.Client(base_url=s.url, verify=ssl_context(s.data_dir / "tls" / "ca.pem"),
                        timeout=60, headers={"Authorization": f"Bearer {key}"})


def single_poster(s: Served, key: str, ledger: Ledger, stop: threading.Event,
                  stats: Counter[str]) -> None:
    """Post one record at a time until stopped, the records run out or the server dies."""
    with _client(s, key) as c:
        while not stop.is_set():
            batch = ledger.take(1)
            if not batch:
                return
            try:
                r = c.post("/v1/records", json={"records": batch})
            except httpx.TransportError:
                stats["single_in_flight_at_failure"] += 1
                return
            if r.status_code == 200:
                res = r.json()["results"][0]
                ledger.ack(res["source_record_id"], res["person_key"])
            else:
                stats[f"single_http_{r.status_code}"] += 1
                ledger.give_back(1, batch)
                time.sleep(0.2)


def bulk_poster(s: Served, key: str, ledger: Ledger, stop: threading.Event,
                stats: Counter[str]) -> None:
    """Upload BULK_ROWS-row JSONL files; rows count once their job reports ``completed``."""
    import json
    with _client(s, key) as c:
        while not stop.is_set():
            batch = ledger.take(BULK_ROWS)
            if not batch:
                return
            body = "".join(json.dumps(r) + "\n" for r in batch).encode()
            try:
                r = c.post("/v1/bulk", files={"file": ("chaos.jsonl", body)})
                if r.status_code != 202:
                    stats[f"bulk_http_{r.status_code}"] += 1
                    ledger.give_back(BULK_ROWS, batch)
                    time.sleep(0.2)
                    continue
                job = r.json()
                while job["state"] in ("queued", "running"):
                    time.sleep(0.05)
                    job = c.get(f"/v1/jobs/{job['job_id']}").json()
            except httpx.TransportError:
                stats["bulk_in_flight_at_failure"] += 1
                return
            if job["state"] == "completed":
                refused = {e.get("source_record_id") for e in job["errors"]}
                for rec in batch:
                    if rec["source_record_id"] not in refused:
                        ledger.ack(rec["source_record_id"], None)
            else:
                stats[f"bulk_job_{job['state']}"] += 1
            time.sleep(0.5)  # paced: the single posts should run throughout



def run_load(s: Served, key: str, ledger: Ledger, seconds: float,
             stats: Counter[str]) -> list[threading.Thread]:
    stop = threading.Event()
    workers = [threading.Thread(target=single_poster, args=(s, key, ledger, stop, stats),
                                daemon=True) for _ in range(3)]
    workers.append(threading.Thread(target=bulk_poster, args=(s, key, ledger, stop, stats),
                                    daemon=True))
    for w in workers:
        w.start()
    time.sleep(seconds)
    return workers


def flip_journal(data: Path, work: Path) -> dict[str, Any] | None:
    """Flip a byte in the first entry of a segment holding >= 2 entries; check start-up
    refuses and ``mpi journal recover --report`` names it; flip it back."""
    reports = [r for r in inspect_segments(data / "mpi.duckdb") if r.entries >= 2]
    if not reports:
        return None
    seg = reports[0].path
    raw = bytearray(seg.read_bytes())
    where = 20  # inside the first entry's JSON (the header is 16 bytes)
    raw[where] ^= 0x20
    seg.write_bytes(bytes(raw))
    refused = False
    try:
        with serve(data, log_dir=work / "flip-log"):
            pass
    except RuntimeError as exc:
        refused = "journal_corrupt" in "".join(str(exc).split()) or "journal" in str(exc)
    report = subprocess.run(mpi_cmd("journal", "recover", "--report", "--data-dir", data),
                            capture_output=True, text=True, timeout=120, env=clean_env())
    named = seg.name in report.stdout and "corrupt" in report.stdout
    raw[where] ^= 0x20
    seg.write_bytes(bytes(raw))
    return {"segment_entries": reports[0].entries, "start_up_refused": refused,
            "recover_report_names_segment": named}


def verify(data: Path, ledger: Ledger) -> dict[str, Any]:
    """Open the stopped registry; every acknowledged record present once with its key."""
    reg = Registry(Settings(data_dir=data))
    try:
        keys = reg.export_keys()
        audit_ok = reg.verify_audit().ok
    finally:
        reg.close()
    sids = keys.column("source_record_id").to_pylist()
    counts = Counter(sids)
    stored = dict(zip(sids, keys.column("person_key").to_pylist(), strict=True))
    lost = [sid for sid in ledger.acked if sid not in stored]
    changed = [sid for sid, k in ledger.acked.items() if k is not None and sid in stored
               and stored[sid] != k]
    return {"acknowledged": len(ledger.acked), "stored_active": len(stored), "lost": len(lost),
            "duplicated": sum(1 for n in counts.values() if n > 1),
            "key_changed": len(changed), "audit_chain_ok": audit_ok, "lost_examples": lost[:5]}


def sigkill_phase(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    data = work / "data"
    ledger = Ledger(tokens(args.records, args.seed))
    stats: Counter[str] = Counter()
    flip: dict[str, Any] | None = None
    key = ""
    kills = 0
    while kills < args.kills:
        with serve(data, log_dir=work / "log") as s:
            key = key or agency_key(s)
            delay = rng.uniform(0.5, args.max_run_s)
            workers = run_load(s, key, ledger, delay, stats)
            s.kill()
            kills += 1
            for w in workers:
                w.join(timeout=60)
        log(f"kill {kills}/{args.kills} after {delay:.1f}s: {len(ledger.acked)} acknowledged, "
            f"{len(ledger.todo)} left")
        if flip is None:
            flip = flip_journal(data, work)
            if flip is not None:
                log(f"journal byte flip: {flip}")
    with serve(data, log_dir=work / "log") as s:  # the rest, no kill, then a clean stop
        for w in run_load(s, key, ledger, 0.0, stats):
            w.join(timeout=600)
    result = verify(data, ledger)
    result.update({"kills": kills, "records_offered": args.records,
                   "not_acknowledged_at_kills": dict(stats),
                   "journal_flip": flip or "not exercised: no segment with two entries at a kill"})
    return result


# ---- SIGKILL during extract builds ---------------------------------------------------------

EXTRACT_ATTRS = ("race_ethnicity", "birth_year", "program", "enrolled_on")
_HUMANS = {"researcher": "researcher@chaos.example", "approver": "approver@chaos.example",
           "steward": "steward@chaos.example"}


def extract_tokens(n: int, seed: int) -> list[dict[str, Any]]:
    """At least ``n`` token records of one agency with the extract attributes (seeded)."""
    people = max(200, int(n * 0.9))
    while True:
        rows, _truth = generate(people=people, agencies=1, seed=seed)
        records, _rejected = tokenize_rows(rows[AGENCY], secret=demo_secret(1),
                                           attributes=EXTRACT_ATTRS)
        if len(records) >= n:
            return records[:n]
        people = int(people * 1.3)


def _ok(r: httpx.Response, *statuses: int) -> Any:
    if r.status_code not in (statuses or (200,)):
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}")
    return r.json()


def extract_setup(s: Served, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Agency, researcher, approver and steward; records and a dictionary; a request approved
    (which starts its first build). All through the HTTP API."""
    from tests.support.extracts import DICTIONARY
    keys: dict[str, str] = {}
    with _client(s, s.admin_key) as admin:
        _ok(admin.post("/v1/agencies", json={"agency": AGENCY}), 201)
        for name, role, agency in (("agency", "agency", AGENCY), ("researcher", "researcher", None),
                                   ("approver", "approver", AGENCY), ("steward", "steward", None)):
            body: dict[str, Any] = {"name": f"chaos-{name}", "role": role, "agency": agency}
            if name in _HUMANS:
                body["human_email"] = _HUMANS[name]
            keys[name] = _ok(admin.post("/v1/principals", json=body), 201)["api_key"]
    with _client(s, keys["agency"]) as c:
        for i in range(0, len(records), 1000):
            _ok(c.post("/v1/records", json={"records": records[i:i + 1000]}))
        _ok(c.put("/v1/datasets/enrolment", json={"description": "Program enrolment",
                                                  "attributes": DICTIONARY}))
    import datetime as dt
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).replace(tzinfo=None)
    with _client(s, keys["researcher"]) as c:
        xid = _ok(c.post("/v1/extracts", json={
            "title": "Chaos", "purpose": "Reliability test", "agreement_ref": "DUA-chaos",
            "attributes": [{"agency": AGENCY, "dataset": "enrolment", "name": "program"},
                           {"agency": AGENCY, "dataset": "enrolment", "name": "birth_year"}],
            "cohort": {"agency": AGENCY}, "k": 2, "download_limit": 50,
            "expires_at": expires.isoformat() + "Z"}), 201)["extract_id"]
    by = {f"agency:{AGENCY}": "approver", "steward": "steward"}
    with _client(s, keys["steward"]) as c:
        pending = _ok(c.get(f"/v1/extracts/{xid}"))["pending_approvals"]
    for capacity in pending:
        with _client(s, keys[by[capacity]]) as c:
            _ok(c.post(f"/v1/extracts/{xid}/approvals", json={"decision": "approve",
                                                                "reason": "chaos"}))
    return {"keys": keys, "extract_id": xid}


def wait_build(s: Served, key: str, xid: str, timeout: float = 600) -> dict[str, Any]:
    """Poll the extract until its build is neither queued nor running."""
    deadline = time.monotonic() + timeout
    with _client(s, key) as c:
        while True:
            out: dict[str, Any] = _ok(c.get(f"/v1/extracts/{xid}"))
            if out["build_state"] not in ("queued", "running") or time.monotonic() > deadline:
                return out
            time.sleep(0.05)


def download_check(s: Served, key: str, xid: str, work: Path) -> dict[str, Any]:
    """Download the extract: a package must verify; a refusal must serve nothing."""
    from mpi.extract.package import verify_package
    with _client(s, key) as c:
        pem = _ok(c.get("/v1/keys/signing"))["public_key_pem"]
        r = c.get(f"/v1/extracts/{xid}/download")
    if r.status_code != 200:
        return {"served": False, "status": r.status_code,
                "problem_json": r.headers.get("content-type", "").startswith("application/problem")}
    path = work / "downloaded.zip"
    path.write_bytes(r.content)
    check = verify_package(path, public_key_pem=pem)
    return {"served": True, "status": 200, "verifies": check.ok, "bytes": len(r.content)}


def package_files(data: Path) -> dict[str, list[str]]:
    """The packages directory: finished packages and leftover temporary files."""
    from mpi.extract.delivery import PACKAGES_DIR
    folder = data / PACKAGES_DIR
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return {"zips": [n for n in names if n.endswith(".zip") and not n.startswith(".")],
            "temporary": [n for n in names if n.startswith(".") or n.endswith(".tmp")]}


def extract_phase(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(args.seed + 2)
    data = work / "extract-data"
    records = extract_tokens(args.extract_records, args.seed + 2)
    with serve(data, log_dir=work / "extract-log") as s:
        setup = extract_setup(s, records)
        keys, xid = setup["keys"], setup["extract_id"]
        t0 = time.perf_counter()  # the approval started the first build
        first = wait_build(s, keys["researcher"], xid)
        if first["build_state"] != "built":
            raise RuntimeError(f"the first build did not finish: {first.get('build_error')}")
        t1 = time.perf_counter()
        with _client(s, keys["researcher"]) as c:  # time a rebuild: the kills aim inside one
            _ok(c.post(f"/v1/extracts/{xid}/build"), 202)
        _ok_state = wait_build(s, keys["researcher"], xid)["build_state"]
        build_s = time.perf_counter() - t1
        log(f"extract: {len(records)} records, first build {t1 - t0:.1f}s, rebuild "
            f"{build_s:.1f}s ({_ok_state})")
        baseline = download_check(s, keys["researcher"], xid, work)
    rounds = []
    for i in range(args.extract_kills):
        with serve(data, log_dir=work / "extract-log") as s:
            with _client(s, keys["researcher"]) as c:
                _ok(c.post(f"/v1/extracts/{xid}/build"), 202)
            delay = rng.uniform(0.02, build_s * 1.1)
            time.sleep(delay)
            with _client(s, keys["researcher"]) as c:  # where the build was when killed
                at_kill = _ok(c.get(f"/v1/extracts/{xid}"))["build_state"]
            s.kill()
        with serve(data, log_dir=work / "extract-log") as s:
            with _client(s, keys["researcher"]) as c:
                after = _ok(c.get(f"/v1/extracts/{xid}"))
            left = package_files(data)
            served = download_check(s, keys["researcher"], xid, work)
            with _client(s, keys["researcher"]) as c:
                rebuild_status = c.post(f"/v1/extracts/{xid}/build").status_code
            rebuilt = wait_build(s, keys["researcher"], xid)
            again = download_check(s, keys["researcher"], xid, work)
        rounds.append({"kill_after_s": round(delay, 2), "state_at_kill": at_kill,
                       "state_after_restart": after["build_state"],
                       "build_error": after.get("build_error"), "download_after_restart": served,
                       "packages_after_restart": left, "rebuild_http": rebuild_status,
                       "rebuild_state": rebuilt["build_state"], "download_after_rebuild": again})
        log(f"extract kill {i + 1}/{args.extract_kills} after {delay:.2f}s ({at_kill}): "
            f"{after['build_state']}, download {served['status']}, rebuild "
            f"{rebuilt['build_state']}, temporary files {left['temporary']}")
    final_files = package_files(data)
    reg = Registry(Settings(data_dir=data))
    try:
        from mpi.store import extracts as xstore
        stored = reg.export_keys().num_rows
        audit_ok = reg.verify_audit().ok
        latest = xstore.latest_build(reg.store.cursor(), xid)
    finally:
        reg.close()
    expected_zip = f"{xid}-b{latest['build_seq']}.zip" if latest else None
    bad_served = sum(1 for r in rounds for d in (r["download_after_restart"],
                                                r["download_after_rebuild"])
                     if d["served"] and not d["verifies"])
    return {"records_acknowledged": len(records), "records_stored_active": stored,
            "lost": max(0, len(records) - stored), "audit_chain_ok": audit_ok,
            "build_seconds": round(build_s, 2), "kills": len(rounds),
            "baseline_download": baseline,
            "states_at_kill": dict(Counter(r["state_at_kill"] for r in rounds)),
            "states_after_restart": dict(Counter(r["state_after_restart"] for r in rounds)),
            "downloads_served_after_kill": sum(r["download_after_restart"]["served"]
                                               for r in rounds),
            "downloads_that_did_not_verify": bad_served,
            "rebuilds_built": sum(r["rebuild_state"] == "built" for r in rounds),
            "temporary_package_files_left": final_files["temporary"],
            "package_files_at_end": final_files["zips"],
            "only_latest_build_package_at_end": final_files["zips"] == [expected_zip],
            "rounds": rounds}


@contextmanager
def small_fs(path: Path, size_mib: int) -> Iterator[bool]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    try:
        yield r.returncode == 0
    finally:
        if r.returncode == 0:
            subprocess.run(["umount", str(path)], capture_output=True)


def disk_full_phase(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    mnt = work / "small-fs"
    with small_fs(mnt, 32) as mounted:
        if not mounted:
            return {"skipped": "cannot mount a tmpfs here (not permitted)"}
        data = mnt / "data"
        ledger = Ledger(tokens(args.records, args.seed + 1))
        stats: Counter[str] = Counter()
        with serve(data, log_dir=work / "disk-log") as s:
            key = agency_key(s)
            free = shutil.disk_usage(mnt).free
            filler = mnt / "filler"
            with filler.open("wb") as fh:  # leave ~1 MiB
                fh.truncate(0)
                block = b"\0" * (1 << 20)
                for _ in range(max(0, free // (1 << 20) - 1)):
                    with suppress(OSError):
                        fh.write(block)
            workers = run_load(s, key, ledger, args.max_run_s, stats)
            full_errors = sum(v for k, v in stats.items() if "http_5" in k or "507" in k)
            filler.unlink()
            log(f"disk full: {dict(stats)}; space freed")
            for w in workers:
                w.join(timeout=600)
        result = verify(data, ledger)
        result["write_failures_while_full"] = full_errors
        result["responses"] = dict(stats)
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs (default 3)")
    p.add_argument("--records", type=int, default=2000, help="records offered (default 2000)")
    p.add_argument("--max-run-s", type=float, default=4.0,
                   help="longest run before a kill, seconds (default 4)")
    p.add_argument("--extract-kills", type=int, default=4,
                   help="SIGKILLs during extract builds (default 4)")
    p.add_argument("--extract-records", type=int, default=3000,
                   help="records with attributes behind the extract (default 3000)")
    p.add_argument("--phases", default="sigkill,extract,disk_full",
                   help="comma-separated phases to run (default all)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--skip-disk-full", action="store_true")
    p.add_argument("--work-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    args = p.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="mpi-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "chaos", "machine": machine_info(),
                              "command": " ".join(["python", "scripts/chaos.py", *sys.argv[1:]])}
    wanted = set(args.phases.split(","))
    result["sigkill"] = (sigkill_phase(args, work) if "sigkill" in wanted
                         else {"skipped": "--phases"})
    result["extract"] = (extract_phase(args, work) if "extract" in wanted
                         else {"skipped": "--phases"})
    result["disk_full"] = ({"skipped": "--skip-disk-full or --phases"}
                           if args.skip_disk_full or "disk_full" not in wanted
                           else disk_full_phase(args, work))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    phases = [result["sigkill"], result["disk_full"], result["extract"]]
    result["lost"] = sum(int(ph.get("lost", 0)) for ph in phases)
    result["duplicated"] = sum(int(ph.get("duplicated", 0)) for ph in phases)
    result["acknowledged"] = sum(int(ph.get("acknowledged", 0)) for ph in phases)
    emit_after_run(result, args.out)
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    ex = result["extract"]
    if result["lost"] or result["duplicated"] or ex.get("downloads_that_did_not_verify") or \
            ex.get("rebuilds_built", ex.get("kills", 0)) != ex.get("kills", 0) or \
            ex.get("temporary_package_files_left") or \
            ex.get("only_latest_build_package_at_end") is False:
        sys.exit(1)


if __name__ == "__main__":
    if os.environ.get("MPI_DATA_DIR"):
        del os.environ["MPI_DATA_DIR"]
    main()
