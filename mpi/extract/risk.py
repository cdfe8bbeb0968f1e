"""Re-identification risk and utility of a rows extract, as sdcMicro and ARX report them.

Owns: the risk measures over equivalence classes of all quasi-identifiers (prosecutor risk, max
and mean of 1 / class size; journalist risk against a population table, 1 / population class
size; marketer risk, the expected share of correct re-identifications; the share of sample
uniques; records above a risk threshold) and the utility measures (suppressed share,
discernibility, average class size, per-column generalization level). Must not: run SQL, read
the registry, or hold or report a value (classes are integer ids, the report holds counts).

Journalist risk needs a population: the extract passes the registry's consented population of
the cohort agency. When the cohort is that whole population (no date window), population and
sample coincide and journalist risk equals prosecutor risk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def risk_measures(class_ids: npt.NDArray[np.int64], *, threshold: float,
                  population_rows: npt.NDArray[np.int64] | None = None) -> dict[str, Any]:
    """Risk over rows with dense ``class_ids``; ``population_rows`` (per row: the size of its
    class in the population table) for journalist and marketer risk, else the sample's own
    classes."""
    n = len(class_ids)
    if not n:
        return {"records": 0, "classes": 0, "prosecutor_max": 0.0, "prosecutor_mean": 0.0,
                "journalist_max": 0.0, "journalist_mean": 0.0, "marketer": 0.0,
                "sample_uniques": 0, "sample_unique_share": 0.0, "threshold": threshold,
                "records_at_risk": 0, "records_at_risk_share": 0.0}
    f = np.bincount(class_ids)
    per_row = 1.0 / f[class_ids]
    pop = f.copy()
    if population_rows is not None:
        pop[class_ids] = np.maximum(pop[class_ids], population_rows)
    j_row = 1.0 / pop[class_ids]
    uniques = int(np.count_nonzero(f[class_ids] == 1))
    at_risk = int(np.count_nonzero(per_row > threshold + 1e-12))
    return {
        "records": n, "classes": int(len(f)),
        "prosecutor_max": round(float(per_row.max()), 6),
        "prosecutor_mean": round(float(per_row.mean()), 6),
        "journalist_max": round(float(j_row.max()), 6),
        "journalist_mean": round(float(j_row.mean()), 6),
        "marketer": round(float((f / pop).sum() / n), 6),
        "sample_uniques": uniques, "sample_unique_share": round(uniques / n, 6),
        "threshold": threshold, "records_at_risk": at_risk,
        "records_at_risk_share": round(at_risk / n, 6),
    }


def utility_measures(class_ids: npt.NDArray[np.int64], *, records_in: int,
                     suppressed: int) -> dict[str, Any]:
    """Suppressed share, discernibility (sum of squared class sizes, suppressed rows counted
    as |input| each, as in ARX) and average class size over the released rows."""
    f = np.bincount(class_ids) if len(class_ids) else np.zeros(0, dtype=np.int64)
    disc = int((f.astype(np.int64) ** 2).sum()) + suppressed * records_in
    return {"records_in": records_in, "records_suppressed": suppressed,
            "suppressed_share": round(suppressed / records_in, 6) if records_in else 0.0,
            "discernibility": disc,
            "average_class_size": round(float(f.mean()), 3) if len(f) else None,
            "classes": int(len(f))}
