"""Benchmark: single-core agency-side tokenizer throughput (records/s) of tokenize_file.

Baseline (same run, same rows): plain csv.DictReader read + json.dumps JSONL write without
tokenizing. ratio = tokenize time / baseline time. Target: >= 20,000 records/s.

    python scripts/bench_tokenize.py --records 100000 [--repeat 3] [--workdir /tmp/...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TARGET_RPS = 20_000


def make_csv(records: int, seed: int, workdir: Path) -> Path:
    """One agency CSV with about ``records`` rows."""
    from mpi.synth import synthesize
    s = synthesize(people=records, agencies=1, seed=seed, out_dir=workdir / "synth")
    return s.files[0]


def plain_copy(src: Path, out: Path) -> int:
    """Baseline: read the CSV with csv.DictReader and write each row as one JSON line."""
    n = 0
    with src.open(newline="", encoding="utf-8-sig") as fh, out.open("w", encoding="utf-8") as wf:
        for row in csv.DictReader(fh):
            wf.write(json.dumps(row, separators=(",", ":")) + "\n")
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--profile", action="store_true", help="cProfile one extra tokenize run")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # single core
    from mpi.agency.tokenizer import tokenize_file
    from mpi.identity.pipeline import demo_secret

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mpi-bench-tok-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    src = make_csv(args.records, args.seed, workdir)
    secret = demo_secret(1)
    out = workdir / "out.tokens.jsonl"
    base_out = workdir / "out.plain.jsonl"

    # warm-up (imports, caches, page cache)
    tokenize_file(src, secret=secret, out=out)
    plain_copy(src, base_out)

    tok_t, base_t = [], []
    written = rows = 0
    for _ in range(args.repeat):
        t = time.perf_counter()
        s = tokenize_file(src, secret=secret, out=out)
        tok_t.append(time.perf_counter() - t)
        written, rows = s.written, s.rows
        t = time.perf_counter()
        plain_copy(src, base_out)
        base_t.append(time.perf_counter() - t)

    profile = None
    if args.profile:
        import cProfile
        import io
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        tokenize_file(src, secret=secret, out=out)
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(15)
        profile = buf.getvalue()

    tok = bc.summary(tok_t)
    base = bc.summary(base_t)
    rps = rows / tok["median"]
    result = {
        "benchmark": "tokenize",
        "machine": bc.machine_info(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "records": rows, "written": written, "rejected": rows - written,
        "tokenize_s": tok, "baseline_csv_json_s": base,
        "tokenize_records_per_s": rps,
        "baseline_records_per_s": rows / base["median"],
        "ratio_tokenize_over_baseline": tok["median"] / base["median"],
        "target_records_per_s": TARGET_RPS,
        "target_met": bc.met(rps, TARGET_RPS, higher_is_better=True),
    }
    bc.emit(result, args.json_out)
    if profile:
        print(profile, file=sys.stderr)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
