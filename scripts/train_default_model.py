"""Reproduce linkage_models/default-vNNN.json: train on seeded synthetic data and measure it.

Usage: python scripts/train_default_model.py [--people 30000] [--seed 7] [--out linkage_models]
Writes the next version of the `default` model with its .meta.json sidecar (immutable files).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import splink

from mpi import synth
from mpi.evaluation import evaluate
from mpi.linkage import splink_engine as se
from mpi.linkage.definition import DEFAULT_DEFINITION
from mpi.linkage.modelfile import Thresholds, fingerprint_bytes, save_version
from mpi.linkage.params import params_from_splink
from mpi.pipeline import demo_secret, model_table, parse_all, tokenize_rows
from mpi.schema import SCHEMA_VERSION


def main() -> None:
    """Train, evaluate at the chosen thresholds and save a new default model version."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=30000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--link", type=float, default=0.99)
    ap.add_argument("--review", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=Path("linkage_models"))
    ap.add_argument("--name", default="default")
    args = ap.parse_args()
    by_agency, truth_rows = synth.generate(people=args.people, agencies=3, seed=args.seed)
    secret, server = demo_secret(args.seed), demo_secret(args.seed + 1)
    parsed, keys = [], []
    for agency, rows in by_agency.items():
        tokens, _ = tokenize_rows(rows, secret=secret)
        for p in parse_all(tokens, server_secret=server):
            parsed.append(p)
            keys.append((agency, p.source_record_id))
    table = model_table(parsed, columns=DEFAULT_DEFINITION.columns())
    fp = fingerprint_bytes(b"".join(p.tokens.tobytes() for p in parsed))
    t0 = time.perf_counter()
    model = se.train(table, config=se.TrainingConfig(seed=args.seed), progress=print)
    train_s = time.perf_counter() - t0
    th = Thresholds(link=args.link, review=args.review)
    res = se.predict_and_cluster(table, params_from_splink(model, DEFAULT_DEFINITION),
                                 edge_threshold=th.review, cluster_threshold=th.link)
    clusters = dict(zip(res.clusters.column("unique_id").to_pylist(),
                        res.clusters.column("cluster_id").to_pylist(), strict=True))
    truth = {(a, s): p for a, s, p in truth_rows}
    predicted = {keys[i]: str(clusters[i + 1]) for i in range(len(keys))}
    ev = evaluate(truth, predicted)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "splink_version": splink.__version__,
        "training_data": {"fingerprint": fp, "records": len(parsed),
                          "source": f"mpi synth --people {args.people} --agencies 3 "
                                    f"--seed {args.seed}", "labels": 0},
        "training": {"seed": args.seed, "seconds": round(train_s, 1),
                     "u_max_pairs": se.TrainingConfig().u_max_pairs,
                     "em_max_pairs": se.TrainingConfig().em_max_pairs,
                     "em_blocking_rules": [list(r) for r in DEFAULT_DEFINITION.training_blocking_rules]},
        "thresholds": {"link": th.link, "review": th.review},
        "accuracy": {"dataset": "training set (seeded synth)",
                     "pairwise": vars(ev.pairwise), "cluster": vars(ev.cluster)},
        "python": platform.python_version(),
    }
    version = save_version(args.out, name=args.name, model=model, meta=meta)
    print(json.dumps({"version": version, **meta["accuracy"]}, indent=2, default=str))


if __name__ == "__main__":
    main()
