"""An extract request as a researcher sends it: validation against the data dictionaries, and
the stored specification the build runs from.

Owns: checking a request body (title, purpose, agreement, attributes with their chosen
generalizations, cohort, kind and dimensions, k, l, the suppression budget, date shifting,
expiry, download limit) with a
field and reason for every problem; the contributing agencies; and turning the stored
specification into the build's ``ExtractSpec``. Pure: the dictionaries, agencies and ``now``
come in. Must not: run SQL, know about HTTP, or read record values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mpi.errors import InvalidInput, Problem

if TYPE_CHECKING:
    from mpi.extract.build import ExtractSpec

KINDS = ("rows", "aggregate")
MIN_K, MAX_K = 2, 100
MIN_THRESHOLD = 11          # the issue: cells of 1-10 are always suppressed
MAX_ATTRIBUTES = 200
MAX_DIMENSIONS = 4
MAX_EXPIRY_DAYS = 730
MAX_DOWNLOADS = 50
DEFAULT_DOWNLOADS = 3
MAX_L = 20                  # l-diversity of sensitive attributes (issue #16), default 2
DEFAULT_SUPPRESSION, MAX_SUPPRESSION = 0.05, 0.5
_TEXT = {"title": 200, "purpose": 4000, "agreement_ref": 200}

Entries = Mapping[tuple[str, str, str], Mapping[str, Any]]


def _text(body: Mapping[str, Any], field: str, problems: list[Problem]) -> str:
    value = body.get(field)
    limit = _TEXT[field]
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        problems.append(Problem(None, field, f"1-{limit} characters required"))
        return ""
    return value.strip()


def _int(body: Mapping[str, Any], field: str, default: int, lo: int, hi: int,
         problems: list[Problem]) -> int:
    value = body.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        problems.append(Problem(None, field, f"an integer from {lo} to {hi}"))
        return default
    return value


def _date(value: Any, field: str, problems: list[Problem]) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        problems.append(Problem(None, field, "an ISO date (YYYY-MM-DD)"))
        return None


def _expiry(value: Any, now: dt.datetime, problems: list[Problem]) -> dt.datetime:
    fallback = now + dt.timedelta(days=90)
    if value is None:
        problems.append(Problem(None, "expires_at", "required (ISO date-time, in the future)"))
        return fallback
    try:
        at = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    except ValueError:
        problems.append(Problem(None, "expires_at", "an ISO date-time"))
        return fallback
    if at.tzinfo is not None:
        try:
            at = at.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01+05:00 or 9999-12-31-05:00 has no UTC date
            problems.append(Problem(None, "expires_at", "out of range"))
            return fallback
    if at <= now:
        problems.append(Problem(None, "expires_at", "must be in the future"))
    elif at > now + dt.timedelta(days=MAX_EXPIRY_DAYS):
        problems.append(Problem(None, "expires_at", f"at most {MAX_EXPIRY_DAYS} days ahead"))
    return at


def _attributes(items: Any, entries: Entries, problems: list[Problem]) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not items or len(items) > MAX_ATTRIBUTES:
        problems.append(Problem(None, "attributes", f"a list of 1-{MAX_ATTRIBUTES} attributes"))
        return []
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            problems.append(Problem(i, "attributes", "each attribute must be an object"))
            continue
        agency, dataset, name = item.get("agency"), item.get("dataset"), item.get("name")
        entry = entries.get((str(agency), str(dataset), str(name)))
        if entry is None:
            problems.append(Problem(i, "attributes", "no data dictionary entry for this agency, "
                                    "dataset and name; attributes without one are never released"))
            continue
        if (str(agency), str(name)) in seen:
            problems.append(Problem(i, "attributes", "requested twice"))
            continue
        seen.add((str(agency), str(name)))
        gen = item.get("generalization") or entry["default_generalization"]
        if gen not in entry["allowed_generalizations"]:
            problems.append(Problem(i, "attributes.generalization", "not among this attribute's "
                                    "allowed generalizations: "
                                    + ", ".join(entry["allowed_generalizations"])))
            continue
        out.append({"agency": agency, "dataset": dataset, "name": name, "type": entry["type"],
                    "klass": entry["class"], "description": entry["description"],
                    "generalization": gen,
                    "non_identifying_signed_off_by": entry.get("non_identifying_signed_off_by"),
                    "hierarchy": entry.get("hierarchy")})
    return out


def _cohort(value: Any, agencies: set[str], entries: Entries,
            problems: list[Problem]) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not isinstance(value.get("agency"), str):
        problems.append(Problem(None, "cohort.agency", "required: persons with an active record "
                                "at this agency form the cohort"))
        return {"agency": "", "attribute": None, "start": None, "end": None}
    agency = value["agency"]
    if agency not in agencies:
        problems.append(Problem(None, "cohort.agency", "no such agency"))
    attribute = value.get("attribute")
    start = _date(value.get("start"), "cohort.start", problems)
    end = _date(value.get("end"), "cohort.end", problems)
    if attribute is not None:
        types = {e["type"] for (a, _d, n), e in entries.items() if a == agency and n == attribute}
        if types != {"date"}:
            problems.append(Problem(None, "cohort.attribute", "must be a date attribute in this "
                                    "agency's data dictionary"))
        if start is None and end is None:
            problems.append(Problem(None, "cohort.start", "start or end required with an attribute"))
    elif start is not None or end is not None:
        problems.append(Problem(None, "cohort.attribute", "required with start or end"))
    if start and end and start > end:
        problems.append(Problem(None, "cohort.end", "must not be before start"))
    return {"agency": agency, "attribute": attribute, "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None}


def _columns(values: Any, field: str, attrs: list[dict[str, Any]], problems: list[Problem],
             *, limit: int) -> list[str]:
    """Requested attributes named as ``agency.name`` (or a bare ``name`` when unambiguous)."""
    if values is None:
        return []
    if not isinstance(values, list) or len(values) > limit:
        problems.append(Problem(None, field, f"a list of at most {limit} attribute names"))
        return []
    full = {f"{a['agency']}.{a['name']}": a for a in attrs}
    out = []
    for v in values:
        bare = [k for k, a in full.items() if a["name"] == v]
        name = v if v in full else (bare[0] if len(bare) == 1 else None)
        if name is None:
            problems.append(Problem(None, field, f"{str(v)[:64]!r} is not one requested "
                                    "attribute (use agency.name)"))
        elif full[name]["generalization"] == "suppress":
            problems.append(Problem(None, field, f"{name} is suppressed"))
        elif name not in out:
            out.append(name)
    return out


def _max_risk(body: Mapping[str, Any], k: int, kind: Any,
              problems: list[Problem]) -> float | None:
    """The request's maximum prosecutor risk per released row (Decision 94): default 1/k; the
    request may only make it stricter, down to 1/MAX_K."""
    value = body.get("max_risk")
    if value is None:
        return None
    if kind != "rows":
        problems.append(Problem(None, "max_risk", "only for kind rows"))
        return None
    top = 1.0 / max(k, MIN_K)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 1.0 / MAX_K - 1e-12 <= value <= top + 1e-12:
        problems.append(Problem(None, "max_risk", f"a number from {1.0 / MAX_K} to 1/k = "
                                f"{round(top, 6)} (the policy never allows more than 1/k)"))
        return None
    return float(value)


def validate_request(body: Mapping[str, Any], *, entries: Entries, agencies: set[str],
                     now: dt.datetime) -> dict[str, Any]:
    """A checked request: the columns of ``extract_request`` plus ``spec`` (a dict)."""
    problems: list[Problem] = []
    title = _text(body, "title", problems)
    purpose = _text(body, "purpose", problems)
    agreement = _text(body, "agreement_ref", problems)
    attrs = _attributes(body.get("attributes"), entries, problems)
    cohort = _cohort(body.get("cohort"), agencies, entries, problems)
    kind = body.get("kind", "rows")
    if kind not in KINDS:
        problems.append(Problem(None, "kind", "rows or aggregate"))
    dims = _columns(body.get("dimensions"), "dimensions", attrs, problems, limit=MAX_DIMENSIONS)
    if kind == "aggregate" and not dims and not any(p.field == "dimensions" for p in problems):
        problems.append(Problem(None, "dimensions", "an aggregate needs 1-4 dimensions"))
    if kind == "rows" and dims:
        problems.append(Problem(None, "dimensions", "only for kind aggregate"))
    demographics = _columns(body.get("demographics"), "demographics", attrs, problems, limit=8)
    k = _int(body, "k", 5, MIN_K, MAX_K, problems)
    threshold = _int(body, "threshold", MIN_THRESHOLD, MIN_THRESHOLD, 1000, problems)
    limit = _int(body, "download_limit", DEFAULT_DOWNLOADS, 1, MAX_DOWNLOADS, problems)
    date_shift = body.get("date_shift", False)
    if not isinstance(date_shift, bool):
        problems.append(Problem(None, "date_shift", "true or false"))
        date_shift = False
    l_div = _int(body, "l", 2, 1, MAX_L, problems)
    l_entropy = body.get("l_entropy", False)
    if not isinstance(l_entropy, bool):
        problems.append(Problem(None, "l_entropy", "true or false"))
        l_entropy = False
    max_supp = body.get("max_suppression", DEFAULT_SUPPRESSION)
    if isinstance(max_supp, bool) or not isinstance(max_supp, int | float) or \
            not 0 <= max_supp <= MAX_SUPPRESSION:
        problems.append(Problem(None, "max_suppression", f"a number from 0 to {MAX_SUPPRESSION}"))
        max_supp = DEFAULT_SUPPRESSION
    max_risk = _max_risk(body, k, kind, problems)
    expires = _expiry(body.get("expires_at"), now, problems)
    if problems:
        raise InvalidInput("the extract request is invalid", problems=problems)
    involved = sorted({a["agency"] for a in attrs} | {cohort["agency"]})
    spec = {"attributes": attrs, "cohort": cohort, "k": k, "date_shift": date_shift,
            "dimensions": dims, "threshold": threshold, "demographics": demographics,
            "l": l_div, "l_entropy": l_entropy, "max_suppression": float(max_supp),
            "max_risk": max_risk}
    return {"title": title, "purpose": purpose, "agreement_ref": agreement, "kind": kind,
            "spec": spec, "agencies": involved, "expires_at": expires, "download_limit": limit}


def extract_spec(extract_id: str, *, title: str, kind: str, spec: Mapping[str, Any],
                 reference_date: dt.date | None = None) -> ExtractSpec:
    """The build's specification from a stored request (``reference_date``: the date ages
    are judged on, the request's date)."""
    from mpi.extract.build import AttributeSpec, CohortSpec, ExtractSpec
    c = spec["cohort"]
    cohort = CohortSpec(agency=c["agency"], attribute=c.get("attribute"),
                        start=dt.date.fromisoformat(c["start"]) if c.get("start") else None,
                        end=dt.date.fromisoformat(c["end"]) if c.get("end") else None)
    attrs = tuple(AttributeSpec(agency=a["agency"], dataset=a["dataset"], name=a["name"],
                                type=a["type"], klass=a["klass"], description=a["description"],
                                generalization=a["generalization"],
                                non_identifying_signed_off_by=a.get("non_identifying_signed_off_by"),
                                hierarchy=a.get("hierarchy")) for a in spec["attributes"])
    return ExtractSpec(extract_id=extract_id, title=title, kind=kind, attributes=attrs,
                       cohort=cohort, k=int(spec["k"]), date_shift=bool(spec["date_shift"]),
                       dimensions=tuple(spec["dimensions"]), threshold=int(spec["threshold"]),
                       demographics=tuple(spec["demographics"]), reference_date=reference_date,
                       l=int(spec.get("l", 2)), l_entropy=bool(spec.get("l_entropy", False)),
                       max_suppression=float(spec.get("max_suppression", DEFAULT_SUPPRESSION)),
                       risk_threshold=spec.get("max_risk"))
