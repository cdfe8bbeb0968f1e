"""Splink executor: settings from the definition, training, batch predict and clustering.

Owns: every call into splink. Each run gets its own DuckDB connection (in-memory or a scratch
file) or a Spark session; input arrives as an Arrow table with ``unique_id`` plus token columns.
Must not: open or touch the registry file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import splink
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink import comparison_level_library as cll
from splink import comparison_library as cl
from splink.internals.exceptions import EMTrainingException

from mpi.errors import InvalidInput
from mpi.linkage.blocking import count_comparisons
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
    min_em_pairs: int = 10  # an EM blocking rule with fewer record pairs is skipped


@dataclass
class TrainingReport:
    """What a training run actually did (rules used and skipped, where the prior came from)."""

    prior_rules: list[tuple[str, ...]] = field(default_factory=list)
    prior_source: str = ""
    em_rules: list[tuple[str, ...]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def rule_text(rule: tuple[str, ...]) -> str:
    """``block_on('a', 'b')``: a blocking rule as written in Python."""
    return f"block_on({', '.join(repr(c) for c in rule)})"


def train(records: pa.Table, *, definition: ModelDefinition = DEFAULT_DEFINITION,
          config: TrainingConfig = TrainingConfig(),
          progress: Callable[[str], None] | None = None,
          fallback_prior: float | None = None,
          report: TrainingReport | None = None) -> dict[str, Any]:
    """Train a model on ``records`` (u by random sampling, then EM) and return Splink's JSON.

    Never fails for want of data in a field: a prior or EM blocking rule that finds no record
    pairs is skipped (and said through ``progress``); with no usable prior rule the prior is
    ``fallback_prior`` (the parent version's), and with no usable EM rule training is u-only
    (the caller then fills untrained m values from the parent). Fills ``report`` when given.
    """
    if records.num_rows < 2:
        raise InvalidInput(f"cannot train on {records.num_rows} record(s): training needs at "
                           "least 2 records")
    say = progress or (lambda _msg: None)
    api = _duckdb_api()
    try:
        return _train(api, records, definition=definition, config=config, say=say,
                      fallback_prior=fallback_prior, report=report or TrainingReport())
    finally:
        api.duckdb_con.close()


class _PairCounter:
    """Exact record-pair counts of equality blocking rules on the training table (the same
    block-size count the batch link's guard uses, mpi/linkage/blocking.py)."""

    def __init__(self, records: pa.Table) -> None:
        self._records = records
        self._pairs: dict[tuple[str, ...], int] = {}

    def filled(self, column: str) -> int:
        """Records with a value in ``column`` (0 when the input has no such column)."""
        if column not in self._records.column_names:
            return 0
        return int(self._records.num_rows - self._records.column(column).null_count)

    def pairs(self, rule: tuple[str, ...]) -> int:
        """Record pairs the rule blocks together."""
        if rule not in self._pairs:
            self._pairs[rule] = (count_comparisons(self._records, [rule])[0].comparisons
                                 if all(self.filled(c) for c in rule) else 0)
        return self._pairs[rule]

    def why_not(self, rule: tuple[str, ...]) -> str:
        """Why the rule finds (almost) no pairs, for a progress message."""
        n = self.pairs(rule)
        empty = [c for c in rule if not self.filled(c)]
        what = "no record pairs" if n == 0 else f"only {n} record pair{'s' * (n != 1)}"
        if empty:
            return f"{what} (no record has {', '.join(empty)})"
        return what


def _estimate_prior(sdf: Any, counter: _PairCounter, *,
                    definition: ModelDefinition, config: TrainingConfig,
                    say: Callable[[str], None], report: TrainingReport) -> float | None:
    """The prior from the deterministic rules that find pairs, else from the prediction
    blocking rules that do; None when neither gives a usable estimate."""
    usable = []
    for rule in config.deterministic_rules:
        if counter.pairs(rule):
            usable.append(rule)
        else:
            say(f"prior: skipped {rule_text(rule)}: {counter.why_not(rule)}")
    stages = [("deterministic rules", usable)]
    stages.append(("prediction blocking rules",
                   [r for r in definition.blocking_rules if counter.pairs(r)]))
    for source, rules in stages:
        if not rules:
            continue
        say(f"estimating prior from {source}: {', '.join(rule_text(r) for r in rules)}")
        linker = Linker(sdf, splink_settings(definition), log_level=None)
        try:
            linker.training.estimate_probability_two_random_records_match(
                [block_on(*r) for r in rules], recall=config.deterministic_recall)
        except ValueError as exc:  # more matches than the recall allows (tiny registries)
            say(f"prior from {source} not usable: {str(exc).splitlines()[0]}")
            continue
        prior = float(linker.misc.save_model_to_json()["probability_two_random_records_match"])
        if 0 < prior < 1:
            report.prior_rules, report.prior_source = list(rules), source
            return prior
        say(f"prior from {source} not usable: estimated {prior:g}")
    return None


def _train(api: DuckDBAPI, records: pa.Table, *, definition: ModelDefinition,
           config: TrainingConfig, say: Callable[[str], None],
           fallback_prior: float | None, report: TrainingReport) -> dict[str, Any]:
    sdf = api.register(records, dataset_display_name="registry")
    counter = _PairCounter(records)
    prior = _estimate_prior(sdf, counter, definition=definition, config=config, say=say,
                            report=report)
    if prior is None:
        if fallback_prior is not None:
            prior, report.prior_source = fallback_prior, "parent version"
            say(f"no rule gives a usable prior estimate; keeping the parent's prior "
                f"({prior:.3g})")
        else:
            prior, report.prior_source = 1e-5, "default"
            say(f"no rule gives a usable prior estimate; using {prior:g}")
    linker = Linker(sdf, splink_settings(definition, prior=prior), log_level=None)
    say("estimating u by random sampling")
    linker.training.estimate_u_using_random_sampling(max_pairs=config.u_max_pairs,
                                                     seed=config.seed)

    def em(rule: tuple[str, ...]) -> bool:
        if counter.pairs(rule) < config.min_em_pairs:
            msg = f"skipped EM on {rule_text(rule)}: {counter.why_not(rule)}"
            report.skipped.append(msg)
            say(msg)
            return False
        say(f"EM on {rule_text(rule)}")
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on(*rule), max_pairs=config.em_max_pairs)
        except EMTrainingException:  # pairs exist, but sampling for max_pairs kept none
            msg = f"skipped EM on {rule_text(rule)}: no record pairs left after sampling"
            report.skipped.append(msg)
            say(msg)
            return False
        report.em_rules.append(rule)
        return True

    for rule in definition.training_blocking_rules:
        em(rule)
    if not report.em_rules:
        say("no EM training rule finds enough record pairs; trying the prediction blocking "
            "rules")
        # EM cannot estimate a comparison whose columns are in its rule: go on until every
        # comparison with data was estimated by some rule.
        todo = {c.name for c in definition.comparisons
                if any(counter.filled(col) for col in c.null_columns)}
        tried = set(definition.training_blocking_rules)
        for rule in definition.blocking_rules:
            if not todo:
                break
            if rule not in tried and em(rule):
                todo -= {c.name for c in definition.comparisons
                         if not set(rule) & set(c.columns())}
    if not report.em_rules:
        say("no blocking rule finds enough record pairs for EM: u-only training (m values "
            "come from the parent version)")
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


def predict_probabilities(records: pa.Table, params: ModelParams, *,
                          definition: ModelDefinition = DEFAULT_DEFINITION,
                          floor: float = 0.001) -> Any:
    """Match probabilities (NumPy) of every blocked pair at or above ``floor``: what a model
    expects of the registry, for choosing its thresholds (mpi/linkage/thresholds.py)."""
    api = _duckdb_api()
    try:
        sdf = api.register(records, dataset_display_name="registry")
        linker = Linker(sdf, splink_settings(definition, params), log_level=None)
        pred = linker.inference.predict(threshold_match_probability=floor)
        out = pred.as_duckdbpyrelation().select("match_probability").to_arrow_table()
    finally:
        api.duckdb_con.close()
    return out.column("match_probability").to_numpy()
