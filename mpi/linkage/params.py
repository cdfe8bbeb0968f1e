"""Trained parameters read from Splink's model JSON, as match weights per comparison level.

Owns: turning a saved Splink model dict into the numbers both executors use (prior and
log2(m/u) per level) and writing trained m/u back onto the definition. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mpi.errors import InvalidInput
from mpi.linkage.definition import ModelDefinition


@dataclass(frozen=True)
class ComparisonParams:
    """m, u and weight for each non-null level of one comparison, in definition order + else."""

    name: str
    m: tuple[float, ...]
    u: tuple[float, ...]

    @property
    def weights(self) -> tuple[float, ...]:
        """log2(m/u) per level (else level last)."""
        return tuple(math.log2(m / u) for m, u in zip(self.m, self.u, strict=True))


@dataclass(frozen=True)
class ModelParams:
    """Everything needed to score a pair: the prior and per-level weights."""

    probability_two_random_records_match: float
    comparisons: tuple[ComparisonParams, ...]

    @property
    def prior_weight(self) -> float:
        """log2 prior odds of a match."""
        p = self.probability_two_random_records_match
        return math.log2(p / (1.0 - p))


_NOT_OBSERVED = 1e-6  # what Splink uses for a level it could not observe in training


def _prob(value: Any) -> float | None:
    if isinstance(value, str):
        return _NOT_OBSERVED
    return None if value is None else float(value)


def params_from_splink(model: dict[str, Any], definition: ModelDefinition) -> ModelParams:
    """Read the trained m/u values of a Splink model dict that follows ``definition``."""
    by_name = {c.get("output_column_name"): c for c in model.get("comparisons", [])}
    comps = []
    for comp in definition.comparisons:
        saved = by_name.get(comp.name)
        if saved is None:
            raise InvalidInput(f"model has no comparison {comp.name!r}")
        levels = [lv for lv in saved["comparison_levels"] if not lv.get("is_null_level")]
        if len(levels) != len(comp.levels) + 1:
            raise InvalidInput(
                f"model comparison {comp.name!r} has {len(levels)} levels, definition expects "
                f"{len(comp.levels) + 1}")
        m: list[float] = []
        u: list[float] = []
        for lv in levels:
            mp, up = _prob(lv.get("m_probability")), _prob(lv.get("u_probability"))
            if mp is None or up is None or mp <= 0 or up <= 0:
                raise InvalidInput(f"model comparison {comp.name!r} has an untrained level")
            m.append(float(mp))
            u.append(float(up))
        comps.append(ComparisonParams(comp.name, tuple(m), tuple(u)))
    return ModelParams(float(model["probability_two_random_records_match"]), tuple(comps))


def probability(weight: float) -> float:
    """Match probability for a match weight."""
    return float(1.0 / (1.0 + 2.0 ** (-weight)))


def weight_for_probability(p: float) -> float:
    """Match weight for a match probability."""
    return math.log2(p / (1.0 - p))
