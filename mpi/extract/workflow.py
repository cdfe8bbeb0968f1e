"""The research-extract workflow: requests, approvals, builds, downloads and close; the one
object the API and CLI call (datasets.py and accounting.py hold the dictionary and the
accounting/turnaround use cases it delegates to).

Owns: who may see, approve, build, download and close an extract, and the state machine
``pending -> approved | denied``, ``approved -> closed``. An approver of every contributing
agency and a steward (disclosure settings) must approve; any denial ends the request;
separation of duties (README Decision 21). A fully approved extract is built on a background
thread (and again on request), packaged with ``write_package`` and signed with the service key.
Every change and every refusal appends an audit event (changes in their transaction).
Must not: run SQL (mpi/store/extracts.py), know about HTTP, or put a secret, person key or
source id in an audit event or error message.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mpi import humans
from mpi.audit import AuditEntry, key_ref
from mpi.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MpiError,
    NotFound,
    Problem,
    RebuildRequired,
)
from mpi.extract import accounting, datasets, delivery, differencing, linked_tables, signoff
from mpi.extract.protect import PolicyNotMet
from mpi.extract.recall import recall_status, refusal_message
from mpi.extract.request import extract_spec, validate_request
from mpi.identity.scoped_keys import resolve
from mpi.principals import Principal
from mpi.store import extracts as xstore
from mpi.store import extracts_read as xread
from mpi.store import principals as prstore
from mpi.store import releases as rstore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mpi.identity.registry import Registry

STEWARD = "steward"


def _outcome(exc: MpiError) -> str:
    if isinstance(exc, NotFound):
        return "not_found"
    return "denied" if isinstance(exc, Forbidden | Conflict) else "invalid"


def capacities(agencies: list[str]) -> list[str]:
    """The approvals a request needs: one per contributing agency, and the steward's."""
    return [f"agency:{a}" for a in agencies] + [STEWARD]


def _same_person(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


class ExtractWorkflow:
    """The extract use cases of one registry (and its data directory)."""

    def __init__(self, registry: Registry, *, data_dir: Path) -> None:
        self._reg = registry
        self._dir = data_dir
        self._lock = threading.RLock()
        self._signing_key: Ed25519PrivateKey | None = None
        with registry.store.transaction() as cur:  # a build cut off by a stop never finishes
            for row in xstore.list_requests(cur):
                if row["build_state"] in ("queued", "running"):
                    xstore.update_request(cur, row["extract_id"], build_state="failed",
                                          build_error="interrupted by a service stop")
            keep = set()  # only each extract's latest recorded build keeps its package
            for row in xstore.list_requests(cur):
                latest = xstore.latest_build(cur, row["extract_id"])
                if latest is not None and row["status"] != "closed":
                    keep.add(delivery.package_path(data_dir, row["extract_id"],
                                                   int(latest["build_seq"])).name)
        delivery.remove_stray_packages(data_dir, keep)  # what a killed build left

    # ---- audit helpers ----------------------------------------------------------------
    def _audit(self, who: str, action: str, target: str, outcome: str = "ok",
               detail: Mapping[str, Any] | None = None) -> None:
        self._reg.record_audit([AuditEntry(who, action, target, outcome, detail)])

    @contextmanager
    def _refusals(self, principal: Principal, action: str, target: str) -> Iterator[None]:
        try:
            yield
        except MpiError as exc:
            self._audit(principal.principal_id, action, target, _outcome(exc),
                        {"reason": exc.message})
            raise

    # ---- datasets -----------------------------------------------------------------------
    def put_dataset(self, principal: Principal, dataset: str, *, description: str | None,
                    attributes: list[dict[str, Any]]) -> dict[str, Any]:
        """An agency replaces its own dataset dictionary."""
        return datasets.put_dataset(self._reg, principal, dataset, description=description,
                                    attributes=attributes)

    def sign_off(self, principal: Principal, agency: str, dataset: str, attribute: str, *,
                 reason: Any) -> dict[str, Any]:
        """A steward signs an attribute off as non-identifying (Decision 94)."""
        return signoff.sign_off(self._reg, principal, agency=agency, dataset=dataset,
                                attribute=attribute, reason=reason)

    def revoke_sign_off(self, principal: Principal, agency: str, dataset: str, attribute: str,
                        *, reason: Any) -> dict[str, Any]:
        """A steward withdraws an attribute's sign-off (Decision 94)."""
        return signoff.revoke_sign_off(self._reg, principal, agency=agency, dataset=dataset,
                                       attribute=attribute, reason=reason)

    def list_datasets(self, principal: Principal) -> dict[str, Any]:
        """The catalogue."""
        return datasets.list_catalogue(self._reg, principal)

    # ---- requests -----------------------------------------------------------------------
    def create_request(self, principal: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """A researcher asks for an extract; checked against the dictionaries (audited)."""
        with self._refusals(principal, "extracts.request", "extracts"):
            if principal.role != "researcher":
                raise Forbidden("only researchers request extracts")
            now = self._reg.clock()
            agencies = {a["agency"] for a in prstore.list_agencies(self._reg.store.cursor())}
            checked = validate_request(body, entries=datasets.dictionary_entries(self._reg),
                                       agencies=agencies, now=now)
            extract_id = delivery.new_extract_id()
            try:   # issue #16: the risk report before any approval; refused if off policy
                risk = self._risk_preview(extract_id, checked, now)
            except PolicyNotMet as exc:
                raise InvalidInput("the extract request cannot meet the disclosure policy",
                                   problems=[Problem(None, "max_risk", exc.message)]) from None
        row = {**checked, "extract_id": extract_id, "requester_id": principal.principal_id,
               "risk_report": None if risk is None else json.dumps(risk, sort_keys=True, default=str),
               "spec": json.dumps(checked["spec"], sort_keys=True),
               "agencies": json.dumps(checked["agencies"]), "status": "pending", "downloads": 0,
               "build_state": "none", "build_error": None, "created_at": now,
               "decided_at": None, "approved_at": None, "delivered_at": None, "closed_at": None}
        entry = AuditEntry(principal.principal_id, "extracts.request", f"extract:{extract_id}",
                           detail={"agencies": checked["agencies"], "kind": checked["kind"],
                                   "attributes": len(checked["spec"]["attributes"])})
        with self._reg.audited_transaction([entry]) as cur:
            xstore.insert_request(cur, row)
        return self._out(self._find(extract_id))

    def _risk_preview(self, extract_id: str, checked: Mapping[str, Any],
                      now: Any) -> dict[str, Any] | None:
        """The rows extract's risk report as it would be built now (mpi/extract/preview.py)."""
        from mpi.extract.preview import risk_preview
        spec = extract_spec(extract_id, title=checked["title"], kind=checked["kind"],
                            spec=checked["spec"], reference_date=now.date())
        return risk_preview(self._reg, spec, now=now)

    def _find(self, extract_id: str) -> dict[str, Any]:
        row = xstore.find_request(self._reg.store.cursor(), extract_id)
        if row is None:
            raise NotFound("no such extract")
        return row

    def _visible(self, principal: Principal, row: Mapping[str, Any]) -> bool:
        if principal.role in (STEWARD, "admin", "auditor"):
            return True
        if principal.role == "researcher":
            return bool(row["requester_id"] == principal.principal_id)
        if principal.role == "approver":
            return principal.agency in json.loads(row["agencies"])
        return False

    def _visible_row(self, principal: Principal, extract_id: str) -> dict[str, Any]:
        row = self._find(extract_id)
        if not self._visible(principal, row):
            raise NotFound("no such extract")
        return row

    def _out(self, row: Mapping[str, Any]) -> dict[str, Any]:
        cur = self._reg.store.cursor()
        spec = json.loads(row["spec"])
        agencies = json.loads(row["agencies"])
        approvals = xstore.list_approvals(cur, row["extract_id"])
        done = {a["capacity"] for a in approvals}
        build = xstore.latest_build(cur, row["extract_id"])
        keep = ("extract_id", "requester_id", "title", "purpose", "agreement_ref", "kind",
                "status", "expires_at", "download_limit", "downloads", "build_state",
                "build_error", "created_at", "decided_at", "approved_at", "delivered_at",
                "closed_at")
        risk = row.get("risk_report")
        return {**{k: row[k] for k in keep}, **spec, "agencies": agencies,
                "risk_report": json.loads(risk) if risk else None,
                "expired": row["expires_at"] <= self._reg.clock(),
                "approvals": [{k: a[k] for k in ("principal_id", "capacity", "decision", "reason",
                                                 "decided_at")} for a in approvals],
                "pending_approvals": [c for c in capacities(agencies) if c not in done]
                if row["status"] == "pending" else [],
                "latest_build": None if build is None else {
                    k: build[k] for k in ("build_seq", "built_at", "rows", "persons",
                                          "manifest_sha256", "first_delivered_at")},
                "recall": recall_status(cur, row, build)}

    def list_requests(self, principal: Principal) -> dict[str, Any]:
        """The requests the principal may see (own, own agency's, or all for stewards)."""
        rows = [r for r in xstore.list_requests(self._reg.store.cursor())
                if self._visible(principal, r)]
        self._audit(principal.principal_id, "extracts.list", "extracts",
                    detail={"extracts": len(rows)})
        return {"extracts": [self._out(r) for r in rows]}

    def get_request(self, principal: Principal, extract_id: str) -> dict[str, Any]:
        """One request with its approvals and latest build (NotFound if not visible)."""
        target = f"extract:{extract_id}"
        with self._refusals(principal, "extracts.read", target):
            row = self._visible_row(principal, extract_id)
        self._audit(principal.principal_id, "extracts.read", target)
        return self._out(row)

    # ---- approvals ----------------------------------------------------------------------
    def _capacity(self, principal: Principal, row: Mapping[str, Any]) -> str:
        if principal.principal_id == row["requester_id"]:
            raise Forbidden("nobody approves their own request")
        requester = prstore.find_principal(self._reg.store.cursor(), row["requester_id"])
        if requester is not None and _same_person(requester["name"], principal.name):
            raise Forbidden("the requester and an approver may not be the same person "
                            "(same principal name)")
        cur = self._reg.store.cursor()  # and by human: one person, one capacity (Decision 80)
        humans.check_one_capacity(cur, approver_id=principal.principal_id,
                                  requester_id=row["requester_id"], earlier_ids=[
                                      a["principal_id"]
                                      for a in xstore.list_approvals(cur, row["extract_id"])])
        if principal.role == STEWARD:
            return STEWARD
        if principal.role == "approver" and principal.agency in json.loads(row["agencies"]):
            return f"agency:{principal.agency}"
        raise Forbidden("only an approver of a contributing agency or a steward decides")

    def decide(self, principal: Principal, extract_id: str, *, decision: str,
               reason: str | None) -> dict[str, Any]:
        """Approve or deny in the principal's capacity; full approval starts the build."""
        target = f"extract:{extract_id}"
        action = f"extracts.{decision}" if decision in ("approve", "deny") else "extracts.decide"
        with self._refusals(principal, action, target):
            if decision not in ("approve", "deny"):
                raise InvalidInput("decision must be approve or deny")
            with self._reg.store.write_lock:
                row = self._visible_row(principal, extract_id)
                capacity = self._capacity(principal, row)
                if row["status"] != "pending":
                    raise Conflict(f"this request is {row['status']}; it takes no more decisions")
                if row["expires_at"] <= self._reg.clock():
                    raise Conflict("this request has expired")
                approvals = xstore.list_approvals(self._reg.store.cursor(), extract_id)
                if any(a["capacity"] == capacity for a in approvals):
                    raise Conflict(f"{capacity} has already decided on this request")
                now = self._reg.clock()
                agencies = json.loads(row["agencies"])
                approved = {a["capacity"] for a in approvals} | {capacity}
                complete = decision == "approve" and set(capacities(agencies)) <= approved
                entry = AuditEntry(principal.principal_id, action, target,
                                   detail={"capacity": capacity, "complete": complete})
                with self._reg.audited_transaction([entry]) as cur:
                    xstore.insert_approval(cur, {
                        "extract_id": extract_id, "principal_id": principal.principal_id,
                        "capacity": capacity, "decision": decision,
                        "reason": (reason or "")[:2000] or None, "decided_at": now})
                    if decision == "deny":
                        xstore.update_request(cur, extract_id, status="denied", decided_at=now)
                    elif complete:
                        xstore.update_request(cur, extract_id, status="approved", decided_at=now,
                                              approved_at=now, build_state="queued")
        if complete:
            self._start(extract_id, actor="system")
        return self._out(self._find(extract_id))

    # ---- building -----------------------------------------------------------------------
    def signing_key(self) -> Ed25519PrivateKey:
        """The service's Ed25519 signing key (created 0600 on first use)."""
        if self._signing_key is None:
            from mpi.extract.signing import load_or_create_signing_key
            self._signing_key = load_or_create_signing_key(delivery.signing_key_path(self._dir))
        return self._signing_key

    def public_signing_key(self) -> dict[str, str]:
        """The public half of the signing key: PEM and fingerprint."""
        from mpi.extract.signing import key_fingerprint, public_key_pem
        key = self.signing_key()
        return {"algorithm": "Ed25519", "public_key_pem": public_key_pem(key),
                "fingerprint": key_fingerprint(key.public_key())}

    def request_build(self, principal: Principal, extract_id: str) -> dict[str, Any]:
        """(Re)build an approved extract on a background thread (the requester or a steward)."""
        target = f"extract:{extract_id}"
        with self._refusals(principal, "extracts.build", target):
            row = self._visible_row(principal, extract_id)
            if principal.role != STEWARD and principal.principal_id != row["requester_id"]:
                raise Forbidden("only the requester or a steward starts a build")
            with self._lock:  # check and start together: one build per extract at a time
                self._check_buildable(row)
                with self._reg.store.transaction() as cur:
                    xstore.update_request(cur, extract_id, build_state="queued", build_error=None)
                self._start(extract_id, actor=principal.principal_id)
        return self._out(self._find(extract_id))

    def _check_buildable(self, row: Mapping[str, Any]) -> None:
        if row["status"] == "closed":
            raise Conflict("this extract is closed; its project secret is destroyed")
        if row["status"] != "approved":
            raise Conflict(f"this request is {row['status']}, not approved")
        if row["expires_at"] <= self._reg.clock():
            raise Conflict("this extract has expired")
        if self._reg.background.running(f"build-{row['extract_id']}"):
            raise Conflict("a build of this extract is already running")

    def _start(self, extract_id: str, *, actor: str) -> None:
        """Build on the registry's background runner (one build per extract at a time)."""
        name = f"build-{extract_id}"
        self._reg.background.reserve(name, group="build",
                                     busy="a build of this extract is already running")
        self._reg.background.start(name, self._run, extract_id, actor)

    def _run(self, extract_id: str, actor: str) -> None:
        try:
            self.build(extract_id, actor=actor, background=True)
        except Exception as exc:
            self._mark_failed(extract_id, exc)

    def _mark_failed(self, extract_id: str, exc: BaseException) -> None:
        """End a failed build in the ``failed`` state (the message of a non-domain error may
        hold data, so only its type is kept)."""
        error = exc.message if isinstance(exc, MpiError) else \
            f"internal error ({type(exc).__name__})"
        try:
            with self._reg.store.transaction() as cur:
                xstore.update_request(cur, extract_id, build_state="failed", build_error=error)
        except Exception:  # registry closed under us: the next start marks it failed
            return

    def _destroy_secret_if_closed(self, extract_id: str) -> None:
        """A build that raced a close may have (re)created the project secret: destroy it."""
        try:
            current = xstore.find_request(self._reg.store.cursor(), extract_id)
        except Exception:  # registry closed under us; close already destroyed the secret
            return
        if current is None or current["status"] == "closed":
            delivery.destroy_project_secret(self._dir, extract_id)

    def build(self, extract_id: str, *, actor: str, background: bool = False,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Build, package and sign an approved extract now; record who was included."""
        row = self._find(extract_id)
        if not background:
            self._check_buildable(row)
        elif row["status"] != "approved":
            raise Conflict(f"this request is {row['status']}, not approved")
        with self._reg.store.transaction() as cur:
            xstore.update_request(cur, extract_id, build_state="running", build_error=None)
        try:
            return self._build_running(row, actor=actor, progress=progress)
        except BaseException as exc:
            self._destroy_secret_if_closed(extract_id)
            if not background:
                self._mark_failed(extract_id, exc)
            raise

    def _build_running(self, row: Mapping[str, Any], *, actor: str,
                       progress: Callable[[str], None] | None) -> dict[str, Any]:
        """The build proper, once it is marked running."""
        from mpi.extract.build import build_extract
        from mpi.extract.package import write_package
        extract_id = str(row["extract_id"])
        stored = json.loads(row["spec"])
        self._check_still_in_dictionary(stored)
        stored = self._current_sign_offs(stored)
        secret = delivery.load_or_create_project_secret(self._dir, extract_id)
        now = self._reg.clock()
        spec = extract_spec(extract_id, title=row["title"], kind=row["kind"], spec=stored,
                            reference_date=row["created_at"].date())
        # checked against earlier releases to this researcher (Decisions 77 and 78)
        built = differencing.guarded_build(
            self._reg, spec, requester_id=str(row["requester_id"]), project_secret=secret,
            build=lambda **guard: build_extract(self._reg, spec, project_secret=secret, now=now,
                                                progress=progress, **guard))
        seq = xstore.next_build_seq(self._reg.store.cursor(), extract_id)
        path = delivery.package_path(self._dir, extract_id, seq)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        manifest = write_package(path, built.files, signing_key=self.signing_key(), metadata={
            "extract_id": extract_id, "build_seq": seq, "built_at": now.isoformat(),
            "kind": row["kind"], "rows": built.rows})
        entry = AuditEntry(actor, "extracts.build", f"extract:{extract_id}",
                           detail={"build_seq": seq, "rows": built.rows,
                                   "persons": len(built.person_keys), "manifest_sha256": manifest})
        try:
            with self._reg.audited_transaction([entry]) as cur:
                current = xstore.find_request(cur, extract_id)
                if current is None or current["status"] != "approved":
                    raise Conflict("this extract was closed during the build")
                xstore.insert_build(cur, extract_id=extract_id, build_seq=seq, built_at=now,
                                    rows=built.rows, manifest_sha256=manifest,
                                    person_keys=sorted(set(built.person_keys)))
                if built.published is not None:
                    rstore.insert_release(cur, extract_id=extract_id, build_seq=seq,
                                          requester_id=str(row["requester_id"]),
                                          population=built.published.population,
                                          tables=linked_tables.dumps([built.published]))
                xstore.update_request(cur, extract_id, build_state="built", build_error=None)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        delivery.remove_packages(self._dir, extract_id, keep=seq)
        return self._out(self._find(extract_id))

    def _check_still_in_dictionary(self, spec: Mapping[str, Any]) -> None:
        """Attributes without a dictionary entry are never released, even if approved earlier."""
        entries = datasets.dictionary_entries(self._reg)
        for a in spec["attributes"]:
            entry = entries.get((a["agency"], a["dataset"], a["name"]))
            if entry is None or a["generalization"] not in entry["allowed_generalizations"]:
                raise Conflict(f"{a['agency']}.{a['name']} no longer has a dictionary entry "
                               "allowing this generalization; request the extract again")

    def _current_sign_offs(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The spec with a sign-off kept only where approvers saw it on the request and it
        still stands (a revoked one makes the attribute a quasi-identifier again, a newer one
        waits for a new request; Decision 94)."""
        entries = datasets.dictionary_entries(self._reg)
        attrs = [{**a, "non_identifying_signed_off_by": (entries.get(
            (a["agency"], a["dataset"], a["name"])) or {}).get("non_identifying_signed_off_by")
            if a.get("non_identifying_signed_off_by") else None} for a in spec["attributes"]]
        return {**spec, "attributes": attrs}

    def wait(self, timeout: float | None = None) -> None:
        """Wait for running builds (tests; shutdown drains the registry's runner)."""
        self._reg.background.wait(timeout, group="build")

    # ---- download and close -------------------------------------------------------------
    def download(self, principal: Principal, extract_id: str) -> tuple[BinaryIO, str]:
        """The latest package for the requesting researcher, within expiry and limit (audited),
        opened before the download is counted, so a close or rebuild that removes the file
        afterwards cannot cut the delivery short; the caller closes it."""
        target = f"extract:{extract_id}"
        with self._refusals(principal, "extracts.download", target):
            row = self._find(extract_id)
            if principal.principal_id != row["requester_id"]:
                raise Forbidden("only the requesting researcher downloads an extract")
            with self._reg.store.write_lock:
                row = self._find(extract_id)
                build = self._check_downloadable(row)
                now = self._reg.clock()
                n = int(row["downloads"]) + 1
                entry = AuditEntry(principal.principal_id, "extracts.download", target, detail={
                    "build_seq": build["build_seq"], "manifest_sha256": build["manifest_sha256"],
                    "download": n, "download_limit": row["download_limit"]})
                package = delivery.package_path(self._dir, extract_id, build["build_seq"]).open("rb")
                try:
                    with self._reg.audited_transaction([entry]) as cur:
                        xstore.update_request(cur, extract_id, downloads=n,
                                              delivered_at=row["delivered_at"] or now)
                        xstore.mark_build_delivered(cur, extract_id=extract_id,
                                                    build_seq=build["build_seq"], now=now)
                except BaseException:
                    package.close()
                    raise
        return package, f"{extract_id}-b{build['build_seq']}.zip"

    def _check_downloadable(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if row["status"] != "approved":
            raise Conflict(f"this extract is {row['status']}; only an approved extract is "
                           "delivered")
        if row["expires_at"] <= self._reg.clock():
            raise Conflict("this extract has expired")
        if int(row["downloads"]) >= int(row["download_limit"]):
            raise Conflict(f"the download limit ({row['download_limit']}) is used up")
        # a package built before an agency withdrew or narrowed an entry must not be released
        self._check_still_in_dictionary(json.loads(row["spec"]))
        build = xstore.latest_build(self._reg.store.cursor(), row["extract_id"])
        if build is None or not delivery.package_path(
                self._dir, row["extract_id"], build["build_seq"]).exists():
            raise Conflict("this extract has not been built yet")
        if xread.build_has_opted_out(self._reg.store.cursor(), extract_id=row["extract_id"],
                                     build_seq=int(build["build_seq"])):
            raise RebuildRequired(refusal_message())
        return build

    def close(self, principal: Principal, extract_id: str) -> dict[str, Any]:
        """Close a project: destroy its secret and packages; later builds are refused."""
        target = f"extract:{extract_id}"
        with self._refusals(principal, "extracts.close", target):
            row = self._visible_row(principal, extract_id)
            if principal.role != STEWARD and principal.principal_id != row["requester_id"]:
                raise Forbidden("only the requester or a steward closes an extract")
            if row["status"] == "closed":
                raise Conflict("this extract is already closed")
            with self._reg.audited_transaction([AuditEntry(
                    principal.principal_id, "extracts.close", target,
                    detail={"previous_status": row["status"]})]) as cur:
                xstore.update_request(cur, extract_id, status="closed",
                                      closed_at=self._reg.clock(),
                                      decided_at=row["decided_at"] or self._reg.clock())
        delivery.destroy_project_secret(self._dir, extract_id)
        delivery.remove_packages(self._dir, extract_id)
        return self._out(self._find(extract_id))

    # ---- accounting of disclosures and the turnaround report ---------------------------
    def disclosures(self, principal: Principal, person_key: str) -> dict[str, Any]:
        """Every delivered extract that included the person (following key lineage)."""
        with self._refusals(principal, "persons.disclosures", key_ref(person_key)):
            if principal.role != "agency" or not principal.agency:
                return accounting.disclosures(self._reg, principal, person_key)
            # An agency names a person it holds, by its scoped key when scoped (Decision 72).
            master = resolve(self._reg.key_scopes, self._reg.store.cursor(), principal.agency,
                             person_key)
            return {**accounting.disclosures(self._reg, principal, master),
                    "person_key": person_key}

    def request_report(self, principal: Principal) -> dict[str, Any]:
        """Turnaround: median and 90th percentile request -> decision and approval -> delivery."""
        return accounting.request_report(self._reg, principal)
