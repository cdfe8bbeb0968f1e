"""Benchmark: accuracy on public person data this project did not generate (FEBRL 1 and 2).

For each dataset and variant under ``--data`` (default ``../shared/data/public-linkage``) it runs
the real path: ``tokenize_file`` agency side (dates ``%Y%m%d``), enrol into a fresh registry,
evaluate the online keys, ``mpi link``, evaluate, then ``mpi model train`` + promote and evaluate
again. It also measures blocking recall: the share of true pairs that at least one prediction
blocking rule of the active model can score. Baseline for the ratios: the online-only pass.

    python scripts/bench_public.py [--data DIR] [--only febrl1/us_shaped] [--json-out F]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "public-linkage"
VARIANTS = ("raw", "us_shaped", "no_id_no_zip")


def read_truth(path: Path) -> dict[tuple[str, str], str]:
    """(agency, source_record_id) -> person id from a public set's truth.csv."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {(r["agency"], r["source_record_id"]): r["person_id"] for r in csv.DictReader(fh)}


def blocking_recall(token_files: dict[str, Path], truth: dict[tuple[str, str], str],
                    rules: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """Share of true pairs that each blocking rule (and all of them together) puts in a block."""
    from mpi.agency.schema import TOKEN_COLUMNS
    from mpi.identity.pipeline import demo_secret, model_table, parse_all
    keys, parsed = [], []
    for agency, path in token_files.items():
        for p in parse_all((r for _row, r in bc.read_token_records(path)),
                           server_secret=demo_secret(2)):
            keys.append((agency, p.source_record_id))
            parsed.append(p)
    table = model_table(parsed, columns=TOKEN_COLUMNS)
    cols = {c: table.column(c).to_pylist() for c in TOKEN_COLUMNS}
    by_person: dict[str, list[int]] = {}
    for i, rk in enumerate(keys):
        by_person.setdefault(truth[rk], []).append(i)
    pairs = [p for rows in by_person.values() for p in itertools.combinations(rows, 2)]
    true_pairs = sum(n * (n - 1) // 2 for n in Counter(truth.values()).values())
    per_rule = {"+".join(r): 0 for r in rules}
    covered = 0
    for a, b in pairs:
        hit = False
        for r in rules:
            if all(cols[c][a] is not None and cols[c][a] == cols[c][b] for c in r):
                per_rule["+".join(r)] += 1
                hit = True
        covered += hit
    n = max(true_pairs, 1)
    return {"true_pairs": true_pairs, "recall": covered / n,
            "per_rule": {k: round(v / n, 4) for k, v in per_rule.items()}}


def _evaluate(truth: dict[tuple[str, str], str], reg: Any) -> dict[str, Any]:
    from mpi.steward.evaluation import evaluate
    try:
        ev = evaluate(truth, bc.export_mapping(reg))
    except ValueError as exc:  # nothing enrolled at all
        return {"error": str(exc)}
    return {**bc.eval_dict(ev), "missing": ev.missing}


def run_one(data: Path, dataset: str, variant: str, work: Path, *, train: bool,
            drop: Sequence[str] = ()) -> dict[str, Any]:
    """Tokenize, enrol, link, (train + promote) one variant; evaluate after each step."""
    from mpi.agency.tokenizer import tokenize_file
    from mpi.identity.pipeline import demo_secret
    from mpi.steward.modelops import promote_model
    from mpi.steward.training import train_candidate

    src = data / dataset / variant
    truth = read_truth(data / dataset / "truth.csv")
    secret = demo_secret(1)
    out: dict[str, Any] = {"dataset": dataset, "variant": variant, "tokenize": {}}
    token_files = {}
    for agency in ("orig", "dups"):
        tok = work / f"{agency}.tokens.jsonl"
        s = tokenize_file(src / f"{agency}.csv", secret=secret, out=tok, date_formats=["%Y%m%d"])
        out["tokenize"][agency] = {"rows": s.rows, "written": s.written, "rejected": s.rejected,
                                   "kept_with_dropped_fields": getattr(s, "kept_with_warnings", 0)}
        token_files[agency] = tok
    rows = sum(v["rows"] for v in out["tokenize"].values())
    written = sum(v["written"] for v in out["tokenize"].values())
    out["tokenized_share"] = written / rows
    reg = bc.open_registry(work / "data")
    t = time.perf_counter()
    for agency, path in token_files.items():
        for part in bc.chunks(bc.read_token_records(path), 10_000):
            for _row, rec in part:  # ablation: what a token buys, by enrolling without it
                for name in drop:
                    rec["tokens"].pop(name, None)
            reg.enrol_records(agency, part)
    out["enrol_s"] = time.perf_counter() - t
    out["online"] = _evaluate(truth, reg)
    out["blocking"] = blocking_recall(token_files, truth, reg.model_definition.blocking_rules)
    t = time.perf_counter()
    ls = reg.link()
    out["link_s"] = time.perf_counter() - t
    out["link_summary"] = {"merges": ls.merges, "splits": ls.splits, "model": ls.model_version}
    out["after_link"] = _evaluate(truth, reg)
    if train:
        t = time.perf_counter()
        try:
            version = train_candidate(reg, out_dir=work / "data" / "models")
            promote_model(reg, version, principal="bench")
            trained = _evaluate(truth, reg)
            trained["model"] = version
            trained["thresholds"] = vars(reg.model.thresholds)
            trained["estimate"] = reg.model.meta.get("threshold_estimate")
            out["after_train_promote"] = trained
        except Exception as exc:  # a crash is a result here: report it, go on
            out["after_train_promote"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out["train_promote_s"] = time.perf_counter() - t
    reg.close()
    return out


def _line(r: dict[str, Any]) -> str:
    def pf(d: dict[str, Any] | None) -> str:
        if not d or "pairwise" not in d:
            return str((d or {}).get("error", "-"))[:40]
        p = d["pairwise"]
        return f"P {p['precision']:.3f} R {p['recall']:.3f} F1 {p['f1']:.4f} cF1 {d['cluster']['f1']:.4f}"
    return (f"{r['dataset']:8s} {r['variant']:13s} tok {r['tokenized_share']:.3f} "
            f"block {r['blocking']['recall']:.3f} | online {pf(r['online'])} | "
            f"link {pf(r['after_link'])} | trained {pf(r.get('after_train_promote'))}")


def main() -> None:
    """Run every dataset/variant and print one line each plus the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--only", action="append", default=[], help="dataset/variant to run")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--drop-tokens", default="", help="comma-separated token names (prefixes "
                    "allowed, e.g. national_id.mask) enrolled without: an ablation")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    from mpi.agency.schema import TOKEN_NAMES
    prefixes = [p for p in args.drop_tokens.split(",") if p]
    drop = [n for n in TOKEN_NAMES if any(n.startswith(p) for p in prefixes)]
    runs = [(d.name, v) for d in sorted(args.data.iterdir()) if d.is_dir()
            for v in VARIANTS if (d / v).is_dir()]
    if args.only:
        runs = [(d, v) for d, v in runs if f"{d}/{v}" in args.only]
    results = []
    for dataset, variant in runs:
        work = Path(tempfile.mkdtemp(prefix="mpi-bench-public-", dir="/tmp"))
        try:
            r = run_one(args.data, dataset, variant, work, train=not args.no_train, drop=drop)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(r)
        bc.log(_line(r))
    bc.emit({"benchmark": "public_accuracy", "dropped_tokens": drop, "machine": bc.machine_info(),
             "source": bc.source_state(), "results": results}, args.json_out)


if __name__ == "__main__":
    main()
