"""Training a candidate version on a sample: on this machine, or sampled where the registry
lives on Spark. The candidate is saved with its sidecar and never becomes active."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mpi.config import Settings
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.linkage.modelfile import list_versions, load_version
from mpi.linkage.spark_engine import SparkOptions
from mpi.steward.training import sample_rows, train_candidate
from mpi.synth import generate
from tests.support.paths import PUBLIC_LINKAGE

pytestmark = pytest.mark.integration  # real Splink training (EM) on synthetic and FEBRL registries


def _registry(tmp_path: Path, people: int = 1500) -> Registry:
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    by_agency, _ = generate(people=people, agencies=3, seed=21)
    for agency, rows in by_agency.items():
        records, _ = tokenize_rows(rows, secret=demo_secret(1))
        reg.enrol_records(agency, list(enumerate(records, start=1)))
    return reg


def test_sample_is_seeded_and_sized() -> None:
    import pyarrow as pa
    table = pa.table({"unique_id": list(range(10_000))})
    a = sample_rows(table, fraction=0.2, seed=3)
    assert a.equals(sample_rows(table, fraction=0.2, seed=3))
    assert 1_700 < a.num_rows < 2_300
    assert sample_rows(table, fraction=1.0, seed=3).num_rows == 10_000


def test_train_candidate_saves_a_loadable_version_and_changes_nothing(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    before_keys = reg.export_keys()
    active = reg.model.version
    out = tmp_path / "models"
    version = train_candidate(reg, out_dir=out, fraction=0.8, seed=5)
    assert list_versions(out) == [version] and version == "candidate-v001"
    mv = load_version(out, version)
    meta = mv.meta
    assert meta["training_data"]["sample_fraction"] == 0.8
    assert meta["training_data"]["fingerprint"].startswith("sha256:")
    assert meta["parent_version"] == active and meta["training"]["seed"] == 5
    assert reg.model.version == active and reg.export_keys().equals(before_keys)
    # Decision 90: swapped names (a level of both name comparisons) counted once, never more
    # than both names exact.
    assert "counted_once" in meta
    given, family = (next(c for c in mv.params.comparisons if c.name == n).weights
                     for n in ("given_name", "family_name"))
    assert given[2] + family[2] <= given[0] + family[0]
    again = train_candidate(reg, out_dir=out, fraction=0.8, seed=5)
    assert again == "candidate-v002"
    # Same sample and seed: the same parameters up to float summation order (seeded training).
    first, second = mv.params, load_version(out, again).params
    for a, b in zip(first.comparisons, second.comparisons, strict=True):
        assert a.weights == pytest.approx(b.weights, rel=1e-6, abs=1e-6)
    reg.close()


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("pyspark") is None, reason="pyspark not installed")
def test_train_on_a_sample_taken_on_spark(tmp_path: Path) -> None:
    reg = _registry(tmp_path, people=1500)
    snapshot = tmp_path / "snapshot.parquet"
    pq.write_table(reg.model_table(), snapshot)
    opts = SparkOptions(master="local[2]", conf=(("spark.sql.shuffle.partitions", "4"),
                                                 ("spark.ui.enabled", "false")),
                        work_dir=tmp_path / "work")
    version = train_candidate(reg, out_dir=tmp_path / "models", fraction=0.95, seed=7,
                              spark_snapshot=str(snapshot), spark=opts)
    meta = load_version(tmp_path / "models", version).meta
    assert meta["training_data"]["source"].startswith("spark snapshot")
    assert 0.85 * reg.model_table().num_rows < meta["training_data"]["records"]
    reg.close()


def _keys(reg: Registry) -> dict[tuple[str, str], str]:
    keys = reg.export_keys()
    return dict(zip(zip(keys.column("agency").to_pylist(),
                        keys.column("source_record_id").to_pylist(), strict=True),
                    keys.column("person_key").to_pylist(), strict=True))


def test_trains_and_promotes_on_a_registry_without_postal_code_or_national_id(
        tmp_path: Path) -> None:
    """EM rules on fields nobody has are skipped (and said), the others train, the parent
    fills what no run observed, and the candidate promotes without losing accuracy."""
    from mpi.linkage.catalog import candidates_dir
    from mpi.steward.evaluation import evaluate
    from mpi.steward.modelops import promote_model
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    by_agency, truth_rows = generate(people=800, agencies=3, seed=33)
    for agency, rows in by_agency.items():
        blanked = [{**r, "postal_code": "", "national_id": ""} for r in rows]
        records, _ = tokenize_rows(blanked, secret=demo_secret(1))
        reg.enrol_records(agency, list(enumerate(records, start=1)))
    assert reg.model_table().column("postal_code_zip3").null_count == reg.model_table().num_rows
    truth = {(a, r): p for a, r, p in truth_rows}
    reg.link()
    before = evaluate(truth, _keys(reg)).pairwise.f1
    said: list[str] = []
    version = train_candidate(reg, out_dir=candidates_dir(reg.settings), progress=said.append)
    assert ("skipped EM on block_on('date_of_birth', 'postal_code_zip3'): no record pairs "
            "(no record has postal_code_zip3)") in said, said
    assert "skipped EM on block_on('national_id'): no record pairs (no record has national_id)" \
        in said, said
    meta = load_version(candidates_dir(reg.settings), version).meta
    used = meta["training"]["em_blocking_rules"]
    assert used and ["national_id"] not in used and len(meta["training"]["skipped"]) == 2
    assert meta["training"]["prior"]["source"] == "deterministic rules"
    assert any(lvl.startswith("national_id/") for lvl in meta["inherited_levels"])
    promote_model(reg, version, principal="t")
    assert reg.model.version == version
    after = evaluate(truth, _keys(reg)).pairwise.f1
    assert after >= before, (before, after)
    reg.close()


def test_no_usable_rule_keeps_the_parent_prior_and_trains_u_only(tmp_path: Path) -> None:
    """With no field a blocking rule needs, training keeps the parent's prior, runs no EM and
    says so; the parent's m values then make a complete, usable model."""
    import pyarrow as pa

    from mpi.linkage import splink_engine
    from mpi.linkage.params import params_from_splink
    from mpi.steward.training import inherit_untrained_levels
    reg = _registry(tmp_path, people=300)
    table = reg.model_table()
    keep = ("unique_id", "sex", "city")  # no blocking rule uses these
    bare = pa.table({c: table.column(c) if c in keep else pa.nulls(table.num_rows,
                                                                    table.schema.field(c).type)
                     for c in table.column_names})
    said: list[str] = []
    report = splink_engine.TrainingReport()
    parent = reg.model.params.probability_two_random_records_match
    model = splink_engine.train(bare, definition=reg.model_definition, progress=said.append,
                                fallback_prior=parent, report=report)
    assert report.em_rules == [] and report.prior_source == "parent version"
    assert model["probability_two_random_records_match"] == pytest.approx(parent)
    assert any("u-only training" in m for m in said), said
    assert any("keeping the parent's prior" in m for m in said), said
    inherit_untrained_levels(model, reg.model.model)
    params_from_splink(model, reg.model_definition)  # complete: nothing refused
    reg.close()


def test_an_empty_registry_is_refused_clearly(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mpi.errors import InvalidInput
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    with pytest.raises(InvalidInput, match="nothing to train on"):
        train_candidate(reg, out_dir=tmp_path / "models")
    reg.close()
    proc = subprocess.run([sys.executable, "-c", "from mpi.cli.main import main; main()", "model",
                           "train", "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "nothing to train on" in proc.stderr and "Traceback" not in proc.stderr


_FEBRL = PUBLIC_LINKAGE / "febrl1"


@pytest.mark.skipif(not (_FEBRL / "no_id_no_zip" / "orig.csv").exists(),
                    reason="public FEBRL data not present")
def test_public_febrl_without_ids_or_zips_trains_promotes_and_gains(tmp_path: Path) -> None:
    """FEBRL 1 (public, not generated here) with national id and postal code removed."""
    import csv

    from mpi.agency.tokenfile import iter_chunks
    from mpi.agency.tokenizer import tokenize_file
    from mpi.linkage.catalog import candidates_dir
    from mpi.steward.evaluation import evaluate
    from mpi.steward.modelops import promote_model
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    for agency in ("orig", "dups"):
        out = tmp_path / f"{agency}.jsonl"
        tokenize_file(_FEBRL / "no_id_no_zip" / f"{agency}.csv", secret=demo_secret(1), out=out,
                      date_formats=["%Y%m%d"])
        for rows, _problems in iter_chunks(out, chunk=100_000):
            reg.enrol_records(agency, rows)
    with (_FEBRL / "truth.csv").open(newline="", encoding="utf-8") as fh:
        truth = {(r["agency"], r["source_record_id"]): r["person_id"]
                 for r in csv.DictReader(fh)}
    reg.link()
    before = evaluate(truth, _keys(reg)).pairwise.f1
    said: list[str] = []
    version = train_candidate(reg, out_dir=candidates_dir(reg.settings), progress=said.append)
    assert any(m.startswith("skipped EM on block_on('date_of_birth', 'postal_code_zip3')")
               for m in said), said
    promote_model(reg, version, principal="t")
    after = evaluate(truth, _keys(reg)).pairwise.f1
    assert after >= before, (before, after)
    reg.close()


def test_cli_reports_a_splink_failure_in_one_line(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Any other failure inside Splink ends ``mpi model train`` with one line, exit 1."""
    from splink.internals.exceptions import SplinkException
    from splink.internals.linker_components.training import LinkerTraining
    from typer.testing import CliRunner

    from mpi.cli.main import app
    _registry(tmp_path, people=200).close()

    def broken(*_a: object, **_k: object) -> None:
        try:
            raise RuntimeError("Binder Error: no such column")
        except RuntimeError as cause:
            raise SplinkException("Error executing the following sql for table `x`:\n"
                                  "SELECT ...") from cause

    monkeypatch.setattr(LinkerTraining, "estimate_u_using_random_sampling", broken)
    r = CliRunner().invoke(app, ["model", "train", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 1, r.output
    assert "training failed (SplinkException)" in r.output and "Binder Error" in r.output
    assert "Traceback" not in r.output and "SELECT" not in r.output


def test_untrained_levels_take_the_parent_level_of_the_same_label_else_weight_zero() -> None:
    """A parent of another definition (a level inserted) lends each level only its own
    label's values; a level the parent lacks gets m = u (weight 0), never a neighbour's."""
    from mpi.steward.training import inherit_untrained_levels, neutralize_untrained_levels

    def lv(label: str, m: float | None = None, u: float | None = None) -> dict[str, object]:
        d: dict[str, object] = {"label_for_charts": label}
        if m is not None:
            d["m_probability"] = m
        if u is not None:
            d["u_probability"] = u
        return d

    parent = {"comparisons": [{"output_column_name": "c", "comparison_levels": [
        {"is_null_level": True}, lv("exact", 0.9, 0.01), lv("phonetic", 0.08, 0.05),
        lv("All other comparisons", 0.02, 0.94)]}]}
    model = {"comparisons": [{"output_column_name": "c", "comparison_levels": [
        {"is_null_level": True}, lv("exact", 0.8, 0.02), lv("swapped", None, 0.001),
        lv("phonetic", None, 0.04), lv("All other comparisons", 0.1, 0.93)]}]}
    assert inherit_untrained_levels(model, parent) == ["c/phonetic"]
    levels = model["comparisons"][0]["comparison_levels"]
    assert levels[3]["m_probability"] == 0.08 and levels[3]["u_probability"] == 0.04
    assert "m_probability" not in levels[2]
    assert neutralize_untrained_levels(model) == ["c/swapped"]
    assert levels[2]["m_probability"] == levels[2]["u_probability"] == 0.001
