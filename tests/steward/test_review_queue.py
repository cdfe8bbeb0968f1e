"""Queue freshness, explanations, reopening and agency verification on a real app.

Owns: after a promote of a stricter model the open items are rescored with it (items below its
review threshold resolved with cause ``below_threshold_after_rescore``, audited; the others
show the new probability; filters and the probability sort use it); an item's page names the
date-of-birth level that fired and its parts, name-frequency bands (never a token) and every
record pair across the sides; reopening is audited and keeps the decision's constraints;
verification tasks reach only the two agencies holding the pair, each seeing only its own
record id, and their answers show on the item.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpi.linkage.catalog import candidates_dir
from mpi.linkage.definition import DEFINITION_V3
from mpi.linkage.explain import dob_parts, explain_with
from mpi.linkage.modelfile import default_models_dir, load_version, save_version
from mpi.linkage.scorer import Scorer
from mpi.steward import modelops
from mpi.steward.namefreq import band
from mpi.steward.rescore import BELOW_THRESHOLD
from tests.support.api import A, B, World, close_world, enrolled_world
from tests.support.records import token_records

pytestmark = pytest.mark.integration  # ~400 people enrolled over the API, a promote

TOKENS = token_records(people=400, agencies=2, seed=13)


@pytest.fixture
def sw(tmp_path: Path) -> Iterator[World]:
    """A world whose registry holds the synthetic records (and so some review items)."""
    w = enrolled_world(tmp_path, TOKENS)
    yield w
    close_world(w)


def _stricter(w: World, *, prior_factor: float, review: float) -> str:
    """A version with a smaller prior (every probability lower) and a higher review threshold."""
    reg = w.registry
    model = {**reg.model.model, "probability_two_random_records_match":
             reg.model.model["probability_two_random_records_match"] * prior_factor}
    meta = {**reg.model.meta, "thresholds": {"link": reg.model.thresholds.link,
                                             "review": review}}
    return save_version(candidates_dir(reg.settings), name="stricter", model=model, meta=meta)


def test_promote_rescores_the_queue_and_closes_items_below_the_new_threshold(sw: World) -> None:
    before = {i["item_id"]: i for i in sw.get_json("/v1/review?limit=200")["items"]}
    assert len(before) >= 4
    probs = sorted(i["current_probability"] for i in before.values())
    review = probs[len(probs) // 2]  # about half the queue falls below the new threshold
    version = _stricter(sw, prior_factor=0.5, review=review)
    modelops.promote_model(sw.registry, version, principal=sw.ids["steward"])

    everything = {i["item_id"]: i for i in sw.get_json("/v1/review?status=all&limit=200")["items"]}
    still_open = {k: i for k, i in everything.items() if k in before and i["status"] == "open"}
    closed = [i for k, i in everything.items() if k in before
              and i["decision_reason"] == BELOW_THRESHOLD]
    assert closed and still_open
    for item in closed:
        assert item["status"] == "resolved" and item["decided_by"] == "system"
        assert item["current_probability"] < review
        assert item["scored_model_version"] == version
    for key, item in still_open.items():
        assert item["scored_model_version"] == version
        assert item["current_probability"] >= review
        # the stored queue-time score stays; the current one is the new model's (halved prior)
        assert item["match_probability"] == before[key]["match_probability"]
        assert item["current_probability"] < before[key]["current_probability"]
        assert abs(item["current_probability"] - item["explanation"]["match_probability"]) < 1e-9
    # filters and the sort use the current probability
    cut = sorted(i["current_probability"] for i in still_open.values())[len(still_open) // 2]
    high = sw.get_json(f"/v1/review?min_probability={cut}&limit=200")["items"]
    assert {i["item_id"] for i in high} == {k for k, i in still_open.items()
                                            if i["current_probability"] >= cut}
    desc = sw.get_json("/v1/review?sort=probability_desc&limit=200")["items"]
    assert [i["current_probability"] for i in desc] == sorted(
        (i["current_probability"] for i in desc), reverse=True)
    page1 = sw.get_json("/v1/review?sort=probability_asc&limit=1")
    page2 = sw.get_json(f"/v1/review?sort=probability_asc&limit=1&after={page1['next_after']}")
    asc = sw.get_json("/v1/review?sort=probability_asc&limit=200")["items"]
    assert [page1["items"][0]["item_id"], page2["items"][0]["item_id"]] == [
        i["item_id"] for i in asc[:2]]
    rescore = [e for e in sw.audit() if e["action"] == "review.rescore"][-1]
    assert rescore["principal"] == sw.ids["steward"]
    detail = json.loads(rescore["detail"])
    assert detail["resolved"] == len(closed) and detail["model_version"] == version
    bad = sw.get_json("/v1/review?sort=nonsense", status=422)
    assert "sort" in json.dumps(bad)


def test_item_page_explains_levels_name_frequency_and_every_pair(sw: World) -> None:
    items = sw.get_json("/v1/review?status=all&limit=200")["items"]
    item = max(items, key=lambda i: i["records"]["a"] * i["records"]["b"])
    one = sw.get_json(f"/v1/review/{item['item_id']}")
    pairs = one["pairs"]
    assert pairs["total"] == item["records"]["a"] * item["records"]["b"] == len(pairs["pairs"])
    weights = [p["match_weight"] for p in pairs["pairs"]]
    assert weights == sorted(weights, reverse=True)
    assert abs(weights[0] - one["explanation"]["match_weight"]) < 1e-9
    bands = one["explanation"]["name_frequency"]
    allowed = {None, "unique", "rare", "uncommon", "common", "very common"}
    assert set(bands["left"].values()) <= allowed and set(bands["right"].values()) <= allowed
    assert any(v is not None for v in bands["left"].values())
    assert one["verifications"] == []


def test_a_one_digit_dob_typo_reads_unlike_a_date_decades_off() -> None:
    """The date of birth's explanation names the level that fired and the date's parts."""
    scorer = _scorer()

    def row(dob: tuple[str, str, str, str, str, str, str, list[str]]) -> dict[str, int]:
        full, y, ym, md, yd, swap, _, masks = dob
        out = {"date_of_birth": hash(full) & 0xFFFFFFF or 1, "date_of_birth_year": hash(y) & 0xFFFF,
               "date_of_birth_year_month": hash(ym) & 0xFFFF,
               "date_of_birth_month_day": hash(md) & 0xFFFF,
               "date_of_birth_year_day": hash(yd) & 0xFFFF,
               "date_of_birth_swap": hash(swap) & 0xFFFF}
        out.update({f"date_of_birth_mask{i}": hash(m) & 0xFFFFF for i, m in enumerate(masks, 1)})
        return out

    def dob(d: str) -> tuple[str, str, str, str, str, str, str, list[str]]:
        y, m, dd = d[:4], d[4:6], d[6:]
        masks = [d[:i] + "_" + d[i + 1:] for i in range(8)]
        return (d, y, y + m, m + dd, y + dd, y + dd + m, "", masks)

    base = row(dob("19850612"))
    typo = row(dob("19850613"))  # one digit
    decades = row(dob("19550921"))  # 30 years off, another month and day
    ex_typo = _dob(explain_with(base, typo, scorer=scorer))
    ex_far = _dob(explain_with(base, decades, scorer=scorer))
    assert ex_typo.label == "one digit differs" and ex_typo.agrees
    assert ex_typo.detail is not None and "exactly one digit differs" in ex_typo.detail
    assert not ex_far.agrees and ex_far.label != ex_typo.label
    assert ex_far.detail is not None and "year differs" in ex_far.detail
    assert "more than one digit differs" in ex_far.detail
    assert "one digit differs: differs" in ex_far.detail  # each level checked, by name
    assert ex_typo.detail == "year equal; month equal; day differs; exactly one digit differs"
    # 30 years off in one digit of the year: the same level as a typo, but the parts say where
    decade = _dob(explain_with(base, row(dob("19550612")), scorer=scorer))
    assert decade.label == "one digit differs"
    assert decade.detail == "year differs; month and day equal; exactly one digit differs"
    same_day = _dob(explain_with(base, row(dob("19560612")), scorer=scorer))  # 29 years off
    assert same_day.label == "two of year, month, day equal"
    assert same_day.detail == "year differs; month and day equal; more than one digit differs"
    assert dob_parts(base, row(dob("19551206"))) is not None
    assert band(1, 1000) == "unique" and band(50, 1000) == "very common"
    assert band(2, 1_000_000) == "rare"


def _scorer() -> Scorer:
    mv = load_version(default_models_dir(), "default-v003")
    assert mv.definition == DEFINITION_V3
    return Scorer(mv.definition, mv.params)


def _dob(ex: Any) -> Any:
    return next(c for c in ex.comparisons if c.comparison == "date_of_birth")


def test_reopen_is_audited_and_keeps_the_decision_constraints(sw: World) -> None:
    item = sw.get_json("/v1/review?kind=record_person")["items"][0]
    decided = sw.post_json(f"/v1/review/{item['item_id']}/decision",
                    {"decision": "non_match", "reason": "different people"})
    assert decided["status"] == "decided" and decided["constraint_ids"]
    sw.post_json(f"/v1/review/{item['item_id']}/reopen", {"reason": ""}, status=422)
    again = sw.post_json(f"/v1/review/{item['item_id']}/reopen", {"reason": "new evidence"})
    assert again["status"] == "open" and again["decision"] is None
    sw.post_json(f"/v1/review/{item['item_id']}/reopen", {"reason": "twice"}, status=409)
    sw.post_json("/v1/review/999999/reopen", {"reason": "x"}, status=404)
    sw.post_json(f"/v1/review/{item['item_id']}/reopen", {"reason": "x"}, who=A, status=403)
    active = sw.get_json("/v1/constraints?status=active&limit=1000")["constraints"]
    assert set(decided["constraint_ids"]) <= {c["constraint_id"] for c in active}
    event = [e for e in sw.audit() if e["action"] == "review.reopen" and e["outcome"] == "ok"][-1]
    detail = json.loads(event["detail"])
    assert detail["was"] == "decided" and detail["decision"] == "non_match"
    # decidable again
    redo = sw.post_json(f"/v1/review/{item['item_id']}/decision",
                 {"decision": "defer", "reason": "wait for the agencies"})
    assert redo["status"] == "deferred"


def test_verification_tasks_reach_only_the_two_agencies_with_their_own_ids(sw: World) -> None:
    items = sw.get_json("/v1/review?limit=200")["items"]
    item = next(i for i in items if i["explanation"]
                and i["explanation"]["left"]["agency"] != i["explanation"]["right"]["agency"])
    left, right = item["explanation"]["left"], item["explanation"]["right"]
    made = sw.post_json(f"/v1/review/{item['item_id']}/verification", {})
    assert {t["agency"] for t in made["tasks"]} == {A, B}
    sw.post_json(f"/v1/review/{item['item_id']}/verification", {}, status=409)  # still open
    sw.post_json("/v1/review/999999/verification", {}, status=404)
    sw.post_json(f"/v1/review/{item['item_id']}/verification", {}, who=A, status=403)
    own = {left["agency"]: left["source_record_id"], right["agency"]: right["source_record_id"]}
    for agency, other in ((A, B), (B, A)):
        page = sw.get_json("/v1/verifications", who=agency)
        assert len(page["tasks"]) == 1
        task = page["tasks"][0]
        assert task["source_record_ids"] == [own[agency]]
        text = json.dumps(page)
        assert own[other] not in text and other not in text
        for key in (left["person_key"], right["person_key"], item["person_key"]):
            assert key not in text
        assert "probability" not in text and "weight" not in text
    task_a = sw.get_json("/v1/verifications", who=A)["tasks"][0]
    task_b = sw.get_json("/v1/verifications", who=B)["tasks"][0]
    sw.post_json(f"/v1/verifications/{task_b['task_id']}/answer", {"answer": "same"}, who=A,
          status=404)  # another agency's task does not exist for A
    sw.post_json(f"/v1/verifications/{task_a['task_id']}/answer", {"answer": "maybe"}, who=A,
          status=422)
    done = sw.post_json(f"/v1/verifications/{task_a['task_id']}/answer",
                 {"answer": "same", "note": "confirmed from our file"}, who=A)
    assert done["status"] == "answered" and done["answer"] == "same"
    sw.post_json(f"/v1/verifications/{task_a['task_id']}/answer", {"answer": "different"}, who=A,
          status=409)
    sw.get_json("/v1/verifications", who="steward", status=403)
    assert sw.get_json("/v1/verifications?status=open", who=A)["tasks"] == []
    assert len(sw.get_json("/v1/verifications?status=open", who=B)["tasks"]) == 1
    shown = sw.get_json(f"/v1/review/{item['item_id']}")["verifications"]
    assert {(t["agency"], t["answer"]) for t in shown} == {(A, "same"), (B, None)}
    actions = [e["action"] for e in sw.audit()]
    for action in ("verification.request", "verification.list", "verification.answer"):
        assert action in actions
