"""Benchmark: retrain, preview and promote on a 100k-record registry (issue 4 checks).

On a working copy of a registry built by bench_build_registry.py (truth in <data-dir>/bench):
1. re-link with the default model and score cluster F1 against truth (the baseline);
2. promote a copy of the active version (same parameters): keys changed must be 0;
3. train a candidate on the registry (seeded; --repeats runs for the median time);
4. preview its impact (nothing changes), then promote it and re-score cluster F1;
Checks: candidate cluster F1 >= default - 0.005; records changing key <= 1% and equal to the
preview; keys change only where the record's cluster (its set of co-members) changed.

    python scripts/bench_retrain.py --data-dir /tmp/mpi-bench-100k --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

F1_TOLERANCE = 0.005
MAX_CHURN = 0.01


def _groups(keys: dict[Any, str]) -> dict[Any, frozenset[Any]]:
    by_key: dict[str, set[Any]] = defaultdict(set)
    for rec, k in keys.items():
        by_key[k].add(rec)
    frozen = {k: frozenset(v) for k, v in by_key.items()}
    return {rec: frozen[k] for rec, k in keys.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/mpi-bench-100k"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=3, help="training runs (median time)")
    ap.add_argument("--sample", type=float, default=1.0, help="fraction of records to train on")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    from mpi.linkage.catalog import candidates_dir
    from mpi.linkage.modelfile import save_version
    from mpi.steward import modelops
    from mpi.steward.evaluation import evaluate, read_truth
    from mpi.steward.training import train_candidate

    truth = read_truth(args.data_dir / "bench" / "truth.csv")
    work = bc.working_copy(args.data_dir, parent=Path("/tmp"))
    out: dict[str, Any] = {"benchmark": "retrain", "machine": bc.machine_info(),
                           "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        t = time.perf_counter()
        reg = bc.open_registry(work)
        out["open_s"] = time.perf_counter() - t
        bc.log("re-link with the default model")
        link_s, summary = bc.timed(lambda: reg.link())
        default = evaluate(truth, bc.export_mapping(reg))
        out["default"] = {"version": reg.model.version, "link_s": link_s,
                          "link": summary.__dict__, "eval": bc.eval_dict(default)}

        bc.log("no-op promote (a copy of the active parameters)")
        copy = save_version(candidates_dir(reg.settings), name="copy", model=reg.model.model,
                            meta=reg.model.meta)
        before = bc.export_mapping(reg)
        noop_s, noop = bc.timed(lambda: modelops.promote_model(reg, copy, principal="bench"))
        after = bc.export_mapping(reg)
        out["noop_promote"] = {"s": noop_s, "mode": noop["mode"],
                               "records_changing_key": noop["records_changing_key"],
                               "keys_differing": sum(before[r] != after[r] for r in before)}

        times, versions = [], []
        for i in range(args.repeats):
            bc.log(f"train candidate ({i + 1}/{args.repeats})")
            s, v = bc.timed(lambda: train_candidate(reg, out_dir=candidates_dir(reg.settings),
                                                    seed=args.seed, fraction=args.sample))
            times.append(s)
            versions.append(v)
        cand = versions[0]
        out["train"] = {"seconds": times, "median_s": statistics.median(times),
                        "version": cand, "records": reg.model_table().num_rows}

        bc.log("impact preview")
        imp_s, imp = bc.timed(lambda: modelops.model_impact(reg, cand, principal="bench",
                                                            sample=5))
        unchanged = bc.export_mapping(reg) == after
        out["impact"] = {"s": imp_s, "changed_nothing": unchanged,
                         **{k: imp[k] for k in ("promote", "active_relink", "pairs",
                                                "review_items")}}
        bc.log("promote candidate")
        before = bc.export_mapping(reg)
        prom_s, prom = bc.timed(lambda: modelops.promote_model(reg, cand, principal="bench"))
        after = bc.export_mapping(reg)
        changed = [r for r in before if before[r] != after[r]]
        old_g, new_g = _groups(before), _groups(after)
        outside = sum(1 for r in changed if old_g[r] == new_g[r])
        retrained = evaluate(truth, after)
        delta = retrained.cluster.f1 - default.cluster.f1
        churn = len(changed) / len(before)
        out["promote"] = {"s": prom_s, "result": prom, "records": len(before),
                          "records_changing_key": len(changed), "churn_share": churn,
                          "changed_outside_changed_clusters": outside,
                          "eval": bc.eval_dict(retrained)}
        out["checks"] = {
            "cluster_f1_delta": delta,
            "f1_within_tolerance_or_better": delta >= -F1_TOLERANCE,
            "noop_zero_keys": out["noop_promote"]["keys_differing"] == 0,
            "churn_at_most_1pct": churn <= MAX_CHURN,
            "impact_equals_promote": imp["promote"]["records_changing_key"] == len(changed),
            "keys_change_only_where_clusters_changed": outside == 0,
            "impact_changed_nothing": unchanged,
        }
        out["ratios"] = {"train_median_over_link": statistics.median(times) / link_s,
                         "impact_over_link": imp_s / link_s, "promote_over_link": prom_s / link_s}
        reg.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bc.emit_after_run(out, args.json_out)


if __name__ == "__main__":
    main()
