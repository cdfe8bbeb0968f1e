"""The ``mpi extract`` command group: research-extract tools (issue #5).

Owns: the ``extract_app`` typer sub-app that mpi/cli.py registers as ``mpi extract``, and the
parsing and printing of its commands. Must not: hold domain logic, or print tokens, secrets,
person keys or project secrets. It does not import mpi.cli.main (mpi.cli.main imports it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from mpi.cli.common import ClientCert, ClientKey, Tls, client_pair, open_registry

extract_app = typer.Typer(help="Research extracts: build, sign and verify packages.", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@extract_app.command("verify")
def extract_verify(
    package: Annotated[Path, typer.Argument(help="The extract package (.zip).", exists=True,
                                            dir_okay=False, readable=True)],
    public_key: Annotated[Path | None, typer.Option("--public-key", help="Trusted Ed25519 public key "
                                                    "(PEM, from GET /v1/keys/signing); default: "
                                                    "the key inside the package (integrity only).",
                                                    exists=True, dir_okay=False, readable=True)] = None,
) -> None:
    """Check a package offline: manifest signature and every file's SHA-256; name altered files."""
    from mpi.errors import InvalidInput
    from mpi.extract.package import verify_package
    pem = public_key.read_text(errors="replace") if public_key is not None else None
    try:
        check = verify_package(package, public_key_pem=pem)
    except InvalidInput:
        err.print("[red]error:[/red] --public-key is not an Ed25519 public key in PEM form")
        raise typer.Exit(2) from None
    for name in check.altered:
        err.print(f"ALTERED: {escape(name)}")
    for name in check.missing:
        err.print(f"MISSING: {escape(name)}")
    for name in check.unexpected:
        err.print(f"UNEXPECTED: {escape(name)}")
    for note in check.problems:
        err.print(f"[red]problem:[/red] {escape(note)}")
    if not check.signature_ok:
        err.print("[red]BAD SIGNATURE[/red]: manifest.sig does not verify over manifest.json"
                  + (" with the given public key" if public_key is not None else ""))
    if not check.ok:
        err.print(f"[red]FAILED[/red]: {escape(str(package))}")
        raise typer.Exit(1)
    trust = "trusted key" if public_key is not None else "the package's own key (no trusted key given)"
    out.print(f"OK: {check.files} files verified, signature by {trust}, fingerprint {check.fingerprint}")


# ---- the request workflow: list, build, download, close (owned by the workflow helper) -----
Url = Annotated[str | None, typer.Option("--url", help="Running server, e.g. https://127.0.0.1:8443.")]
KeyFile = Annotated[Path | None, typer.Option("--api-key-file", help="API key file (with --url).")]
CaFile = Annotated[Path | None, typer.Option("--ca-file", help="CA certificate to trust (with --url).")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Stopped registry directory "
                                              "(default: $MPI_DATA_DIR or ./mpi-data).")]


def _client(url: str, key_file: Path | None, tls: Tls) -> Any:
    from mpi.agency.client import MpiClient, read_api_key
    if key_file is None:
        raise typer.BadParameter("--url needs --api-key-file")
    return MpiClient(url, api_key=read_api_key(key_file), ca_file=tls[0],
                     client_cert=client_pair(tls[1], tls[2]), max_retries=2)


def _local(data_dir: Path | None, action: Callable[[Any, Any], Any]) -> Any:
    """Run ``action(workflow, principal)`` on a stopped data directory as the steward "cli"."""
    from mpi.extract.workflow import ExtractWorkflow
    from mpi.principals import Principal
    with open_registry(data_dir) as reg:
        flow = ExtractWorkflow(reg, data_dir=reg.settings.data_dir)
        return action(flow, Principal("cli", "cli", "steward"))


def _summary(x: dict[str, Any]) -> str:
    build = x.get("latest_build") or {}
    return (f"{x['extract_id']}  {x['status']:<8} build={x['build_state']:<7} "
            f"rows={build.get('rows', '-')} downloads={x['downloads']}/{x['download_limit']} "
            f"pending={','.join(x['pending_approvals']) or '-'}  {escape(x['title'])}")


def _fail(exc: Exception) -> typer.Exit:
    from mpi.agency.client import ServiceError
    if isinstance(exc, ServiceError):
        err.print(f"[red]refused[/red] ({exc.status}): {escape(str(exc.problem.get('detail', '')))}",
                  soft_wrap=True)
    else:
        err.print(f"[red]refused[/red]: {escape(getattr(exc, 'message', str(exc)))}", soft_wrap=True)
    return typer.Exit(1)


@extract_app.command("list")
def extract_list(url: Url = None, api_key_file: KeyFile = None, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
                 data_dir: DataDir = None,
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List extract requests (all on a local registry; those the key may see on a server)."""
    from mpi.agency.client import ServiceError
    try:
        if url:
            with _client(url, api_key_file, (ca_file, client_cert, client_key)) as c:
                res = c.request("GET", "/v1/extracts")
        else:
            res = _local(data_dir, lambda flow, who: flow.list_requests(who))
    except ServiceError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(res, default=str))
        return
    for x in res["extracts"]:
        out.print(_summary(x))
    if not res["extracts"]:
        out.print("no extract requests")


@extract_app.command("build")
def extract_build(extract_id: str, url: Url = None, api_key_file: KeyFile = None,
                  ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None, data_dir: DataDir = None) -> None:
    """Build (or rebuild) an approved extract: on a server in the background, locally at once."""
    from mpi.agency.client import ServiceError
    from mpi.errors import MpiError
    try:
        if url:
            with _client(url, api_key_file, (ca_file, client_cert, client_key)) as c:
                res = c.request("POST", f"/v1/extracts/{_segment(extract_id, 'extract id')}/build")
            out.print(f"build started: {_summary(res)}")
            return
        res = _local(data_dir, lambda flow, _who: flow.build(
            extract_id, actor="cli", progress=lambda msg: err.print(escape(msg))))
    except (ServiceError, MpiError) as exc:
        raise _fail(exc) from None
    out.print(f"built: {_summary(res)}")
    out.print(f"manifest sha256 {res['latest_build']['manifest_sha256']}")


@extract_app.command("download")
def extract_download(
    extract_id: str,
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the package (.zip).")],
    url: Annotated[str, typer.Option("--url", help="Running server.")],
    api_key_file: Annotated[Path, typer.Option("--api-key-file", help="The requesting researcher's "
                                               "API key file.")],
    ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Download an extract package as its requesting researcher (counts against the limit)."""
    from mpi.agency.client import ServiceError
    try:
        with _client(url, api_key_file, (ca_file, client_cert, client_key)) as c:
            size = c.download(f"/v1/extracts/{_segment(extract_id, 'extract id')}/download",
                              out_file)
    except ServiceError as exc:
        raise _fail(exc) from None
    out.print(f"wrote {escape(str(out_file))} ({size} bytes); check it with "
              f"`mpi extract verify {escape(str(out_file))} --public-key KEY.pem`")


@extract_app.command("close")
def extract_close(extract_id: str, url: Url = None, api_key_file: KeyFile = None,
                  ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None, data_dir: DataDir = None) -> None:
    """Close a project: destroy its pseudonym secret and stored packages."""
    from mpi.agency.client import ServiceError
    from mpi.errors import MpiError
    try:
        if url:
            with _client(url, api_key_file, (ca_file, client_cert, client_key)) as c:
                res = c.request("POST", f"/v1/extracts/{_segment(extract_id, 'extract id')}/close")
        else:
            res = _local(data_dir, lambda flow, who: flow.close(who, extract_id))
    except (ServiceError, MpiError) as exc:
        raise _fail(exc) from None
    out.print(f"closed: {_summary(res)}")


# ---- the rest of the workflow over a server: dictionaries, requests, decisions, accounting ----
ServerUrl = Annotated[str, typer.Option("--url", help="Running server, e.g. https://127.0.0.1:8443.")]
ServerKey = Annotated[Path, typer.Option("--api-key-file", help="API key file of the principal "
                                         "acting (its role decides what it may do).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the JSON response.")]


def _call(url: str, key_file: Path, tls: Tls, method: str, path: str,
          **kwargs: Any) -> Any:
    """One API call; a refusal prints its status, detail and every located problem (exit 1)."""
    from mpi.agency.client import ServiceError
    try:
        with _client(url, key_file, tls) as c:
            return c.request(method, path, **kwargs)
    except ServiceError as exc:
        for p in exc.problem.get("errors") or []:
            row = f"row {p.get('row')} " if p.get("row") is not None else ""
            err.print(escape(f"  {row}{p.get('field') or ''}: {p.get('reason')}"))
        raise _fail(exc) from None


def _json_file(path: Path) -> Any:
    """A JSON document from a file, or a usage error naming the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise typer.BadParameter(f"{path}: not a readable JSON file ({type(exc).__name__})") from None


def _segment(value: str, what: str) -> str:
    """A path segment for a URL; refuses separators so a value cannot change the route."""
    if not value or any(c in value for c in "/?#%\\") or value in (".", ".."):
        raise typer.BadParameter(f"not a valid {what}")
    return value


@extract_app.command("datasets")
def extract_datasets(url: ServerUrl, api_key_file: ServerKey, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
                     as_json: AsJson = False) -> None:
    """The catalogue of data dictionaries (GET /v1/datasets)."""
    res = _call(url, api_key_file, (ca_file, client_cert, client_key),
                "GET", "/v1/datasets")
    if as_json:
        out.print_json(json.dumps(res, default=str))
        return
    for d in res["datasets"]:
        out.print(escape(f"{d['agency']}/{d['dataset']}: {d.get('description') or ''}"))
        for a in d["attributes"]:
            out.print(escape(f"  {a['name']} ({a['type']}, {a['class']}): "
                             f"{', '.join(a['allowed_generalizations'])}; default "
                             f"{a['default_generalization']}"))
    if not res["datasets"]:
        out.print("no datasets")


@extract_app.command("dataset")
def extract_dataset(
    dataset: str,
    file: Annotated[Path, typer.Option("--file", help="JSON: {\"description\", \"attributes\": "
                                       "[...]} as PUT /v1/datasets/{dataset} takes it.",
                                       exists=True, dir_okay=False, readable=True)],
    url: ServerUrl, api_key_file: ServerKey, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Register or replace the agency's dictionary for a dataset (agency key)."""
    res = _call(url, api_key_file, (ca_file, client_cert, client_key),
                "PUT", f"/v1/datasets/{_segment(dataset, 'dataset')}",
                json=_json_file(file))
    out.print(escape(f"stored {res['agency']}/{res['dataset']}: {len(res['attributes'])} attributes"))


@extract_app.command("request")
def extract_request(
    file: Annotated[Path, typer.Argument(help="JSON request as POST /v1/extracts takes it.",
                                         exists=True, dir_okay=False, readable=True)],
    url: ServerUrl, api_key_file: ServerKey, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Request an extract (researcher key); prints its id and the approvals it needs."""
    res = _call(url, api_key_file, (ca_file, client_cert, client_key),
                "POST", "/v1/extracts", json=_json_file(file))
    out.print(f"requested: {_summary(res)}")


@extract_app.command("show")
def extract_show(extract_id: str, url: ServerUrl, api_key_file: ServerKey,
                 ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None) -> None:
    """One request as JSON: status, approvals, pending approvals, build state, latest build."""
    res = _call(url, api_key_file, (ca_file, client_cert, client_key),
                "GET",
                f"/v1/extracts/{_segment(extract_id, 'extract id')}")
    out.print_json(json.dumps(res, default=str))


@extract_app.command("decide")
def extract_decide(
    extract_id: str,
    decision: Annotated[str, typer.Option("--decision", help="approve or deny.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the decision).")],
    url: ServerUrl, api_key_file: ServerKey, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Approve or deny a request in the key's capacity (an agency's approver, or a steward)."""
    if decision not in ("approve", "deny"):
        raise typer.BadParameter("--decision must be approve or deny")
    res = _call(url, api_key_file, (ca_file, client_cert, client_key),
                "POST",
                f"/v1/extracts/{_segment(extract_id, 'extract id')}/approvals",
                json={"decision": decision, "reason": reason})
    out.print(f"{decision}: {_summary(res)}")


@extract_app.command("disclosures")
def extract_disclosures(person_key: str, url: ServerUrl, api_key_file: ServerKey,
                        ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None, as_json: AsJson = False) -> None:
    """The accounting of disclosures for a person (steward, or an agency linked to them)."""
    res = _call(url, api_key_file, (ca_file, client_cert, client_key),
                "GET",
                f"/v1/persons/{_segment(person_key, 'person key')}/disclosures")
    if as_json:
        out.print_json(json.dumps(res, default=str))
        return
    for d in res["disclosures"]:
        attrs = ", ".join(f"{a['agency']}.{a['name']} ({a['generalization']})"
                          for a in d["attributes"])
        out.print(escape(f"{d['disclosed_at']}  {d['extract_id']}  {d['project']!r} to "
                         f"{d['recipient'].get('name') or d['recipient']['principal_id']}: {attrs}"))
    if not res["disclosures"]:
        out.print("no disclosures")


@extract_app.command("report")
def extract_report(url: ServerUrl, api_key_file: ServerKey, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None) -> None:
    """Request turnaround: median and 90th percentile hours (GET /v1/reports/requests)."""
    res = _call(url, api_key_file, (ca_file, client_cert, client_key),
                "GET", "/v1/reports/requests")
    out.print_json(json.dumps(res, default=str))
