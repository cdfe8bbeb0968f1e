"""The steward's console pages: review queue, persons, constraints, models, equity report.

Owns: the HTML forms and pages over ``StewardDesk`` and ``Access`` (the same principal-first
use cases the JSON routes call, so every read and change is audited with the human's
principal); form parsing with messages that name the field; a conflict (409) shown as the
domain's message. Must not: run SQL, hold domain logic, or show a token.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from api.schemas.lifecycle import TrainIn
from api.state import get_access, get_desk, get_jobs
from mpi.errors import MpiError

from . import lineage_svg
from .guard import SignedIn
from .render import failure, harden, page, see_other

router = APIRouter(prefix="/console", include_in_schema=False)

KINDS = ("record_person", "possible_duplicate")
SORTS = {"probability_desc": "highest probability first",
         "probability_asc": "lowest probability first", "id": "oldest first"}
STATUSES = ("open", "deferred", "decided", "resolved", "all")
DECISIONS = {"match": "Same person (match)", "non_match": "Different people (non-match)",
             "defer": "Defer (decide later)"}
CHARTS = ("match-weights", "m-u", "probability-histogram", "precision-recall")
PAGE_SIZES = (10, 25, 50, 100, 200)


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _probability(raw: str, name: str, errors: list[str]) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        errors.append(f"{name}: a number from 0 to 1")
        return None
    return value


# ---- the review queue -----------------------------------------------------------------
@router.get("/review")
async def review_queue(request: Request, viewer: SignedIn) -> HTMLResponse:
    """Review items with filters, a sort and paging."""
    q = request.query_params
    errors: list[str] = []
    kind = q.get("kind") or None
    if kind is not None and kind not in KINDS:
        errors.append(f"kind: one of {', '.join(KINDS)}")
        kind = None
    status = q.get("status") or "open"
    if status not in STATUSES:
        errors.append(f"status: one of {', '.join(STATUSES)}")
        status = "open"
    agency = (q.get("agency") or "").strip() or None
    lo = _probability(q.get("min_probability", ""), "min_probability", errors)
    hi = _probability(q.get("max_probability", ""), "max_probability", errors)
    sort = q.get("sort") or "probability_desc"
    if sort not in SORTS:
        errors.append(f"sort: one of {', '.join(SORTS)}")
        sort = "probability_desc"
    try:
        after = max(0, int(q.get("after") or 0))
        limit = int(q.get("limit") or 25)
    except ValueError:
        errors.append("after/limit: whole numbers")
        after, limit = 0, 25
    limit = limit if limit in PAGE_SIZES else 25
    filters = {"kind": kind or "", "status": status, "agency": agency or "",
               "min_probability": q.get("min_probability", ""),
               "max_probability": q.get("max_probability", ""), "sort": sort, "limit": limit}
    result: dict[str, Any] = {"items": [], "next_after": None}
    code = 422 if errors else 200
    if not errors:
        desk = await get_desk(request)
        try:
            result = await run_in_threadpool(
                desk.list_review, viewer.principal, kind=kind, status=status, agency=agency,
                min_probability=lo, max_probability=hi, after=after, limit=limit, sort=sort,
                explained=False)  # the list shows no explanation: skip scoring the best pairs
        except MpiError as exc:
            code, message = failure(exc)
            errors.append(message)
    items = list(result["items"])
    nxt = result["next_after"]
    next_url = f"/console/review?{urlencode({**filters, 'after': nxt})}" if nxt else None
    first_url = f"/console/review?{urlencode(filters)}" if after else None
    return page(request, "review_list.html", viewer, status=code, items=items, errors=errors,
                filters=filters, kinds=KINDS, statuses=STATUSES, page_sizes=PAGE_SIZES, sorts=SORTS,
                next_url=next_url, first_url=first_url, done=q.get("done"))


async def _item_page(request: Request, viewer: SignedIn, item_id: int, *, status: int = 200,
                     message: str | None = None) -> HTMLResponse:
    desk = await get_desk(request)
    try:
        item = await run_in_threadpool(desk.read_review_item, viewer.principal, item_id)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    steps = []
    ex = item.get("explanation")
    if ex:
        running = ex["prior_weight"]
        for c in ex["comparisons"]:
            running += c["match_weight"]
            steps.append({**c, "running": running})
    return page(request, "review_item.html", viewer, status=status, item=item, steps=steps,
                decisions=DECISIONS, message=message, notice=request.query_params.get("notice"))


@router.get("/review/{item_id}")
async def review_item(request: Request, item_id: int, viewer: SignedIn) -> HTMLResponse:
    """One item: both sides, the per-field waterfall, the decision form."""
    return await _item_page(request, viewer, item_id)


@router.post("/review/{item_id}/decision")
async def decide(request: Request, item_id: int, viewer: SignedIn) -> Response:
    """Decide (match / non-match) or defer an item."""
    form = await request.form()
    decision, reason = _text(form, "decision"), _text(form, "reason")
    problems = []
    if decision not in DECISIONS:
        problems.append("decision: choose match, non-match or defer")
    if not reason:
        problems.append("reason: say why (it is kept with the decision)")
    if problems:
        return await _item_page(request, viewer, item_id, status=422, message="; ".join(problems))
    desk = await get_desk(request)
    try:
        await run_in_threadpool(desk.decide_review, viewer.principal, item_id,
                                decision=decision, reason=reason)
    except MpiError as exc:
        code, text = failure(exc)
        return await _item_page(request, viewer, item_id, status=code, message=text)
    return see_other(f"/console/review?done={item_id}")


@router.post("/review/{item_id}/reopen")
async def reopen(request: Request, item_id: int, viewer: SignedIn) -> Response:
    """Reopen a decided item (with a reason)."""
    form = await request.form()
    reason = _text(form, "reason")
    if not reason:
        return await _item_page(request, viewer, item_id, status=422,
                                message="reason: say why the item is reopened")
    desk = await get_desk(request)
    try:
        await run_in_threadpool(desk.reopen_review, viewer.principal, item_id, reason=reason)
    except MpiError as exc:
        code, text = failure(exc)
        return await _item_page(request, viewer, item_id, status=code, message=text)
    return see_other(f"/console/review/{item_id}?" + urlencode({"notice": "Item reopened."}))


@router.post("/review/{item_id}/verification")
async def ask_agencies(request: Request, item_id: int, viewer: SignedIn) -> Response:
    """Ask the agencies holding the item's best pair to verify it."""
    form = await request.form()
    desk = await get_desk(request)
    try:
        out = await run_in_threadpool(desk.request_verification, viewer.principal, item_id,
                                      question=_text(form, "question") or None)
    except MpiError as exc:
        code, text = failure(exc)
        return await _item_page(request, viewer, item_id, status=code, message=text)
    agencies = sorted({t["agency"] for t in out.get("tasks", [])}) if isinstance(out, dict) else []
    notice = "Verification requested" + (f" from {', '.join(agencies)}." if agencies else ".")
    return see_other(f"/console/review/{item_id}?" + urlencode({"notice": notice}))


# ---- re-link as a background job -------------------------------------------------------
@router.post("/relink")
async def relink(request: Request, viewer: SignedIn) -> Response:
    """Start a re-link of the whole registry with the active model; show its progress."""
    desk = await get_desk(request)
    try:
        job_id = await run_in_threadpool(desk.relink, viewer.principal)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    return see_other(f"/console/jobs/{job_id}")


@router.get("/jobs/{job_id}")
async def job(request: Request, job_id: str, viewer: SignedIn) -> HTMLResponse:
    """A background job's state and progress (the page refreshes itself while it runs)."""
    jobs = await get_jobs(request)
    try:
        info = await run_in_threadpool(jobs.get_job, viewer.principal, job_id)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    running = info["state"] in ("queued", "running")
    share = int(100 * info["done"] / info["total"]) if info.get("total") else None
    return page(request, "job.html", viewer, job=info, running=running, share=share)


# ---- persons --------------------------------------------------------------------------
@router.get("/persons")
async def persons(request: Request, viewer: SignedIn) -> Response:
    """Look a person up by key, or by agency and source record id."""
    q = request.query_params
    key = (q.get("person_key") or "").strip()
    agency, sid = (q.get("agency") or "").strip(), (q.get("source_record_id") or "").strip()
    if key:
        return see_other(f"/console/persons/{quote(key, safe='')}")
    if agency or sid:
        if not (agency and sid):
            return page(request, "persons.html", viewer, status=422, agency=agency, sid=sid,
                        message="agency and source_record_id: give both")
        access = await get_access(request)
        try:
            rec = await run_in_threadpool(access.read_record, viewer.principal, sid, agency=agency)
        except MpiError as exc:
            code, text = failure(exc)
            return page(request, "persons.html", viewer, status=code, agency=agency, sid=sid,
                        message=text)
        if rec.get("person_key"):
            return see_other(f"/console/persons/{quote(rec['person_key'], safe='')}")
        return page(request, "persons.html", viewer, agency=agency, sid=sid,
                    message="This record is not linked to a person (withdrawn).")
    return page(request, "persons.html", viewer, agency="", sid="")


async def _person_page(request: Request, viewer: SignedIn, person_key: str, *,
                       status: int = 200, message: str | None = None,
                       notice: str | None = None) -> HTMLResponse:
    access = await get_access(request)
    desk = await get_desk(request)
    try:
        person = await run_in_threadpool(access.read_person, viewer.principal, person_key)
        lineage = await run_in_threadpool(desk.person_lineage, viewer.principal, person_key)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "persons.html", viewer, status=code, agency="", sid="",
                    message=f"{text} (person key)")
    return page(request, "person.html", viewer, status=status, person=person, message=message,
                notice=notice or request.query_params.get("notice"), lineage=lineage,
                drawing=lineage_svg.layout(lineage),
                lineage_text=[lineage_svg.describe(e) for e in lineage["events"]],
                kind_words=lineage_svg.KIND_WORDS)


@router.get("/persons/{person_key}")
async def person(request: Request, person_key: str, viewer: SignedIn) -> HTMLResponse:
    """A person: status, lineage graph, records, and the merge and split forms."""
    return await _person_page(request, viewer, person_key)


@router.post("/persons/{person_key}/merge")
async def merge(request: Request, person_key: str, viewer: SignedIn) -> Response:
    """Merge other persons into this one; a constraint in the way is named."""
    form = await request.form()
    others = [k for k in _text(form, "person_keys").replace(",", " ").split() if k]
    reason = _text(form, "reason")
    problems = []
    if not others:
        problems.append("person_keys: at least one other person key")
    if not reason:
        problems.append("reason: say why")
    if problems:
        return await _person_page(request, viewer, person_key, status=422,
                                  message="; ".join(problems))
    desk = await get_desk(request)
    try:
        res = await run_in_threadpool(desk.merge_persons, viewer.principal, person_key,
                                      others=others, reason=reason)
    except MpiError as exc:
        code, text = failure(exc)
        return await _person_page(request, viewer, person_key, status=code, message=text)
    notice = f"Merged: {len(res['retired'])} key(s) retired, {res['records_moved']} record(s) moved."
    return see_other(f"/console/persons/{res['person_key']}?{urlencode({'notice': notice})}")


@router.post("/persons/{person_key}/split")
async def split(request: Request, person_key: str, viewer: SignedIn) -> Response:
    """Split a person into the groups chosen per record; a constraint in the way is named."""
    form = await request.form()
    reason = _text(form, "reason")
    groups: dict[str, list[tuple[str, str]]] = {}
    problems = []
    n = 0
    while (ref := _text(form, f"record_{n}")):
        agency, _, sid = ref.partition(":")
        groups.setdefault(_text(form, f"group_{n}") or "1", []).append((agency, sid))
        n += 1
    if len(groups) < 2:
        problems.append("groups: put the records in at least two groups")
    if not reason:
        problems.append("reason: say why")
    if problems:
        return await _person_page(request, viewer, person_key, status=422,
                                  message="; ".join(problems))
    desk = await get_desk(request)
    try:
        res = await run_in_threadpool(desk.split_person, viewer.principal, person_key,
                                      groups=[groups[g] for g in sorted(groups)], reason=reason)
    except MpiError as exc:
        code, text = failure(exc)
        return await _person_page(request, viewer, person_key, status=code, message=text)
    notice = (f"Split: new key(s) {', '.join(res['new_keys'])}; "
              f"{res['records_moved']} record(s) moved.")
    return see_other(f"/console/persons/{quote(person_key, safe='')}?"
                     + urlencode({"notice": notice}))


# ---- constraints ----------------------------------------------------------------------
@router.get("/constraints")
async def constraints(request: Request, viewer: SignedIn) -> HTMLResponse:
    """Constraints with a status and kind filter, paging, and a revoke form on each."""
    q = request.query_params
    status = str(q.get("status")) if q.get("status") in ("active", "revoked", "all") else "active"
    kind = q.get("kind") if q.get("kind") in ("must_link", "cannot_link") else None
    try:
        after = max(0, int(q.get("after") or 0))
    except ValueError:
        after = 0
    person = (q.get("person_key") or "").strip()
    agency, sid = (q.get("agency") or "").strip(), (q.get("source_record_id") or "").strip()
    filters = {"status": status, "kind": kind or "", "person_key": person, "agency": agency,
               "source_record_id": sid}
    desk = await get_desk(request)
    code, message = 200, q.get("error")
    result: dict[str, Any] = {"constraints": [], "next_after": None}
    try:
        result = await run_in_threadpool(
            desk.list_constraints, viewer.principal, status=status, kind=kind, after=after,
            limit=50, person_key=person or None, agency=agency or None,
            source_record_id=sid or None)
    except MpiError as exc:
        code, message = failure(exc)
    nxt = result.get("next_after")
    next_url = f"/console/constraints?{urlencode({**filters, 'after': nxt})}" if nxt else None
    return page(request, "constraints.html", viewer, status=code, rows=result["constraints"],
                filters=filters, next_url=next_url, notice=q.get("notice"), message=message)


@router.post("/constraints/{constraint_id}/revoke")
async def revoke_constraint(request: Request, constraint_id: int, viewer: SignedIn) -> Response:
    """Revoke one constraint (with a reason)."""
    form = await request.form()
    reason = _text(form, "reason")
    if not reason:
        return see_other("/console/constraints?" + urlencode(
            {"error": f"reason: say why constraint {constraint_id} is revoked"}))
    desk = await get_desk(request)
    try:
        await run_in_threadpool(desk.revoke_constraint, viewer.principal, constraint_id,
                                reason=reason)
    except MpiError as exc:
        return see_other("/console/constraints?" + urlencode({"error": failure(exc)[1]}))
    return see_other("/console/constraints?" + urlencode(
        {"notice": f"Constraint {constraint_id} revoked."}))


# ---- models ---------------------------------------------------------------------------
async def _models_page(request: Request, viewer: SignedIn, *, status: int = 200,
                       message: str | None = None) -> HTMLResponse:
    desk = await get_desk(request)
    rows = await run_in_threadpool(desk.list_models, viewer.principal)
    return page(request, "models.html", viewer, status=status, rows=rows, message=message,
                notice=request.query_params.get("notice"))


@router.get("/models")
async def models(request: Request, viewer: SignedIn) -> HTMLResponse:
    """Every model version, and the forms to train one and to re-link."""
    return await _models_page(request, viewer)


@router.get("/models/{version}")
async def model(request: Request, version: str, viewer: SignedIn) -> HTMLResponse:
    """One version: its charts inline and, on request, the impact preview and promotion."""
    desk = await get_desk(request)
    try:
        info = await run_in_threadpool(desk.get_model, viewer.principal, version)
        impact = None
        if request.query_params.get("impact"):
            impact = await run_in_threadpool(desk.model_impact, viewer.principal, version)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    return page(request, "model.html", viewer, info=info, impact=impact, charts=CHARTS,
                version=version, message=request.query_params.get("error"))


@router.get("/models/{version}/charts/{chart}")
async def model_chart(request: Request, version: str, chart: str, viewer: SignedIn) -> Response:
    """A chart of a version as PNG (the same rendering as the API's chart route)."""
    desk = await get_desk(request)
    try:
        body, media = await run_in_threadpool(desk.chart, viewer.principal, version, chart, "png")
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    return harden(Response(content=body, media_type=media))


@router.post("/models/{version}/promote")
async def promote(request: Request, version: str, viewer: SignedIn) -> Response:
    """Promote a version once the steward confirmed the churn shown in the preview."""
    form = await request.form()
    if _text(form, "confirm") != "yes":
        return see_other(f"/console/models/{quote(version, safe='')}?" + urlencode(
            {"impact": "1", "error": "confirm: tick the box to confirm the churn shown"}))
    desk = await get_desk(request)
    try:
        res = await run_in_threadpool(desk.promote_model, viewer.principal, version)
    except MpiError as exc:
        return see_other(f"/console/models/{quote(version, safe='')}?"
                         + urlencode({"error": failure(exc)[1]}))
    return see_other("/console/models?" + urlencode(
        {"notice": f"Promoted {version} ({res.get('mode', 'done')})."}))


@router.post("/models/train")
async def train(request: Request, viewer: SignedIn) -> Response:
    """Start training a candidate version (options checked by the API's ``TrainIn``)."""
    form = await request.form()
    raw = {k: _text(form, k) for k in ("seed", "sample", "name") if _text(form, k)}
    try:
        opts = TrainIn.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return await _models_page(request, viewer, status=422, message=problems)
    desk = await get_desk(request)
    try:
        job_id = await run_in_threadpool(desk.train_model, viewer.principal, seed=opts.seed,
                                         sample=opts.sample, name=opts.name)
    except MpiError as exc:
        code, text = failure(exc)
        return await _models_page(request, viewer, status=code, message=text)
    return see_other(f"/console/jobs/{job_id}")


@router.post("/models/{version}/evaluate")
async def evaluate(request: Request, version: str, viewer: SignedIn) -> HTMLResponse:
    """Evaluate a version against the labels; the model page with the result."""
    desk = await get_desk(request)
    try:
        result = await run_in_threadpool(desk.evaluate_model, viewer.principal, version)
        info = await run_in_threadpool(desk.get_model, viewer.principal, version)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    return page(request, "model.html", viewer, info=info, impact=None, charts=CHARTS,
                version=version, evaluation=result)


# ---- the equity report ----------------------------------------------------------------
@router.get("/reports/equity")
async def equity(request: Request, viewer: SignedIn) -> HTMLResponse:
    """The linkage-quality (equity) report by one attribute."""
    attribute = (request.query_params.get("by") or "").strip()
    report: dict[str, Any] | None = None
    message, code = None, 200
    if attribute:
        desk = await get_desk(request)
        try:
            raw = await run_in_threadpool(desk.linkage_quality, viewer.principal,
                                          attribute=attribute)
            report = dataclasses.asdict(raw)
        except MpiError as exc:
            code, message = failure(exc)
    columns = [k for k in (report["groups"][0] if report and report["groups"] else {})
               if not isinstance(report["groups"][0][k], dict | list)] if report else []
    return page(request, "equity.html", viewer, status=code, attribute=attribute, report=report,
                columns=columns, message=message)
