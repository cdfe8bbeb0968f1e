"""Benchmark companion: the anatomy of a model's errors on FEBRL and synthetic data.

For each data set it scores, with a model version (default: the newest shipped default), every
true pair and every pair Splink links (probability >= the link threshold, blocked by the
definition's prediction rules), and reports:

- missed true pairs: how many no prediction rule blocks, how many of those the model would link,
  what each ``--rule`` (candidate blocking rule) would add, and the commonest level patterns of
  the true pairs that score below the link threshold;
- false links: linked pairs of different people by which identity fields disagree entirely
  (the "else" level of given name, date of birth, SSN, sex), against the true links that
  disagree the same way (what a guard on those disagreements would cost).

No registry is built (pairs, not clusters: scripts/bench_public.py and bench_accuracy.py
measure the end-to-end figures). Baseline: the counts are of the true pairs of each set.

    python scripts/bench_errors.py [--febrl febrl1/us_shaped ... | --no-febrl]
        [--people 20000 --error-scale 1 --blank national_id,...]
        [--rule date_of_birth,family_name_prefix3 ...] [--model V --models-dir D] [--json-out F]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
from bench_public import DEFAULT_DATA, read_truth  # noqa: E402

IDENTITY = ("given_name", "date_of_birth", "national_id", "sex")
Key = tuple[str, str]


def _dice(a: str, b: str) -> float:
    """Dice coefficient of the letter pairs of two names padded with '_' (plaintext side)."""
    pa_, pb = ({f"_{x}_"[i:i + 2] for i in range(len(x) + 1)} for x in (a, b))
    return 2 * len(pa_ & pb) / (len(pa_) + len(pb)) if a and b else 0.0


def _febrl_names(data: Path, name: str) -> dict[Key, tuple[str, str]]:
    """(agency, id) -> (given, family) as written in the public CSV (benchmark side only)."""
    import csv
    dataset, variant = name.split("/")
    out: dict[Key, tuple[str, str]] = {}
    for agency in ("orig", "dups"):
        with (data / dataset / variant / f"{agency}.csv").open(newline="") as fh:
            for row in csv.DictReader(fh):
                out[(agency, row["source_record_id"])] = (
                    row["given_name"].replace(" ", "").upper(),
                    row["family_name"].replace(" ", "").upper())
    return out


def _febrl(data: Path, name: str) -> tuple[list[Key], list[Any], dict[Key, str]]:
    from mpi.agency.tokenizer import tokenize_file
    from mpi.identity.pipeline import demo_secret, parse_all
    dataset, variant = name.split("/")
    truth = read_truth(data / dataset / "truth.csv")
    keys: list[Key] = []
    parsed: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="mpi-bench-errors-") as work:
        for agency in ("orig", "dups"):
            tok = Path(work) / f"{agency}.jsonl"
            tokenize_file(data / dataset / variant / f"{agency}.csv", secret=demo_secret(1),
                          out=tok, date_formats=["%Y%m%d"])
            for p in parse_all((r for _row, r in bc.read_token_records(tok)),
                               server_secret=demo_secret(2)):
                keys.append((agency, p.source_record_id))
                parsed.append(p)
    return keys, parsed, truth


def _synthetic(people: int, scale: float, seed: int,
               blank: Sequence[str]) -> tuple[list[Key], list[Any], dict[Key, str]]:
    from mpi import synth
    from mpi.identity.pipeline import demo_secret, parse_all, tokenize_rows
    with synth.error_profile(scale):
        by_agency, truth_rows = synth.generate(people=people, agencies=3, seed=seed)
    truth = {(a, s): p for a, s, p in truth_rows}
    keys: list[Key] = []
    parsed: list[Any] = []
    for agency, rows in by_agency.items():
        for row in rows:
            for f in blank:
                row[f] = ""
        tokens, _ = tokenize_rows(rows, secret=demo_secret(1))
        for p in parse_all(tokens, server_secret=demo_secret(2)):
            keys.append((agency, p.source_record_id))
            parsed.append(p)
    return keys, parsed, truth


def _label(comp: Any, level: int) -> str:
    if level < 0:
        return "-"
    return comp.levels[level].label if level < len(comp.levels) else "else"


def anatomy(keys: list[Key], parsed: list[Any], truth: dict[Key, str], model: Any,
            rules: Sequence[tuple[str, ...]], top: int,
            names: dict[Key, tuple[str, str]] | None = None) -> dict[str, Any]:
    """Missed true pairs and false links of ``model`` on one data set.

    With the plaintext ``names`` (public data), also how many missed pairs have their given
    and family names swapped with a typo (letter-pair Dice >= 0.6 crosswise, not exact): what
    a cross-field name similarity token would reach."""
    from mpi.agency.schema import TOKEN_COLUMNS
    from mpi.identity.pipeline import model_table
    from mpi.linkage import splink_engine
    from mpi.linkage.scorer import Scorer
    definition = model.definition
    pos = {c: i for i, c in enumerate(TOKEN_COLUMNS)}
    matrix = np.stack([p.tokens for p in parsed])
    cols = definition.columns()
    scorer = Scorer(definition, model.params)
    link_w = model.thresholds.link_weight

    def side(rows: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.int64]]:
        return {c: matrix[rows, pos[c]] for c in cols}

    def hit(pairs: npt.NDArray[np.int64], rule: tuple[str, ...]) -> npt.NDArray[np.bool_]:
        out = np.ones(len(pairs), dtype=bool)
        for c in rule:
            a, b = matrix[pairs[:, 0], pos[c]], matrix[pairs[:, 1], pos[c]]
            out &= (a != 0) & (a == b)
        return out

    by_person: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_person[truth[key]].append(i)
    pairs = np.array([p for rows in by_person.values() for p in itertools.combinations(rows, 2)],
                     dtype=np.int64).reshape(-1, 2)
    weights = scorer.weights(side(pairs[:, 0]), side(pairs[:, 1]))
    levels = scorer.levels(side(pairs[:, 0]), side(pairs[:, 1]))
    blocked = np.zeros(len(pairs), dtype=bool)
    for rule in definition.blocking_rules:
        blocked |= hit(pairs, rule)
    good = weights >= link_w
    patterns: Counter[tuple[str, ...]] = Counter()
    for k in np.flatnonzero(~good).tolist():
        patterns[tuple(f"{c.name}={_label(c, int(levels[j][k]))}"
                       for j, c in enumerate(definition.comparisons)
                       if levels[j][k] >= 0)] += 1
    swapped = None
    if names is not None:
        swapped = 0
        for k in np.flatnonzero(~good).tolist():
            (ga, fa), (gb, fb) = names[keys[pairs[k, 0]]], names[keys[pairs[k, 1]]]
            if (ga, fa) != (fb, gb) and _dice(ga, fb) >= 0.6 and _dice(fa, gb) >= 0.6:
                swapped += 1
    missed = {
        "true_pairs": len(pairs), "below_link_names_swapped_with_typo": swapped,
        "unblocked": int((~blocked).sum()),
        "unblocked_scoring_above_link": int((~blocked & good).sum()),
        "below_link": int((~good).sum()),
        "candidate_rules": {"+".join(r): {"adds": int((hit(pairs, r) & ~blocked).sum()),
                                          "adds_above_link": int((hit(pairs, r) & ~blocked
                                                                  & good).sum())}
                            for r in rules},
        "below_link_patterns": [{"pairs": n, "levels": list(p)}
                                for p, n in patterns.most_common(top)],
    }
    res = splink_engine.predict_and_cluster(
        model_table(parsed, columns=cols), model.params, definition=definition,
        edge_threshold=model.thresholds.link, cluster_threshold=model.thresholds.link)
    left = res.edges.column("unique_id_l").to_numpy().astype(np.int64) - 1
    right = res.edges.column("unique_id_r").to_numpy().astype(np.int64) - 1
    same = np.array([truth[keys[a]] == truth[keys[b]] for a, b in zip(left.tolist(),
                                                                        right.tolist(),
                                                                        strict=True)],
                    dtype=bool)
    lev = scorer.levels(side(left), side(right))
    comp_names = [c.name for c in definition.comparisons]
    by: Counter[tuple[str, str]] = Counter()
    for e in range(len(left)):
        dis = [f for f in IDENTITY if f in comp_names and int(lev[comp_names.index(f)][e])
               == len(definition.comparisons[comp_names.index(f)].levels)]
        by[("true" if same[e] else "false", "+".join(dis) or "(none)")] += 1
    two = {t: sum(n for (s, d), n in by.items() if s == t and d.count("+") >= 1)
           for t in ("true", "false")}
    links = {"linked_pairs": len(left), "false": int((~same).sum()),
             "by_identity_fields_disagreeing": [
                 {"link": s, "else_on": d, "pairs": n} for (s, d), n in by.most_common()],
             "two_or_more_disagreeing": two}
    return {"missed": missed, "links": links}


def main() -> None:
    """Run the anatomy on each requested set and print one JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--febrl", action="append", default=[],
                    help="dataset/variant, e.g. febrl2/no_id_no_zip (default: FEBRL 1 and 2, "
                         "us_shaped and no_id_no_zip, when present)")
    ap.add_argument("--no-febrl", action="store_true", help="only the synthetic population")
    ap.add_argument("--people", type=int, default=0, help="also a synthetic population")
    ap.add_argument("--error-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--blank", default="", help="comma-separated fields emptied (synthetic)")
    ap.add_argument("--rule", action="append", default=[],
                    help="a candidate blocking rule, comma-separated token columns")
    ap.add_argument("--model", default=None, help="model version (default: newest shipped)")
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="directory of model files (default: the shipped linkage_models/)")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    from mpi.linkage.modelfile import default_models_dir, latest_version, load_version
    d = args.models_dir or default_models_dir()
    model = load_version(d, args.model or latest_version(d, name="default"))
    rules = [tuple(r.split(",")) for r in args.rule]
    sets = args.febrl or [f"{ds}/{v}" for ds in ("febrl1", "febrl2")
                          for v in ("us_shaped", "no_id_no_zip")
                          if (args.data / ds / v).is_dir()]
    if args.no_febrl:
        sets = []
    results = []
    for name in sets:
        results.append({"set": name, **anatomy(*_febrl(args.data, name), model, rules,
                                                args.top, _febrl_names(args.data, name))})
        bc.log(f"{name}: {results[-1]['missed']['below_link']} true pairs below link, "
               f"{results[-1]['links']['false']} false links")
    if args.people:
        blank = [f for f in args.blank.split(",") if f]
        name = (f"synthetic {args.people} people x{args.error_scale} seed {args.seed}"
                + (f" blank {','.join(blank)}" if blank else ""))
        results.append({"set": name, **anatomy(
            *_synthetic(args.people, args.error_scale, args.seed, blank), model, rules,
            args.top)})
        bc.log(f"{name}: {results[-1]['missed']['below_link']} true pairs below link, "
               f"{results[-1]['links']['false']} false links")
    bc.emit({"benchmark": "error_anatomy", "model": model.version, "machine": bc.machine_info(),
             "results": results}, args.json_out)


if __name__ == "__main__":
    main()
