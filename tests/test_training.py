"""Training a candidate version on a sample: on this machine, or sampled where the registry
lives on Spark. The candidate is saved with its sidecar and never becomes active."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mpi.config import Settings
from mpi.linkage.modelfile import list_versions, load_version
from mpi.linkage.spark_engine import SparkOptions
from mpi.pipeline import demo_secret, tokenize_rows
from mpi.registry import Registry
from mpi.synth import generate
from mpi.training import sample_rows, train_candidate


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
    again = train_candidate(reg, out_dir=out, fraction=0.8, seed=5)
    assert again == "candidate-v002"
    # Same sample and seed: the same parameters up to float summation order (seeded training).
    first, second = mv.params, load_version(out, again).params
    for a, b in zip(first.comparisons, second.comparisons, strict=True):
        assert a.weights == pytest.approx(b.weights, rel=1e-6, abs=1e-6)
    reg.close()


@pytest.mark.slow
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
