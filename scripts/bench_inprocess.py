"""Benchmark: the service's core without HTTP: concurrent match + audit and single-record enrols.

16 threads (as many as the HTTP benchmark's clients) call the registry directly in a closed
loop on a working copy of a prebuilt registry: ``match`` followed by the audit event the API
writes for it, then single-record ``enrol_records`` with its audit event (a new source id per
call). Compared with `bench_http.py`, it shows how much of the per-request cost is the HTTP,
TLS and framework layer. Baseline in the same run: one thread doing the same calls.

Usage: python scripts/bench_inprocess.py --data-dir /tmp/mpi-bench-1m [--threads 16] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402


def _run(reg: Any, holdout: list[dict[str, Any]], mode: str, threads: int,
         seconds: float) -> dict[str, Any]:
    from mpi.audit import AuditEntry
    lat: list[float] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(k: int) -> None:
        rnd = random.Random(k)
        mine: list[float] = []
        i = 0
        while not stop.is_set():
            h = rnd.choice(holdout)
            t = time.perf_counter()
            if mode == "match":
                reg.match(h["record"])
                reg.record_audit([AuditEntry("bench", "match", "agency:bench", "ok")])
            else:
                i += 1
                rec = dict(h["record"], source_record_id=f"inproc-{mode}-{k}-{i}")
                reg.enrol_records("bench_inprocess", [(1, rec)], audit=[
                    AuditEntry("bench", "records.create", "agency:bench_inprocess")])
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for th in pool:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - t0
    return {"threads": threads, "calls": len(lat), "calls_per_s": len(lat) / elapsed,
            "latency_ms": bc.percentiles_ms(lat)}


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, required=True, help="prebuilt registry (untouched)")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="mpi-bench-inproc-", dir="/tmp"))
    work = bc.working_copy(args.data_dir, parent=scratch)
    bc.log("open registry")
    reg = bc.open_registry(work)
    holdout = [json.loads(line) for line in (args.data_dir / "bench" / "holdout.jsonl").open()]
    res: dict[str, Any] = {"benchmark": "inprocess", "machine": bc.machine_info(),
                           "registry": str(args.data_dir)}
    try:
        for mode in ("match", "records"):
            bc.log(f"{mode}: 1 thread (baseline), then {args.threads} threads")
            res[f"{mode}_1_thread"] = _run(reg, holdout, mode, 1, args.seconds / 3)
            res[mode] = _run(reg, holdout, mode, args.threads, args.seconds)
            res[f"{mode}_ratio_vs_1_thread"] = (res[mode]["calls_per_s"]
                                                / res[f"{mode}_1_thread"]["calls_per_s"])
    finally:
        reg.close()
    bc.emit_after_run(res, args.json_out)


if __name__ == "__main__":
    main()
