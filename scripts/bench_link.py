"""Benchmark: full Registry.link() against Splink's own predict + clustering on the same table.

(a) splink_engine.predict_and_cluster on rstore.model_input(...) (the Arrow table link() builds)
(b) reg.link() (export + predict + cluster + reconcile + one transaction)
Runs the first link (keys change) once, then alternates a, b, a, b, ... (--repeat pairs); the
steady state (link() after the first run changes no keys) is what the medians describe.
ratio = median(b) / median(a); target <= 1.15.

Registry: --data-dir of a prebuilt registry (scripts/bench_build_registry.py), copied to a
scratch dir first, or --people to build a fresh one in a temp dir.

    python scripts/bench_link.py --data-dir /tmp/mpi-bench-1m --repeat 2
    python scripts/bench_link.py --people 10000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TARGET_RATIO = 1.15


def build_small(people: int, seed: int, workdir: Path) -> Path:
    """Synth + tokenize + enrol (chunks of 50k) into workdir/data; return the data dir."""
    files, _truth, _ = bc.synth_and_tokenize(people=people, agencies=3, seed=seed,
                                             out_dir=workdir / "agencies")
    reg = bc.open_registry(workdir / "data")
    for agency, path in files.items():
        for part in bc.chunks(bc.read_token_records(path), 50_000):
            reg.enrol_records(agency, part)
    reg.store.checkpoint()
    reg.close()
    return workdir / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", type=Path, help="prebuilt registry (left untouched)")
    src.add_argument("--people", type=int, help="build a fresh registry of ~2x this many records")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--repeat", type=int, default=2, help="alternating (a, b) pairs")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--profile", action="store_true", help="cProfile one extra link()")
    ap.add_argument("--order", choices=("ab", "ba"), default="ab",
                    help="which of (a) Splink alone / (b) link() runs first in each pair")
    ap.add_argument("--no-gc", action="store_true", help="skip gc.collect() before each run")
    args = ap.parse_args()

    import tempfile

    from mpi.agency.schema import TOKEN_COLUMNS
    from mpi.linkage import splink_engine
    from mpi.store import records as rstore

    scratch = Path(tempfile.mkdtemp(prefix="mpi-bench-link-", dir="/tmp"))
    t = time.perf_counter()
    if args.data_dir:
        work = bc.working_copy(args.data_dir, parent=scratch)
    else:
        work = build_small(args.people, args.seed, scratch)
    prep_s = time.perf_counter() - t

    t = time.perf_counter()
    reg = bc.open_registry(work)
    open_s = time.perf_counter() - t
    cols = reg.index.columns
    positions = [TOKEN_COLUMNS.index(c) for c in cols]
    th = reg.model.thresholds

    model_input = rstore.model_input  # the originals, before link()'s phases get wrapped
    predict_and_cluster = splink_engine.predict_and_cluster

    def splink_only() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        table = model_input(reg.store.cursor(), columns=cols, positions=positions)
        t1 = time.perf_counter()
        res = predict_and_cluster(
            table, reg.model.params, definition=reg.model_definition,
            edge_threshold=th.review, cluster_threshold=th.link)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, res.edges.num_rows

    # Phase timers inside link(): wrap the functions relink.py calls (measurement only).
    import gc

    import mpi.identity.keys
    from mpi.linkage.index import BlockingIndex
    phases: dict[str, list[float]] = {}

    def wrap(owner: object, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def timed_fn(*a: object, **k: object) -> object:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases.setdefault(label, []).append(time.perf_counter() - t0)
        setattr(owner, name, timed_fn)

    # relink.py calls these as attributes of their modules, so patching the modules suffices
    wrap(rstore, "model_input", "model_input")
    wrap(splink_engine, "predict_and_cluster", "predict_and_cluster")
    wrap(mpi.identity.keys, "reconcile", "reconcile")
    wrap(BlockingIndex, "rows_for", "rows_for")

    def settle() -> None:
        if not args.no_gc:
            gc.collect()

    bc.log("first link")
    first_s, first = bc.timed(reg.link)
    a_s: list[float] = []
    export_s: list[float] = []
    b_s: list[float] = []
    edges = 0
    phases.clear()
    for i in range(args.repeat):
        for which in args.order:
            settle()
            if which == "a":
                bc.log(f"pair {i + 1}: (a) splink predict+cluster")
                ex, pc_, edges = splink_only()
                export_s.append(ex)
                a_s.append(pc_)
            else:
                bc.log(f"pair {i + 1}: (b) reg.link()")
                dt_, ls = bc.timed(reg.link)
                b_s.append(dt_)
    link_phases = {k: bc.summary(v) for k, v in phases.items()}
    profile = None
    if args.profile:
        import cProfile
        import io
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        reg.link()
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(25)
        profile = buf.getvalue()
    reg.close()
    a, b = bc.summary(a_s), bc.summary(b_s)
    ratio = b["median"] / a["median"]
    result = {
        "benchmark": "link", "machine": bc.machine_info(),
        "source": str(args.data_dir) if args.data_dir else f"fresh, people={args.people}",
        "records": ls.records, "persons": ls.persons, "edges": edges,
        "prepare_s": prep_s, "registry_open_s": open_s,
        "first_link": {"s": first_s, "merges": first.merges, "splits": first.splits,
                       "keys_changed": first.keys_changed, "new_keys": first.new_keys,
                       "persons": first.persons},
        "steady_link_keys_changed": ls.keys_changed,
        "a_splink_predict_cluster_s": a,
        "a_model_input_export_s": bc.summary(export_s),
        "b_registry_link_s": b,
        "b_phases_s": link_phases,
        "runs_s": {"a": a_s, "b": b_s}, "order": args.order, "gc_between": not args.no_gc,
        "ratio_b_over_a": ratio,
        "ratio_b_over_a_plus_export": b["median"] / (a["median"] + bc.summary(export_s)["median"]),
        "target_ratio": TARGET_RATIO,
        "target_met": bc.met(ratio, TARGET_RATIO, higher_is_better=False),
    }
    bc.emit(result, args.json_out)
    if profile:
        print(profile, file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
