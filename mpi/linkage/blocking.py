"""How many pairs each blocking rule makes, and the guard that keeps a batch link bounded.

Owns: counting the comparisons a definition's prediction rules generate on a table (block
sizes from the same 64-bit rule keys the online index uses) and dropping, before a batch
predict, any rule whose blocks would explode (a placeholder value every record shares, a
registry of one city). Pure: NumPy and Arrow in, numbers out; no splink import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mpi.linkage.definition import ModelDefinition
from mpi.linkage.index import rule_keys

log = logging.getLogger(__name__)

# A rule that alone makes more than this many comparisons per record is left out of a batch
# link. The default definition makes about 8 per record in all at 1M synthetic records
# (BENCHMARKS.md); a rule 25x over that budget would take the link from minutes to hours.
MAX_COMPARISONS_PER_RECORD = 200.0


@dataclass(frozen=True)
class RuleCount:
    """One blocking rule's comparisons on a table (pairs within its blocks)."""

    rule: tuple[str, ...]
    comparisons: int
    largest_block: int


SAMPLE_ROWS = 100_000  # above this many records the guard counts on an evenly spaced sample


def count_comparisons(table: pa.Table, rules: Sequence[tuple[str, ...]], *,
                      sample: int | None = None) -> list[RuleCount]:
    """Pairs each rule puts in its blocks (records lacking a rule column are in none).

    With ``sample`` and a larger table, every k-th record is counted and the figures scaled
    by k (pairs by k squared): exact enough to tell a rule of a few comparisons per record
    from one of hundreds, at a fraction of the cost (1M records: 19 sorts of 100k keys)."""
    step = 1 if not sample or table.num_rows <= sample else -(-table.num_rows // sample)
    cols = {c: pc.fill_null(table.column(c), 0).to_numpy()[::step].astype(np.int64)
            for rule in rules for c in rule}
    out = []
    for salt, rule in enumerate(rules):
        keys = rule_keys(cols, rule, salt)
        keys = keys[keys != 0]
        if len(keys) == 0:
            out.append(RuleCount(rule, 0, 0))
            continue
        _, sizes = np.unique(keys, return_counts=True)
        out.append(RuleCount(rule, int((sizes * (sizes - 1) // 2).sum()) * step * step,
                             int(sizes.max()) * step))
    return out


def guard(table: pa.Table, definition: ModelDefinition, *,
          max_per_record: float = MAX_COMPARISONS_PER_RECORD) -> tuple[ModelDefinition, list[str]]:
    """The definition with every prediction rule over the budget left out, and a message for
    each one left out (the caller reports them)."""
    n = max(table.num_rows, 1)
    counts = count_comparisons(table, definition.blocking_rules, sample=SAMPLE_ROWS)
    keep = [c.rule for c in counts if c.comparisons <= max_per_record * n]
    dropped = [f"blocking rule {'+'.join(c.rule)} left out of this link: it makes "
               f"about {c.comparisons / n:.0f} comparisons per record (largest block about "
               f"{c.largest_block} records; budget {max_per_record:.0f})"
               for c in counts if c.comparisons > max_per_record * n]
    for msg in dropped:
        log.warning(msg)
    if not dropped:
        return definition, []
    return replace(definition, blocking_rules=tuple(keep)), dropped
