"""How long a re-link holds the registry's write lock, and what online enrols see meanwhile
(Decision 84): a live re-link (``POST /v1/link``) against one computed under the lock (``mpi
link`` on a stopped registry, the fallback).

    python scripts/bench_live_relink.py --people 10000

Prints, per mode: the re-link's seconds, the seconds it held the write lock, and the latency
(median, p95, max) of single-record enrols sent one after another from another thread while it
ran.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from mpi.config import Settings
from mpi.identity import relink
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.synth import generate


def _run(reg: Registry, extra: list[dict[str, object]], *, live: bool) -> dict[str, float]:
    stop = threading.Event()
    latencies: list[float] = []
    lock_at: list[float] = []

    def writer() -> None:
        for i, rec in enumerate(extra):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            reg.enrol_records("late", [(1, rec | {"source_record_id": f"late-{live}-{i}"})])
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.01)

    def progress(msg: str) -> None:
        if msg.startswith(relink.COMMIT_MESSAGE) and not lock_at:
            lock_at.append(time.perf_counter())

    t = threading.Thread(target=writer)
    t0 = time.perf_counter()
    t.start()
    if live:
        relink.link_registry(reg, live=True, progress=progress)
    else:
        relink.link_registry(reg, progress=progress)
    end = time.perf_counter()
    stop.set()
    t.join()
    lat = sorted(latencies) or [0.0]
    return {"seconds": end - t0, "lock_seconds": end - (lock_at[0] if lock_at else t0),
            "enrols": len(latencies), "p50_ms": 1000 * statistics.median(lat),
            "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))], "max_ms": 1000 * lat[-1]}


def main() -> None:
    """Build a synthetic registry and time both modes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Settings(data_dir=Path(tmp) / "data"))
        try:
            rows = generate(people=args.people, agencies=2, seed=3)[0]
            for agency, plain in rows.items():
                recs, _ = tokenize_rows(plain, secret=demo_secret(1))
                for i in range(0, len(recs), 5000):
                    reg.enrol_records(agency, list(enumerate(recs[i:i + 5000], start=1)))
            late_rows = next(iter(generate(people=2000, agencies=1, seed=9)[0].values()))
            extra = tokenize_rows(late_rows, secret=demo_secret(1))[0]
            print(f"records: {reg.stats()['records']}")
            for live in (False, True):
                r = _run(reg, extra, live=live)
                print(f"{'live' if live else 'locked'}: re-link {r['seconds']:.2f}s, write lock "
                      f"{r['lock_seconds']:.2f}s; {r['enrols']:.0f} enrols meanwhile: p50 "
                      f"{r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, max {r['max_ms']:.1f} ms")
        finally:
            reg.close()


if __name__ == "__main__":
    main()
