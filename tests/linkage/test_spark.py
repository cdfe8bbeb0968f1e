"""The Spark re-link gives exactly the DuckDB re-link's result; failures change nothing.

Owns: on a seeded ~20k-record registry, DuckDB and Spark (``local[2]``) give the same edges (same
pairs, |match weight delta| < 1e-9), the same partition and, after reconciliation, the same
person keys (two identical copies of one registry, key minting made deterministic). A Spark job
that fails half-way leaves the registry untouched and no completeness marker; running again
finishes it, and a third run reuses the complete result. Plus the setup errors (no pyspark, no
Java, ``spark.jars.packages``) and the engine-independent post-processing.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from mpi.config import Settings
from mpi.errors import ConfigurationError, Conflict
from mpi.identity import relink
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import LinkSummary, Registry
from mpi.linkage import spark_engine
from mpi.linkage.spark_engine import MARKER, SparkOptions
from mpi.linkage.splink_engine import LinkResult
from mpi.synth import error_profile, generate

pytestmark = pytest.mark.integration  # Spark jobs (local[2]) next to DuckDB

HAS_PYSPARK = importlib.util.find_spec("pyspark") is not None
needs_pyspark = pytest.mark.skipif(not HAS_PYSPARK, reason="pyspark is not installed "
                                   "(pip install 'mpi[spark]'); the Spark tests need it")
SPARK_LOCAL = SparkOptions(master="local[2]", conf=(("spark.sql.shuffle.partitions", "8"),
                                                     ("spark.ui.enabled", "false")))


# ---- helpers -------------------------------------------------------------------------------
def build_registry(data_dir: Path, *, people: int, seed: int, errors: float = 1.0) -> int:
    # at errors > 1 with swapped names and other values, every comparison level (the
    # revision-2 ones included) appears among the edges the two engines must score alike
    with error_profile(errors, name_swap=0.02 if errors > 1 else 0.0,
                       other=0.02 if errors > 1 else 0.0):
        rows, _truth = generate(people=people, agencies=3, seed=seed)
    if errors > 1:  # and some records without a street address (or ZIP): v3's household
        for agency_rows in rows.values():  # levels for agreement with nothing to compare
            for i, r in enumerate(agency_rows):
                r["address_line"] = "" if i % 4 == 0 else r["address_line"]
                r["postal_code"] = "" if i % 12 == 0 else r["postal_code"]
    reg = Registry(Settings(data_dir=data_dir))
    n = 0
    for agency, agency_rows in rows.items():
        records, _rejected = tokenize_rows(agency_rows, secret=demo_secret(1))
        res = reg.enrol_records(agency, list(enumerate(records, start=1)))
        assert not res.problems
        n += len(records)
    reg.close()
    return n


def keys_of(data_dir: Path) -> pa.Table:
    reg = Registry(Settings(data_dir=data_dir))
    try:
        return reg.export_keys()
    finally:
        reg.close()


class Capture:
    """Records every LinkResult passing the shared seam, and mints keys deterministically."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.results: list[LinkResult] = []
        self.counter = itertools.count()
        real = relink.apply_constraints

        def spy(reg: Registry, result: LinkResult, **kwargs: Any) -> LinkResult:
            self.results.append(result)
            return real(reg, result, **kwargs)
        monkeypatch.setattr(relink, "apply_constraints", spy)
        monkeypatch.setattr("mpi.identity.keys.mint_key", lambda: f"pk_test{next(self.counter):015d}")

    def link(self, data_dir: Path, **kwargs: Any) -> tuple[LinkSummary, LinkResult]:
        self.counter = itertools.count()
        reg = Registry(Settings(data_dir=data_dir))
        try:
            summary = relink.link_registry(reg, **kwargs)
        finally:
            reg.close()
        return summary, self.results[-1]


def sorted_edges(edges: pa.Table) -> pa.Table:
    left = edges.column("unique_id_l").to_numpy()
    right = edges.column("unique_id_r").to_numpy()
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    order = np.lexsort((hi, lo))
    return pa.table({"l": lo[order], "r": hi[order],
                     "w": edges.column("match_weight").to_numpy()[order]})


def partition(clusters: pa.Table) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for uid, cid in zip(clusters.column("unique_id").to_pylist(),
                        clusters.column("cluster_id").to_pylist(), strict=True):
        groups.setdefault(cid, set()).add(uid)
    return {frozenset(g) for g in groups.values()}


# ---- the equivalence test ------------------------------------------------------------------
@pytest.mark.integration
@needs_pyspark
def test_spark_and_duckdb_relink_agree_and_a_failed_job_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    n = build_registry(tmp_path / "duck", people=10_000, seed=23, errors=2.0)
    assert n > 19_000
    for copy in ("spark", "resume"):
        shutil.copytree(tmp_path / "duck", tmp_path / copy)
    before = keys_of(tmp_path / "duck")
    cap = Capture(monkeypatch)

    duck_summary, duck = cap.link(tmp_path / "duck", engine="duckdb")
    spark_summary, spark = cap.link(tmp_path / "spark", engine="spark", spark=SPARK_LOCAL)

    # Same edges: same pairs, same weights.
    de, se = sorted_edges(duck.edges), sorted_edges(spark.edges)
    assert de.num_rows > 10_000, "too few edges for a meaningful comparison"
    assert de.column("l").equals(se.column("l")) and de.column("r").equals(se.column("r"))
    delta = np.abs(de.column("w").to_numpy() - se.column("w").to_numpy())
    assert delta.max() < 1e-9, f"largest match-weight difference {delta.max()!r}"
    # Same partition, and (after reconciliation) the same keys on the two copies.
    assert partition(duck.clusters) == partition(spark.clusters)
    assert duck_summary == spark_summary
    assert duck_summary.merges + duck_summary.keys_changed > 0, "the link changed nothing"
    assert keys_of(tmp_path / "duck").equals(keys_of(tmp_path / "spark"))
    assert not keys_of(tmp_path / "spark").equals(before)

    # A Spark job that dies half-way (edges written, clusters not) changes nothing. This part
    # runs on one reused session, as a long-lived driver would.
    real_job = spark_engine._run_job

    def dies_after_edges(spark_session: Any, work_dir: Path, **kw: Any) -> None:
        real_job(spark_session, work_dir, **kw)
        shutil.rmtree(work_dir / spark_engine.CLUSTERS)  # as if lost while writing clusters
        raise RuntimeError("executor lost")
    work = tmp_path / "resume-work"
    session = spark_engine.build_session(SPARK_LOCAL)
    options = SparkOptions(master=SPARK_LOCAL.master, conf=SPARK_LOCAL.conf, work_dir=work,
                           session=session)
    try:
        with monkeypatch.context() as m:
            m.setattr(spark_engine, "_run_job", dies_after_edges)
            with pytest.raises(RuntimeError, match="executor lost"):
                cap.link(tmp_path / "resume", engine="spark", spark=options)
        assert (work / spark_engine.EDGES).is_dir() and not (work / MARKER).exists()
        assert keys_of(tmp_path / "resume").equals(before)
        # ... running again redoes the job and lands on the same keys ...
        resumed, _ = cap.link(tmp_path / "resume", engine="spark", spark=options)
    finally:
        session.stop()
    assert resumed == spark_summary
    assert keys_of(tmp_path / "resume").equals(keys_of(tmp_path / "spark"))
    assert json.loads((work / MARKER).read_text())["clusters"] == n

    def must_not_run(*_a: Any, **_kw: Any) -> None:
        raise AssertionError("Spark ran although a complete result exists")
    # ... and a third run reuses the complete result without Spark, changing nothing.
    messages: list[str] = []
    with monkeypatch.context() as m:
        m.setattr(spark_engine, "_run_job", must_not_run)
        m.setattr(spark_engine, "build_session", must_not_run)
        again, _ = cap.link(tmp_path / "resume", engine="spark",
                            spark=SparkOptions(master=SPARK_LOCAL.master, work_dir=work),
                            progress=messages.append)
    assert again.keys_changed == 0 and again.merges == 0
    assert any("reusing the complete Spark result" in msg for msg in messages)
    print(f"\nspark equivalence test: {n} records, {de.num_rows} edges, "
          f"{time.perf_counter() - started:.0f}s")


# ---- setup errors --------------------------------------------------------------------------
def test_missing_pyspark_is_one_clear_configuration_error(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    build_registry(tmp_path / "d", people=40, seed=3)
    before = keys_of(tmp_path / "d")
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    reg = Registry(Settings(data_dir=tmp_path / "d"))
    try:
        with pytest.raises(ConfigurationError) as info:
            relink.link_registry(reg, engine="spark")
    finally:
        reg.close()
    assert "pip install 'mpi[spark]'" in info.value.message
    assert "Java 17" in info.value.message
    assert keys_of(tmp_path / "d").equals(before)


@needs_pyspark
def test_missing_java_fails_the_cli_with_install_instructions(tmp_path: Path) -> None:
    build_registry(tmp_path / "d", people=40, seed=3)
    before = keys_of(tmp_path / "d")
    env = {"PATH": "/usr/bin:/bin", "JAVA_HOME": str(tmp_path / "no-java"), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", "from mpi.cli.main import main; main()", "link", "--engine", "spark",
         "--spark-master", "local[1]", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    print(message)
    assert "could not start Spark" in message
    assert "pip install 'mpi[spark]'" in message and "Java 17" in message
    assert "Traceback" not in message
    assert keys_of(tmp_path / "d").equals(before)
    assert not list((tmp_path / "d" / "spark-work").glob(f"*/{MARKER}"))


@needs_pyspark
def test_session_conf_ships_splink_jar_and_refuses_downloads() -> None:
    conf = spark_engine.session_conf(SparkOptions(master="spark://h:7077",
                                                  conf=(("spark.jars", "/opt/x.jar"),
                                                        ("spark.executor.memory", "8g"))))
    jars = conf["spark.jars"].split(",")
    assert jars[0].endswith(".jar") and Path(jars[0]).is_file() and jars[1] == "/opt/x.jar"
    assert conf["spark.executor.memory"] == "8g"
    assert "spark.sql.shuffle.partitions" not in conf  # local-mode default only
    with pytest.raises(ConfigurationError, match="download"):
        spark_engine.session_conf(SparkOptions(conf=(("spark.jars.packages", "a:b:1"),)))


# ---- engine-independent post-processing ----------------------------------------------------
def _result(uids: list[int], cids: list[Any]) -> LinkResult:
    edges = pa.table({"unique_id_l": pa.array([], pa.int64()),
                      "unique_id_r": pa.array([], pa.int64()),
                      "match_weight": pa.array([], pa.float64()),
                      "match_probability": pa.array([], pa.float64())})
    return LinkResult(edges=edges, clusters=pa.table({"unique_id": uids, "cluster_id": cids}))


def test_clusters_are_labelled_by_their_smallest_record_whatever_the_engine_said() -> None:
    records = pa.table({"unique_id": [3, 5, 7, 9]})
    out = relink.canonical_clusters(_result([9, 3, 7, 5], ["b", "a", "b", "a"]), records=records)
    assert out.clusters.column("unique_id").to_pylist() == [3, 5, 7, 9]
    assert out.clusters.column("cluster_id").to_pylist() == [3, 3, 7, 7]


def test_a_result_not_covering_the_records_is_refused() -> None:
    records = pa.table({"unique_id": [3, 5, 7]})
    with pytest.raises(Conflict):
        relink.canonical_clusters(_result([3, 5], [3, 3]), records=records)
    with pytest.raises(Conflict):
        relink.canonical_clusters(_result([3, 5, 8], [3, 3, 8]), records=records)


def test_a_marker_for_other_input_is_not_reused(tmp_path: Path) -> None:
    assert spark_engine.find_complete(tmp_path, "abc") is None
    (tmp_path / MARKER).write_text(json.dumps({"fingerprint": "other", "edges": 0,
                                               "clusters": 0}))
    assert spark_engine.find_complete(tmp_path, "abc") is None
