"""The ``mpi extract`` command group: research-extract tools (issue #5).

Owns: the ``extract_app`` typer sub-app that mpi/cli.py registers as ``mpi extract``, and the
parsing and printing of its commands. Must not: hold domain logic, or print tokens, secrets,
person keys or project secrets. It does not import mpi.cli (mpi.cli imports it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

extract_app = typer.Typer(help="Research extracts: build, sign and verify packages.", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@extract_app.command("verify")
def extract_verify(
    package: Annotated[Path, typer.Argument(help="The extract package (.zip).")],
    public_key: Annotated[Path | None, typer.Option("--public-key", help="Trusted Ed25519 public key "
                                                    "(PEM, from GET /v1/keys/signing); default: "
                                                    "the key inside the package (integrity only).")] = None,
) -> None:
    """Check a package offline: manifest signature and every file's SHA-256; name altered files."""
    from mpi.extract.package import verify_package
    pem = public_key.read_text() if public_key is not None else None
    check = verify_package(package, public_key_pem=pem)
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
