"""Benchmark: training a candidate on a 1M-record registry as a background job with progress.

Copies a registry built by bench_build_registry.py (or opens it in place with --in-place,
only when it may be migrated), starts the same ``model_train`` job that
``POST /v1/models/train`` starts, polls the job row for progress like a client would, and
reports the wall time from submission to completion, each progress step's time, and the
peak RSS. Target: under 180 s on 2 cores.

    python scripts/bench_train.py --data-dir /tmp/mpi-bench-1m
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TARGET_S = 180.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/mpi-bench-1m"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sample", type=float, default=1.0)
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between job polls")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    from mpi.jobs import JobRunner
    from mpi.principals import Principal
    from mpi.steward.modeljobs import trainer_for

    work = bc.working_copy(args.data_dir, parent=Path("/tmp"))
    out: dict[str, Any] = {"benchmark": "train", "machine": bc.machine_info(),
                           "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        bc.log("opening the registry copy (migrates it)")
        open_s, reg = bc.timed(lambda: bc.open_registry(work))
        out["open_s"] = open_s
        open_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["records"] = reg.model_table().num_rows
        reader = JobRunner(reg, uploads_dir=work / "uploads", chunk=1000)
        steward = Principal("p_bench", "steward", None)
        t0 = time.perf_counter()
        job_id = trainer_for(reg).submit("p_bench", seed=args.seed, sample=args.sample)
        steps: list[dict[str, Any]] = []
        last = None
        while True:
            job = reader.get_job(steward, job_id)
            seen = (job["done"], job["message"])
            if seen != last:
                last = seen
                steps.append({"t_s": round(time.perf_counter() - t0, 2), "done": job["done"],
                              "total": job["total"], "message": job["message"]})
                bc.log(f"{job['done']}/{job['total']} {job['message']}")
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(args.poll)
        wall = time.perf_counter() - t0
        trainer_for(reg).wait(60)
        out.update({"job_state": job["state"], "job_errors": job["errors"],
                    "version": (job["result"] or {}).get("version"), "train_wall_s": wall,
                    "progress": steps, "rss_mb": bc.rss_mb(),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "open_peak_rss_mb": open_peak,
                    "target_s": TARGET_S, "met": job["state"] == "completed" and wall < TARGET_S,
                    "ratio_to_target": wall / TARGET_S})
        reg.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bc.emit_after_run(out, args.json_out)


if __name__ == "__main__":
    main()
