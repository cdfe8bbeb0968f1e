"""The steward's use cases of one registry, called for a principal (the API's entry point).

Owns: one principal-first method per steward use case (the review queue, labels and
constraints, merge and split, the model lifecycle, the linkage-quality report), so every route
calls a use case the same way as records and persons go through ``mpi.access.Access``: a service
object of the open registry, the authenticated principal first. Must not: hold domain logic
(each method is the module function it names) or know about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpi import reports
from mpi.errors import Forbidden
from mpi.principals import Principal
from mpi.steward import (
    labels,
    lineage,
    modelops,
    rescore,
    review,
    stewardship,
    verification,
)
from mpi.steward.modeljobs import TrainingJobs
from mpi.steward.registryjobs import RegistryJobs

if TYPE_CHECKING:
    from mpi.identity.registry import Registry


class StewardDesk:
    """Steward use cases of one registry, each called with the principal first."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # ---- the review queue -------------------------------------------------------------
    def list_review(self, principal: Principal, *, kind: str | None = None, status: str = "open",
                    agency: str | None = None, min_probability: float | None = None,
                    max_probability: float | None = None, after: int = 0,
                    limit: int = 50, sort: str = "id", explained: bool = True) -> dict[str, Any]:
        """A page of review items (``review.list_review``)."""
        return review.list_review(self.registry, principal=principal.principal_id, kind=kind,
                                  status=status, agency=agency, min_probability=min_probability,
                                  max_probability=max_probability, after=after, limit=limit,
                                  sort=sort, explained=explained)

    def read_review_item(self, principal: Principal, item_id: int) -> dict[str, Any]:
        """One review item, explained, with its verification tasks (``review.get_review_item``,
        ``verification.item_tasks``)."""
        out = review.get_review_item(self.registry, item_id, principal=principal.principal_id)
        return {**out, "verifications": verification.item_tasks(self.registry, item_id)}

    def reopen_review(self, principal: Principal, item_id: int, *, reason: str) -> dict[str, Any]:
        """Reopen a review item (``review.reopen_review``)."""
        return review.reopen_review(self.registry, item_id, reason=reason,
                                    principal=principal.principal_id)

    def rescore_review(self, principal: Principal) -> dict[str, Any]:
        """Rescore the open items with the active model (``rescore.rescore_queue``)."""
        return rescore.rescore_queue(self.registry, principal=principal.principal_id,
                                     cause="steward")

    def request_verification(self, principal: Principal, item_id: int, *,
                             question: str | None = None) -> dict[str, Any]:
        """Ask the agencies to verify an item's pair (``verification.request_verification``)."""
        return verification.request_verification(self.registry, item_id, question=question,
                                                 principal=principal.principal_id)

    def list_verifications(self, principal: Principal, *, status: str | None = None,
                           after: int = 0, limit: int = 50) -> dict[str, Any]:
        """The calling agency's verification tasks (``verification.list_tasks``)."""
        return verification.list_tasks(self.registry, agency=_agency_of(principal),
                                       principal=principal.principal_id, status=status,
                                       after=after, limit=limit)

    def answer_verification(self, principal: Principal, task_id: int, *, answer: str,
                            note: str | None = None) -> dict[str, Any]:
        """Answer one of the calling agency's tasks (``verification.answer``)."""
        return verification.answer(self.registry, task_id, agency=_agency_of(principal),
                                   principal=principal.principal_id, value=answer, note=note)

    def decide_review(self, principal: Principal, item_id: int, *, decision: str,
                      reason: str) -> dict[str, Any]:
        """Decide a review item (``review.decide_review``)."""
        return review.decide_review(self.registry, item_id, decision=decision, reason=reason,
                                    principal=principal.principal_id)

    # ---- labels and constraints -------------------------------------------------------
    def import_labels(self, principal: Principal, rows: Sequence[labels.LabelRow], *,
                      agency: str | None = None, constrain: bool = True) -> dict[str, Any]:
        """Import labelled pairs (``labels.import_labels``)."""
        return labels.import_labels(self.registry, rows, principal=principal.principal_id,
                                    agency=agency, constrain=constrain)

    def list_constraints(self, principal: Principal, *, status: str = "active",
                         kind: str | None = None, after: int = 0, limit: int = 100,
                         person_key: str | None = None, agency: str | None = None,
                         source_record_id: str | None = None) -> dict[str, Any]:
        """A page of constraints (``labels.list_constraints``)."""
        return labels.list_constraints(self.registry, principal=principal.principal_id,
                                       status=status, kind=kind, after=after, limit=limit,
                                       person_key=person_key, agency=agency,
                                       source_record_id=source_record_id)

    def revoke_constraint(self, principal: Principal, constraint_id: int, *,
                          reason: str) -> dict[str, Any]:
        """Revoke a constraint (``labels.revoke_constraint``)."""
        return labels.revoke_constraint(self.registry, constraint_id, reason=reason,
                                        principal=principal.principal_id)

    # ---- persons by hand --------------------------------------------------------------
    def merge_persons(self, principal: Principal, person_key: str, *, others: Sequence[str],
                      reason: str) -> dict[str, Any]:
        """Merge persons (``stewardship.merge_persons``)."""
        return stewardship.merge_persons(self.registry, person_key, others=others, reason=reason,
                                         principal=principal.principal_id)

    def split_person(self, principal: Principal, person_key: str, *,
                     groups: Sequence[Sequence[tuple[str, str]]], reason: str) -> dict[str, Any]:
        """Split a person (``stewardship.split_person``)."""
        return stewardship.split_person(self.registry, person_key, groups=groups, reason=reason,
                                        principal=principal.principal_id)

    def person_lineage(self, principal: Principal, person_key: str) -> dict[str, Any]:
        """A key's merges and splits, back and forward (``lineage.person_lineage``)."""
        return lineage.person_lineage(self.registry, person_key,
                                      principal=principal.principal_id)

    # ---- the model lifecycle ----------------------------------------------------------
    def train_model(self, principal: Principal, *, seed: int = 42, sample: float = 1.0,
                    name: str = "candidate", link: float | None = None,
                    review: float | None = None) -> str:
        """Start a training job; its id (``modeljobs.TrainingJobs.submit``)."""
        return TrainingJobs(self.registry).submit(principal.principal_id, seed=seed,
                                                  sample=sample, name=name, link=link,
                                                  review=review)

    def list_models(self, principal: Principal) -> list[dict[str, Any]]:
        """Every model version (``modelops.list_models``)."""
        return modelops.list_models(self.registry)

    def get_model(self, principal: Principal, version: str) -> dict[str, Any]:
        """One model version (``modelops.get_model``)."""
        return modelops.get_model(self.registry, version)

    def chart(self, principal: Principal, version: str, name: str, fmt: str) -> tuple[bytes, str]:
        """A chart of a model version (``modelops.chart``)."""
        return modelops.chart(self.registry, version, name, fmt)

    def evaluate_model(self, principal: Principal, version: str) -> dict[str, Any]:
        """Evaluate a version against the labels (``modelops.evaluate_model``)."""
        return modelops.evaluate_model(self.registry, version, principal=principal.principal_id)

    def model_impact(self, principal: Principal, version: str, *,
                     sample: int = 20) -> dict[str, Any]:
        """Preview a promotion (``modelops.model_impact``)."""
        return modelops.model_impact(self.registry, version, principal=principal.principal_id,
                                     sample=sample)

    def promote_model(self, principal: Principal, version: str) -> dict[str, Any]:
        """Promote a version (``modelops.promote_model``)."""
        return modelops.promote_model(self.registry, version, principal=principal.principal_id)

    # ---- long actions as jobs (Decision 84) ------------------------------------------
    def relink(self, principal: Principal, *, engine: str = "duckdb") -> str:
        """Start a live re-link job; its id (``registryjobs.RegistryJobs.submit_relink``)."""
        return RegistryJobs(self.registry).submit_relink(principal.principal_id, engine=engine)

    def export_keys(self, principal: Principal) -> str:
        """Start a keys export job; its id (``registryjobs.RegistryJobs.submit_keys_export``)."""
        return RegistryJobs(self.registry).submit_keys_export(principal.principal_id)

    def job_result_file(self, principal: Principal, job_id: str) -> Path:
        """The file a finished export job wrote (``registryjobs.RegistryJobs.result_file``)."""
        return RegistryJobs(self.registry).result_file(principal.principal_id, job_id)

    # ---- reports ----------------------------------------------------------------------
    def linkage_quality(self, principal: Principal, *,
                        attribute: str) -> reports.LinkageQualityReport:
        """The linkage-quality report by an attribute (``reports.linkage_quality``)."""
        return reports.linkage_quality(self.registry, attribute=attribute,
                                       principal=principal.principal_id)


def _agency_of(principal: Principal) -> str:
    """The agency an agency principal acts for (Forbidden for a principal without one)."""
    if principal.agency is None:
        raise Forbidden("only an agency's principals have verification tasks")
    return principal.agency
