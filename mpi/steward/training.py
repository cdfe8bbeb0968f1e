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

from mpi.agency.schema import SCHEMA_VERSION
from mpi.errors import InvalidInput, Problem
from mpi.linkage import splink_engine
from mpi.linkage.catalog import model_dirs
from mpi.linkage.definition import CURRENT as CURRENT_DEFINITION
from mpi.linkage.definition import DEFAULT_DEFINITION
from mpi.linkage.modelfile import Thresholds, list_versions, save_version
from mpi.linkage.monotone import enforce_monotone
from mpi.linkage.params import params_from_splink
from mpi.linkage.shared_levels import count_once
from mpi.linkage.thresholds import choose_thresholds
from mpi.store import labels as lstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry
    from mpi.linkage.spark_engine import SparkOptions


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


def _parent_level(theirs: list[dict[str, Any]], level: dict[str, Any],
                  i: int) -> dict[str, Any] | None:
    """The parent's level for ``level`` (the i-th): the one with the same label, so that a
    parent of another definition (levels added or reordered) never lends a wrong level's
    values; by position only when the parent's levels carry no labels."""
    labels = [lv.get("label_for_charts") for lv in theirs]
    label = level.get("label_for_charts")
    if label is not None and labels.count(label) == 1:
        return theirs[labels.index(label)]
    if not any(labels) and i < len(theirs):
        return theirs[i]
    return None


def inherit_untrained_levels(model: dict[str, Any], parent: dict[str, Any]) -> list[str]:
    """Give every level Splink could not train (no m or u: too few pairs reach it in a small
    registry, or its fields are empty everywhere) the parent version's value for the level of
    the same label; returns ``comparison/level label`` of each."""
    parents = {c.get("output_column_name"): c for c in parent.get("comparisons", [])}
    filled = []
    for comp in model.get("comparisons", []):
        name = comp.get("output_column_name")
        theirs = parents.get(name, {}).get("comparison_levels", [])
        for i, level in enumerate(comp.get("comparison_levels", [])):
            match = None if level.get("is_null_level") else _parent_level(theirs, level, i)
            if match is None:
                continue
            changed = False
            for key in ("m_probability", "u_probability"):
                if _untrained(level.get(key)) and not _untrained(match.get(key)):
                    level[key] = match[key]
                    changed = True
            if changed:
                filled.append(f"{name}/{level.get('label_for_charts', i)}")
    return filled


_NOT_OBSERVED = 1e-6  # Splink's value for a level it never observed


def neutralize_untrained_levels(model: dict[str, Any]) -> list[str]:
    """Give every level still without an m or u value (not observed in training, and the
    parent has no level of that label: e.g. a level its definition lacks) weight 0, i.e. no
    evidence either way: m = u. Returns ``comparison/level label`` of each."""
    done = []
    for comp in model.get("comparisons", []):
        for i, lv in enumerate(comp.get("comparison_levels", [])):
            m, u = lv.get("m_probability"), lv.get("u_probability")
            if lv.get("is_null_level") or not (_untrained(m) or _untrained(u)):
                continue
            value = u if not _untrained(u) else m if not _untrained(m) else _NOT_OBSERVED
            lv["m_probability"] = lv["u_probability"] = value
            done.append(f"{comp.get('output_column_name')}/{lv.get('label_for_charts', i)}")
    return done


def train_candidate(reg: Registry, *, out_dir: Path, name: str = "candidate", seed: int = 42,
                    fraction: float = 1.0, spark_snapshot: str | None = None,
                    spark: SparkOptions | None = None,
                    progress: Callable[[str], None] | None = None,
                    thresholds: Thresholds | None = None) -> str:
    """Train on a sample and save it as the next version of ``name``; returns the version.

    Without ``thresholds`` they are chosen from the trained model's own estimate of precision
    and recall on the training records (mpi/linkage/thresholds.py), not carried over. The
    active labels are counted and fingerprinted in the sidecar (they judge the candidate; they
    do not fit it: Decision 30).
    """
    say = progress or (lambda _m: None)
    check_training_options(reg, name=name, fraction=fraction,
                           thresholds=thresholds or reg.model.thresholds)
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
        table = sample_rows(reg.model_table(DEFAULT_DEFINITION), fraction=fraction, seed=seed)
        source = f"registry {reg.settings.registry_path.name}"
    if table.num_rows < 2:
        where = "the registry has" if fraction >= 1 and not spark_snapshot else "the sample has"
        raise InvalidInput(f"nothing to train on: {where} {table.num_rows} active record(s) "
                           "and training needs at least 2")
    say(f"training on {table.num_rows} records (Splink on DuckDB, seed {seed})")
    t0 = time.perf_counter()
    config = splink_engine.TrainingConfig(seed=seed)
    report = splink_engine.TrainingReport()
    model = splink_engine.train(
        table, definition=DEFAULT_DEFINITION, config=config, progress=say,
        fallback_prior=reg.model.params.probability_two_random_records_match, report=report)
    # Decision 90: a level in two comparisons counts its evidence once. Only levels EM trained
    # here: one inherited from the parent keeps the parent's value (already divided in a
    # parent trained under this rule).
    once = count_once(model, DEFAULT_DEFINITION)
    if once:
        say(f"evidence of a level in more than one comparison counted once: {'; '.join(once)}")
    inherited = inherit_untrained_levels(model, reg.model.model)
    if inherited:
        say(f"{len(inherited)} levels not observed in training keep the parent's m/u")
    neutral = neutralize_untrained_levels(model)
    if neutral:
        say(f"{len(neutral)} levels neither observed in training nor in the parent "
            f"{reg.model.version} get weight 0 (no evidence): {', '.join(neutral)}")
    pooled = enforce_monotone(model, DEFAULT_DEFINITION)  # Decision 89: after EM, before thresholds
    if pooled:
        say("pooled levels whose trained weights were out of order (a stronger agreement "
            f"weighed less than a weaker one): {'; '.join(pooled)}")
    params = params_from_splink(model, DEFAULT_DEFINITION)  # check: every level has m and u
    if thresholds is None:
        say("choosing thresholds from the model's estimated precision and recall")
        th, estimate = choose_thresholds(splink_engine.predict_probabilities(
            table, params, definition=DEFAULT_DEFINITION))
        at = estimate.get("at_link")
        why = (f"expected precision {at['precision']}, recall {at['recall']} at the link "
               "threshold" if at else estimate.get("reason", ""))
        say(f"thresholds: link {th.link}, review {th.review} ({why})")
    else:
        th, estimate = thresholds, {"reason": "given by the steward"}
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "definition": CURRENT_DEFINITION,
        "splink_version": splink_engine.SPLINK_VERSION,
        "training_data": {"fingerprint": _table_fingerprint(table),
                          "records": table.num_rows, "source": source,
                          "sample_fraction": fraction, "labels": labels.num_rows,
                          "labels_fingerprint": _table_fingerprint(labels),
                          "labels_used_for": "evaluation only (not fitted)"},
        "training": {"seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                     "u_max_pairs": config.u_max_pairs, "em_max_pairs": config.em_max_pairs,
                     "em_blocking_rules": [list(r) for r in report.em_rules],
                     "prior": {"source": report.prior_source,
                               "rules": [list(r) for r in report.prior_rules]},
                     "skipped": report.skipped},
        "thresholds": {"link": th.link, "review": th.review},
        "threshold_estimate": estimate,
        "accuracy": {"dataset": "not measured (no labels); evaluate before promoting"},
        "parent_version": reg.model.version,
        "inherited_levels": inherited,
        "neutral_levels": neutral,
        "counted_once": once,
        "pooled_levels": pooled,
        "trained_at": reg.clock().isoformat(timespec="seconds") + "Z",
        "python": platform.python_version(),
    }
    version = save_version(out_dir, name=name, model=model, meta=meta)
    say(f"saved {version} in {out_dir} (not active)")
    return version
