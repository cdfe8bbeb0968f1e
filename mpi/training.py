"""Use case: train a candidate model version on a sample of the registry (never activates it).

Owns: choosing the training sample (the registry in memory, or a snapshot that lives on Spark,
sampled there), running Splink training on one machine, and writing an immutable version with
its sidecar. Must not: change the active model or any key (promotion is a separate use case).
"""

from __future__ import annotations

import hashlib
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from mpi.errors import InvalidInput, Problem
from mpi.linkage import splink_engine
from mpi.linkage.catalog import model_dirs
from mpi.linkage.modelfile import Thresholds, list_versions, save_version
from mpi.linkage.params import params_from_splink
from mpi.schema import SCHEMA_VERSION
from mpi.store import labels as lstore

if TYPE_CHECKING:
    from mpi.linkage.spark_engine import SparkOptions
    from mpi.registry import Registry


_NAME = re.compile(r"^[a-z0-9_]{1,40}$")


def check_training_options(reg: Registry, *, name: str, fraction: float,
                           thresholds: Thresholds) -> None:
    """Refuse bad training options before any work: InvalidInput naming the field."""
    th = thresholds
    if not 0 < th.review <= th.link < 1:
        field = "link" if not 0 < th.link < 1 else "review"
        raise InvalidInput("thresholds need 0 < review <= link < 1 (match probabilities)",
                           problems=[Problem(None, field, "need 0 < review <= link < 1")])
    if not 0 < fraction <= 1:
        raise InvalidInput("the training sample fraction must be in (0, 1]",
                           problems=[Problem(None, "sample", "must be in (0, 1]")])
    if not _NAME.match(name):
        raise InvalidInput("invalid model name", problems=[
            Problem(None, "name", "1-40 lower-case letters, digits or underscores")])
    if list_versions(model_dirs(reg.settings)[0], name=name):  # README Decision 31
        raise InvalidInput("invalid model name", problems=[
            Problem(None, "name", "a shipped model has this name; choose another")])


def sample_rows(table: pa.Table, *, fraction: float, seed: int) -> pa.Table:
    """A seeded random sample of ``table`` (all of it when ``fraction`` is 1)."""
    if fraction >= 1:
        return table
    keep = np.random.default_rng(seed).random(table.num_rows) < fraction
    return table.filter(pa.array(keep))


def _table_fingerprint(table: pa.Table) -> str:
    """``sha256:`` over every Arrow buffer of ``table`` (training data, labels)."""
    digest = hashlib.sha256()
    for column in table.columns:
        for chunk in column.chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    digest.update(buf)
    return "sha256:" + digest.hexdigest()


def _untrained(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and value <= 0)


def inherit_untrained_levels(model: dict[str, Any], parent: dict[str, Any]) -> list[str]:
    """Give every level Splink could not train (no m or u: too few pairs reach it in a small
    registry) the parent version's value; returns ``comparison/level label`` of each."""
    parents = {c.get("output_column_name"): c for c in parent.get("comparisons", [])}
    filled = []
    for comp in model.get("comparisons", []):
        name = comp.get("output_column_name")
        theirs = parents.get(name, {}).get("comparison_levels", [])
        for i, level in enumerate(comp.get("comparison_levels", [])):
            if level.get("is_null_level") or i >= len(theirs):
                continue
            changed = False
            for key in ("m_probability", "u_probability"):
                if _untrained(level.get(key)) and not _untrained(theirs[i].get(key)):
                    level[key] = theirs[i][key]
                    changed = True
            if changed:
                filled.append(f"{name}/{level.get('label_for_charts', i)}")
    return filled


def train_candidate(reg: Registry, *, out_dir: Path, name: str = "candidate", seed: int = 42,
                    fraction: float = 1.0, spark_snapshot: str | None = None,
                    spark: SparkOptions | None = None,
                    progress: Callable[[str], None] | None = None,
                    thresholds: Thresholds | None = None) -> str:
    """Train on a sample and save it as the next version of ``name``; returns the version.

    Thresholds default to the active version's. The active labels are counted and
    fingerprinted in the sidecar (they judge the candidate; they do not fit it: Decision 30).
    """
    say = progress or (lambda _m: None)
    th = thresholds or reg.model.thresholds
    check_training_options(reg, name=name, fraction=fraction, thresholds=th)
    labels = lstore.active_labels(reg.store.cursor())
    if spark_snapshot:
        from mpi.linkage.spark_engine import SparkOptions, sample_snapshot
        opts = spark or SparkOptions()
        say(f"sampling {fraction:.3g} of {spark_snapshot} on Spark")
        table = sample_snapshot(spark_snapshot, fraction=fraction, seed=seed,
                                work_dir=opts.work_dir or reg.settings.data_dir / "spark-work",
                                options=opts)
        source = f"spark snapshot {Path(spark_snapshot).name}"
    else:
        table = sample_rows(reg.model_table(), fraction=fraction, seed=seed)
        source = f"registry {reg.settings.registry_path.name}"
    say(f"training on {table.num_rows} records (Splink on DuckDB, seed {seed})")
    t0 = time.perf_counter()
    config = splink_engine.TrainingConfig(seed=seed)
    model = splink_engine.train(table, definition=reg.model_definition, config=config,
                                progress=say)
    inherited = inherit_untrained_levels(model, reg.model.model)
    if inherited:
        say(f"{len(inherited)} levels not observed in training keep the parent's m/u")
    params_from_splink(model, reg.model_definition)  # refuse a model with untrained levels
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "splink_version": splink_engine.SPLINK_VERSION,
        "training_data": {"fingerprint": _table_fingerprint(table),
                          "records": table.num_rows, "source": source,
                          "sample_fraction": fraction, "labels": labels.num_rows,
                          "labels_fingerprint": _table_fingerprint(labels),
                          "labels_used_for": "evaluation only (not fitted)"},
        "training": {"seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                     "u_max_pairs": config.u_max_pairs, "em_max_pairs": config.em_max_pairs,
                     "em_blocking_rules": [list(r) for r in
                                           reg.model_definition.training_blocking_rules]},
        "thresholds": {"link": th.link, "review": th.review},
        "accuracy": {"dataset": "not measured (no labels); evaluate before promoting"},
        "parent_version": reg.model.version,
        "inherited_levels": inherited,
        "trained_at": reg.clock().isoformat(timespec="seconds") + "Z",
        "python": platform.python_version(),
    }
    version = save_version(out_dir, name=name, model=model, meta=meta)
    say(f"saved {version} in {out_dir} (not active)")
    return version
