"""l-diversity of sensitive attributes within equivalence classes (distinct and entropy).

Owns: per-class distinct-value counts and Shannon entropies of a sensitive column, the rows of
classes that fail distinct or entropy l-diversity, and the summary the disclosure report shows.
Must not: run SQL, read the registry, choose generalizations (mpi/extract/recoding.py does) or
report a value (the summary holds counts and l values only).

A sensitive column is a quasi-identifier too (an attacker may know it); its l-diversity is
judged in the classes of the *other* quasi-identifiers, on its released (generalized) values,
over the rows of its own agency (other agencies' rows hold null there), leaving out rows where
it is suppressed (nothing disclosed). Null counts as a value ("not recorded"). Distinct
l-diversity: at least l different values in every class; entropy l-diversity: entropy of the
class's value distribution at least log(l).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class SensitiveColumn:
    """One sensitive column: its position among the quasi-identifiers and the rows it applies
    to (its agency's rows)."""

    column: str
    position: int                   # index of its hierarchy among the quasi-identifiers
    applies: npt.NDArray[np.bool_]  # rows of the attribute's agency


def class_diversity(class_ids: npt.NDArray[np.int64], values: npt.NDArray[np.int64],
                    weights: npt.NDArray[np.int64] | None = None
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Per class (dense ids): the number of distinct values and the entropy (natural log);
    ``weights``: how many rows each row stands for."""
    if not len(class_ids):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    n_classes = int(class_ids.max()) + 1
    width = int(values.max()) + 1 if len(values) else 1
    pairs, inverse = np.unique(class_ids * width + values, return_inverse=True)
    counts = np.bincount(inverse.reshape(-1), weights=weights).astype(np.float64)
    owner = pairs // width
    distinct = np.bincount(owner, minlength=n_classes).astype(np.int64)
    sizes = np.bincount(class_ids, weights=weights, minlength=n_classes).astype(np.float64)
    p = counts / sizes[owner]
    entropy = np.asarray(np.bincount(owner, weights=-p * np.log(p), minlength=n_classes),
                         dtype=np.float64)
    return distinct, entropy


def failing(class_ids: npt.NDArray[np.int64], values: npt.NDArray[np.int64], *,
            l: int, entropy: bool,  # noqa: E741
            weights: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.bool_]:
    """Whether each row sits in a class (any ids) failing distinct (and, with ``entropy``,
    entropy) l-diversity of ``values``."""
    if l <= 1 or not len(class_ids):
        return np.zeros(len(class_ids), dtype=bool)
    _, inverse = np.unique(class_ids, return_inverse=True)
    inverse = inverse.astype(np.int64).reshape(-1)
    distinct, ent = class_diversity(inverse, values, weights)
    fail = distinct < l
    if entropy:
        fail |= ent < np.log(l) - 1e-12
    return np.asarray(fail[inverse], dtype=bool)


def summary(class_ids: npt.NDArray[np.int64],
            values: npt.NDArray[np.int64]) -> dict[str, float | int | None]:
    """Over the rows given: the smallest distinct l and the smallest entropy l (exp of the
    smallest class entropy) among their classes."""
    if not len(class_ids):
        return {"distinct_l": None, "entropy_l": None, "classes": 0}
    _, inverse = np.unique(class_ids, return_inverse=True)
    distinct, ent = class_diversity(inverse.astype(np.int64).reshape(-1), values)
    return {"distinct_l": int(distinct.min()), "entropy_l": round(float(np.exp(ent.min())), 4),
            "classes": int(len(distinct))}
