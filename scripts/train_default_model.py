"""Reproduce linkage_models/default-vNNN.json: train on a mix of synthetic error profiles.

The shipped model is what a registry scores with before it is retrained on its own data, so it
must not fit one generator's error rates. It is trained on one table mixing six seeded
`mpi synth` populations (distinct people): errors at 0.5x, 1x and 2.5x the generator's rates
(and, per 1x, given/family names swapped in 1% of records and SSN, date of birth and given
name each replaced by another value in 2%),
one without SSN and ZIP, one with name, date of birth, city and email only, and one with
ZIP and city but no SSN, street address or phone. Its thresholds
are chosen from the trained model's own estimated precision and recall
(mpi/linkage/thresholds.py), after the evidence of a level shared by two comparisons is
counted once (mpi/linkage/shared_levels.py, Decision 90) and the levels whose weights came out
of order are pooled (mpi/linkage/monotone.py, Decision 89). The accuracy recorded in the
sidecar is measured on the training mix and is no evidence of generalisation:
scripts/bench_public.py measures that on public data.

Usage: python scripts/train_default_model.py [--scale 1.0] [--seed 7] [--out linkage_models]
Writes the next version of the `default` model with its .meta.json sidecar (immutable files).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import splink

from mpi import synth
from mpi.agency.schema import SCHEMA_VERSION
from mpi.identity.pipeline import demo_secret, model_table, parse_all, tokenize_rows
from mpi.linkage import splink_engine as se
from mpi.linkage.definition import CURRENT, DEFAULT_DEFINITION
from mpi.linkage.modelfile import fingerprint_bytes, save_version
from mpi.linkage.monotone import enforce_monotone
from mpi.linkage.params import params_from_splink
from mpi.linkage.shared_levels import count_once
from mpi.linkage.thresholds import choose_thresholds
from mpi.steward.evaluation import evaluate


@dataclass(frozen=True)
class Profile:
    """One synthetic population of the training mix."""

    name: str
    people: int
    error_scale: float
    blank: tuple[str, ...] = ()


PROFILES = (
    Profile("medium", 12_000, 1.0),
    Profile("low", 6_000, 0.5),
    Profile("high", 6_000, 2.5),
    Profile("no-ssn-no-zip", 6_000, 1.0, ("national_id", "postal_code")),
    Profile("name-dob-city-email", 6_000, 1.5,
            ("national_id", "postal_code", "address_line", "phone", "middle_name", "sex")),
    Profile("no-ssn-no-address", 4_000, 1.0, ("national_id", "address_line", "phone")),
)


def mix(*, scale: float, seed: int) -> tuple[list[Any], list[tuple[str, str]], dict[tuple[str, str], str]]:
    """Parsed records, their (agency, id) keys and the truth over every profile of the mix."""
    secret, server = demo_secret(seed), demo_secret(seed + 1)
    parsed: list[Any] = []
    keys: list[tuple[str, str]] = []
    truth: dict[tuple[str, str], str] = {}
    for i, prof in enumerate(PROFILES):
        with synth.error_profile(prof.error_scale, name_swap=0.01 * prof.error_scale,
                                 other=0.02 * prof.error_scale):
            by_agency, truth_rows = synth.generate(people=max(50, int(prof.people * scale)),
                                                   agencies=3, seed=seed + 100 * i)
        for agency, sid, pid in truth_rows:
            truth[(f"{prof.name}/{agency}", sid)] = f"{prof.name}/{pid}"
        for agency, rows in by_agency.items():
            for row in rows:
                for f in prof.blank:
                    row[f] = ""
            tokens, _ = tokenize_rows(rows, secret=secret)
            for p in parse_all(tokens, server_secret=server):
                parsed.append(p)
                keys.append((f"{prof.name}/{agency}", p.source_record_id))
    return parsed, keys, truth


def main() -> None:
    """Train, choose thresholds, evaluate and save a new default model version."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every profile's size")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("linkage_models"))
    ap.add_argument("--name", default="default")
    ap.add_argument("--dry-run", action="store_true", help="train and evaluate, save nothing")
    args = ap.parse_args()
    parsed, keys, truth = mix(scale=args.scale, seed=args.seed)
    table = model_table(parsed, columns=DEFAULT_DEFINITION.columns())
    fp = fingerprint_bytes(b"".join(p.tokens.tobytes() for p in parsed))
    t0 = time.perf_counter()
    model = se.train(table, config=se.TrainingConfig(seed=args.seed), progress=print)
    train_s = time.perf_counter() - t0
    once = count_once(model, DEFAULT_DEFINITION)  # Decision 90: before pooling
    print(f"shared levels counted once: {once or 'none'}")
    pooled = enforce_monotone(model, DEFAULT_DEFINITION)  # Decision 89
    print(f"pooled out-of-order levels: {pooled or 'none'}")
    params = params_from_splink(model, DEFAULT_DEFINITION)
    pairs = se.predict_probabilities(table, params, definition=DEFAULT_DEFINITION)
    th, estimate = choose_thresholds(pairs)
    print(f"thresholds {th}, estimated {estimate}")
    res = se.predict_and_cluster(table, params, edge_threshold=th.review,
                                 cluster_threshold=th.link)
    seq = res.clusters.column("unique_id").to_numpy()
    cl = res.clusters.column("cluster_id").to_numpy()
    predicted = {keys[int(s) - 1]: str(c) for s, c in zip(seq.tolist(), cl.tolist(), strict=True)}
    ev = evaluate(truth, predicted)
    print(json.dumps({"pairwise": vars(ev.pairwise), "cluster": vars(ev.cluster)}, indent=2))
    for prof in PROFILES:  # per profile: where the mix is weak
        sub = {k: v for k, v in truth.items() if k[0].startswith(prof.name + "/")}
        pe = evaluate(sub, predicted)
        print(f"{prof.name:22s} pairwise P {pe.pairwise.precision:.4f} R {pe.pairwise.recall:.4f}"
              f" F1 {pe.pairwise.f1:.4f}; cluster F1 {pe.cluster.f1:.4f}")
    if args.dry_run:
        return
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "definition": CURRENT,
        "splink_version": splink.__version__,
        "training_data": {"fingerprint": fp, "records": len(parsed),
                          "source": "mpi synth mix: " + ", ".join(
                              f"{p.name} ({int(p.people * args.scale)} people, errors x"
                              f"{p.error_scale}{', no ' + '/'.join(p.blank) if p.blank else ''})"
                              for p in PROFILES) + f"; seed {args.seed}", "labels": 0},
        "training": {"seed": args.seed, "seconds": round(train_s, 1),
                     "u_max_pairs": se.TrainingConfig().u_max_pairs,
                     "em_max_pairs": se.TrainingConfig().em_max_pairs,
                     "em_blocking_rules": [list(r) for r in DEFAULT_DEFINITION.training_blocking_rules],
                     "counted_once": once, "pooled_levels": pooled},
        "thresholds": {"link": th.link, "review": th.review},
        "threshold_estimate": estimate,
        "accuracy": {"dataset": "training mix (seeded synth; not evidence of generalisation)",
                     "pairwise": vars(ev.pairwise), "cluster": vars(ev.cluster)},
        "python": platform.python_version(),
    }
    version = save_version(args.out, name=args.name, model=model, meta=meta)
    print(json.dumps({"version": version, **meta["accuracy"]}, indent=2, default=str))


if __name__ == "__main__":
    main()
