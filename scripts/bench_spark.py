"""Benchmark: the re-link engine phase on DuckDB vs Spark (local mode) over the same records.

Both engines get the same Arrow table (``rstore.model_input``, what ``mpi link`` exports) and the
same settings and thresholds; only the engine phase differs (reconcile + write is shared code).

    duckdb       splink_engine.predict_and_cluster (in process)
    spark_warm   spark_engine.predict_and_cluster with a running SparkSession (snapshot write,
                 Spark predict + cluster, Parquet outputs, read back); a fresh work dir per run
    spark_cold   the same, building and stopping a session per run; pyspark keeps its JVM after
                 stop(), so this is a new session, not a new JVM

A fresh `mpi link --engine spark` process pays session start (JVM launch) plus a first run in a
cold JVM: reported as fresh_process_s = session_start_s + the first spark_warm run.

Reports medians over --repeat runs and the Spark/DuckDB ratio, and checks the two engines'
edges and partitions agree. Registry: --data-dir of a prebuilt registry (copied first, never
changed) or --people to build one.

    python scripts/bench_spark.py --data-dir /tmp/mpi-bench-100k --repeat 3
    python scripts/bench_spark.py --people 10000 --repeat 3 --master 'local[2]'
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402


def build(people: int, seed: int, data_dir: Path) -> None:
    from mpi.identity.pipeline import demo_secret, tokenize_rows
    from mpi.synth import generate
    rows, _truth = generate(people=people, agencies=3, seed=seed)
    reg = bc.open_registry(data_dir)
    for agency, agency_rows in rows.items():
        records, _rejected = tokenize_rows(agency_rows, secret=demo_secret(1))
        for start in range(0, len(records), 50_000):
            part = records[start:start + 50_000]
            reg.enrol_records(agency, list(enumerate(part, start=start + 1)))
    reg.close()


def partition(clusters: Any) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for uid, cid in zip(clusters.column("unique_id").to_pylist(),
                        clusters.column("cluster_id").to_pylist(), strict=True):
        groups.setdefault(cid, set()).add(uid)
    return {frozenset(g) for g in groups.values()}


def blocked_pairs(table: Any, definition: Any) -> int:
    """Candidate pairs the blocking rules make (the in-memory index equals Splink's blocking)."""
    import numpy as np

    from mpi.linkage.index import BlockingIndex
    cols = {c: table.column(c).fill_null(0).to_numpy() for c in definition.columns()}
    index = BlockingIndex(definition)
    rows = index.append(cols, np.full(table.num_rows, -1, dtype=np.int64))
    left, _right = index.candidates(rows)
    return int(len(left))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", type=Path, help="prebuilt registry (left untouched)")
    src.add_argument("--people", type=int, help="build a fresh registry of ~2x this many records")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", type=int, default=1, help="spark_cold runs")
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--conf", action="append", default=[], help="extra Spark KEY=VALUE")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np

    from mpi.agency.schema import TOKEN_COLUMNS
    from mpi.linkage import spark_engine, splink_engine
    from mpi.linkage.spark_engine import SparkOptions
    from mpi.store import records as rstore

    scratch = Path(tempfile.mkdtemp(prefix="mpi-bench-spark-", dir="/tmp"))
    if args.data_dir:
        work = bc.working_copy(args.data_dir, parent=scratch)
    else:
        work = scratch / "data"
        build(args.people, args.seed, work)
    reg = bc.open_registry(work)
    cols = reg.index.columns
    table = rstore.model_input(reg.store.cursor(), columns=cols,
                               positions=[TOKEN_COLUMNS.index(c) for c in cols])
    params, definition, th = reg.model.params, reg.model_definition, reg.model.thresholds
    reg.close()
    n = table.num_rows
    bc.log(f"{n} records; master {args.master}")
    conf = tuple(tuple(c.split("=", 1)) for c in args.conf)
    kw: dict[str, Any] = {"definition": definition, "edge_threshold": th.review,
                          "cluster_threshold": th.link}
    times: dict[str, list[float]] = {"duckdb": [], "spark_warm": [], "spark_cold": []}
    results: dict[str, Any] = {}

    for i in range(args.repeat):
        t = time.perf_counter()
        results["duckdb"] = splink_engine.predict_and_cluster(table, params, **kw)
        times["duckdb"].append(time.perf_counter() - t)
        bc.log(f"duckdb run {i + 1}: {times['duckdb'][-1]:.1f}s")

    base = SparkOptions(master=args.master, conf=conf)  # type: ignore[arg-type]
    t = time.perf_counter()
    session = spark_engine.build_session(base)
    session_start_s = time.perf_counter() - t
    bc.log(f"spark session start: {session_start_s:.1f}s")
    warm = SparkOptions(master=args.master, conf=conf, session=session)  # type: ignore[arg-type]
    for i in range(args.repeat):
        t = time.perf_counter()
        results["spark"] = spark_engine.predict_and_cluster(
            table, params, work_dir=scratch / f"warm-{i}", options=warm, **kw)
        times["spark_warm"].append(time.perf_counter() - t)
        bc.log(f"spark warm run {i + 1}: {times['spark_warm'][-1]:.1f}s")
    session.stop()
    for i in range(args.cold):
        t = time.perf_counter()
        spark_engine.predict_and_cluster(table, params, work_dir=scratch / f"cold-{i}",
                                         options=base, **kw)
        times["spark_cold"].append(time.perf_counter() - t)
        bc.log(f"spark cold run {i + 1}: {times['spark_cold'][-1]:.1f}s")

    de, se = results["duckdb"].edges, results["spark"].edges
    key = ["unique_id_l", "unique_id_r"]
    de, se = de.sort_by([(k, "ascending") for k in key]), se.sort_by([(k, "ascending") for k in key])
    same_pairs = de.select(key).equals(se.select(key))
    max_dw = float(np.abs(de.column("match_weight").to_numpy()
                          - se.column("match_weight").to_numpy()).max()) if same_pairs else None
    same_partition = partition(results["duckdb"].clusters) == partition(results["spark"].clusters)
    medians = {k: round(statistics.median(v), 2) for k, v in times.items() if v}
    blocked = blocked_pairs(table, definition)
    out = {
        "records": n, "edges": de.num_rows, "blocked_pairs": blocked,
        "blocked_pairs_per_record": round(blocked / n, 3), "master": args.master, "conf": dict(conf),
        "repeat": args.repeat, "runs_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_s": medians, "session_start_s": round(session_start_s, 2),
        "fresh_process_s": round(session_start_s + times["spark_warm"][0], 2),
        "ratio_spark_warm_to_duckdb": round(medians["spark_warm"] / medians["duckdb"], 1),
        "same_pairs": same_pairs, "max_match_weight_delta": max_dw,
        "same_partition": same_partition, "machine": bc.machine_info(),
    }
    out["machine"]["pyspark"] = __import__("pyspark").__version__
    print(json.dumps(out, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
