"""The ``mpi backup`` and ``mpi restore`` commands (Decision 70).

Owns: their parsing and printing; mpi/cli/main.py registers them (``register``). Must not: hold
backup logic (mpi/backup.py) or print record contents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mpi.cli.common import ClientCert, ClientKey, DataDir, client_pair, settings_for

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def backup(
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Archive to write (0600; must not exist). Stopped service only.")] = None,
    data_dir: DataDir = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="A running server: it writes the backup under its DATA_DIR/backups/ "
        "(POST /v1/admin/backup).")] = None,
    api_key_file: Annotated[Path | None, typer.Option(
        "--api-key-file", help="Admin API key file (with --url).")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", help="CA certificate to trust (with --url).")] = None,
    client_cert: ClientCert = None, client_key: ClientKey = None,
) -> None:
    """Back up a data directory: the registry as of one moment, secrets, keys, models.

    With --url the running service takes the copy under its write lock (writers wait only
    for the copy of the registry file); without it, the service must be stopped."""
    if url:
        from mpi.agency.client import MpiClient, read_api_key
        if api_key_file is None or out_file is not None:
            raise typer.BadParameter("--url needs --api-key-file and takes no --out "
                                     "(the server writes under DATA_DIR/backups/)")
        with MpiClient(url, api_key=read_api_key(api_key_file), ca_file=ca_file,
                       client_cert=client_pair(client_cert, client_key), max_retries=0) as c:
            res = c.request("POST", "/v1/admin/backup", json={})
        out.print(json.dumps(res, indent=2))
        return
    if out_file is None:
        raise typer.BadParameter("--out is required (or --url for a running server)")
    from mpi.backup import backup_stopped
    manifest = backup_stopped(settings_for(data_dir), out_file)
    c = manifest["counts"]
    out.print(f"wrote {escape(str(out_file))}: {len(manifest['files'])} files, records "
              f"{c['records']}, persons {c['persons']}, {c['audit_events']} audit events")


def restore(
    from_file: Annotated[Path, typer.Option("--from", help="Backup archive to restore.")],
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Restore into a non-empty directory: the backup's files replace those "
        "there and the old registry's WAL and journal are removed.")] = False,
) -> None:
    """Restore a backup into a data directory, then verify counts and the audit chain.

    Every file is checked against the manifest's SHA-256 before anything is moved into place."""
    from mpi.backup import restore as do_restore
    done = do_restore(from_file, settings_for(data_dir), force=force)
    out.print(f"restored {done.files} files; records {done.records}, persons {done.persons} "
              f"match the manifest; audit chain OK ({done.audit_events} events)")


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to the root app."""
    app.command("backup")(backup)
    app.command("restore")(restore)
