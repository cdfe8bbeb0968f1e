"""The ``mpi journal`` command group: recover a damaged online journal (Decision 65).

Owns: ``journal_app`` and the parsing and printing of ``mpi journal recover``; mpi/cli/main.py
adds it to the root app like every other group (``app.add_typer``). Must not: hold recovery
logic (mpi/identity/journal_recovery.py, mpi/store/journal.py) or print record contents.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mpi.cli.common import DataDir, settings_for
from mpi.store.journal import SegmentReport

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
PRINCIPAL = "cli"
journal_app = typer.Typer(help="The online write journal (Decision 48).", no_args_is_help=True)


def _describe(s: SegmentReport) -> str:
    line = f"{s.path.name}: {s.entries} entries, {s.size} bytes"
    if s.first_bad is None:
        return line + ", ok"
    state = ("corrupt: start-up refused" if s.corrupt
             else "damaged last entry: dropped at start-up (never acknowledged)")
    return (line + f", first bad offset {s.first_bad}, {s.readable_after} readable after it"
            f" ({state})")


@journal_app.command("recover")
def journal_recover(
    data_dir: DataDir = None,
    report: Annotated[bool, typer.Option(
        "--report", help="Print each segment, its entries, the first bad offset and how many "
        "entries after it are readable; change nothing (the default).")] = False,
    keep_valid: Annotated[bool, typer.Option(
        "--keep-valid", help="Fold every entry whose checksum verifies, also those after the "
        "damage, and move the damaged segment to DATA_DIR/journal-quarantine/.")] = False,
    quarantine: Annotated[bool, typer.Option(
        "--quarantine", help="Fold only the entries before the first damage and move the "
        "damaged segment (and any later one) to DATA_DIR/journal-quarantine/.")] = False,
) -> None:
    """Report on or recover a journal segment that fails its checksum before its last entry.

    Run it with the service stopped. --keep-valid and --quarantine write a journal.recover
    audit event."""
    from mpi.identity.journal_recovery import recover_journal, report_journal

    if report + keep_valid + quarantine > 1:
        err.print("choose one of --report, --keep-valid, --quarantine")
        raise typer.Exit(2)
    settings = settings_for(data_dir)
    segments = report_journal(settings)
    for s in segments:
        out.print(escape(_describe(s)))
    if not segments:
        out.print("no journal segments")
    if not (keep_valid or quarantine):
        return
    done = recover_journal(settings, "keep_valid" if keep_valid else "quarantine",
                           actor=PRINCIPAL)
    if not done.damaged:
        out.print("nothing to recover: no segment is damaged")
        return
    out.print(f"folded {done.entries} entries; moved aside: "
              + escape(", ".join(str(p) for p in done.quarantined)))
