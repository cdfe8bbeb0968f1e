"""Use cases of the model lifecycle: list, inspect, chart, evaluate, preview impact, promote.

Owns: what a steward does with model versions once they exist (training is mpi/training.py,
run in the background by mpi/modeljobs.py). Promotion re-links the registry with key carry-over
in one transaction with the activation and its audit event; a version whose parameters and
thresholds equal the active one's is activated without a re-link (zero keys change). Impact
and evaluation change no key. Must not: run SQL (mpi/store), import splink, or put a token or a
person key in any output or audit event.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mpi.audit import AuditEntry
from mpi.errors import Conflict, InvalidInput
from mpi.identity import relink
from mpi.linkage import charts
from mpi.linkage.catalog import find_version_dir, list_all, model_dirs
from mpi.linkage.describe import describe_params, same_parameters
from mpi.linkage.explain import explain_with
from mpi.linkage.modelfile import ModelVersion, load_version
from mpi.linkage.monotone import violations as order_violations
from mpi.linkage.scorer import Scorer
from mpi.linkage.splink_engine import LinkResult
from mpi.steward import modelanalysis as ma
from mpi.store import labels as lstore
from mpi.store import models as mstore
from mpi.store import persons as pstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

MAX_SAMPLE = 200


def load_model(reg: Registry, version: str) -> ModelVersion:
    """A version from the shipped directory or DATA_DIR/models; NotFound / InvalidInput."""
    if version == reg.model.version:
        return reg.model
    dirs = model_dirs(reg.settings)
    return load_version(find_version_dir(dirs, version), version)


def _summary(reg: Registry, version: str, where: Path, meta: dict[str, Any],
             history: list[tuple[str, Any]]) -> dict[str, Any]:
    td = meta.get("training_data", {})
    shipped = model_dirs(reg.settings)[0]
    return {"version": version, "active": version == reg.model.version,
            "location": "shipped" if where == shipped else "registry",
            "parent_version": meta.get("parent_version"), "trained_at": meta.get("trained_at"),
            "thresholds": meta.get("thresholds"), "training_records": td.get("records"),
            "label_count": td.get("labels", 0),
            "activated_at": [t for v, t in history if v == version]}


def trained_here(mv: ModelVersion) -> bool:
    """Whether a version was trained on a registry's own records (not a shipped default)."""
    source = str(mv.meta.get("training_data", {}).get("source", ""))
    return source.startswith(("registry", "spark snapshot"))


def retrain_advice(reg: Registry, *, data_dir: str) -> str | None:
    """What to tell a steward whose active model never saw this registry's records, or None.

    The shipped model's weights and thresholds come from synthetic data: a registry calibrates
    them on its own records with an unsupervised retrain (no labels needed)."""
    if trained_here(reg.model) or reg.index.n == 0:
        return None
    return (f"The active model {reg.model.version} was never trained on this registry: its "
            "weights and thresholds come from synthetic data. Calibrate it on your own records "
            f"(unsupervised, no labels needed): `mpi model train --data-dir {data_dir}`, then "
            f"`mpi model impact VERSION --data-dir {data_dir}` and "
            f"`mpi model promote VERSION --data-dir {data_dir}`.")


def list_models(reg: Registry) -> list[dict[str, Any]]:
    """Every version (shipped and trained here), oldest name first, the active one marked."""
    history = mstore.activations(reg.store.cursor())
    out = []
    for version, d in list_all(model_dirs(reg.settings)):
        meta_path = d / f"{version}.meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        out.append(_summary(reg, version, d, meta, history))
    return out


def get_model(reg: Registry, version: str) -> dict[str, Any]:
    """A version's m/u and match weight per comparison level, thresholds and metrics."""
    mv = load_model(reg, version)
    d = find_version_dir(model_dirs(reg.settings), mv.version)
    out = _summary(reg, mv.version, d, mv.meta, mstore.activations(reg.store.cursor()))
    out.update({
        "thresholds": {"link": mv.thresholds.link, "review": mv.thresholds.review,
                       "link_weight": mv.thresholds.link_weight,
                       "review_weight": mv.thresholds.review_weight},
        "probability_two_random_records_match": mv.params.probability_two_random_records_match,
        "prior_weight": mv.params.prior_weight,
        "comparisons": describe_params(mv.definition, mv.params),
        "level_order_violations": order_violations(mv.definition, mv.params),  # Decision 89
        "training": mv.meta.get("training"), "training_data": mv.meta.get("training_data"),
        "splink_version": mv.meta.get("splink_version"),
        "metrics": {"recorded": mv.meta.get("accuracy"),
                    "latest_evaluation": mstore.latest_evaluation(reg.store.cursor(),
                                                                  mv.version)},
    })
    return out


def chart(reg: Registry, version: str, name: str, fmt: str) -> tuple[bytes, str]:
    """One chart of a version as (bytes, media type): HTML with Vega inlined, or PNG."""
    if name not in charts.CHARTS:
        raise InvalidInput(f"unknown chart; choose one of {', '.join(charts.CHARTS)}")
    if fmt not in ("html", "png"):
        raise InvalidInput("format must be html or png")
    mv = load_model(reg, version)
    th = mv.thresholds
    if name in ("match-weights", "m-u"):
        comps = describe_params(mv.definition, mv.params)
        spec = (charts.match_weights_spec(mv.version, comps, mv.params.prior_weight)
                if name == "match-weights" else charts.m_u_spec(mv.version, comps))
    elif name == "precision-recall":
        scores = ma.score_labels(reg, mv)
        spec = charts.precision_recall_spec(mv.version, ma.precision_recall_curve(scores),
                                            labels=len(scores.weight), link=th.link,
                                            review=th.review)
    else:
        an = ma.analyse(reg, mv)
        spec = (charts.histogram_spec(mv.version,
                                      ma.probability_histogram(an, cuts=(th.review, th.link)),
                                      link=th.link, review=th.review)
                if name == "probability-histogram"
                else charts.cluster_sizes_spec(mv.version, ma.cluster_sizes(an)))
    media = "text/html; charset=utf-8" if fmt == "html" else "image/png"
    return charts.render(spec, "html" if fmt == "html" else "png"), media


def evaluate_model(reg: Registry, version: str, *, principal: str) -> dict[str, Any]:
    """Precision, recall and F1 of the version's pair scores at its thresholds against the
    active labels, plus unsupervised diagnostics; stored and audited, no key changes."""
    mv = load_model(reg, version)
    th = mv.thresholds
    scores = ma.score_labels(reg, mv)
    prob = scores.probability
    an = ma.analyse(reg, mv)
    result: dict[str, Any] = {
        "version": mv.version,
        "labels": {"pairs": int(len(prob)), "matches": int(scores.is_match.sum()),
                   "non_matches": int((~scores.is_match).sum()),
                   "skipped_inactive": scores.skipped},
        "at_link_threshold": {"threshold": th.link, **ma.pair_metrics(scores.is_match,
                                                                       prob >= th.link)},
        "at_review_threshold": {"threshold": th.review, **ma.pair_metrics(scores.is_match,
                                                                           prob >= th.review)},
        "labelled_pairs_in_review_band": int(((prob >= th.review) & (prob < th.link)).sum()),
        "diagnostics": ma.diagnostics(an, link=th.link, review=th.review),
    }
    entry = AuditEntry(principal, "models.evaluate", f"model:{mv.version}",
                       detail={"labels": int(len(prob))})
    with reg.audited_transaction([entry]) as cur:
        seq = mstore.insert_evaluation(cur, model_version=mv.version, principal_id=principal,
                                       label_count=int(len(prob)), result=result,
                                       now=reg.clock())
    result["evaluation_seq"] = seq
    return result


def _pair_class(p: npt.NDArray[Any], link: float, review: float) -> npt.NDArray[Any]:
    return np.where(p >= link, 2, np.where(p >= review, 1, 0))


_CLASS = ("none", "review", "link")


def _explain(scorer: Scorer, left: dict[str, int], right: dict[str, int]) -> dict[str, Any]:
    e = explain_with(left, right, scorer=scorer)
    return {"match_weight": e.match_weight, "match_probability": e.match_probability,
            "prior_weight": e.prior_weight,
            "comparisons": [{"comparison": c.comparison, "level": c.level, "label": c.label,
                             "match_weight": c.match_weight} for c in e.comparisons]}


def _decided(decision: str, explained: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"decision": decision}
    out.update(explained)
    return out


def _reconciliation_figures(reg: Registry, result: LinkResult) -> dict[str, int]:
    """What reconciling ``result`` to the current keys would change."""
    _seq, old_key, rec = relink.dry_run(reg, result)
    changed = rec.record_key != old_key
    affected = set(old_key[changed & (old_key >= 0)].tolist()) | {k for k, _ in rec.retired}
    return {"records_changing_key": int(changed.sum()), "keys_affected": len(affected),
            "persons_merging": rec.merges, "persons_splitting": rec.splits,
            "new_keys": rec.n_new, "persons_after": int(len(np.unique(rec.record_key)))}


_NO_CHURN = {"records_changing_key": 0, "keys_affected": 0, "persons_merging": 0,
             "persons_splitting": 0, "new_keys": 0}


def _no_change(reg: Registry) -> dict[str, int]:
    """The figures of a promotion that re-links nothing (activation only)."""
    n = reg.index.n
    live = reg.index.label[:n][reg.index.active[:n]]
    return {**_NO_CHURN, "persons_after": int(len(np.unique(live)))}


def _same_records(a: ma.Analysis, b: ma.Analysis) -> bool:
    """True when two analyses cover the same records and candidate pairs (one registry state)."""
    return (np.array_equal(a.pair_l, b.pair_l) and np.array_equal(a.pair_r, b.pair_r)
            and a.result.clusters.column("unique_id").equals(b.result.clusters.column("unique_id")))


def model_impact(reg: Registry, version: str, *, principal: str,
                 sample: int = 20) -> dict[str, Any]:
    """Compare a version with the active one over the whole registry, changing nothing."""
    if not 0 <= sample <= MAX_SAMPLE:
        raise InvalidInput(f"sample must be between 0 and {MAX_SAMPLE}")
    cand, active = load_model(reg, version), reg.model
    a_act, a_cand = ma.analyse(reg, active), ma.analyse(reg, cand)
    if not _same_records(a_act, a_cand):  # compared pair by pair below
        raise Conflict("the registry changed while the preview was computed; run it again")
    ta, tc = active.thresholds, cand.thresholds
    rev_act = ma.review_pairs(a_act, link=ta.link, review=ta.review)
    rev_cand = ma.review_pairs(a_cand, link=tc.link, review=tc.review)
    cls_a = _pair_class(a_act.probability, ta.link, ta.review)
    cls_c = _pair_class(a_cand.probability, tc.link, tc.review)
    differ = np.flatnonzero(cls_a != cls_c)
    order = differ[np.argsort(-np.abs(a_cand.weight[differ] - a_act.weight[differ]),
                              kind="stable")][:sample]
    pairs = _sample_pairs(reg, order, a_act, a_cand, active, cand, cls_a, cls_c)
    same = same_parameters(cand.params, active.params) and cand.thresholds == active.thresholds
    drift = _reconciliation_figures(reg, a_act.result)
    # What promote_model would do: a version equal to the active one is activated without a
    # re-link (Decision 28), so nothing changes; any other version is re-linked.
    promote = (_no_change(reg) if same or cand.version == active.version
               else _reconciliation_figures(reg, a_cand.result))
    out = {
        "version": cand.version, "active_version": active.version,
        "same_parameters": same,
        "records": len(a_cand.result.clusters),
        "promote": promote,
        "active_relink": drift,
        "pairs": {"candidate_pairs": int(len(cls_a)), "changed_decision": int(len(differ)),
                  "link_gained": int(((cls_c == 2) & (cls_a != 2)).sum()),
                  "link_lost": int(((cls_a == 2) & (cls_c != 2)).sum())},
        "review_items": {"active": len(rev_act), "candidate": len(rev_cand),
                         "appear": len(rev_cand - rev_act), "clear": len(rev_act - rev_cand)},
        "sample": pairs,
    }
    reg.record_audit([AuditEntry(principal, "models.impact", f"model:{cand.version}",
                                 detail={"sample": len(pairs)})])
    return out


def _sample_pairs(reg: Registry, picks: npt.NDArray[Any], a_act: ma.Analysis, a_cand: ma.Analysis,
                  active: ModelVersion, cand: ModelVersion, cls_a: npt.NDArray[Any],
                  cls_c: npt.NDArray[Any]) -> list[dict[str, Any]]:
    if len(picks) == 0:
        return []
    ls, rs = a_cand.pair_l[picks], a_cand.pair_r[picks]
    refs = mstore.record_refs(reg.store.cursor(), ls.tolist() + rs.tolist())
    with reg.store.write_lock:
        rl, _ = reg.state.rows_for(ls)
        rr, _ = reg.state.rows_for(rs)
        lcols, rcols = reg.index.gather(rl), reg.index.gather(rr)
    s_act = Scorer(active.definition, active.params)
    s_cand = Scorer(cand.definition, cand.params)
    out: list[dict[str, Any]] = []
    for i, p in enumerate(picks.tolist()):
        left = {c: int(v[i]) for c, v in lcols.items()}
        right = {c: int(v[i]) for c, v in rcols.items()}
        out.append({
            "records": [{"agency": refs[int(s)][0], "source_record_id": refs[int(s)][1]}
                        for s in (ls[i], rs[i])],
            "active": _decided(_CLASS[int(cls_a[p])], _explain(s_act, left, right)),
            "candidate": _decided(_CLASS[int(cls_c[p])], _explain(s_cand, left, right)),
        })
    return out


def promote_model(reg: Registry, version: str, *, principal: str,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Activate a version: re-link with key carry-over (one transaction with the activation,
    the key events and the audit event), or activation only when its parameters and
    thresholds equal the active version's. Returns the churn."""
    say = progress or (lambda _m: None)
    mv = load_model(reg, version)
    with reg.store.write_lock:
        active = reg.model
        now = reg.clock()
        before = reg.event_seq
        same = same_parameters(mv.params, active.params) and mv.thresholds == active.thresholds

        def activate(cur: Any) -> None:
            pstore.record_model_activation(cur, mv.version, now=now)

        base = {"from_version": active.version, "to_version": mv.version,
                "labels": lstore.count_labels(reg.store.cursor())}
        if mv.version == active.version or same:
            mode = "already_active" if mv.version == active.version else "activation_only"
            entry = AuditEntry(principal, "models.promote", f"model:{mv.version}",
                               detail={**base, "mode": mode, **_NO_CHURN})
            with reg.audited_transaction([entry]) as cur:
                if mode == "activation_only":
                    activate(cur)
            reg.use_model(mv)
            return {**base, "mode": mode, **_NO_CHURN, "key_events": 0,
                    "records": int(reg.index.active[: reg.index.n].sum())}
        say("exporting records")
        table = reg.model_table(mv.definition)
        if table.num_rows == 0:
            relink.link_registry(reg, model=mv, also=activate, cause="model_promote",
                                 audit=[AuditEntry(principal, "models.promote",
                                                   f"model:{mv.version}",
                                                   detail={**base, "mode": "relink"})])
            return {**base, "mode": "relink", "records": 0, **_NO_CHURN, "key_events": 0}
        result = relink.link_result(reg, table, model=mv, say=say)
        figures = _reconciliation_figures(reg, result)
        entry = AuditEntry(principal, "models.promote", f"model:{mv.version}",
                           detail={**base, "mode": "relink", **figures})
        summary = relink.write_link(reg, result, cause="model_promote", say=say, audit=[entry],
                                    model=mv, also=activate)
        events, _keys = mstore.key_events_since(reg.store.cursor(), before)
    figures.pop("persons_after", None)
    return {**base, "mode": "relink", "records": summary.records, **figures,
            "records_changing_key": summary.keys_changed, "key_events": events,
            "persons": summary.persons}
