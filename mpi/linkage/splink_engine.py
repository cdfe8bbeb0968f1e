"""Splink executor: settings from the definition, training, batch predict and clustering.

Owns: every call into splink. Each run gets its own DuckDB connection (in-memory or a scratch
file) or a Spark session; input arrives as an Arrow table with ``unique_id`` plus token columns.
Must not: open or touch the registry file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import splink
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink import comparison_level_library as cll
from splink import comparison_library as cl

from mpi.linkage.definition import DEFAULT_DEFINITION, ModelDefinition
from mpi.linkage.params import ModelParams

log = logging.getLogger(__name__)

UNIQUE_ID = "unique_id"
SPLINK_VERSION: str = splink.__version__


def splink_comparisons(definition: ModelDefinition,
                       params: ModelParams | None = None) -> list[Any]:
    """Splink comparisons for the definition, with trained m/u copied in when given."""
    out: list[Any] = []
    by_name = {c.name: c for c in params.comparisons} if params else {}
    for comp in definition.comparisons:
        levels: list[Any] = [cll.CustomLevel(comp.null_sql(), label_for_charts="null")
                             .configure(is_null_level=True)]
        trained = by_name.get(comp.name)
        for i, lvl in enumerate(comp.levels):
            level: Any = cll.CustomLevel(lvl.sql(), label_for_charts=lvl.label)
            if trained:
                level = level.configure(m_probability=trained.m[i], u_probability=trained.u[i])
            levels.append(level)
        else_level: Any = cll.ElseLevel()
        if trained:
            else_level = else_level.configure(m_probability=trained.m[-1],
                                              u_probability=trained.u[-1])
        levels.append(else_level)
        out.append(cl.CustomComparison(levels, output_column_name=comp.name,
                                       comparison_description=comp.name))
    return out


def splink_settings(definition: ModelDefinition = DEFAULT_DEFINITION,
                    params: ModelParams | None = None,
                    prior: float = 1e-5) -> SettingsCreator:
    """A SettingsCreator (dedupe over all agencies' records) built from the definition."""
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name=UNIQUE_ID,
        comparisons=splink_comparisons(definition, params),
        blocking_rules_to_generate_predictions=[block_on(*r) for r in definition.blocking_rules],
        probability_two_random_records_match=(
            params.probability_two_random_records_match if params else prior),
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def _duckdb_api() -> DuckDBAPI:
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    return DuckDBAPI(connection=con)


@dataclass(frozen=True)
class TrainingConfig:
    """Knobs of a training run (all seeded for determinism)."""

    seed: int = 42
    u_max_pairs: float = 2e7
    em_max_pairs: float | None = 2e6
    deterministic_rules: tuple[tuple[str, ...], ...] = (
        ("national_id", "date_of_birth"), ("given_name", "family_name", "date_of_birth"))
    deterministic_recall: float = 0.8


def train(records: pa.Table, *, definition: ModelDefinition = DEFAULT_DEFINITION,
          config: TrainingConfig = TrainingConfig(),
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a model on ``records`` (u by random sampling, then EM) and return Splink's JSON."""
    say = progress or (lambda _msg: None)
    api = _duckdb_api()
    try:
        return _train(api, records, definition=definition, config=config, say=say)
    finally:
        api.duckdb_con.close()


def _train(api: DuckDBAPI, records: pa.Table, *, definition: ModelDefinition,
           config: TrainingConfig, say: Callable[[str], None]) -> dict[str, Any]:
    sdf = api.register(records, dataset_display_name="registry")
    linker = Linker(sdf, splink_settings(definition), log_level=None)
    say("estimating prior from deterministic rules")
    linker.training.estimate_probability_two_random_records_match(
        [block_on(*r) for r in config.deterministic_rules], recall=config.deterministic_recall)
    say("estimating u by random sampling")
    linker.training.estimate_u_using_random_sampling(max_pairs=config.u_max_pairs,
                                                     seed=config.seed)
    for rule in definition.training_blocking_rules:
        say(f"EM on block_on{rule}")
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(*rule), max_pairs=config.em_max_pairs)
    model: dict[str, Any] = linker.misc.save_model_to_json()
    return model


@dataclass
class LinkResult:
    """Edges at or above the review threshold, and the cluster of every record."""

    edges: pa.Table      # unique_id_l, unique_id_r, match_weight, match_probability
    clusters: pa.Table   # unique_id, cluster_id


def predict_and_cluster(records: pa.Table, params: ModelParams, *,
                        definition: ModelDefinition = DEFAULT_DEFINITION,
                        edge_threshold: float, cluster_threshold: float) -> LinkResult:
    """Splink predict (edges with probability >= edge_threshold) and connected components."""
    api = _duckdb_api()
    try:
        sdf = api.register(records, dataset_display_name="registry")
        linker = Linker(sdf, splink_settings(definition, params), log_level=None)
        pred = linker.inference.predict(threshold_match_probability=edge_threshold)
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            pred, threshold_match_probability=cluster_threshold)
        edges = pred.as_duckdbpyrelation().select(
            "unique_id_l, unique_id_r, match_weight, match_probability").to_arrow_table()
        clus = clusters.as_duckdbpyrelation().select("unique_id, cluster_id").order(
            "unique_id").to_arrow_table()
    finally:
        api.duckdb_con.close()
    return LinkResult(edges=edges, clusters=clus)
