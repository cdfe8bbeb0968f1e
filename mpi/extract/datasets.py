"""Data dictionaries: which of an agency's record attributes exist, what they are, and how they
may be released.

Owns: validating a dataset dictionary (names, types, classes, allowed generalizations and the
default one, with a row/field/reason for every problem) and the two use cases over it:
``put_dataset`` (an agency replaces its own dataset's dictionary; it cannot sign an
attribute off as non-identifying, a steward does, mpi/extract/signoff.py) and ``list_catalogue`` (what
researchers choose from). An attribute without an entry can never be released: requests are
checked against these entries (mpi/extract/workflow.py). Must not: run SQL (mpi/store/extracts.py)
or know about HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry
from mpi.errors import Forbidden, InvalidInput, Problem
from mpi.extract.generalize import (
    APPLICABLE,
    ATTRIBUTE_CLASSES,
    ATTRIBUTE_TYPES,
    GENERALIZATIONS,
    default_generalization,
)
from mpi.extract.hierarchy import groupings, identifying_kind
from mpi.principals import Principal
from mpi.store import extracts as xstore
from mpi.store import signoffs

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

TYPES = ATTRIBUTE_TYPES
CLASSES = ATTRIBUTE_CLASSES
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_ATTRIBUTES = 200
MAX_TEXT = 2000


def check_dataset_name(dataset: str) -> None:
    """Refuse a dataset name that is not an identifier (1-64 letters, digits, '_')."""
    if not NAME_RE.match(dataset):
        raise InvalidInput("invalid dataset name", problems=[Problem(
            None, "dataset", "1-64 letters, digits or '_', not starting with a digit")])


def _release_fields(i: int, entry: Mapping[str, Any], name: str, type_: str, klass: str,
                    allowed: Sequence[str], problems: list[Problem]) -> list[dict[str, str]]:
    """Issue #16: identifying fields never class other with none; no sign-off from the agency;
    the grouping maps of an entry."""
    signed = entry.get("non_identifying_signed_off_by")
    identifying = identifying_kind(name, type_)
    if identifying and klass == "other" and "none" in allowed:
        problems.append(Problem(i, "class", f"attribute {name!r}: dates, ZIPs, ages and birth "
                                "fields identify people; class other with generalization none "
                                "is refused (use quasi_identifier, or drop 'none')"))
    if signed is not None:   # Decision 94: the steward's own action, never the agency's word
        problems.append(Problem(i, "non_identifying_signed_off_by", f"attribute {name!r}: an "
                                "agency cannot sign off its own attribute; a steward signs an "
                                "attribute off as non-identifying through its sign-off action"
                                + (" (never a date, ZIP, age or birth field)"
                                   if identifying else "")))
    try:
        maps = groupings(entry.get("hierarchy"))
    except InvalidInput as exc:
        problems.append(Problem(i, "hierarchy", exc.message))
        maps = []
    if maps and type_ != "string":
        problems.append(Problem(i, "hierarchy", "grouping maps are for string attributes"))
    return maps


def _check_entry(i: int, entry: Mapping[str, Any], seen: set[str],
                 problems: list[Problem]) -> dict[str, Any] | None:
    start = len(problems)
    name, type_, klass = entry.get("name"), entry.get("type"), entry.get("class")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(Problem(i, "name", "must be an identifier (letters, digits, '_'; 1-64)"))
    elif name in seen:
        problems.append(Problem(i, "name", "repeated in this dictionary"))
    else:
        seen.add(name)
    if type_ not in TYPES:
        problems.append(Problem(i, "type", f"must be one of {', '.join(TYPES)}"))
    if klass not in CLASSES:
        problems.append(Problem(i, "class", f"must be one of {', '.join(CLASSES)}"))
    desc = entry.get("description")
    if not isinstance(desc, str) or not desc.strip() or len(desc) > MAX_TEXT:
        problems.append(Problem(i, "description", f"1-{MAX_TEXT} characters required"))
    allowed = entry.get("allowed_generalizations")
    if not isinstance(allowed, list) or not allowed or not all(isinstance(a, str) for a in allowed):
        problems.append(Problem(i, "allowed_generalizations", "a non-empty list of names"))
        allowed = []
    for g in allowed:
        if g not in GENERALIZATIONS:
            problems.append(Problem(i, "allowed_generalizations",
                                    f"unknown generalization {g[:40]!r}; known: "
                                    f"{', '.join(GENERALIZATIONS)}"))
        elif type_ in TYPES and g not in APPLICABLE[type_]:
            problems.append(Problem(i, "allowed_generalizations",
                                    f"{g} does not apply to type {type_}"))
    if len(set(allowed)) != len(allowed):
        problems.append(Problem(i, "allowed_generalizations", "repeated names"))
    default = entry.get("default_generalization")
    if len(problems) > start:
        return None
    assert isinstance(name, str) and isinstance(type_, str) and isinstance(klass, str)
    if default is None:
        suggested = default_generalization(name, type_, klass)
        # never fall back to a less protective release (exact dates) than the default
        default = suggested if suggested in allowed else None
        if default is None:
            problems.append(Problem(i, "default_generalization", f"required: the suggested "
                                    f"default {suggested} is not among the allowed ones"))
            return None
    elif default not in allowed:
        problems.append(Problem(i, "default_generalization", "must be one of the allowed "
                                "generalizations"))
        return None
    before = len(problems)
    maps = _release_fields(i, entry, name, type_, klass, allowed, problems)
    return None if len(problems) > before else {
        "name": name, "type": type_, "description": desc.strip(), "klass": klass,  # type: ignore[union-attr]
        "allowed_generalizations": list(allowed), "default_generalization": default,
        "hierarchy": maps or None}


def validate_dictionary(attributes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Checked dictionary entries (``row`` in problems = 1-based entry position)."""
    if not isinstance(attributes, Sequence) or isinstance(attributes, str | bytes):
        raise InvalidInput("invalid dictionary", problems=[Problem(None, "attributes",
                                                                    "must be a list")])
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInput("invalid dictionary", problems=[Problem(
            None, "attributes", f"at most {MAX_ATTRIBUTES} attributes per dataset")])
    problems: list[Problem] = []
    seen: set[str] = set()
    out = []
    for i, entry in enumerate(attributes, start=1):
        if not isinstance(entry, Mapping):
            problems.append(Problem(i, None, "each attribute must be an object"))
            continue
        checked = _check_entry(i, entry, seen, problems)
        if checked is not None:
            out.append(checked)
    if problems:
        raise InvalidInput(f"{len({p.row for p in problems})} of {len(attributes)} dictionary "
                           "entries are invalid; nothing was stored", problems=problems)
    return out


def _entry_out(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "type": row["type"], "description": row["description"],
            "class": row["klass"], "allowed_generalizations": json.loads(
                row["allowed_generalizations"]),
            "default_generalization": row["default_generalization"],
            "non_identifying_signed_off_by": row.get("non_identifying_signed_off_by"),
            "non_identifying_signed_off_at": row.get("signed_off_at"),
            "non_identifying_sign_off_reason": row.get("sign_off_reason"),
            "hierarchy": json.loads(row["hierarchy"]) if row.get("hierarchy") else None}


def put_dataset(registry: Registry, principal: Principal, dataset: str, *,
                description: str | None, attributes: Sequence[Mapping[str, Any]]
                ) -> dict[str, Any]:
    """Replace the caller agency's dictionary for ``dataset`` (audited; refusals too)."""
    agency = principal.agency
    target = f"dataset:{agency}/{dataset}"
    try:
        if principal.role != "agency" or not agency:
            raise Forbidden("only an agency principal registers its own datasets")
        check_dataset_name(dataset)
        if description is not None and len(description) > MAX_TEXT:
            raise InvalidInput("invalid dataset", problems=[Problem(
                None, "description", f"at most {MAX_TEXT} characters")])
        entries = validate_dictionary(attributes)
    except (InvalidInput, Forbidden) as exc:
        outcome = "denied" if isinstance(exc, Forbidden) else "invalid"
        registry.record_audit([AuditEntry(principal.principal_id, "datasets.put", target, outcome)])
        raise
    rows = [{**e, "allowed_generalizations": json.dumps(e["allowed_generalizations"]),
             "hierarchy": json.dumps(e["hierarchy"]) if e["hierarchy"] else None}
            for e in entries]
    new = {e["name"]: (e["type"], e["klass"]) for e in entries}
    dropped = [s["name"] for s in signoffs.list_sign_offs(registry.store.cursor(), agency=agency,
                                                         dataset=dataset)
               if new.get(s["name"]) != (s["type"], s["klass"])]
    entry = AuditEntry(principal.principal_id, "datasets.put", target,
                       detail={"attributes": [e["name"] for e in entries],
                               "sign_offs_dropped": dropped})
    with registry.audited_transaction([entry]) as cur:
        xstore.replace_dataset(cur, agency=agency, dataset=dataset, description=description,
                               attributes=rows, principal_id=principal.principal_id,
                               now=registry.clock())
    return get_dataset(registry, agency=agency, dataset=dataset)


def get_dataset(registry: Registry, *, agency: str, dataset: str) -> dict[str, Any]:
    """One dataset dictionary as the API shows it."""
    found = [d for d in list_datasets(registry) if (d["agency"], d["dataset"]) == (agency, dataset)]
    return found[0]


def list_datasets(registry: Registry) -> list[dict[str, Any]]:
    """Every dataset dictionary with its entries (no values: dictionaries describe, not hold)."""
    cur = registry.store.cursor()
    entries: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in xstore.list_dataset_attributes(cur):
        entries.setdefault((row["agency"], row["dataset"]), []).append(_entry_out(row))
    return [{**d, "attributes": entries.get((d["agency"], d["dataset"]), [])}
            for d in xstore.list_datasets(cur)]


def list_catalogue(registry: Registry, principal: Principal) -> dict[str, Any]:
    """The catalogue researchers choose from (audited read)."""
    out = list_datasets(registry)
    registry.record_audit([AuditEntry(principal.principal_id, "datasets.list", "datasets")])
    return {"datasets": out}


def dictionary_entries(registry: Registry) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every entry keyed by (agency, dataset, name), with the API's field names."""
    return {(r["agency"], r["dataset"], r["name"]): _entry_out(r)
            for r in xstore.list_dataset_attributes(registry.store.cursor())}
