"""Benchmark: what the app itself costs per request, in process (ASGI: middleware, auth, rate
limit, routing, the handler and its audit event; no TLS, no network, no HTTP parser).

Each measurement is a fresh child process on a fresh registry in a temporary directory: an
agency principal created through the admin API, ``--people`` synthetic people enrolled, then
``--requests`` sequential requests each of ``GET /healthz``, ``POST /v1/match`` and
single-record ``POST /v1/records`` (a new person under a new source id each time) through
``httpx.ASGITransport``. It reports the median and p90 wall time per request and the process
CPU time per request (CPU is the steadier figure on a shared machine: the wall time of the
writes includes the journal's fdatasync, which the disk decides).

``--compare DIR`` measures other checkouts of mpi the same way (a ``git worktree`` of an
earlier commit), alternating with this one over ``--rounds`` rounds, and reports the medians
per checkout and the ratios of this checkout to each of them.

Usage: python scripts/bench_asgi.py [--requests 800] [--rounds 4] [--compare /tmp/base ...]
       [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROUTES = ("healthz", "match", "records")
HERE = Path(__file__).resolve().parent


def _child(root: Path, requests: int, people: int) -> dict[str, Any]:
    """One measurement of the checkout at ``root`` (run in a process of its own)."""
    sys.path.insert(0, str(root))
    import asyncio
    import logging

    import httpx

    from api.main import create_app
    from mpi.config import Settings
    from mpi.identity.pipeline import demo_secret, tokenize_rows
    from mpi.identity.registry import Registry
    from mpi.synth import generate

    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="mpi-bench-asgi-"))
    reg = Registry(Settings(data_dir=tmp / "data"))
    app = create_app(reg.settings, registry=reg)
    admin = {"Authorization": "Bearer " + (tmp / "data" / "admin.key").read_text().strip()}
    rows, _ = generate(people=people, agencies=1, seed=4242)
    enrolled, _ = tokenize_rows(next(iter(rows.values())), secret=demo_secret(1))
    rows, _ = generate(people=requests + 100, agencies=1, seed=4343)
    fresh, _ = tokenize_rows(next(iter(rows.values())), secret=demo_secret(1))
    probes = [{k: v for k, v in r.items() if k != "source_record_id"} for r in enrolled[:500]]
    wall: dict[str, list[float]] = {r: [] for r in ROUTES}
    cpu: dict[str, float] = {}

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bench") as c:
            assert (await c.post("/v1/agencies", json={"agency": "bench"},
                                 headers=admin)).status_code == 201
            made = await c.post("/v1/principals", json={"name": "bench", "role": "agency",
                                                        "agency": "bench"}, headers=admin)
            key = {"Authorization": "Bearer " + made.json()["api_key"]}
            for i in range(0, len(enrolled), 200):
                r = await c.post("/v1/records", json={"records": enrolled[i:i + 200]}, headers=key)
                assert r.status_code == 200, r.text
            for i in range(50):  # warm-up
                await c.get("/healthz")
                await c.post("/v1/match", json=probes[i], headers=key)

            async def one(route: str, i: int) -> None:
                t = time.perf_counter()
                if route == "healthz":
                    r = await c.get("/healthz")
                elif route == "match":
                    r = await c.post("/v1/match", json=probes[i % len(probes)], headers=key)
                else:
                    rec = dict(fresh[i], source_record_id=f"asgi-{i}")
                    r = await c.post("/v1/records", json={"records": [rec]}, headers=key)
                wall[route].append(time.perf_counter() - t)
                assert r.status_code == 200, r.text

            for route in ROUTES:
                c0 = time.process_time()
                for i in range(requests):
                    await one(route, i)
                cpu[route] = (time.process_time() - c0) / requests

    try:
        asyncio.run(run())
    finally:
        reg.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {route: {"median_us": statistics.median(wall[route]) * 1e6,
                    "p90_us": sorted(wall[route])[int(0.9 * len(wall[route]))] * 1e6,
                    "cpu_us": cpu[route] * 1e6} for route in ROUTES}


def _measure(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one child measurement of ``root``; its JSON."""
    out = subprocess.run([sys.executable, str(HERE / "bench_asgi.py"), "--child", str(root),
                          "--requests", str(args.requests), "--people", str(args.people)],
                         cwd=root, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=800, help="requests per route and round")
    ap.add_argument("--people", type=int, default=1000, help="people enrolled before timing")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--compare", type=Path, nargs="*", default=[],
                    help="other checkouts (e.g. git worktrees) measured alternately")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    """Measure this checkout (and the ``--compare`` ones) and print a JSON summary."""
    args = _parse_args()
    if args.child is not None:
        print(json.dumps(_child(args.child, args.requests, args.people)))
        return
    sys.path.insert(0, str(HERE))
    import bench_common as bc

    roots = [HERE.parent, *[p.resolve() for p in args.compare]]
    runs: dict[str, list[dict[str, Any]]] = {str(r): [] for r in roots}
    for n in range(args.rounds):
        for root in roots:
            bc.log(f"round {n + 1}/{args.rounds}: {root}")
            runs[str(root)].append(_measure(root, args))
    medians = {root: {route: {k: round(statistics.median(o[route][k] for o in outs), 1)
                              for k in ("median_us", "p90_us", "cpu_us")} for route in ROUTES}
               for root, outs in runs.items()}
    here = medians[str(HERE.parent)]
    ratios = {root: {route: {k: round(here[route][k] / m[route][k], 3)
                             for k in ("median_us", "cpu_us")} for route in ROUTES}
              for root, m in medians.items() if root != str(HERE.parent)}
    bc.emit_after_run({"benchmark": "asgi", "machine": bc.machine_info(),
                       "requests": args.requests, "people": args.people, "rounds": args.rounds,
                       "medians": medians, "ratios_this_to": ratios, "runs": runs},
                      args.json_out)


if __name__ == "__main__":
    main()
