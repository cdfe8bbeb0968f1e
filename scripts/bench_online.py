"""Benchmark: online enrolment latency and ingest throughput against a loaded registry.

On a scratch copy of a prebuilt registry (scripts/bench_build_registry.py --data-dir ...):
  * registry open time and process RSS (psutil) after loading it (target <= 2.5 GB)
  * latency of enrol_records(agency, [ONE record]) (match-or-create + durable commit) for
    --online held-out records (persons absent from the registry and persons in it):
    p50/p95/p99 ms (targets p50 <= 2 ms, p99 <= 10 ms)
  * baselines in the same run, per record: (1) match only = parse_record + blocking-index
    lookup + scorer, no append and no DB write; (2) a bare DuckDB single-row INSERT + COMMIT
    into a same-shaped table in a scratch file
  * `mpi ingest`-style throughput: --ingest held-out records enrolled in chunks of
    --ingest-chunk (target >= 10,000 records/s)

    python scripts/bench_online.py --data-dir /tmp/mpi-bench-1m
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TARGETS = {"p50_ms": 2.0, "p99_ms": 10.0, "rss_mb": 2.5 * 1024, "ingest_records_per_s": 10_000}


def match_only(reg: Any, rec: dict[str, Any]) -> tuple[int, float]:
    """parse + index lookup + score of one record against the registry; no state change."""
    from mpi.identity.intake import ParsedRecord, parse_record
    p = parse_record(rec, row=1, server_secret=reg.server_secret,
                     accepted_key_ids=reg.accepted_key_ids())
    assert isinstance(p, ParsedRecord), p
    idx = reg.index
    cols = {c: p.tokens[pos: pos + 1].copy() for pos, c in reg._cols}
    _q, right = idx.query(cols)
    if len(right) == 0:
        return -1, float("-inf")
    left = {c: np.repeat(v, len(right)) for c, v in cols.items()}
    w = reg.scorer.weights(left, idx.gather(right))
    best = int(np.argmax(w))
    return int(idx.label[right[best]]), float(w[best])


def duckdb_single_row(path: Path, n: int) -> list[float]:
    """Per-op seconds of a single-row INSERT + COMMIT into a source_record-shaped table."""
    import duckdb
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (record_seq BIGINT PRIMARY KEY, agency VARCHAR, "
                "source_record_id VARCHAR, version INTEGER, status VARCHAR, person_key VARCHAR, "
                "content_hash BIGINT, key_id VARCHAR, research_consent BOOLEAN, "
                "attributes VARCHAR, tokens BIGINT[], created_at TIMESTAMP, "
                "updated_at TIMESTAMP)")
    now = dt.datetime(2026, 1, 1)
    toks = list(range(1, 22))
    out = []
    for i in range(n + 20):
        t = time.perf_counter()
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [i, "agency_a", f"r{i}", 1, "active", "K" * 16, i * 7919, "kid", None, None,
                     toks, now, now])
        con.execute("COMMIT")
        if i >= 20:  # first 20 are warm-up
            out.append(time.perf_counter() - t)
    con.close()
    return out


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, required=True, help="prebuilt registry (untouched)")
    ap.add_argument("--online", type=int, default=2000, help="single-record enrols timed")
    ap.add_argument("--ingest", type=int, default=100_000, help="records for the ingest run")
    ap.add_argument("--ingest-chunk", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--profile", type=int, default=0,
                    help="cProfile this many extra single-record enrols")
    return ap.parse_args()


def _time_match_only(reg: Any, holdout: list[dict[str, Any]]) -> list[float]:
    """Per-record seconds of match_only over the held-out records."""
    out = []
    for h in holdout:
        t = time.perf_counter()
        match_only(reg, h["record"])
        out.append(time.perf_counter() - t)
    return out


def _add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


def _profiled(run: Callable[[], object], top: int) -> str:
    """cProfile of one call of ``run``: the ``top`` functions by own time, as text."""
    import cProfile
    import io
    import pstats
    pr = cProfile.Profile()
    pr.enable()
    run()
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def _single_record_enrols(reg: Any, warm: list[dict[str, Any]],
                          online: list[dict[str, Any]]) -> tuple[list[float], dict[str, int]]:
    """Seconds of each one-record enrol_records call (after warm-up), and the outcome counts."""
    for i, h in enumerate(warm):
        reg.enrol_records(h["agency"], [(i + 1, h["record"])])
    lat = []
    outcomes: dict[str, int] = {}
    for i, h in enumerate(online):
        t = time.perf_counter()
        res = reg.enrol_records(h["agency"], [(i + 1, h["record"])])
        lat.append(time.perf_counter() - t)
        _add_counts(outcomes, res.counts())
    return lat, outcomes


def _ingest_run(reg: Any, ingest: list[dict[str, Any]],
                 chunk: int) -> tuple[list[float], int, dict[str, int], float]:
    """Enrol in chunks grouped by agency: (seconds per chunk, records, outcomes, total seconds)."""
    by_agency: dict[str, list[tuple[int, Any]]] = {}
    for i, h in enumerate(ingest):
        by_agency.setdefault(h["agency"], []).append((i + 1, h["record"]))
    chunk_s: list[float] = []
    ingested = 0
    ing_outcomes: dict[str, int] = {}
    t_all = time.perf_counter()
    for agency, rows in by_agency.items():
        for part in bc.chunks(rows, chunk):
            t = time.perf_counter()
            res = reg.enrol_records(agency, part)
            chunk_s.append(time.perf_counter() - t)
            ingested += len(part)
            _add_counts(ing_outcomes, res.counts())
    return chunk_s, ingested, ing_outcomes, time.perf_counter() - t_all


def main() -> None:
    args = _parse_args()

    import resource

    import psutil

    scratch = Path(tempfile.mkdtemp(prefix="mpi-bench-online-", dir="/tmp"))
    work = bc.working_copy(args.data_dir, parent=scratch)
    import mpi.identity.registry  # noqa: F401 - imports counted in the baseline RSS, not the registry's

    # RSS: measured before the benchmark loads its own hold-out data
    gc.collect()
    rss0 = bc.rss_mb()
    bc.log("open registry")
    t = time.perf_counter()
    reg = bc.open_registry(work)
    open_s = time.perf_counter() - t
    gc.collect()
    rss_loaded = bc.rss_mb()
    peak_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    n_records = reg.index.n

    holdout = [json.loads(line) for line in (args.data_dir / "bench" / "holdout.jsonl").open()]
    random.Random(args.seed).shuffle(holdout)
    warm = holdout[:20]
    online = holdout[20: 20 + args.online]
    prof = holdout[20 + args.online: 20 + args.online + args.profile]
    ingest = holdout[20 + args.online + args.profile:][: args.ingest]
    prof_ingest = holdout[20 + args.online + args.profile + len(ingest):][: args.ingest_chunk]
    gc.collect()
    rss_holdout = bc.rss_mb()

    # baseline 1: match only (warm-up then timed), no state change
    for h in warm:
        match_only(reg, h["record"])
    mo = _time_match_only(reg, online)

    # baseline 2: bare DuckDB single-row insert + commit
    bc.log("duckdb single-row baseline")
    db_times = duckdb_single_row(scratch / "bare.duckdb", len(online))

    # measured: one record per enrol call
    bc.log(f"{len(online)} single-record enrols")
    lat, outcomes = _single_record_enrols(reg, warm, online)
    in_reg = sum(1 for h in online if h["person_in_registry"])
    # match-only again, now that the single-record enrols filled the index's unsorted delta
    mo_after = _time_match_only(reg, online[:500])
    delta_sizes = [getattr(r, "delta_size", None) for r in reg.index._rules]
    delta_parts = [len(getattr(r, "delta_keys", getattr(r, "delta", ()))) for r in reg.index._rules]
    rss_after_online = bc.rss_mb()

    profile = None
    if prof:
        def enrol_each() -> None:
            for i, h in enumerate(prof):
                reg.enrol_records(h["agency"], [(i + 1, h["record"])])

        profile = _profiled(enrol_each, 25)

    # ingest throughput: chunks of --ingest-chunk, grouped by agency
    bc.log(f"ingest {len(ingest)} records in chunks of {args.ingest_chunk}")
    chunk_s, ingested, ing_outcomes, ingest_s = _ingest_run(reg, ingest, args.ingest_chunk)
    rss_end = bc.rss_mb()
    ingest_profile = None
    if args.profile and prof_ingest:
        rows = [(i + 1, h["record"]) for i, h in enumerate(prof_ingest)
                if h["agency"] == prof_ingest[0]["agency"]]
        ingest_profile = (f"ingest chunk of {len(rows)} records\n"
                          + _profiled(lambda: reg.enrol_records(prof_ingest[0]["agency"], rows), 20))
    peak = psutil.Process().memory_full_info()
    reg.close()

    enrol = bc.percentiles_ms(lat)
    base_match = bc.percentiles_ms(mo)
    base_db = bc.percentiles_ms(db_times)
    ingest_rps = ingested / ingest_s if ingest_s else 0.0
    result = {
        "benchmark": "online", "machine": bc.machine_info(), "source": str(args.data_dir),
        "registry_records": n_records, "registry_open_s": open_s,
        "rss_mb": {"before_open": rss0, "after_open": rss_loaded,
                   "registry_increment": rss_loaded - rss0, "peak_during_open": peak_open,
                   "after_loading_bench_holdout": rss_holdout,
                   "after_online": rss_after_online, "after_ingest": rss_end,
                   "uss_end": peak.uss / 2**20},
        "online": {"records": len(online), "person_in_registry": in_reg,
                   "outcomes": outcomes, "enrol_one_ms": enrol,
                   "baseline_match_only_ms": base_match,
                   "match_only_after_online_enrols_ms": bc.percentiles_ms(mo_after),
                   "index_delta_rows_per_rule": delta_sizes,
                   "index_delta_arrays_per_rule": delta_parts,
                   "baseline_duckdb_insert_commit_ms": base_db,
                   "ratio_p50_enrol_over_match_only": enrol["p50"] / base_match["p50"],
                   "ratio_p50_enrol_over_match_plus_duckdb":
                       enrol["p50"] / (base_match["p50"] + base_db["p50"])},
        "ingest": {"records": ingested, "chunk": args.ingest_chunk, "s": ingest_s,
                   "records_per_s": ingest_rps, "chunk_s": bc.summary(chunk_s) if chunk_s
                   else None, "outcomes": ing_outcomes},
        "targets": TARGETS,
        "target_met": {
            "p50": bc.met(enrol["p50"], TARGETS["p50_ms"], higher_is_better=False),
            "p99": bc.met(enrol["p99"], TARGETS["p99_ms"], higher_is_better=False),
            "rss_after_open": bc.met(rss_loaded, TARGETS["rss_mb"], higher_is_better=False),
            "ingest": bc.met(ingest_rps, TARGETS["ingest_records_per_s"],
                             higher_is_better=True)},
    }
    bc.emit(result, args.json_out)
    if profile:
        print(profile, file=sys.stderr)
    if ingest_profile:
        print(ingest_profile, file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
