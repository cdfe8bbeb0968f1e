"""The main job on the embedded default: synthesize, tokenize, ingest, link, evaluate.

Owns: orchestrating the demo through the same public functions the commands use. Must not:
take shortcuts the real path does not (tokens go through files, the registry is a real file).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from mpi.agency.tokenfile import iter_chunks
from mpi.agency.tokenizer import tokenize_file
from mpi.config import Settings
from mpi.identity.registry import Registry
from mpi.secretfile import read_secret, write_secret
from mpi.steward.evaluation import Evaluation, evaluate, read_truth
from mpi.steward.modelops import retrain_advice
from mpi.synth import synthesize


def link_and_evaluate(reg: Registry, truth: dict[tuple[str, str], str], *, step: int,
                      say: Callable[[str], None],
                      show: Callable[[Evaluation], None]) -> Evaluation:
    """Re-link the registry, report what changed, and evaluate its keys against the truth."""
    ls = reg.link()
    say(f"{step}. mpi link: {ls.records} records -> {ls.persons} persons; {ls.merges} merges, "
        f"{ls.splits} splits, {ls.keys_changed} records changed key (model {ls.model_version})")
    ev = evaluate(truth, _keys(reg))
    show(ev)
    advice = retrain_advice(reg, data_dir=str(reg.settings.data_dir))
    if advice:
        say(advice)
    return ev


def _keys(reg: Registry) -> dict[tuple[str, str], str]:
    """(agency, source_record_id) -> person key of every active record."""
    keys = reg.export_keys()
    return dict(zip(zip(keys.column("agency").to_pylist(),
                        keys.column("source_record_id").to_pylist(), strict=True),
                    keys.column("person_key").to_pylist(), strict=True))


def stats_review(reg: Registry) -> int:
    """Open review items, all kinds."""
    return sum(int(v) for v in reg.stats()["review"].values())


def run_demo(settings: Settings, *, people: int, seed: int, say: Callable[[str], None],
             show: Callable[[Evaluation], None]) -> Evaluation:
    """Run the whole pipeline in a fresh data directory and return the evaluation."""
    root = settings.data_dir
    if root.exists():
        shutil.rmtree(root)
    agency_dir = root / "agencies"
    s = synthesize(people=people, agencies=3, seed=seed, out_dir=agency_dir)
    say(f"1. synthesized {s.records} plaintext records for {people} people at 3 agencies "
        f"-> {agency_dir}")
    secret_path = agency_dir / "linkage.secret"
    kid = write_secret(secret_path)
    secret = read_secret(secret_path)
    token_files = {}
    for f in s.files:
        agency = f.stem
        out = agency_dir / f"{agency}.tokens.jsonl"
        summary = tokenize_file(f, secret=secret, out=out,
                                attributes=["race_ethnicity", "birth_year", "program"])
        token_files[agency] = out
        say(f"2. {agency}: tokenized {summary.written} rows agency-side (key id {kid}), "
            f"{summary.rejected} rejected -> {summary.rejects.name if summary.rejects else ''}")
    reg = Registry(settings)
    for agency, path in token_files.items():
        counts: dict[str, int] = {}
        for rows, _problems in iter_chunks(path, chunk=settings.ingest_chunk):
            for k, v in reg.enrol_records(agency, rows).counts().items():
                counts[k] = counts.get(k, 0) + v
        say(f"3. ingested {agency}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    truth = read_truth(s.truth)
    online = evaluate(truth, _keys(reg))
    say(f"   online matching as enrolled: cluster F1 {online.cluster.f1:.4f}, pairwise F1 "
        f"{online.pairwise.f1:.4f} ({stats_review(reg)} items queued for a steward)")
    ev = link_and_evaluate(reg, truth, step=4, say=say, show=show)
    stats = reg.stats()
    say(f"registry {settings.registry_path}: {stats['records']}, persons {stats['persons']}, "
        f"open review items {stats['review']}")
    say("next: `mpi keys export --out keys.csv --data-dir " + str(root) + "`, then "
        "`mpi evaluate --truth " + str(s.truth) + " --keys keys.csv`; steward tools: "
        "`mpi review list --data-dir " + str(root) + "`, `mpi model train --data-dir " + str(root) + "`")
    reg.close()
    return ev
