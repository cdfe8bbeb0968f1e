"""Benchmark: the re-identification attacker of issue #16 against rows extracts the product builds.

The attacker is tests/support/reid.py (the one tests/extract/test_reid_attack.py runs): it holds
every agency's plaintext attributes, links each released row back to the plaintext records of
its agency compatible with ALL released columns at any generalization level, and each released
person through all their rows. Reported per request: rows released, correct unique row
re-identifications against the bound rows / k, and the same for persons; build and attack time.

  * ``--people N`` (default 20,000): a fresh registry of N synthetic people at three agencies
    (mpi/synth.py, seed --seed) under --work; the five requests of the attacker suite (the
    issue's, a mislabelled dictionary, date shifting, three agencies, entropy l = 3), plus the
    issue's request without disclosure control (k = 1, l = 1, no suppression) to show the
    attacker is a real one.
  * ``--registry DIR``: a COPY of the 1M benchmark registry (never the original
    /tmp/mpi-bench-1m: the script refuses it). Its records carry no attributes, so the script
    first gives them the 10 deterministic synthetic attributes of scripts/bench_extract.py (one
    UPDATE; those values are the plaintext the attacker holds) and attacks bench_extract's rows
    request (10 attributes, three agencies, k = 5), with and without date shifting, and the
    same without disclosure control (k = 1, l = 1, no suppression). Person figures there count only rows with
    at most --person-cap candidates (a lower bound on the attacker's person linkage).

    python scripts/bench_reid.py --people 20000 --work /tmp/reid-20k --out /tmp/reid-20k/r.json
    cp -r /tmp/mpi-bench-1m /tmp/reid-1m
    python scripts/bench_reid.py --registry /tmp/reid-1m --out /tmp/reid-1m/r.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import bench_common as bc  # noqa: E402

ORIGINAL_1M = Path("/tmp/mpi-bench-1m")


def _row(name: str, spec: Any, built: Any, result: Any, build_s: float, attack_s: float
         ) -> dict[str, Any]:
    rep = built.disclosure_report["k_anonymity"]
    return {"request": name, "k": spec.k, "rows_in": rep["records_in"], "rows": result.rows,
            "unique_rows": result.unique_rows, "correct_rows": result.correct_rows,
            "bound_rows_over_k": round(result.rows / spec.k, 1),
            "persons": result.persons, "unique_persons": result.unique_persons,
            "correct_persons": result.correct_persons,
            "bound_persons_over_k": round(result.persons / spec.k, 1),
            "within_bound": result.correct_rows <= result.rows / spec.k
            and result.correct_persons <= result.persons / spec.k,
            "prosecutor_max": rep["risk"]["prosecutor_max"],
            "build_s": round(build_s, 2), "attack_s": round(attack_s, 2)}


def synthetic(people: int, seed: int, work: Path) -> list[dict[str, Any]]:
    """The attacker suite's requests over a fresh registry of ``people`` synthetic people."""
    from mpi.extract.build import ExtractSpec, build_extract
    from tests.support import reid
    if (work / "data").exists():
        raise SystemExit(f"{work / 'data'} exists: give a fresh --work directory")
    work.mkdir(parents=True, exist_ok=True)
    bc.log(f"registry of {people} synthetic people at three agencies (seed {seed})")
    w = reid.synthetic_world(work, people=people, seed=seed)
    truth = reid.record_persons(w.reg)
    out = []
    names = [*reid.REQUESTS, "issue_without_control"]
    for name in names:
        spec = reid.request_spec(name.replace("_without_control", ""))
        if name.endswith("_without_control"):
            spec = ExtractSpec(**{**spec.__dict__, "k": 1, "l": 1, "max_suppression": 0.0})
        t = time.perf_counter()
        built = build_extract(w.reg, spec, project_secret=reid.SECRET, now=reid.NOW)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        result = reid.attack(w.plain, truth, built, spec, secret=reid.SECRET, now=reid.NOW)
        out.append(_row(name, spec, built, result, build_s, time.perf_counter() - t))
        bc.log(json.dumps(out[-1]))
    w.reg.close()
    return out


def registry(data_dir: Path, person_cap: int, only: set[str]) -> list[dict[str, Any]]:
    """bench_extract's rows request over a copy of the 1M registry, attacked."""
    import bench_extract as bx

    from mpi.extract.build import build_extract
    from tests.support import reid
    if data_dir.resolve() == ORIGINAL_1M.resolve():
        raise SystemExit(f"refusing to write to {ORIGINAL_1M}: copy it first (cp -r)")
    reg = bc.open_registry(data_dir)
    bc.log(f"attributes: {bx.set_attributes(reg)}")
    plain: dict[str, list[dict[str, Any]]] = {}
    for agency, sid, attrs in reg.store.cursor().execute(
            "SELECT agency, source_record_id, attributes FROM source_record").fetchall():
        plain.setdefault(agency, []).append({"source_record_id": sid, **json.loads(attrs or "{}")})
    truth = reid.record_persons(reg)
    out = []
    base = bx.specs()["rows"]
    plain_spec = dataclasses.replace(base, date_shift=False)
    requests = {"bench_rows_date_shift": base, "bench_rows_no_shift": plain_spec,
                "bench_rows_without_control": dataclasses.replace(
                    plain_spec, k=1, l=1, max_suppression=0.0)}
    for name, spec in requests.items():
        if only and name not in only:
            continue
        t = time.perf_counter()
        built = build_extract(reg, spec, project_secret=bx.SECRET, now=bx.NOW)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        result = reid.attack(plain, truth, built, spec, secret=bx.SECRET, now=bx.NOW,
                             person_cap=person_cap)
        out.append(_row(name, spec, built, result, build_s, time.perf_counter() - t))
        bc.log(json.dumps(out[-1]))
    reg.close()
    return out


def main() -> None:
    """Run the attacker at one scale and print (and save) the JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--work", type=Path, default=Path("/tmp/reid-20k"))
    ap.add_argument("--registry", type=Path, help="a COPY of the 1M benchmark registry")
    ap.add_argument("--person-cap", type=int, default=1000)
    ap.add_argument("--only", nargs="*", help="with --registry: run only these requests")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result: dict[str, Any] = {"benchmark": "reid_attack", "machine": bc.machine_info(),
                              "source": bc.source_state()}
    if args.registry:
        result["registry"] = str(args.registry)
        result["person_cap"] = args.person_cap
        result["requests"] = registry(args.registry, args.person_cap, set(args.only or []))
    else:
        result["people"], result["seed"] = args.people, args.seed
        result["requests"] = synthetic(args.people, args.seed, args.work)
    result["all_within_bound"] = all(r["within_bound"] for r in result["requests"]
                                     if not r["request"].endswith("_without_control"))
    bc.emit_after_run(result, args.out)


if __name__ == "__main__":
    main()
