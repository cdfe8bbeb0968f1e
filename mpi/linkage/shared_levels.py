"""Model sanity: evidence that sits in more than one comparison is counted once.

Owns: finding the levels that appear, with the same predicate, in more than one comparison of
a definition (e.g. "given and family names swapped", an equal unordered name pair, in both the
given-name and the family-name comparison), and dividing their trained evidence among those
comparisons so that a pair reaching all of them gains it once, not once per comparison.
Pure: no I/O, no splink import. Decision 90.

Fellegi-Sunter adds the weights of the comparisons as if they were independent. A level with
the same predicate in k comparisons is one event seen k times: each comparison's EM estimate
w_c = log2(m_c / u_c) is already the whole evidence of that event, so the sum counts it k
times (29.5 bits for swapped names in default-v004 as first shipped, more than both names
exactly equal, 16.3). After training, each such level gets w_c / k: u_c = m_c / 2^(w_c / k),
m unchanged; the u added is taken from the comparison's "else" level so its u still sums as
trained. Both executors read the resulting m/u from the model JSON (no scorer special case).

Must not: change m, reorder levels or change which level a pair falls in.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from mpi.linkage.definition import ModelDefinition


def shared_levels(definition: ModelDefinition) -> list[list[tuple[str, int]]]:
    """Groups of (comparison name, level index) with one predicate in 2+ comparisons."""
    groups: dict[tuple[Any, ...], list[tuple[str, int]]] = defaultdict(list)
    for comp in definition.comparisons:
        for i, lv in enumerate(comp.levels):
            groups[(lv.kind, tuple(lv.columns), lv.percent)].append(
                (comp.name, i))
    return [g for g in groups.values() if len({c for c, _ in g}) > 1]


def count_once(model: dict[str, Any], definition: ModelDefinition) -> list[str]:
    """Divide the evidence of every shared level among its comparisons in a trained Splink
    model dict (in place), once, right after EM; returns ``comparison: level (w -> w/k)`` of
    each level changed. Not idempotent: a second call divides again."""
    saved = {c.get("output_column_name"): c for c in model.get("comparisons", [])}
    labels = {c.name: [lv.label for lv in c.levels] for c in definition.comparisons}
    done: list[str] = []
    for group in shared_levels(definition):
        k = len(group)
        for comp_name, i in group:
            raw = saved.get(comp_name)
            if raw is None:
                continue
            levels = [lv for lv in raw["comparison_levels"] if not lv.get("is_null_level")]
            if len(levels) != len(labels[comp_name]) + 1:
                continue  # params_from_splink refuses such a model with a clear message
            level, other = levels[i], levels[-1]
            m, u, u_else = (level.get("m_probability"), level.get("u_probability"),
                            other.get("u_probability"))
            if not all(isinstance(x, int | float) and x > 0 for x in (m, u, u_else)):
                continue  # untrained: training fills or neutralizes it first
            w = math.log2(float(m) / float(u))
            if w <= 0:
                continue  # no agreement evidence to double count
            new_u = float(m) / 2 ** (w / k)
            if float(u_else) - (new_u - float(u)) <= 0:
                continue
            level["u_probability"] = new_u
            other["u_probability"] = float(u_else) - (new_u - float(u))
            done.append(f"{comp_name}: {labels[comp_name][i]} ({w:+.3f} -> {w / k:+.3f})")
    return done
