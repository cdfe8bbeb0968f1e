"""Build a benchmark registry ONCE (synth -> tokenize -> enrol in chunks) for reuse.

Writes into --data-dir: mpi.duckdb + server.secret (a normal registry), and bench/:
  holdout.jsonl   token records NOT enrolled: every record of a random share of people
                  (persons absent from the registry) plus a random share of the other records
                  (persons already in the registry); one line {agency, record, person_id,
                  person_in_registry}
  truth.csv       agency,source_record_id,person_id for all records
  build.json      what was built and how long each step took

    python scripts/bench_build_registry.py --people 550000 --data-dir /tmp/mpi-bench-1m
(550k people x 3 agencies -> ~1.1M records, ~1.0M enrolled, ~110k held out.)
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402


def _tokenize(args: tuple[str, str, int]) -> tuple[str, float]:
    from mpi.agency.tokenizer import tokenize_file
    from mpi.identity.pipeline import demo_secret
    src, out, secret_seed = args
    t = time.perf_counter()
    tokenize_file(Path(src), secret=demo_secret(secret_seed), out=Path(out))
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--people", type=int, default=550_000)
    ap.add_argument("--agencies", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--holdout-people", type=float, default=0.05,
                    help="share of people whose records are all held out")
    ap.add_argument("--holdout-records", type=float, default=0.05,
                    help="share of the remaining records held out")
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=2, help="tokenizer processes")
    args = ap.parse_args()

    from mpi.synth import synthesize

    data_dir: Path = args.data_dir
    if data_dir.exists():
        shutil.rmtree(data_dir)
    bench = data_dir / "bench"
    synth_dir = data_dir / "synth"
    bench.mkdir(parents=True)
    times: dict[str, float] = {}

    bc.log(f"synthesize {args.people} people x {args.agencies} agencies")
    t = time.perf_counter()
    s = synthesize(people=args.people, agencies=args.agencies, seed=args.seed, out_dir=synth_dir)
    times["synthesize_s"] = time.perf_counter() - t
    shutil.copy2(s.truth, bench / "truth.csv")

    bc.log(f"tokenize {s.records} records ({args.workers} processes)")
    t = time.perf_counter()
    jobs = [(str(f), str(synth_dir / f"{f.stem}.tokens.jsonl"), 1) for f in s.files]
    with ProcessPoolExecutor(max_workers=args.workers) as ex:
        tok_files = {Path(out).name.split(".")[0]: Path(out) for out, _ in ex.map(_tokenize, jobs)}
    times["tokenize_s"] = time.perf_counter() - t

    # hold-out selection from the truth file
    rng = np.random.default_rng(args.seed + 1)
    person_of: dict[tuple[str, str], str] = {}
    with s.truth.open(newline="") as fh:
        for row in csv.DictReader(fh):
            person_of[(row["agency"], row["source_record_id"])] = row["person_id"]
    people = np.array(sorted(set(person_of.values())))
    out_people = set(rng.choice(people, size=int(len(people) * args.holdout_people),
                                replace=False).tolist())

    bc.log("enrol")
    reg = bc.open_registry(data_dir)
    enrol_s = 0.0
    enrolled = held = 0
    per_chunk: list[float] = []
    with (bench / "holdout.jsonl").open("w") as hold:
        for agency, path in tok_files.items():
            rows = bc.read_token_records(path)
            keep = []
            for rno, rec in rows:
                pid = person_of[(agency, rec["source_record_id"])]
                if pid in out_people:
                    hold.write(json.dumps({"agency": agency, "record": rec, "person_id": pid,
                                           "person_in_registry": False}) + "\n")
                    held += 1
                elif rng.random() < args.holdout_records:
                    hold.write(json.dumps({"agency": agency, "record": rec, "person_id": pid,
                                           "person_in_registry": True}) + "\n")
                    held += 1
                else:
                    keep.append((rno, rec))
            for part in bc.chunks(keep, args.chunk):
                t = time.perf_counter()
                reg.enrol_records(agency, part)
                dt_ = time.perf_counter() - t
                per_chunk.append(dt_)
                enrol_s += dt_
                enrolled += len(part)
                bc.log(f"  {agency}: {enrolled} enrolled ({len(part) / dt_:.0f} rec/s this chunk)")
    # persons in the registry that a "person_in_registry" hold-out record refers to are the
    # ones whose other records were enrolled; a held-out person's records are all held out.
    t = time.perf_counter()
    reg.store.checkpoint()
    times["checkpoint_s"] = time.perf_counter() - t
    stats = reg.stats()
    reg.close()
    times["enrol_s"] = enrol_s
    build = {"benchmark": "build_registry", "machine": bc.machine_info(), "args": {
        k: str(v) for k, v in vars(args).items()}, "records_synth": s.records,
        "enrolled": enrolled, "held_out": held, "times": times,
        "enrol_records_per_s": enrolled / enrol_s if enrol_s else None,
        "enrol_chunk_s": bc.summary(per_chunk) if per_chunk else None,
        "registry_bytes": (data_dir / "mpi.duckdb").stat().st_size, "stats": stats}
    (bench / "build.json").write_text(json.dumps(build, indent=2, default=str) + "\n")
    shutil.rmtree(synth_dir)
    bc.emit(build, None)


if __name__ == "__main__":
    main()
