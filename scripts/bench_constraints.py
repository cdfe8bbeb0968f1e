"""Benchmark: the cost of steward constraints and the review queue (issue 4, section 2).

Builds a registry from a seeded synthetic set, links it, then measures: a steady `mpi link`
without constraints; importing cannot-links inside current persons and must-links across
persons; the link that enforces them and the next one (must change nothing); listing review
pages; and single-record online enrolment with and without constraints loaded.

    python scripts/bench_constraints.py --people 50000 --seed 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mpi.config import Settings
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.steward import labels, review
from mpi.store import review as qstore
from mpi.synth import generate


def _constraints(reg: Registry, n_cannot: int, n_must: int) -> list[labels.LabelRow]:
    n = reg.index.n
    by: dict[int, list[int]] = {}
    for r in np.flatnonzero(reg.index.active[:n]).tolist():
        by.setdefault(int(reg.index.label[r]), []).append(int(reg.row_seq[r]))
    multi = [m for m in by.values() if len(m) > 1]
    pairs = [(m[0], m[1], False) for m in multi[:n_cannot]]
    rest = multi[n_cannot:n_cannot + 2 * n_must]
    pairs += [(rest[i][0], rest[i + 1][0], True) for i in range(0, len(rest) - 1, 2)]
    info = qstore.records_by_seq(reg.store.cursor(), [s for a, b, _m in pairs for s in (a, b)])
    return [labels.LabelRow(info[a]["agency"], info[a]["source_record_id"], info[b]["agency"],
                                 info[b]["source_record_id"], is_match=m) for a, b, m in pairs]


def _online(reg: Registry, tokens: dict[str, list[dict[str, object]]], *, first: int,
            count: int) -> None:
    lat = []
    for agency, toks in tokens.items():
        for rec in toks[len(toks) - first: len(toks) - first + count]:
            t = time.perf_counter()
            reg.enrol_records(agency, [(1, rec)])
            lat.append(time.perf_counter() - t)
    lat.sort()
    print(f"online enrol of {len(lat)} single records, {len(reg.constraints.items)} constraints "
          f"loaded: p50 {statistics.median(lat) * 1000:.2f} ms, "
          f"p95 {lat[int(len(lat) * 0.95)] * 1000:.2f} ms")


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--online", type=int, default=300, help="records held back per agency")
    args = ap.parse_args()
    rows, _truth = generate(people=args.people, agencies=3, seed=args.seed)
    tokens = {a: tokenize_rows(r, secret=demo_secret(1))[0] for a, r in rows.items()}
    reg = Registry(Settings(data_dir=Path(tempfile.mkdtemp()) / "data"))
    try:
        for agency, toks in tokens.items():
            held = toks[: len(toks) - 2 * args.online]
            for i in range(0, len(held), 10_000):
                reg.enrol_records(agency, list(enumerate(held[i:i + 10_000], start=1)))
        reg.link()
        t = time.perf_counter()
        reg.link()
        print(f"records {reg.index.n}; steady mpi link, no constraints: "
              f"{time.perf_counter() - t:.2f} s")
        for limit in (50, 200):
            t = time.perf_counter()
            page = review.list_review(reg, principal="bench", status="all", limit=limit)
            print(f"GET /v1/review limit={limit}: {len(page['items'])} items in "
                  f"{time.perf_counter() - t:.3f} s")
        _online(reg, tokens, first=2 * args.online, count=args.online)
        pairs = _constraints(reg, 500, 250)
        t = time.perf_counter()
        res = labels.import_labels(reg, pairs, principal="bench")
        print(f"import {len(pairs)} labels: {time.perf_counter() - t:.3f} s, unmet {res['unmet']}")
        t = time.perf_counter()
        s = reg.link()
        print(f"mpi link enforcing {len(reg.constraints.items)} constraints: "
              f"{time.perf_counter() - t:.2f} s, {s.keys_changed} keys changed")
        t = time.perf_counter()
        s = reg.link()
        print(f"next mpi link: {time.perf_counter() - t:.2f} s, {s.keys_changed} keys changed")
        _online(reg, tokens, first=args.online, count=args.online)
    finally:
        reg.close()


if __name__ == "__main__":
    main()
