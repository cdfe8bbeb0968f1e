"""Benchmark: building a research extract over a 1M-record registry (issue #5: <= 60 s).

On a registry directory you own (e.g. ``cp -r /tmp/mpi-bench-1m /tmp/mpi-bench-1m-extract``;
the script writes to it):
  * first gives every record 10 synthetic attributes with ONE SQL ``UPDATE`` (the prebuilt
    registry's records carry none): person-level sex, race_ethnicity, birth_year, age and zip
    derived from a hash of the person key, record-level program, enrolled_on, exited_on,
    household_size and service_code from a hash of the record number. Skipped when already done.
  * times ``build_extract`` (rows kind, 10 attributes over three agencies, k = 5, date shifting,
    linkage quality by two demographics; since issue #16 every released column is a
    quasi-identifier and the build runs the full risk search: hierarchies, global + local
    recoding, l = 2 on the sensitive programs, person signatures) and an aggregate extract
    (3 dimensions), --runs each;
    reports medians and the time of each phase from the build's progress messages
  * baseline in the same run: the same rows read by the plain extract SELECT (cohort, consent,
    json_extract of the same attributes) and written to Parquet with no disclosure control
    and no linkage scoring; the ratio is build / baseline
The registry's open time (loading the in-memory index) is reported but is not part of a build:
the service builds extracts on its already-open registry. When the directory holds the
generator's ``bench/truth.csv`` (``bench_build_registry.py``), the model-based false- and
missed-match rates over every active record are set against the same rates from the truth,
raw and calibrated by labels that the script plants first (a seeded random sample of --labels-
per-bin blocked candidate pairs per model-probability bin, judged by the truth; a registry
that already has labels keeps its own).

    python scripts/bench_extract.py --data-dir /tmp/mpi-bench-1m-extract --runs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TARGET_S = 60.0
SECRET = bytes(range(32))
NOW = dt.datetime(2026, 3, 1)

# One UPDATE; values are deterministic functions of the person key / record number.
SET_ATTRIBUTES_SQL = """
UPDATE source_record SET attributes = json_object(
  'age', (hash(person_key || 'age') % 100)::INTEGER,
  'birth_year', 1925 + (hash(person_key || 'by') % 100)::INTEGER,
  'enrolled_on', strftime(DATE '2008-01-01'
                          + (hash(record_seq::VARCHAR || 'en') % 6000)::INTEGER, '%Y-%m-%d'),
  'exited_on', strftime(DATE '2008-01-01' + (hash(record_seq::VARCHAR || 'en') % 6000)::INTEGER
                        + (hash(record_seq::VARCHAR || 'ex') % 900)::INTEGER, '%Y-%m-%d'),
  'household_size', 1 + (hash(record_seq::VARCHAR || 'hh') % 8)::INTEGER,
  'program', ['MEDICAID','SNAP','WIC','TANF','CHIP','LIHEAP','HOUSING','CHILDCARE','JOBTRAIN',
              'BEHAVHLTH'][1 + (hash(record_seq::VARCHAR || 'pg') % 10)::INTEGER],
  'race_ethnicity', ['white','white','white','hispanic','black','asian','native',
                     'other'][1 + (hash(person_key || 're') % 8)::INTEGER],
  'service_code', 'S' || lpad(((hash(record_seq::VARCHAR || 'sc') % 40)::INTEGER)::VARCHAR, 3, '0'),
  'sex', ['F','M'][1 + (hash(person_key || 'sx') % 2)::INTEGER],
  'zip', lpad((10000 + (hash(person_key || 'zp') % 89999)::INTEGER)::VARCHAR, 5, '0')
)::VARCHAR
"""


def set_attributes(reg: Any) -> dict[str, Any]:
    """Give every record the 10 synthetic attributes (one UPDATE), unless already present."""
    cur = reg.store.cursor()
    done = cur.execute("SELECT count(*) FROM source_record WHERE attributes LIKE '%service_code%'"
                       ).fetchall()[0][0]
    total = cur.execute("SELECT count(*) FROM source_record").fetchall()[0][0]
    if done == total:
        return {"updated": False, "records": total}
    t = time.perf_counter()
    with reg.store.transaction() as tx:
        tx.execute(SET_ATTRIBUTES_SQL)
    reg.store.checkpoint()
    return {"updated": True, "records": total, "seconds": time.perf_counter() - t}


def specs() -> dict[str, Any]:
    """The benchmark's extract specifications."""
    from mpi.extract.build import AttributeSpec, CohortSpec, ExtractSpec

    def attr(agency: str, name: str, type: str, klass: str, gen: str) -> AttributeSpec:
        return AttributeSpec(agency=agency, dataset="services", name=name, type=type,
                             klass=klass, description=name, generalization=gen)

    a, b, c = "agency_a", "agency_b", "agency_c"
    attributes = (
        attr(a, "sex", "string", "quasi_identifier", "none"),
        attr(a, "race_ethnicity", "string", "quasi_identifier", "none"),
        attr(a, "age", "integer", "quasi_identifier", "top_code_90"),
        attr(a, "zip", "string", "other", "zip3"),
        attr(a, "enrolled_on", "date", "other", "month"),
        attr(a, "program", "string", "sensitive", "none"),
        attr(b, "program", "string", "sensitive", "none"),
        attr(b, "enrolled_on", "date", "other", "date_shift"),
        attr(c, "program", "string", "sensitive", "none"),
        attr(c, "household_size", "integer", "other", "none"),
    )
    rows = ExtractSpec(extract_id="bench-rows", title="bench rows", kind="rows",
                       attributes=attributes, cohort=CohortSpec(agency=a), k=5, date_shift=True,
                       demographics=(f"{a}.race_ethnicity", f"{a}.sex"))
    agg = ExtractSpec(extract_id="bench-aggregate", title="bench aggregate", kind="aggregate",
                      attributes=attributes, cohort=CohortSpec(agency=a), threshold=11,
                      dimensions=(f"{a}.race_ethnicity", f"{a}.program", f"{b}.program"),
                      demographics=(f"{a}.race_ethnicity",))
    # The same with ZIP3 classed quasi_identifier (since issue #16 it is one either way).
    strict = dataclasses.replace(rows, extract_id="bench-rows-zip3", attributes=tuple(
        dataclasses.replace(x, klass="quasi_identifier") if x.name == "zip" else x
        for x in attributes))
    return {"rows": rows, "rows_zip3_qi": strict, "aggregate": agg}


def baseline(reg: Any, spec: Any) -> tuple[float, int]:
    """The same rows by the plain extract SELECT, written to Parquet: (seconds, rows)."""
    import pyarrow.parquet as pq

    from mpi.store import extracts_read as xread
    t = time.perf_counter()
    cohort = xread.CohortFilter(agency=spec.cohort.agency)
    agencies = sorted({x.agency for x in spec.attributes})
    table = xread.extract_rows(reg.store.cursor(), cohort=cohort, agencies=agencies,
                               columns=[(x.agency, f"$.{x.name}") for x in spec.attributes])
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return time.perf_counter() - t, table.num_rows


def timed_build(reg: Any, spec: Any) -> tuple[float, dict[str, float], Any]:
    """One build: total seconds, seconds per phase (from progress messages), the result."""
    from mpi.extract.build import build_extract
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    out = build_extract(reg, spec, project_secret=SECRET, now=NOW,
                        progress=lambda m: marks.append((m, time.perf_counter())))
    end = time.perf_counter()
    phases = {m: (marks[i + 1][1] if i + 1 < len(marks) else end) - at
              for i, (m, at) in enumerate(marks)}
    return end - t0, phases, out


TRUTH_SQL = """
WITH t AS (SELECT * FROM read_csv(?, header = true, all_varchar = true)),
r AS (SELECT s.record_seq, s.person_key, t.person_id FROM source_record s
      JOIN t ON t.agency = s.agency AND t.source_record_id = s.source_record_id
      WHERE s.status = 'active'),
k AS (SELECT person_key, count(*) AS n FROM r GROUP BY person_key),
kt AS (SELECT person_key, person_id, count(*) AS m FROM r GROUP BY person_key, person_id),
tk AS (SELECT person_id, count(DISTINCT person_key) AS keys FROM r GROUP BY person_id)
SELECT r.record_seq, k.n > 1 AS linked, k.n > 1 AND kt.m = 1 AS false_link, tk.keys > 1 AS missed
FROM r JOIN k USING (person_key) JOIN kt USING (person_key, person_id) JOIN tk USING (person_id)
ORDER BY r.record_seq
"""


TRUTH_PERSON_SQL = """
SELECT s.record_seq, t.person_id FROM source_record s
JOIN (SELECT * FROM read_csv(?, header = true, all_varchar = true)) t
  ON t.agency = s.agency AND t.source_record_id = s.source_record_id
WHERE s.status = 'active' ORDER BY s.record_seq
"""


def plant_labels(reg: Any, truth: Path, *, per_bin: int = 250, seed: int = 7) -> dict[str, Any]:
    """Label a seeded random sample of blocked candidate pairs per model-probability bin with
    the synthetic truth (a steward's random audit), unless the registry has labels already."""
    import numpy as np

    from mpi.extract import quality
    from mpi.store import labels as lstore
    cur = reg.store.cursor()
    existing = cur.execute("SELECT count(*) FROM label").fetchall()[0][0]
    if existing:
        return {"planted": 0, "existing": int(existing)}
    t = cur.execute(TRUTH_PERSON_SQL, [str(truth)]).fetchnumpy()
    seqs, persons = np.asarray(t["record_seq"], dtype=np.int64), np.asarray(t["person_id"])
    with reg.store.write_lock:
        idx = reg.index
        left, right = idx.candidates(np.flatnonzero(idx.active[: idx.n]))
        p = quality.pair_probabilities(idx, reg.scorer, left, right)
        seq_l, seq_r = idx.ident[left], idx.ident[right]
    edges = np.array(quality.CALIBRATION_EDGES)
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(bins == b),
                                        min(per_bin, int((bins == b).sum())), replace=False)
                             for b in range(len(edges) - 1)])
    who = dict(zip(seqs.tolist(), persons.tolist(), strict=True))
    rows = [{"record_seq_a": int(seq_l[i]), "record_seq_b": int(seq_r[i]),
             "is_match": who.get(int(seq_l[i])) == who.get(int(seq_r[i]))}
            for i in chosen.tolist() if int(seq_l[i]) in who and int(seq_r[i]) in who]
    with reg.store.transaction() as tx:
        lstore.insert_labels(tx, rows, principal_id="bench", source="import", now=NOW)
    return {"planted": len(rows), "candidate_pairs": len(p), "per_bin": per_bin,
            "matches": sum(r["is_match"] for r in rows)}


def estimator_check(reg: Any, truth: Path) -> dict[str, Any]:
    """The model's false- and missed-match estimates over every active record against the truth.

    Truth per record: falsely linked = its person key holds other records but none of its own
    true person; missed = its true person's records are under more than one key.
    """
    import numpy as np

    from mpi.extract import quality
    t = time.perf_counter()
    rows_t = reg.store.cursor().execute(TRUTH_SQL, [str(truth)]).fetchnumpy()
    seqs = np.asarray(rows_t["record_seq"], dtype=np.int64)
    from mpi.store.labels import active_labels
    with reg.store.write_lock:
        rows = quality.active_rows(reg.index, seqs)
        pairs = quality.label_pairs(reg.index, reg.scorer, active_labels(reg.store.cursor()))
        cal = quality.calibration(pairs.probability, pairs.is_match)
        ev = quality.record_evidence(reg.index, reg.scorer, rows, cal)
    linked = np.asarray(rows_t["linked"], dtype=bool)
    model_linked = ~np.isnan(ev.link_probability)
    link = ev.link_probability[model_linked]
    return {
        "records": len(seqs), "labels": len(pairs.is_match), "seconds": time.perf_counter() - t,
        "linked_records_truth_vs_model": [int(linked.sum()), int(model_linked.sum())],
        "false_match_rate": {
            "model": float((1 - link).mean()),
            "calibrated": float((1 - cal.apply(link)).mean()) if cal.available else None,
            "truth": float(np.asarray(rows_t["false_link"], dtype=bool)[linked].mean())},
        "missed_match_rate": {
            "model": float(ev.missed_probability.mean()),
            "calibrated": float(ev.missed_calibrated.mean()) if cal.available else None,
            "truth": float(np.asarray(rows_t["missed"], dtype=bool).mean())},
    }


def main() -> None:
    """Run the benchmark and print (and optionally save) the JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, required=True, help="registry directory (written)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", default="rows,rows_zip3_qi,aggregate",
                    help="which extracts to time")
    ap.add_argument("--labels-per-bin", type=int, default=250,
                    help="truth labels planted per probability bin when the registry has none "
                         "(0: none)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    t = time.perf_counter()
    reg = bc.open_registry(args.data_dir)
    open_s = time.perf_counter() - t
    rss_open = bc.rss_mb()
    result: dict[str, Any] = {"benchmark": "extract", "args": {k: str(v) for k, v in
                                                             vars(args).items()},
                              "registry_open_s": open_s, "stats": reg.stats()}
    try:
        bc.log("setting 10 synthetic attributes on every record (one UPDATE)")
        result["set_attributes"] = set_attributes(reg)
        truth = args.data_dir / "bench" / "truth.csv"
        if truth.exists() and args.labels_per_bin:
            bc.log("labelling a random sample of candidate pairs per probability bin (truth)")
            result["labels"] = plant_labels(reg, truth, per_bin=args.labels_per_bin)
        for name, spec in specs().items():
            if name not in args.kinds.split(","):
                continue
            base_times, build_times, phase_runs = [], [], []
            out = None
            for run in range(args.runs):
                bs, n_rows = baseline(reg, spec)
                base_times.append(bs)
                bt, phases, out = timed_build(reg, spec)
                build_times.append(bt)
                phase_runs.append(phases)
                bc.log(f"{name} run {run + 1}: build {bt:.2f} s, baseline {bs:.2f} s")
            assert out is not None
            med = bc.summary(build_times)["median"]
            base = bc.summary(base_times)["median"]
            result[name] = {
                "build_s": bc.summary(build_times), "baseline_s": bc.summary(base_times),
                "ratio_build_to_baseline": med / base, "phases_s_last_run": phase_runs[-1],
                "rows_read": out.disclosure_report["cohort"]["records_read"],
                "baseline_rows": n_rows, "rows_released": out.rows,
                "persons_released": len(out.person_keys),
                "file_bytes": {k: len(v) for k, v in out.files.items()},
                "pairs_scored": out.linkage_quality["pairs_scored"],
                "target_s": TARGET_S, "met": bc.met(med, TARGET_S, higher_is_better=False),
            }
            if name.startswith("rows"):
                lq = out.linkage_quality["overall"]
                result[name]["linkage_quality_overall"] = {
                    "mean_link_probability": lq["mean_link_probability"], **lq["model"],
                    "calibrated": lq["calibrated"]}
                k = out.disclosure_report["k_anonymity"]
                result[name]["k_anonymity"] = {x: k[x] for x in (
                    "records_in", "records_out", "records_suppressed", "records_fully_generalized",
                    "cohort_agency_rows", "quasi_identifiers", "generalized_further", "utility",
                    "risk_before", "risk", "l_diversity", "suppression")}
                result[name]["risk_search"] = {
                    "seconds_last_run": phases.get("disclosure control: risk search", 0.0),
                    **k["search"]}
            else:
                result[name]["aggregate"] = {x: v for x, v in
                                             out.disclosure_report["aggregate"].items()
                                             if isinstance(v, int | str | list)}
        if truth.exists():
            bc.log("checking the estimators against the synthetic truth (all active records)")
            result["estimator_check"] = estimator_check(reg, truth)
    finally:
        reg.close()
    # peak resident memory of the whole process (registry load included), in MiB
    result["memory_mb"] = {"after_open": rss_open,
                           "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    result["machine"] = bc.machine_info()
    bc.emit(result, args.json_out)


if __name__ == "__main__":
    main()
