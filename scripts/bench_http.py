"""Load benchmark of the HTTPS service: POST /v1/records, POST /v1/match, and mpi submit.

Starts a real `mpi serve` (HTTPS, generated CA) on a working copy of a prebuilt registry, creates
an agency principal through the admin API, then drives it from `wrk` (a C load generator with
keep-alive; `apt-get install wrk`) at 16 connections:
  - single-record POST /v1/records (each request a new source_record_id: match-or-create,
    durable before the response),
  - POST /v1/match,
  - baseline: GET /healthz (the HTTP/TLS/framework floor measured in the same run),
then measures latency at the target rates with autocannon (`npm install -g autocannon`) holding
a fixed offered rate over 16 keep-alive clients (POST /v1/match at 600/s, POST /v1/records at
300/s), and times `MpiClient.submit_file` in 1,000-record batches. wrk's closed loop gives the
throughput (16 clients always waiting, so its latency is 16 / throughput by Little's law); the
fixed-rate run gives the p99 at the target rate.

Usage: python scripts/bench_http.py --data-dir /tmp/mpi-bench-1m [--duration 20] [--json-out F]
Targets (issue 3): records >= 300 req/s with p99 <= 30 ms; match >= 600 req/s with p99 <= 20 ms;
submit >= 5,000 records/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import emit, log, machine_info, working_copy  # noqa: E402

from mpi.client import MpiClient  # noqa: E402
from mpi.pipeline import demo_secret, tokenize_rows  # noqa: E402
from mpi.synth import generate  # noqa: E402

LUA = """
counter = 0
local template = [==[%s]==]
request = function()
  counter = counter + 1
  local sid = "bench-" .. tostring(math.random(1, 1000000000)) .. "-" .. counter
  local body = string.gsub(template, "SIDPLACEHOLDER", sid)
  return wrk.format("POST", "%s", {["Content-Type"]="application/json", ["Authorization"]="Bearer %s"}, body)
end
"""


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wrk(url: str, *, script: Path | None, duration: int, connections: int) -> dict[str, Any]:
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency",
           "--timeout", "10s"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat: dict[str, float] = {}
    for pct in ("50", "90", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out)
        if m:
            val, unit = float(m.group(1)), m.group(2)
            lat[f"p{pct}_ms"] = val / 1000 if unit == "us" else val * 1000 if unit == "s" else val
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"requests_per_s": rps, **lat, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else None}


def _rate_limited(base: str, path: str, *, body: str, rate: int, duration: int, clients: int,
                  ca: Path, key: str) -> dict[str, Any]:
    """Latency at a fixed offered rate: autocannon (npm) with ``clients`` keep-alive
    connections and ``-R rate``; ``[<id>]`` in the body becomes a unique id per request."""
    cmd = ["autocannon", "-c", str(clients), "-d", str(duration), "-R", str(rate), "-m", "POST",
           "-H", f"Authorization=Bearer {key}", "-H", "Content-Type=application/json",
           "-b", body, "--json"]
    if "[<id>]" in body:
        cmd.append("--idReplacement")
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(ca)}
    out = subprocess.run([*cmd, base + path], capture_output=True, text=True, check=True,
                         env=env).stdout
    r = json.loads(out)
    return {"offered_per_s": rate, "achieved_per_s": r["requests"]["average"],
            "p50_ms": r["latency"]["p50"], "p99_ms": r["latency"]["p99"],
            "max_ms": r["latency"]["max"], "non_2xx": r["non2xx"], "errors": r["errors"],
            "timeouts": r["timeouts"]}


def _start_py_spy(out_dir: Path | None, name: str, pid: int,
                  duration: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server for ``duration`` seconds (None when not asked for)."""
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(duration), "-r", "250",
                             "-f", "raw", "-o", str(out_dir / f"{name}.txt"), "--threads"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    """Run the load benchmark and print a JSON summary."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--submit-people", type=int, default=25000)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                    help="also sample the server with py-spy during the closed-loop runs "
                         "(collapsed stacks in DIR/<run>.txt; pip install py-spy)")
    args = ap.parse_args()
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
        startup_s = time.perf_counter() - t0
        admin_key = (data / "admin.key").read_text().strip()
        with MpiClient(base, api_key=admin_key, ca_file=ca) as admin:
            agencies = {a["agency"] for a in admin.request("GET", "/v1/agencies")["agencies"]}
            if "bench_http" not in agencies:
                admin.request("POST", "/v1/agencies", json={"agency": "bench_http"})
            made = admin.request("POST", "/v1/principals", json={
                "name": "bench", "role": "agency", "agency": "bench_http"})
        key = made["api_key"]
        by_agency, _ = generate(people=args.submit_people, agencies=1, seed=4242)
        records, _ = tokenize_rows(next(iter(by_agency.values())), secret=demo_secret(1))
        one = dict(records[0], source_record_id="SIDPLACEHOLDER")
        # wrk speaks TLS itself; it does not verify the certificate (loopback benchmark).
        rec_lua = work / "records.lua"
        rec_lua.write_text(LUA % (json.dumps({"records": [one]}), "/v1/records", key))
        match_body = dict(records[1])
        match_body.pop("source_record_id", None)
        match_body["source_record_id"] = "match-probe"
        match_lua = work / "match.lua"
        match_lua.write_text(LUA % (json.dumps(match_body), "/v1/match", key))
        health_lua = work / "health.lua"
        health_lua.write_text('request = function() return wrk.format("GET", "/healthz") end\n')
        res: dict[str, Any] = {"benchmark": "http", "machine": machine_info(),
                               "registry": str(args.data_dir), "server_startup_s": startup_s,
                               "connections": args.connections, "duration_s": args.duration}
        log("baseline GET /healthz")
        res["baseline_healthz"] = _wrk(base + "/healthz", script=health_lua,
                                       duration=max(5, args.duration // 2),
                                       connections=args.connections)
        for name, path, lua in (("match", "/v1/match", match_lua),
                                ("records", "/v1/records", rec_lua)):
            log(f"POST {path} (closed loop)")
            spy = _start_py_spy(args.py_spy, name, server.pid, args.duration)
            res[name] = _wrk(base + path, script=lua, duration=args.duration,
                             connections=args.connections)
            if spy is not None:
                spy.wait(timeout=60)
        if shutil.which("autocannon") is None:
            sys.exit("autocannon is required for the fixed-rate runs: npm install -g autocannon")
        log("fixed rate: POST /v1/match at 600/s and POST /v1/records at 300/s, 16 clients")
        res["match_at_600"] = _rate_limited(base, "/v1/match", body=json.dumps(match_body),
                                            rate=600, duration=args.duration,
                                            clients=args.connections, ca=ca, key=key)
        res["records_at_300"] = _rate_limited(
            base, "/v1/records", body=json.dumps({"records": [dict(one, source_record_id="ac-[<id>]")]}),
            rate=300, duration=args.duration, clients=args.connections, ca=ca, key=key)
        tokens = work / "submit.jsonl"
        tokens.write_text("".join(json.dumps(dict(r, source_record_id="sub-" + r["source_record_id"]))
                                  + "\n" for r in records))
        log(f"mpi submit of {len(records)} records in 1,000-record batches")
        with MpiClient(base, api_key=key, ca_file=ca) as c:
            t = time.perf_counter()
            summary = c.submit_file(tokens, batch_size=1000, state_file=work / "state.json")
            s = time.perf_counter() - t
        res["submit"] = {"records": summary.records, "s": s, "records_per_s": summary.records / s,
                         "outcomes": summary.outcomes}
        base_rps = res["baseline_healthz"]["requests_per_s"]
        res["ratios_vs_healthz_rps"] = {k: res[k]["requests_per_s"] / base_rps
                                        for k in ("match", "records")}
        res["targets"] = {"records_rps": 300, "records_p99_ms": 30, "match_rps": 600,
                          "match_p99_ms": 20, "submit_records_per_s": 5000}
        res["target_met"] = {
            "records": res["records"]["requests_per_s"] >= 300
            and res["records_at_300"]["p99_ms"] <= 30,
            "match": res["match"]["requests_per_s"] >= 600 and res["match_at_600"]["p99_ms"] <= 20,
            "submit": res["submit"]["records_per_s"] >= 5000}
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
