"""A model version's parameters as plain data: m, u and match weight of every comparison level.

Owns: laying trained parameters out by comparison and level, with the labels of the model
definition, for the API, the CLI and the charts. Pure: no I/O, no splink import.
"""

from __future__ import annotations

from typing import Any

from mpi.linkage.definition import ModelDefinition
from mpi.linkage.explain import ELSE_LABEL, NULL_LABEL
from mpi.linkage.params import ModelParams


def describe_params(definition: ModelDefinition, params: ModelParams) -> list[dict[str, Any]]:
    """Per comparison, its levels in order (null first, else last) with m, u and weight.

    The null level has no m/u (it contributes weight 0)."""
    by_name = {c.name: c for c in params.comparisons}
    out: list[dict[str, Any]] = []
    for comp in definition.comparisons:
        trained = by_name[comp.name]
        levels: list[dict[str, Any]] = [{"level": -1, "label": NULL_LABEL, "m_probability": None,
                                         "u_probability": None, "match_weight": 0.0}]
        labels = [lv.label for lv in comp.levels] + [ELSE_LABEL]
        for i, (label, m, u, w) in enumerate(zip(labels, trained.m, trained.u, trained.weights,
                                                 strict=True)):
            levels.append({"level": i, "label": label, "m_probability": m, "u_probability": u,
                           "match_weight": w})
        out.append({"comparison": comp.name, "levels": levels})
    return out


def same_parameters(a: ModelParams, b: ModelParams, *, rel: float = 1e-12) -> bool:
    """True when two parameter sets give the same weights (prior, m and u per level)."""
    def close(x: float, y: float) -> bool:
        return abs(x - y) <= rel * max(abs(x), abs(y), 1e-300)

    if not close(a.probability_two_random_records_match, b.probability_two_random_records_match):
        return False
    if [c.name for c in a.comparisons] != [c.name for c in b.comparisons]:
        return False
    for ca, cb in zip(a.comparisons, b.comparisons, strict=True):
        if len(ca.m) != len(cb.m) or not all(
                close(x, y) for x, y in zip(ca.m + ca.u, cb.m + cb.u, strict=True)):
            return False
    return True
