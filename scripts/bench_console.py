"""Latency of the web console's pages (issue 17: a console page in <= 300 ms at p95).

  python scripts/bench_console.py [--people 20000] [--requests 200] [--data-dir DIR]
      [--json-out F]

Builds a registry in a temporary directory (or opens ``--data-dir``, a working copy of a
prebuilt registry such as scripts/bench_build_registry.py makes, so the original is never
changed): ``--people`` synthetic people at two agencies posted through ``POST /v1/records``.
Signs a steward in to the console through the real app in process (``TestClient`` over
https://testserver: routing, session, CSRF, templates and the domain calls, no TLS or socket),
then times ``--requests`` sequential GETs of each page: the review queue (25 and 100 items,
and 25 filtered by agency ``agency_b``), the keys export page,
one review item, its person's page (with the lineage drawing), and, for comparison, the JSON
``GET /v1/review`` of the same 25 items.
Prints p50/p95/p99 in ms with the registry's size (records, persons, open review items), and
the console queue page's p50 over the JSON route's in the same run.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import emit, log, machine_info, percentiles_ms, working_copy  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from api.main import create_app  # noqa: E402
from mpi.config import Settings  # noqa: E402
from mpi.identity.pipeline import demo_secret, tokenize_rows  # noqa: E402
from mpi.identity.registry import Registry  # noqa: E402
from mpi.synth import generate  # noqa: E402

AGENCIES = ("agency_a", "agency_b")


def _fill(client: TestClient, admin: str, people: int) -> dict[str, str]:
    h = {"Authorization": f"Bearer {admin}"}
    run = secrets.token_hex(3)  # principals named per run: --no-copy reopens the same registry
    keys = {}
    for agency in AGENCIES:
        client.post("/v1/agencies", json={"agency": agency}, headers=h)
        r = client.post("/v1/principals", json={"name": f"{agency}-{run}", "role": "agency",
                                                "agency": agency}, headers=h)
        keys[agency] = r.json()["api_key"]
    r = client.post("/v1/principals", json={"name": f"steward-{run}", "role": "steward",
                                            "human_email": f"steward-{run}@example.org"}, headers=h)
    r.raise_for_status()
    keys["steward"] = r.json()["api_key"]
    if people:
        rows, _truth = generate(people=people, agencies=2, seed=7)
        for agency, raw in zip(AGENCIES, rows.values(), strict=True):
            records = tokenize_rows(raw, secret=demo_secret(1))[0]
            for i in range(0, len(records), 5000):
                r = client.post("/v1/records", json={"records": records[i:i + 5000]},
                                headers={"Authorization": f"Bearer {keys[agency]}"})
                r.raise_for_status()
            log(f"{agency}: {len(records)} records posted")
    return keys


def _time(client: TestClient, url: str, n: int, **kw: Any) -> dict[str, float]:
    client.get(url, **kw).raise_for_status()  # warm
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url, **kw)
        out.append(time.perf_counter() - t)
        r.raise_for_status()
    return percentiles_ms(out)


def main() -> None:
    """Build or open the registry, sign in, time the pages, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--no-copy", action="store_true",
                    help="open --data-dir itself (it must be your own disposable copy, e.g. "
                    "cp -r /tmp/mpi-bench-1m /tmp/console-1m): no second copy per run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir and args.no_copy:
            data = args.data_dir
        elif args.data_dir:
            data = working_copy(args.data_dir, parent=Path(tmp))
        else:
            data = Path(tmp) / "d"
        reg = Registry(Settings(data_dir=data))
        try:
            client = TestClient(create_app(reg.settings, registry=reg),
                                base_url="https://testserver")
            admin = (data / "admin.key").read_text().strip()
            keys = _fill(client, admin, 0 if args.data_dir else args.people)
            form = client.get("/console/login").text
            token = re.search(r'name="login_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
            client.post("/console/login", data={"login_token": token, "api_key": keys["steward"]})
            stats = reg.stats()
            queue = client.get("/v1/review?limit=1", headers={
                "Authorization": f"Bearer {keys['steward']}"}).json()["items"]
            item = queue[0]["item_id"] if queue else None
            result: dict[str, Any] = {
                "benchmark": "console_pages", "machine": machine_info(), "registry": stats,
                "requests_per_page": args.requests,
                "console_review_25_ms": _time(client, "/console/review?limit=25", args.requests),
                "console_review_100_ms": _time(client, "/console/review?limit=100", args.requests),
                "console_review_agency_25_ms": _time(
                    client, "/console/review?limit=25&agency=agency_b", args.requests),
                "console_keys_ms": _time(client, "/console/keys", args.requests),
                "json_review_25_ms": _time(client, "/v1/review?limit=25", args.requests, headers={
                    "Authorization": f"Bearer {keys['steward']}"}),
            }
            if item is not None:
                result["console_item_ms"] = _time(client, f"/console/review/{item}", args.requests)
                person = quote(queue[0]["person_key"], safe="")
                result["console_person_ms"] = _time(client, f"/console/persons/{person}",
                                                    args.requests)
            result["ratio_console_to_json_review_25_p50"] = round(
                result["console_review_25_ms"]["p50"] / result["json_review_25_ms"]["p50"], 3)
            emit(result, args.json_out)
        finally:
            reg.background.drain(timeout=60)
            reg.close()


if __name__ == "__main__":
    main()
