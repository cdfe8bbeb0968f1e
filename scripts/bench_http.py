"""Load benchmark of the HTTPS service: POST /v1/records, POST /v1/match, and mpi submit.

Starts a real `mpi serve` (HTTPS, generated CA) on a working copy of a prebuilt registry, creates
an agency principal through the admin API, then drives it from `wrk` (a C load generator with
keep-alive; `apt-get install wrk`) at 16 connections:
  - single-record POST /v1/records (each request a new source_record_id: match-or-create,
    durable before the response),
  - POST /v1/match,
  (both post, in turn, the records of a pool of --pool-people synthetic people: mostly new
  people, some second records of one; see LUA)
  - baseline: GET /healthz (the HTTP/TLS/framework floor measured in the same run),
then measures latency at the target rates with wrk holding a fixed offered rate over 16
keep-alive clients (POST /v1/match at 600/s, POST /v1/records at 300/s; each wrk thread sends
on a fixed schedule, see ``PACED``), and times `MpiClient.submit_file` in 1,000-record batches.
wrk's closed loop gives the throughput (16 clients always waiting, so its latency is
16 / throughput by Little's law); the fixed-rate run gives the p99 at the target rate.

Usage: python scripts/bench_http.py --data-dir /tmp/mpi-bench-1m [--duration 20] [--json-out F]
       [--runs healthz,match,records,match_at_600,records_at_300,submit]
Targets (issue 3): records >= 300 req/s with p99 <= 30 ms; match >= 600 req/s with p99 <= 20 ms;
submit >= 5,000 records/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import emit, log, machine_info, working_copy  # noqa: E402

from mpi.agency.client import MpiClient  # noqa: E402
from mpi.identity.pipeline import demo_secret, tokenize_rows  # noqa: E402
from mpi.synth import generate  # noqa: E402

LUA = """
-- Each request posts the next record of a pool of distinct synthetic people (one JSON body per
-- line of the pool file, each wrk thread starting at its own offset) under a fresh source
-- record id. Posting one record over and over would make every enrol block with all the
-- earlier copies of it: a workload no agency sends, and one that grows slower with each run.
-- Ids are unique per run (clock seconds; runs are seconds apart), thread and request: every
-- request creates a record, none replaces one (math.random is unseeded, so both threads and
-- every repeat would draw the same "random" ids).
counter = 0
run = os.time()
local pool = {}
local pos = 0
threads_seen = 0
function setup(thread)
  threads_seen = threads_seen + 1
  thread:set("tid", threads_seen)
  if on_setup then on_setup(thread) end
end
function init(args)
  for line in io.lines([==[%s]==]) do pool[#pool + 1] = line end
  pos = math.floor(((tid or 1) - 1) * #pool / %d)
end
request = function()
  counter = counter + 1
  pos = pos + 1
  local sid = "bench-" .. run .. "-" .. (tid or 1) .. "-" .. counter
  local body = string.gsub(pool[(pos %% #pool) + 1], "SIDPLACEHOLDER", sid)
  return wrk.format("POST", "%s", {["Content-Type"]="application/json", ["Authorization"]="Bearer %s"}, body)
end
"""


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_WRK_THREADS = 2


def _ms(m: re.Match[str]) -> float:
    """A wrk duration (value, unit) in milliseconds."""
    val, unit = float(m.group(1)), m.group(2)
    return val / 1000 if unit == "us" else val * 1000 if unit == "s" else val


def _wrk(url: str, *, script: Path | None, duration: int, connections: int) -> dict[str, Any]:
    cmd = ["wrk", "-t", str(_WRK_THREADS), "-c", str(connections), "-d", f"{duration}s", "--latency",
           "--timeout", "10s"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat: dict[str, float] = {}
    for pct in ("50", "90", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out)
        if m:
            lat[f"p{pct}_ms"] = _ms(m)
    m = re.search(r"Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", out)
    if m:
        lat["max_ms"] = _ms(m)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    res = {"requests_per_s": rps, **lat, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
           "socket_errors": errors.group(0) if errors else None}
    pacing = re.search(r"PACING late=(\d+) worst_ms=([\d.]+)", out)
    if pacing:
        res["late_sends"], res["worst_lateness_ms"] = int(pacing.group(1)), float(pacing.group(2))
    return res


PACED = """
-- Open-loop pacing: each wrk thread sends on a fixed schedule (rate / threads per second,
-- spread over its connections); delay() returns the wait until this request's slot. A slot
-- that has already passed (every connection of the thread busy) is sent at once and counted
-- as late, with how late it was, so the run shows when the server could not keep the pace.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } mpi_timespec;
int clock_gettime(int clk_id, mpi_timespec *tp);
]]
local ts = ffi.new("mpi_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = %f
local slot = nil
late, worst = 0, 0
function delay()
  local t = now_ms()
  if slot == nil then slot = t + math.random() * interval end
  slot = slot + interval
  local d = slot - t
  if d < 0 then
    late = late + 1
    if -d > worst then worst = -d end
    return 0
  end
  return d
end
local all = {}
function on_setup(thread) table.insert(all, thread) end
function done(summary, latency, requests)
  local n, w = 0, 0
  for _, t in ipairs(all) do
    n = n + t:get("late")
    w = math.max(w, t:get("worst"))
  end
  io.write(string.format("PACING late=%%d worst_ms=%%.1f\\n", n, w))
end
"""


def _rate_limited(url: str, *, script: Path, rate: int, duration: int,
                  connections: int) -> dict[str, Any]:
    """Latency at a fixed offered rate: wrk over ``connections`` keep-alive connections, each
    of its 2 threads sending on a fixed schedule (``PACED``) instead of as fast as it can."""
    paced = script.with_name(f"{script.stem}-at-{rate}.lua")
    paced.write_text(script.read_text() + PACED % (1000.0 * _WRK_THREADS / rate))
    res = _wrk(url, script=paced, duration=duration, connections=connections)
    return {"offered_per_s": rate, "achieved_per_s": res["requests_per_s"],
            **{k: v for k, v in res.items() if k != "requests_per_s"}}


def _start_py_spy(out_dir: Path | None, name: str, pid: int,
                  duration: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server for ``duration`` seconds (None when not asked for)."""
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(duration), "-r", "250",
                             "-f", "raw", "-o", str(out_dir / f"{name}.txt"), "--threads"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _repeated(n: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``n`` times: the median of every number, and each run under ``repeats``."""
    outs = [run() for _ in range(n)]
    if n == 1:
        return outs[0]
    med: dict[str, Any] = {k: statistics.median(o[k] for o in outs) for k, v in outs[0].items()
                           if isinstance(v, int | float) and all(k in o for o in outs)}
    return {**med, "repeats": outs}


def _server_buckets(base: str, ca: Path, method: str, route: str) -> dict[float, float]:
    """Cumulative counts of the server's own latency histogram for one route (all statuses)."""
    text = httpx.get(base + "/metrics", verify=str(ca)).text
    out: dict[float, float] = {}
    pat = re.compile(r'mpi_http_request_duration_seconds_bucket\{(.*?)\} ([\d.e+]+)')
    for labels, value in pat.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("method") == method and fields.get("route") == route:
            le = float("inf") if fields["le"] == "+Inf" else float(fields["le"])
            out[le] = out.get(le, 0.0) + float(value)
    return out


def _server_share(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Share of the run's requests the server itself finished within each bucket bound."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = delta.get(float("inf"), 0.0)
    return {f"le_{le * 1000:g}ms": round(n / total, 4) for le, n in sorted(delta.items())
            if total and le != float("inf") and 0.001 <= le <= 0.25}


RUNS = ("healthz", "match", "records", "match_at_600", "records_at_300", "submit")


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--submit-people", type=int, default=25000)
    ap.add_argument("--pool-people", type=int, default=40000,
                    help="synthetic people whose records the wrk runs post, in turn")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                    help="also sample the server with py-spy during the wrk runs "
                         "(collapsed stacks in DIR/<run>.txt; pip install py-spy)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="repeat each wrk run this many times; the medians are reported, "
                         "with every repeat under 'repeats' (the VM's speed drifts)")
    ap.add_argument("--runs", default=",".join(RUNS),
                    help="comma-separated subset of: " + ", ".join(RUNS))
    return ap.parse_args()


def _wait_for_server(server: subprocess.Popen[str], base: str, ca: Path) -> float:
    """Poll /healthz until the server answers; the seconds it took to start."""
    t0 = time.perf_counter()
    while True:
        try:
            if ca.exists() and httpx.get(f"{base}/healthz", verify=str(ca)).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.perf_counter() - t0 > 300:
            raise SystemExit(f"server did not start: {server.stdout.read() if server.stdout else ''}")
        time.sleep(0.5)
    return time.perf_counter() - t0


def _bench_api_key(base: str, data: Path, ca: Path) -> str:
    """Create the bench_http agency (if needed) and an agency principal; its API key."""
    admin_key = (data / "admin.key").read_text().strip()
    with MpiClient(base, api_key=admin_key, ca_file=ca) as admin:
        agencies = {a["agency"] for a in admin.request("GET", "/v1/agencies")["agencies"]}
        if "bench_http" not in agencies:
            admin.request("POST", "/v1/agencies", json={"agency": "bench_http"})
        made = admin.request("POST", "/v1/principals", json={
            "name": "bench", "role": "agency", "agency": "bench_http"})
    return str(made["api_key"])


def _write_wrk_scripts(work: Path, pool: list[dict[str, Any]], key: str) -> tuple[Path, Path, Path]:
    """The pool files and the wrk scripts: (records, match, healthz)."""
    rec_pool, match_pool = work / "records-pool.jsonl", work / "match-pool.jsonl"
    rec_pool.write_text("".join(
        json.dumps({"records": [dict(r, source_record_id="SIDPLACEHOLDER")]}) + "\n"
        for r in pool))
    match_pool.write_text("".join(
        json.dumps(dict(r, source_record_id="match-probe")) + "\n" for r in pool))
    # wrk speaks TLS itself; it does not verify the certificate (loopback benchmark).
    rec_lua = work / "records.lua"
    rec_lua.write_text(LUA % (rec_pool, _WRK_THREADS, "/v1/records", key))
    match_lua = work / "match.lua"
    match_lua.write_text(LUA % (match_pool, _WRK_THREADS, "/v1/match", key))
    health_lua = work / "health.lua"
    health_lua.write_text('request = function() return wrk.format("GET", "/healthz") end\n')
    return rec_lua, match_lua, health_lua


def _closed_loop_runs(res: dict[str, Any], runs: set[str], args: argparse.Namespace, base: str,
                      server_pid: int, match_lua: Path, rec_lua: Path) -> None:
    """wrk as fast as it can (closed loop) on POST /v1/match and POST /v1/records."""
    for name, path, lua in (("match", "/v1/match", match_lua),
                            ("records", "/v1/records", rec_lua)):
        if name not in runs:
            continue
        log(f"POST {path} (closed loop)")
        spy = _start_py_spy(args.py_spy, name, server_pid, args.duration * args.repeat)

        def closed(p: str = path, s: Path = lua) -> dict[str, Any]:
            return _wrk(base + p, script=s, duration=args.duration,
                        connections=args.connections)

        res[name] = _repeated(args.repeat, closed)
        if spy is not None:
            spy.wait(timeout=60)


def _fixed_rate_runs(res: dict[str, Any], runs: set[str], args: argparse.Namespace, base: str,
                     ca: Path, server_pid: int, match_lua: Path, rec_lua: Path) -> None:
    """wrk at a fixed offered rate: POST /v1/match at 600/s and POST /v1/records at 300/s."""
    for name, path, lua, rate in (("match_at_600", "/v1/match", match_lua, 600),
                                  ("records_at_300", "/v1/records", rec_lua, 300)):
        if name in runs:
            log(f"fixed rate: POST {path} at {rate}/s, {args.connections} clients")

            def paced(p: str = path, s: Path = lua, r: int = rate) -> dict[str, Any]:
                before = _server_buckets(base, ca, "POST", p)
                out = _rate_limited(base + p, script=s, rate=r, duration=args.duration,
                                    connections=args.connections)
                # The server's own view (from the request in its middleware to the
                # response): the rest of wrk's latency is TLS, the event loop's queue
                # and the client.
                out["server_share_within"] = _server_share(
                    before, _server_buckets(base, ca, "POST", p))
                return out

            spy = _start_py_spy(args.py_spy, name, server_pid, args.duration * args.repeat)
            res[name] = _repeated(args.repeat, paced)
            if spy is not None:
                spy.wait(timeout=60)


def _submit_run(work: Path, records: list[dict[str, Any]], base: str, key: str,
                ca: Path) -> dict[str, Any]:
    """Time `MpiClient.submit_file` over the records in 1,000-record batches."""
    tokens = work / "submit.jsonl"
    tokens.write_text("".join(json.dumps(dict(r, source_record_id="sub-" + r["source_record_id"]))
                              + "\n" for r in records))
    log(f"mpi submit of {len(records)} records in 1,000-record batches")
    with MpiClient(base, api_key=key, ca_file=ca) as c:
        t = time.perf_counter()
        summary = c.submit_file(tokens, batch_size=1000, state_file=work / "state.json")
        s = time.perf_counter() - t
    return {"records": summary.records, "s": s,
            "records_per_s": summary.records / s, "outcomes": summary.outcomes}


def _add_verdicts(res: dict[str, Any], runs: set[str]) -> None:
    """The targets, and (when every run ran) the ratios to /healthz and which targets were met."""
    res["targets"] = {"records_rps": 300, "records_p99_ms": 30, "match_rps": 600,
                      "match_p99_ms": 20, "submit_records_per_s": 5000}
    if runs == set(RUNS):
        base_rps = res["baseline_healthz"]["requests_per_s"]
        res["ratios_vs_healthz_rps"] = {k: res[k]["requests_per_s"] / base_rps
                                        for k in ("match", "records")}
        res["target_met"] = {
            "records": res["records"]["requests_per_s"] >= 300
            and res["records_at_300"]["achieved_per_s"] >= 0.98 * 300
            and res["records_at_300"]["p99_ms"] <= 30,
            "match": res["match"]["requests_per_s"] >= 600
            and res["match_at_600"]["achieved_per_s"] >= 0.98 * 600
            and res["match_at_600"]["p99_ms"] <= 20,
            "submit": res["submit"]["records_per_s"] >= 5000}


def main() -> None:
    """Run the load benchmark and print a JSON summary."""
    args = _parse_args()
    runs = set(args.runs.split(","))
    if runs - set(RUNS):
        sys.exit(f"unknown runs: {sorted(runs - set(RUNS))}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="mpi-bench-http-"))
    data = working_copy(args.data_dir, parent=work)
    port = _free_port()
    base = f"https://127.0.0.1:{port}"
    log(f"starting mpi serve on {data}")
    server = subprocess.Popen([sys.executable, "-c", "from api.cli import main; main()", "serve",
                               "--port", str(port), "--data-dir", str(data)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ca = data / "tls" / "ca.pem"
        startup_s = _wait_for_server(server, base, ca)
        key = _bench_api_key(base, data, ca)
        by_agency, _ = generate(people=args.submit_people, agencies=1, seed=4242)
        records, _ = tokenize_rows(next(iter(by_agency.values())), secret=demo_secret(1))
        # The wrk runs post records of other people (another seed) than `mpi submit` does.
        pool_by_agency, _ = generate(people=args.pool_people, agencies=1, seed=4343)
        pool, _ = tokenize_rows(next(iter(pool_by_agency.values())), secret=demo_secret(1))
        rec_lua, match_lua, health_lua = _write_wrk_scripts(work, pool, key)
        res: dict[str, Any] = {"benchmark": "http", "machine": machine_info(),
                               "registry": str(args.data_dir), "server_startup_s": startup_s,
                               "connections": args.connections, "duration_s": args.duration}
        if "healthz" in runs:
            log("baseline GET /healthz")
            res["baseline_healthz"] = _wrk(base + "/healthz", script=health_lua,
                                           duration=max(5, args.duration // 2),
                                           connections=args.connections)
        _closed_loop_runs(res, runs, args, base, server.pid, match_lua, rec_lua)
        _fixed_rate_runs(res, runs, args, base, ca, server.pid, match_lua, rec_lua)
        if "submit" in runs:
            res["submit"] = _submit_run(work, records, base, key, ca)
        _add_verdicts(res, runs)
        emit(res, args.json_out)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)
        os.environ.pop("MPI_DATA_DIR", None)


if __name__ == "__main__":
    main()
