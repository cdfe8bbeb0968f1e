"""Spark executor: the same Splink settings as the DuckDB path, run through Splink's Spark backend.

Owns: the Spark session (``spark.jars`` = Splink's similarity jar, a checkpoint dir in the work
directory, nothing downloaded at run time), the work directory layout and its completeness
marker, and turning a finished job back into a ``LinkResult`` read with pyarrow. Input arrives as
an Arrow table (``unique_id`` + token columns) and is written here as a Parquet snapshot.
Must not: open or touch the registry file, or decide keys.

Work directory (a local path, or a path on a filesystem every Spark executor shares)::

    snapshot.parquet   records the job reads (written with pyarrow, then renamed into place)
    edges/             unique_id_l, unique_id_r, match_weight, match_probability (Spark Parquet)
    clusters/          unique_id, cluster_id (Spark Parquet)
    checkpoints/       Splink's intermediate tables (break-lineage Parquet), removed on success
    _SUCCESS           JSON {fingerprint, edges, clusters}: written last, only after both outputs

A result is used only when ``_SUCCESS`` exists and holds the fingerprint of the current input
(records, definition, parameters, thresholds); anything else in the directory is redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import splink

from mpi.errors import ConfigurationError, Conflict
from mpi.files import DIR_MODE, write_private
from mpi.linkage.definition import DEFAULT_DEFINITION, ModelDefinition
from mpi.linkage.params import ModelParams
from mpi.linkage.splink_engine import UNIQUE_ID, LinkResult, splink_settings

SNAPSHOT = "snapshot.parquet"
EDGES = "edges"
CLUSTERS = "clusters"
CHECKPOINTS = "checkpoints"
MARKER = "_SUCCESS"
EDGE_COLUMNS = ("unique_id_l", "unique_id_r", "match_weight", "match_probability")
CLUSTER_COLUMNS = ("unique_id", "cluster_id")
INSTALL_HINT = ("Install the Spark extra with `pip install 'mpi[spark]'` (pyspark 4) and a Java 17 "
                "runtime (e.g. `apt-get install openjdk-17-jre-headless`), with `java` on PATH or "
                "JAVA_HOME set.")
_LOCAL_SHUFFLE_PARTITIONS = "16"
_INPUT_VIEW = "mpi_registry_snapshot"


@dataclass(frozen=True)
class SparkOptions:
    """Where and how to run the Spark job.

    ``conf`` are extra Spark properties (``spark.executor.memory`` …); ``work_dir`` overrides
    the default ``<data_dir>/spark-work/<run id>``; ``session`` reuses a running SparkSession
    (tests, benchmarks) instead of building and stopping one.
    """

    master: str = "local[*]"
    conf: tuple[tuple[str, str], ...] = ()
    work_dir: Path | None = None
    session: Any = field(default=None, compare=False, repr=False)


def require_pyspark() -> None:
    """Raise ConfigurationError (with install instructions) when pyspark cannot be imported."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigurationError(f"--engine spark needs pyspark, which is not installed. "
                                 f"{INSTALL_HINT}") from None


def fingerprint(records: pa.Table, params: ModelParams, *, definition: ModelDefinition,
                edge_threshold: float, cluster_threshold: float) -> str:
    """SHA-256 over everything that decides the result: records, model and thresholds."""
    h = hashlib.sha256()
    h.update(repr((definition, params, edge_threshold, cluster_threshold,
                   splink.__version__)).encode())
    h.update(repr(records.schema.names).encode())
    for col in records.columns:
        filled = pc.fill_null(col, 0).combine_chunks()
        h.update(filled.to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


def find_complete(work_dir: Path, fp: str) -> LinkResult | None:
    """The finished result in ``work_dir`` for input ``fp``, or None if there is none."""
    marker = work_dir / MARKER
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if done.get("fingerprint") != fp:
        return None
    edges = pq.read_table(work_dir / EDGES, columns=list(EDGE_COLUMNS))
    clusters = pq.read_table(work_dir / CLUSTERS, columns=list(CLUSTER_COLUMNS))
    if edges.num_rows != done.get("edges") or clusters.num_rows != done.get("clusters"):
        raise Conflict(f"Spark output in {work_dir} does not match its {MARKER} marker; delete "
                       "the directory and run again")
    return LinkResult(edges=edges, clusters=clusters)


def predict_and_cluster(records: pa.Table, params: ModelParams, *, work_dir: Path,
                        definition: ModelDefinition = DEFAULT_DEFINITION,
                        edge_threshold: float, cluster_threshold: float,
                        options: SparkOptions = SparkOptions(), fp: str | None = None,
                        progress: Callable[[str], None] | None = None) -> LinkResult:
    """Splink predict + connected components on Spark; reuses a complete result for this input.

    Same settings (``splink_settings(definition, params)``) and thresholds as the DuckDB path.
    A failure anywhere leaves no ``_SUCCESS`` marker, so nothing half-written is ever returned.
    """
    say = progress or (lambda _m: None)
    fp = fp or fingerprint(records, params, definition=definition,
                           edge_threshold=edge_threshold, cluster_threshold=cluster_threshold)
    done = find_complete(work_dir, fp)
    if done is not None:
        say(f"reusing the complete Spark result in {work_dir}")
        return done
    require_pyspark()
    spark = options.session or build_session(options)
    try:
        _reset(work_dir)
        say(f"writing Parquet snapshot of {records.num_rows} records to {work_dir}")
        tmp = work_dir / f".{SNAPSHOT}.tmp"
        pq.write_table(records, tmp)
        os.replace(tmp, work_dir / SNAPSHOT)
        spark.sparkContext.setCheckpointDir(str((work_dir / CHECKPOINTS).resolve()))
        say(f"Spark ({spark.sparkContext.master}) predict + cluster")
        _run_job(spark, work_dir, settings=splink_settings(definition, params),
                 edge_threshold=edge_threshold, cluster_threshold=cluster_threshold)
    finally:
        if options.session is None:
            spark.stop()
    edges = pq.read_table(work_dir / EDGES, columns=list(EDGE_COLUMNS))
    clusters = pq.read_table(work_dir / CLUSTERS, columns=list(CLUSTER_COLUMNS))
    if clusters.num_rows != records.num_rows:
        raise Conflict(f"Spark clustered {clusters.num_rows} records, expected {records.num_rows}")
    shutil.rmtree(work_dir / CHECKPOINTS, ignore_errors=True)  # intermediates; not needed again
    _write_marker(work_dir, {"fingerprint": fp, "edges": edges.num_rows,
                             "clusters": clusters.num_rows})
    return LinkResult(edges=edges, clusters=clusters)


def _reset(work_dir: Path) -> None:
    """Remove the marker first, then whatever a previous (failed or other) run left."""
    work_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    (work_dir / MARKER).unlink(missing_ok=True)
    for name in (EDGES, CLUSTERS, CHECKPOINTS):
        shutil.rmtree(work_dir / name, ignore_errors=True)
    (work_dir / SNAPSHOT).unlink(missing_ok=True)


def _write_marker(work_dir: Path, content: dict[str, Any]) -> None:
    tmp = work_dir / f".{MARKER}.tmp"
    write_private(tmp, json.dumps(content, indent=2) + "\n")
    os.replace(tmp, work_dir / MARKER)


def session_conf(options: SparkOptions) -> dict[str, str]:
    """Spark properties for a new session: Splink's jar, quiet progress, the user's extras."""
    from splink.backends.spark import similarity_jar_location

    user = dict(options.conf)
    if "spark.jars.packages" in user:
        raise ConfigurationError("spark.jars.packages would download jars at run time; put the "
                                 "jars on the cluster and list them in spark.jars instead")
    jars = [similarity_jar_location()] + [j for j in user.pop("spark.jars", "").split(",") if j]
    conf = {"spark.jars": ",".join(jars), "spark.ui.showConsoleProgress": "false"}
    if options.master.startswith("local"):
        conf["spark.sql.shuffle.partitions"] = _LOCAL_SHUFFLE_PARTITIONS
    conf.update(user)
    return conf


def build_session(options: SparkOptions) -> Any:
    """A SparkSession for ``options`` (raise ConfigurationError when Java/pyspark is missing)."""
    require_pyspark()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(options.master).appName("mpi-link")
    for key, value in session_conf(options).items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # pyspark raises PySparkRuntimeError [JAVA_GATEWAY_EXITED] etc.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"could not start Spark ({first}). {INSTALL_HINT}") from None
    return spark


def _run_job(spark: Any, work_dir: Path, *, settings: Any, edge_threshold: float,
             cluster_threshold: float) -> None:
    from splink import Linker
    from splink.backends.spark import SparkAPI

    api = SparkAPI(spark_session=spark)  # type: ignore[no-untyped-call]
    df = spark.read.parquet(str((work_dir / SNAPSHOT).resolve()))
    spark.catalog.dropTempView(_INPUT_VIEW)  # left by an earlier run on a reused session
    sdf = api.register(df, dataset_display_name=_INPUT_VIEW)
    linker = Linker(sdf, settings, log_level=None)
    pred = linker.inference.predict(threshold_match_probability=edge_threshold)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        pred, threshold_match_probability=cluster_threshold)
    (pred.as_spark_dataframe().select(*EDGE_COLUMNS)
     .write.mode("overwrite").parquet(str((work_dir / EDGES).resolve())))
    (clusters.as_spark_dataframe().select(UNIQUE_ID, "cluster_id")
     .write.mode("overwrite").parquet(str((work_dir / CLUSTERS).resolve())))


def sample_snapshot(snapshot: str, *, fraction: float, seed: int, work_dir: Path,
                    options: SparkOptions = SparkOptions()) -> pa.Table:
    """A seeded random sample of a registry snapshot that lives where Spark can read it (a
    Parquet path on a shared filesystem), brought to this machine for training."""
    if not 0 < fraction <= 1:
        raise ConfigurationError("the sample fraction must be in (0, 1]")
    require_pyspark()
    spark = options.session or build_session(options)
    out = work_dir / "training-sample"
    try:
        shutil.rmtree(out, ignore_errors=True)
        frame = spark.read.parquet(snapshot)
        frame.sample(withReplacement=False, fraction=fraction, seed=seed).orderBy(
            "unique_id").coalesce(1).write.parquet(str(out))
    finally:
        if options.session is None:
            spark.stop()
    return pq.read_table(out)
