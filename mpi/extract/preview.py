"""The risk report approvers see before they decide (issue #16): the rows extract's disclosure
control run on the registry as it stands when the request is made.

Owns: ``risk_preview``, which builds the requested rows extract in memory under a throwaway
project secret (so no secret or package exists before approval) and keeps only the counts of
its disclosure-control report: risk before and after, utility, l-diversity, generalization
levels and what would be suppressed and why. Must not: run SQL, store anything, or keep a
value, a pseudonym or a person key.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from mpi.errors import MpiError
from mpi.extract.build import ExtractSpec, build_extract
from mpi.extract.protect import PolicyNotMet
from mpi.extract.pseudonym import new_project_secret

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

KEPT = ("policy", "k", "l", "l_model", "max_suppression", "quasi_identifiers", "sensitive",
        "signed_off_non_identifying", "records_in", "records_out", "records_suppressed",
        "records_fully_generalized", "cohort_agency_rows", "suppression", "generalization_levels",
        "risk_before", "risk", "utility", "l_diversity", "search")


def risk_preview(reg: Registry, spec: ExtractSpec, *, now: dt.datetime) -> dict[str, Any] | None:
    """The disclosure-control figures of a rows extract as it would be built now (None for an
    aggregate; ``{"error": ...}`` when the build would fail otherwise); PolicyNotMet when it
    cannot meet its disclosure policy."""
    if spec.kind != "rows":
        return None
    try:
        built = build_extract(reg, spec, project_secret=new_project_secret(), now=now)
    except PolicyNotMet:
        raise   # the request is refused (mpi/extract/workflow.py, Decision 94)
    except MpiError as exc:
        return {"error": exc.message}
    except RuntimeError:   # protect.py refuses to release what misses k or l
        return {"error": "disclosure control did not reach its policy; the build would refuse"}
    report = built.disclosure_report["k_anonymity"]
    return {**{k: report[k] for k in KEPT if k in report}, "computed_at": now.isoformat(),
            "note": "computed on the registry when the request was made; the build recomputes "
                    "on the data of its day and its disclosure_report.json is final"}
