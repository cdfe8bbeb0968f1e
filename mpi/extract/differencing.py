"""Releases that cannot be differenced against earlier ones to the same researcher (Decision 78).

Owns: the differencing rule and the guarded build. A researcher who holds two releases learns
about the persons in one and not the other (two cohorts a month apart, a rebuild after an
opt-out). The rule: against every earlier build that reached, or may still reach, the same
researcher (mpi/store/releases.py), the persons only in the new build and the persons only in
the earlier one are each none or at least k (rows: the request's k; aggregates: the larger of
k and the cell threshold). A new build that breaks it withholds persons until it holds: the
few newcomers wait until at least k are new; when fewer than k have left (an opt-out), others
of the earlier release are withheld with them, chosen by a keyed rank under the project secret
(the same ones on every rebuild of the project), so that nobody can tell who left. The build
runs again without them (disclosure control may drop more persons; the check repeats); if the
rule still does not hold after a few rounds the build is refused (Conflict). Aggregate builds
also get the tables already released to the researcher, so that they are protected jointly
(mpi/extract/linked_tables.py). Must not: run SQL (mpi/store/releases.py does), put a person
key in a message, report or file, or change what an earlier release contained.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpi.errors import Conflict
from mpi.extract import linked_tables
from mpi.extract.files import json_bytes
from mpi.store import releases as rstore

if TYPE_CHECKING:
    from mpi.extract.build import BuiltExtract, ExtractSpec
    from mpi.identity.registry import Registry

MAX_ROUNDS = 8


Release = Sequence[frozenset[str]]
"""An earlier build's persons, each as the set of today's keys its key led to (merges, splits)."""


@dataclass(frozen=True)
class Earlier:
    """What earlier builds put, or may still put, in the researcher's hands."""

    persons: list[Release]
    tables: list[linked_tables.PublishedTable]


def min_difference(spec: ExtractSpec) -> int:
    """The smallest group of persons a difference between two releases may isolate."""
    return spec.k if spec.kind == "rows" else max(spec.k, spec.threshold)


def _difference(kept: Collection[str], earlier: Release) -> tuple[set[str], int]:
    """Persons only in the new release (keys), and how many of the earlier one it lacks."""
    covered = set().union(*earlier) if earlier else set()
    kept_set = kept if isinstance(kept, set | frozenset) else set(kept)
    return set(kept_set) - covered, sum(1 for g in earlier if not g & kept_set)


def isolating(persons: Collection[str], earlier: Sequence[Release], *, k: int) -> int:
    """How many earlier releases this person set differences to 1..k-1 persons (either way)."""
    kept = frozenset(persons)
    out = 0
    for e in earlier:
        added, gone = _difference(kept, e)
        out += 0 < len(added) < k or 0 < gone < k
    return out


def to_withhold(persons: Collection[str], earlier: Sequence[Release], *, k: int,
                rank: Callable[[str], bytes]) -> frozenset[str]:
    """Persons to leave out so that no earlier release differences this one to 1..k-1 persons:
    newcomers while fewer than k, and, while fewer than k have left, the lowest-ranked others
    of that earlier release."""
    kept, out = set(persons), set()
    changed = True
    while changed:
        changed = False
        for e in earlier:
            added, gone = _difference(kept, e)
            if 0 < len(added) < k:
                kept -= added
                out |= added
                changed = True
            if not 0 < gone < k:
                continue
            for key in sorted(set().union(*e) & kept, key=rank):
                kept.discard(key)
                out.add(key)
                changed = True
                if _difference(kept, e)[1] >= k:
                    break
    return frozenset(out)


def keyed_rank(project_secret: bytes) -> Callable[[str], bytes]:
    """The order in which persons are withheld along with those who left (HMAC under the
    project secret: the same on every rebuild, unpredictable to the researcher)."""
    def rank(key: str) -> bytes:
        return hmac.new(project_secret, b"withhold:" + key.encode(), hashlib.sha256).digest()
    return rank


def earlier_releases(reg: Registry, *, requester_id: str, extract_id: str) -> Earlier:
    """Person sets and aggregate tables of the builds that reached, or may still reach, the
    researcher (the current extract's own undelivered latest build excluded)."""
    cur = reg.store.cursor()
    builds = rstore.reachable_builds(cur, requester_id=requester_id,
                                     current_extract_id=extract_id)
    ids = [(str(b["extract_id"]), int(b["build_seq"])) for b in builds]
    persons = rstore.build_persons(cur, ids)
    tables = [t for population, text in rstore.released_tables(cur, ids)
              for t in linked_tables.loads(population, text)]
    return Earlier(persons=[persons[i] for i in ids], tables=tables)


def guarded_build(reg: Registry, spec: ExtractSpec, *, requester_id: str, project_secret: bytes,
                  build: Callable[..., BuiltExtract]) -> BuiltExtract:
    """Run ``build(withhold=..., linked=...)`` until no earlier release to the researcher
    differences it to fewer than k persons; Conflict when that does not converge."""
    earlier = earlier_releases(reg, requester_id=requester_id, extract_id=spec.extract_id)
    k = min_difference(spec)
    linked = earlier.tables if spec.kind == "aggregate" else None
    rank: Callable[[str], bytes] | None = None
    withheld: frozenset[str] = frozenset()
    for _ in range(MAX_ROUNDS):
        built = build(withhold=withheld, linked=linked)
        if not isolating(built.person_keys, earlier.persons, k=k):
            shown = None if spec.kind == "aggregate" and 0 < len(withheld) < spec.threshold \
                else len(withheld)  # an aggregate's report withholds small counts
            _note(built, shown, k=k, earlier=len(earlier.persons))
            return built
        if rank is None:
            rank = keyed_rank(project_secret)
        more = to_withhold(built.person_keys, earlier.persons, k=k, rank=rank)
        if more <= withheld:
            break
        withheld |= more
    raise Conflict(f"this build would differ from an earlier release to the same researcher by "
                   f"fewer than {k} persons, which would single them out (who joined or who "
                   "left); it is refused until the difference reaches that size")


def _note(built: BuiltExtract, withheld: int | None, *, k: int, earlier: int) -> None:
    """Say in the disclosure report what the cross-release check did (counts only)."""
    report: dict[str, Any] = dict(built.disclosure_report)
    report["cross_release"] = {
        "earlier_releases_checked": earlier, "min_difference": k,
        "persons_withheld": withheld,
        "rule": "against every earlier release to this researcher, the persons only in this "
                "release and those only in the earlier one are each none or at least "
                f"{k}; newcomers wait until there are {k}, and when fewer than {k} have left, "
                "others are withheld with them (the same ones on every rebuild)"}
    built.disclosure_report = report
    built.files["disclosure_report.json"] = json_bytes(report)

