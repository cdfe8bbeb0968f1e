"""The ``mpi`` command line (typer + rich): agency-side tools and registry operations.

Owns: argument parsing, progress bars and printing. Each command builds Settings and calls one
domain function. Must not: hold domain logic or print tokens, secrets or person keys (except
the keys export the user asked for).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pyarrow.csv as pacsv
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mpi.cli.backup import register as register_backup
from mpi.cli.common import ClientCert, ClientKey, DataDir, Tls, client_pair, settings_for
from mpi.cli.consent import consent_app
from mpi.cli.extract import extract_app
from mpi.cli.journal import journal_app
from mpi.cli.model import model_app
from mpi.cli.remote import Remote, call, download, local_principal, namespace, remote_options, wait_job
from mpi.cli.steward import constraints_app, labels_app, persons_app, review_app
from mpi.errors import MpiError
from mpi.steward.evaluation import Evaluation

app = typer.Typer(help="mpi: privacy-preserving master person index.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
secret_app = typer.Typer(help="Linkage secrets (agency side).", no_args_is_help=True)
keys_app = typer.Typer(help="Person keys.", no_args_is_help=True)
app.add_typer(secret_app, name="secret")
app.add_typer(keys_app, name="keys")
app.add_typer(extract_app, name="extract")
app.add_typer(review_app, name="review")
app.add_typer(persons_app, name="persons")
app.add_typer(labels_app, name="labels")
app.add_typer(constraints_app, name="constraints")
app.add_typer(model_app, name="model")
app.add_typer(journal_app, name="journal")
app.add_typer(consent_app, name="consent")
register_backup(app)  # mpi backup, mpi restore (Decision 70)
# soft_wrap: never break a path or key across lines when output goes to a log or pipe.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

_settings = settings_for


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False)


@app.command()
def schema() -> None:
    """Print the linkage schema (token contract) as JSON."""
    from mpi.agency.schema import schema_document
    print(json.dumps(schema_document(), indent=2))


@secret_app.command("new")
def secret_new(out_file: Annotated[Path, typer.Option("--out", help="Where to write it.")]) -> None:
    """Create a new linkage secret file (0600). Share it only with the other agencies."""
    from mpi.secretfile import write_secret
    kid = write_secret(out_file)
    out.print(f"wrote linkage secret {out_file} (key id {kid}); keep it away from the service")


@app.command()
def tokenize(
    input_file: Annotated[Path, typer.Argument(help="Plaintext CSV or Parquet.")],
    secret_file: Annotated[Path, typer.Option("--secret-file", help="Linkage secret file.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output .jsonl or .parquet.")],
    attribute: Annotated[list[str] | None, typer.Option("--attribute", help="Attribute column "
                                                        "to pass through (repeatable).")] = None,
    date_format: Annotated[list[str] | None, typer.Option("--date-format", help="Extra accepted "
                                                          "date format, e.g. %m/%d/%Y.")] = None,
    rejects: Annotated[Path | None, typer.Option("--rejects", help="Warnings CSV: refused rows, "
                                                 "dropped and repaired fields (default "
                                                 "OUTPUT.rejects.csv).")] = None,
    zero_pad: Annotated[bool, typer.Option("--zero-pad/--no-zero-pad", help="Zero-pad 3-4 "
                                           "digit ZIPs and 7-8 digit SSNs that lost their "
                                           "leading zeros (reported as repaired); off: drop "
                                           "them.")] = True,
) -> None:
    """Tokenize plaintext identifiers agency-side; the output holds no plaintext identifier."""
    from mpi.agency.tokenizer import tokenize_file
    from mpi.secretfile import read_secret
    secret = read_secret(secret_file)
    with _progress() as bar:
        task = bar.add_task("tokenizing", total=None)
        summary = tokenize_file(input_file, secret=secret, out=out_file, rejects=rejects,
                                attributes=attribute or [], date_formats=date_format or [],
                                zero_pad=zero_pad, progress=lambda n: bar.advance(task, n))
    if summary.ignored_columns:
        err.print(f"ignored columns (not in the schema, not --attribute): "
                  f"{', '.join(summary.ignored_columns)}")
    notes = []
    if summary.kept_with_warnings:
        notes.append(f"{summary.kept_with_warnings} with dropped fields")
    if summary.repaired:
        notes.append(f"{summary.repaired} fields repaired")
    kept = f" ({', '.join(notes)})" if notes else ""
    out.print(f"{summary.rows} rows: {summary.written} tokenized{kept} -> {out_file}, "
              f"{summary.rejected} refused -> {summary.rejects} (key id {summary.key_id})")


@app.command()
def ingest(
    tokens: Annotated[Path, typer.Argument(help="Tokenized JSONL or Parquet.")],
    agency: Annotated[str, typer.Option("--agency", help="Agency that sent the file.")],
    rejects: Annotated[Path | None, typer.Option("--rejects", help="Write refused rows here "
                                                 "(default TOKENS.ingest-rejects.csv).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Upsert tokenized records into the registry (online matching; safe to re-run)."""
    from mpi.agency.tokenfile import iter_chunks
    from mpi.identity.registry import Registry
    settings = _settings(data_dir)
    reg = Registry(settings)
    rejects = rejects or tokens.with_name(tokens.name + ".ingest-rejects.csv")
    totals: dict[str, int] = {}
    started = time.perf_counter()
    with _progress() as bar, rejects.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "source_record_id", "field", "reason"])
        task = bar.add_task(f"ingesting for {agency}", total=None)
        for rows, problems in iter_chunks(tokens, chunk=settings.ingest_chunk):
            res = reg.enrol_records(agency, rows)
            for p in problems + res.problems:
                w.writerow([p.row, p.source_record_id or "", p.field or "", p.reason])
            counts = res.counts()
            counts["rejected"] = counts.get("rejected", 0) + len({p.row for p in problems})
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
            bar.advance(task, len(rows) + len(problems))
    elapsed = time.perf_counter() - started
    n = sum(v for k, v in totals.items())
    out.print(f"{n} rows in {elapsed:.1f}s: " + ", ".join(f"{k} {v}" for k, v in
                                                        sorted(totals.items())))
    if totals.get("rejected"):
        err.print(f"{totals['rejected']} rows refused; see {rejects}")
    reg.close()


@app.command()
@remote_options
def link(
    data_dir: DataDir = None,
    engine: Annotated[str, typer.Option("--engine", help="duckdb (in process) or spark.")] = "duckdb",
    spark_master: Annotated[str, typer.Option("--spark-master", help="Spark master URL "
                                              "(--engine spark).")] = "local[*]",
    spark_conf: Annotated[list[str] | None, typer.Option("--spark-conf", help="Spark property "
                                                         "KEY=VALUE (repeatable).")] = None,
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="Spark snapshot and output "
                                                  "directory, shared by every executor (default "
                                                  "DATA_DIR/spark-work/<run id>).")] = None,
    remote: Remote | None = None,
) -> None:
    """Re-link the whole registry with Splink and reconcile to stable person keys.

    With --url the running service does it as a background job (POST /v1/link) and keeps
    serving while Splink computes; this command follows the job's progress."""
    from rich.markup import escape

    from mpi.errors import InvalidInput
    from mpi.identity.registry import Registry
    from mpi.identity.relink import ENGINES
    from mpi.linkage.spark_engine import SparkOptions
    from mpi.steward.modelops import retrain_advice
    if engine not in ENGINES:
        raise InvalidInput(f"--engine must be one of {', '.join(ENGINES)}")
    pairs = []
    for item in spark_conf or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--spark-conf {item!r} is not KEY=VALUE")
        pairs.append((key.strip(), value.strip()))
    if engine != "spark" and (pairs or work_dir or spark_master != "local[*]"):
        raise InvalidInput("--spark-master, --spark-conf and --work-dir apply to --engine spark")
    spark = SparkOptions(master=spark_master, conf=tuple(pairs), work_dir=work_dir)
    t0 = time.perf_counter()
    if remote is not None:
        if pairs or work_dir or spark_master != "local[*]":
            raise InvalidInput("--spark-master, --spark-conf and --work-dir apply to a stopped "
                               "registry; the server uses its own Spark settings")
        job = call(remote, "POST", "/v1/link", json={"engine": engine})
        job = wait_job(remote, job, say=lambda m: err.print(f"[dim]{escape(m)}[/dim]"))
        s, advice = namespace(job["result"]), None
    else:
        reg = Registry(_settings(data_dir))
        try:
            s = reg.link(engine="spark" if engine == "spark" else "duckdb", spark=spark,
                         progress=lambda m: err.print(f"[dim]{escape(m)}[/dim]"),
                         principal=local_principal())
            advice = retrain_advice(reg, data_dir=str(reg.settings.data_dir))
        finally:
            reg.close()
    table = Table(title=f"mpi link ({engine}, {time.perf_counter() - t0:.1f}s, "
                  f"model {s.model_version})")
    for col in ("records", "persons", "merges", "splits", "keys changed", "new keys"):
        table.add_column(col, justify="right")
    table.add_row(*(str(v) for v in (s.records, s.persons, s.merges, s.splits, s.keys_changed,
                                     s.new_keys)))
    out.print(table)
    if advice:
        out.print(f"[yellow]{escape(advice)}[/yellow]")


@keys_app.command("export")
@remote_options
def keys_export(out_file: Annotated[Path, typer.Option("--out", help="CSV to write.")],
                data_dir: DataDir = None, remote: Remote | None = None) -> None:
    """Write agency,source_record_id,person_key for every active record (with --url: the
    server's export job, POST /v1/keys/export, then its file)."""
    if remote is not None:
        job = wait_job(remote, call(remote, "POST", "/v1/keys/export"))
        download(remote, f"/v1/jobs/{job['job_id']}/result", out_file)
        out.print(f"wrote {job['result']['rows']} keys to {out_file}")
        return
    from mpi.audit import AuditEntry
    from mpi.identity.registry import Registry
    reg = Registry(_settings(data_dir))
    try:
        table = reg.export_keys()
        pacsv.write_csv(table, out_file, pacsv.WriteOptions(quoting_style="needed"))
        reg.record_audit([AuditEntry(local_principal(), "keys.export", "registry",
                                     detail={"rows": table.num_rows})])
    finally:
        reg.close()
    out.print(f"wrote {table.num_rows} keys to {out_file}")


@keys_app.command("show")
@remote_options
def keys_show(person_key: str, data_dir: DataDir = None, remote: Remote | None = None) -> None:
    """Show a key's status, successors (if retired) and records."""
    if remote is not None:
        print(json.dumps(call(remote, "GET", f"/v1/persons/{person_key}"), indent=2))
        return
    from mpi.identity.registry import Registry
    reg = Registry(_settings(data_dir))
    print(json.dumps(reg.get_person(person_key), indent=2, default=str))
    reg.close()


@app.command()
def synth(people: Annotated[int, typer.Option(help="Number of people.")] = 1000,
          agencies: Annotated[int, typer.Option(help="Number of agencies.")] = 3,
          seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
          out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("synth"),
          weak_group_share: Annotated[float, typer.Option(help="Share of people in a planted "
                                                          "group with worse data quality.")] = 0.0,
          ) -> None:
    """Write seeded synthetic plaintext agency CSVs and truth.csv."""
    from mpi.synth import synthesize
    s = synthesize(people=people, agencies=agencies, seed=seed, out_dir=out_dir,
                   weak_group_share=weak_group_share)
    out.print(f"{s.people} people, {s.records} records -> {out_dir} "
              f"({', '.join(p.name for p in s.files)}, {s.truth.name})")


@app.command()
def evaluate(truth: Annotated[Path, typer.Option(help="truth.csv from mpi synth.")],
             keys: Annotated[Path, typer.Option(help="keys.csv from mpi keys export.")]) -> None:
    """Print pairwise and cluster precision, recall and F1."""
    from mpi.steward.evaluation import evaluate as run
    from mpi.steward.evaluation import read_keys, read_truth
    ev = run(read_truth(truth), read_keys(keys))
    print_evaluation(ev)


def print_evaluation(ev: Evaluation) -> None:
    """Print an evaluation as a table of precision, recall and F1."""
    table = Table(title="linkage quality")
    for col in ("metric", "precision", "recall", "F1"):
        table.add_column(col, justify="right")
    for name in ("pairwise", "cluster"):
        s = getattr(ev, name)
        table.add_row(name, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}")
    out.print(table)
    out.print(f"records {ev.records}, true persons {ev.true_clusters}, "
              f"predicted persons {ev.predicted_clusters}")
    if ev.missing:
        out.print(f"{ev.missing} records of the truth have no key (refused or never enrolled): "
                  "each counted as a person of its own")


@app.command()
def submit(
    tokens: Annotated[Path, typer.Argument(help="Tokenized JSONL or Parquet.")],
    url: Annotated[str, typer.Option("--url", help="Service base URL, e.g. https://host:8443.")],
    api_key_file: Annotated[Path, typer.Option("--api-key-file", help="File holding the "
                                               "agency's API key.")],
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA certificate to trust.")] = None,
    client_cert: Annotated[Path | None, typer.Option("--client-cert", help="Client certificate "
                                                     "(PEM) for mutual TLS.")] = None,
    client_key: Annotated[Path | None, typer.Option("--client-key", help="Client private key "
                                                    "(PEM) for mutual TLS.")] = None,
    batch_size: Annotated[int, typer.Option(help="Records per request.")] = 1000,
    state_file: Annotated[Path | None, typer.Option(help="Resume state (default "
                                                    "TOKENS.submit-state.json).")] = None,
) -> None:
    """Post a token file to the service in batches: retries 429/5xx, resumable, no duplicates."""
    from mpi.agency.client import MpiClient, read_api_key
    if (client_cert is None) != (client_key is None):
        raise typer.BadParameter("--client-cert and --client-key go together")
    pair = (client_cert, client_key) if client_cert and client_key else None
    with MpiClient(url, api_key=read_api_key(api_key_file), ca_file=ca_file,
                   client_cert=pair) as client, \
            _progress() as bar:
        task = bar.add_task("submitting", total=None)
        summary = client.submit_file(tokens, batch_size=batch_size, state_file=state_file,
                                     progress=lambda n: bar.advance(task, n))
    out.print(f"{summary.records} records in {summary.batches} batches "
              f"({summary.skipped_batches} already sent): "
              + ", ".join(f"{k} {v}" for k, v in sorted(summary.outcomes.items())))
    if summary.rejected:
        err.print(f"{len(summary.rejected)} problems in rejected batches, e.g. "
                  f"{summary.rejected[:3]}")




admin_app = typer.Typer(help="Agencies and principals: against a running server (--url) or "
                        "directly on a stopped data directory (--data-dir).",
                        no_args_is_help=True)
app.add_typer(admin_app, name="admin")
Url = Annotated[str | None, typer.Option("--url", help="Running server, e.g. https://127.0.0.1:8443.")]
KeyFile = Annotated[Path | None, typer.Option("--api-key-file", help="Admin API key file (with --url).")]
CaFile = Annotated[Path | None, typer.Option("--ca-file", help="CA certificate to trust (with --url).")]
KeyOut = Annotated[Path | None, typer.Option("--key-out", help="Write the new API key here (0600) "
                                             "instead of printing it.")]


def _admin(url: str | None, key_file: Path | None, tls: Tls, data_dir: Path | None,
           remote: tuple[str, str, dict[str, Any] | None],
           local: Callable[[Any], Any]) -> Any:
    """Run an admin action over HTTPS (``--url``) or on a stopped data directory."""
    if url:
        from mpi.agency.client import MpiClient, read_api_key
        if key_file is None:
            raise typer.BadParameter("--url needs --api-key-file")
        method, path, body = remote
        with MpiClient(url, api_key=read_api_key(key_file), ca_file=tls[0],
                       client_cert=client_pair(tls[1], tls[2]), max_retries=2) as c:
            return c.request(method, path, json=body) if body is not None else c.request(method, path)
    from mpi.identity.registry import Registry
    from mpi.principals import Principals
    reg = Registry(_settings(data_dir))
    try:
        return local(Principals(reg))
    finally:
        reg.close()


def _show_key(result: dict[str, Any], key_out: Path | None) -> None:
    principal = result["principal"]
    out.print(json.dumps(principal, indent=2, default=str))
    if key_out is not None:
        from mpi.principals import write_key_file
        write_key_file(key_out, result["api_key"])
        out.print(f"API key written to {key_out} (0600); it is not stored anywhere else")
    else:
        out.print(f"API key (shown once): {result['api_key']}")


KeyScopeOpt = Annotated[str, typer.Option(
    "--key-scope", help="shared: master person keys (default); agency: keys derived for this "
    "agency alone, and nothing tells it that another agency holds a person (Decision 72).")]


@admin_app.command("agency-add")
def admin_agency_add(agency: str, url: Url = None, api_key_file: KeyFile = None,
                     ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None, data_dir: DataDir = None,
                     key_scope: KeyScopeOpt = "shared") -> None:
    """Register an agency."""
    res = _admin(url, api_key_file, (ca_file, client_cert, client_key),
                data_dir, ("POST", "/v1/agencies", {"agency": agency, "key_scope": key_scope}),
                 lambda p: p.create_agency(agency, actor="cli", key_scope=key_scope))
    out.print(json.dumps(res, indent=2, default=str))


@admin_app.command("agency-scope")
def admin_agency_scope(agency: str, key_scope: Annotated[str, typer.Argument(
        help="shared or agency.")], url: Url = None, api_key_file: KeyFile = None,
        ca_file: CaFile = None, client_cert: ClientCert = None, client_key: ClientKey = None,
        data_dir: DataDir = None) -> None:
    """Change an agency's key scope (keys it holds under the other scope stop resolving)."""
    res = _admin(url, api_key_file, (ca_file, client_cert, client_key),
                 data_dir, ("PATCH", f"/v1/agencies/{agency}", {"key_scope": key_scope}),
                 lambda p: p.update_agency(agency, actor="cli", key_scope=key_scope))
    out.print(json.dumps(res, indent=2, default=str))


@admin_app.command("agencies")
def admin_agencies(url: Url = None, api_key_file: KeyFile = None, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
                   data_dir: DataDir = None) -> None:
    """List agencies."""
    res = _admin(url, api_key_file, (ca_file, client_cert, client_key),
                data_dir, ("GET", "/v1/agencies", None),
                 lambda p: {"agencies": p.list_agencies()})
    out.print(json.dumps(res, indent=2, default=str))


@admin_app.command("principal-add")
def admin_principal_add(name: str,
                        role: Annotated[str, typer.Option(help="agency, steward, approver, "
                                                          "researcher, auditor or admin.")],
                        agency: Annotated[str | None, typer.Option(help="Agency (roles agency "
                                                                   "and approver).")] = None,
                        human_email: Annotated[str | None, typer.Option(
                            help="The person who holds the key (required for every role but "
                                 "agency; one active principal per person).")] = None,
                        key_out: KeyOut = None, url: Url = None, api_key_file: KeyFile = None,
                        ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None, data_dir: DataDir = None) -> None:
    """Create a principal and its API key (shown once)."""
    def local(p: Any) -> dict[str, Any]:
        row, key = p.create_principal(name, role=role, agency=agency, actor="cli",
                                      human_email=human_email)
        return {"principal": row, "api_key": key}
    res = _admin(url, api_key_file, (ca_file, client_cert, client_key),
                data_dir,
                 ("POST", "/v1/principals", {"name": name, "role": role, "agency": agency,
                                             "human_email": human_email}), local)
    _show_key(res, key_out)


@admin_app.command("principals")
def admin_principals(url: Url = None, api_key_file: KeyFile = None, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
                     data_dir: DataDir = None) -> None:
    """List principals (never their keys)."""
    res = _admin(url, api_key_file, (ca_file, client_cert, client_key),
                data_dir, ("GET", "/v1/principals", None),
                 lambda p: {"principals": p.list_principals()})
    out.print(json.dumps(res, indent=2, default=str))


@admin_app.command("revoke")
def admin_revoke(principal_id: str, url: Url = None, api_key_file: KeyFile = None,
                 ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None, data_dir: DataDir = None) -> None:
    """Revoke a principal and all its keys."""
    res = _admin(url, api_key_file, (ca_file, client_cert, client_key),
                data_dir,
                 ("POST", f"/v1/principals/{principal_id}/revoke", {}),
                 lambda p: p.revoke_principal(principal_id, actor="cli"))
    out.print(json.dumps(res, indent=2, default=str))


@admin_app.command("rotate")
def admin_rotate(principal_id: str, key_out: KeyOut = None, url: Url = None,
                 api_key_file: KeyFile = None, ca_file: CaFile = None,
        client_cert: ClientCert = None, client_key: ClientKey = None,
                 data_dir: DataDir = None) -> None:
    """Issue a new API key for a principal and revoke the old one."""
    def local(p: Any) -> dict[str, Any]:
        row, key = p.rotate_key(principal_id, actor="cli")
        return {"principal": row, "api_key": key}
    res = _admin(url, api_key_file, (ca_file, client_cert, client_key),
                data_dir,
                 ("POST", f"/v1/principals/{principal_id}/rotate", {}), local)
    _show_key(res, key_out)


audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(data_dir: DataDir = None) -> None:
    """Check the audit chain and its signed checkpoints; name the first edited, deleted or
    reordered event, or the truncation."""
    from mpi.identity.registry import Registry
    reg = Registry(_settings(data_dir), refuse_broken_audit=False)  # report, do not refuse
    v = reg.verify_audit()
    reg.close()
    if v.ok:
        out.print(f"OK: {v.events} audit events, chain intact, matches the signed checkpoint "
                  f"at event {v.anchored}")
        return
    where = f" at audit event {v.first_bad_seq}" if v.first_bad_seq is not None else ""
    err.print(f"[red]BROKEN[/red]{where}: {v.reason}", soft_wrap=True)
    raise typer.Exit(1)


report_app = typer.Typer(help="Reports over the registry.", no_args_is_help=True)
app.add_typer(report_app, name="report")


def _label_fig(value: float | None, interval: tuple[float, float] | None, n: int | None,
               withheld: bool) -> str:
    """A label figure with its 95% interval and count, or why it is not shown."""
    if withheld:
        return f"supp. (n={n})"
    if value is None or interval is None:
        return "-"
    return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}] n={n}"


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


@report_app.command("linkage-quality")
@remote_options
def report_linkage_quality(
    by: Annotated[str, typer.Option("--by", help="Record attribute to group by, e.g. "
                                    "race_ethnicity.")],
    data_dir: DataDir = None, remote: Remote | None = None,
) -> None:
    """Equity report: linkage quality per group, flagged groups, small groups suppressed."""
    from rich.markup import escape

    from mpi.identity.registry import Registry
    from mpi.reports import linkage_quality
    rep: Any
    if remote is not None:
        rep = namespace(call(remote, "GET", "/v1/reports/linkage-quality", params={"by": by}))
    else:
        reg = Registry(_settings(data_dir))
        try:
            rep = linkage_quality(reg, attribute=by, principal=local_principal())
        finally:
            reg.close()
    from rich import box
    out.print(f"linkage quality by {escape(rep.attribute)}: {rep.total_records} active records, "
              f"groups under {rep.disclosure_threshold} records suppressed")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("group", no_wrap=True)
    for col in ("n", "x-agency", "review", "single", "link p", "z x/single", "flag"):
        table.add_column(col, justify="right", no_wrap=True)
    labelled = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("group", "label precision", "label recall", "constrained"):
        labelled.add_column(col, justify="left" if col == "group" else "right", no_wrap=True)
    for g in rep.groups:
        if g.suppressed:
            table.add_row(escape(g.label), "supp.", *[""] * 6)
            continue
        ct, st = g.cross_agency_test, g.singleton_test
        z = f"{ct.z:+.2f}/{st.z:+.2f}" if ct and st else "-"
        table.add_row(escape(g.label), str(g.records), _fmt(g.cross_agency_link_share),
                      _fmt(g.review_share), _fmt(g.singleton_rate), _fmt(g.mean_link_probability),
                      z, "[red]yes[/red]" if g.flagged else "")
        labelled.add_row(escape(g.label), _label_fig(g.precision, g.precision_interval,
                                                     g.precision_pairs, g.precision_withheld),
                         _label_fig(g.recall, g.recall_interval, g.recall_pairs,
                                    g.recall_withheld), str(g.constrained_pairs or 0))
    out.print(table)
    if rep.labels_available:
        out.print(labelled)
    threshold = f"p < {rep.p_threshold:.2g}" if rep.p_threshold is not None else "no tests"
    out.print(f"flagged ({threshold}, {rep.tests} tests): "
              f"{escape(', '.join(rep.flagged)) if rep.flagged else 'none'}")
    hidden = [f"{g.label} ({g.suppression})" for g in rep.groups if g.suppressed]
    if hidden:
        out.print(f"suppressed: {escape(', '.join(hidden))}")
    for note in rep.notes:
        err.print(f"[dim]{escape(note)}[/dim]")


def main() -> None:
    """Console entry point: run the app, turning domain errors into one clean line."""
    try:
        app()
    except MpiError as exc:
        from mpi.identity.registry import close_all
        close_all()
        from rich.markup import escape
        err.print(f"[red]error:[/red] {escape(exc.message)}", soft_wrap=True)
        for p in exc.problems[:20]:
            err.print(f"  {escape(p.describe())}")
        sys.exit(2)
    except Exception as exc:  # a client command's failure: one line, never a traceback
        from mpi.agency.client import failure_line
        line = failure_line(exc)
        if line is None:
            raise
        from rich.markup import escape
        err.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
        sys.exit(1)
