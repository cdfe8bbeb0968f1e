"""``mpi consent``: read and record a person's research consent (Decision 79).

Owns: the typer sub-app mpi/cli/main.py registers, its parsing and printing. Each command works
against a running service (``--url``, as the key's principal: an agency in its own scope for
persons it holds, or a steward) or on a stopped registry (``--data-dir``), where it acts as a
steward audited as the OS user (``os:<name>``). Must not: hold domain logic.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import typer

from mpi.cli.common import DataDir, open_registry
from mpi.cli.remote import Remote, call, local_principal, remote_options

consent_app = typer.Typer(help="A person's research consent: show, record an opt-out or opt-in.",
                          no_args_is_help=True)


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _steward() -> Any:
    from mpi.principals import Principal
    who = local_principal()
    return Principal(who, who, "steward")


@consent_app.command("show")
@remote_options
def consent_show(person_key: str, data_dir: DataDir = None, remote: Remote | None = None) -> None:
    """The person's consent entries and the latest decision per scope."""
    if remote is not None:
        _print(call(remote, "GET", f"/v1/persons/{person_key}/consent"))
        return
    from mpi.identity.consent import PersonConsent
    with open_registry(data_dir) as reg:
        _print(PersonConsent(reg).read(_steward(), person_key))


@consent_app.command("record")
@remote_options
def consent_record(
    person_key: str,
    decision: Annotated[str, typer.Option(help="opt_out or opt_in.")],
    reason: Annotated[str | None, typer.Option(help="Why (required for opt_in).")] = None,
    date: Annotated[str | None, typer.Option(help="When the person said so (YYYY-MM-DD; "
                                                  "default today).")] = None,
    source_agency: Annotated[str | None, typer.Option(
        help="The scope (an agency's name); none: the steward's own scope.")] = None,
    data_dir: DataDir = None, remote: Remote | None = None,
) -> None:
    """Record an opt-out or opt-in (an opt-in lifts only its own scope's opt-out)."""
    body = {"decision": decision, "reason": reason, "date": date, "source_agency": source_agency}
    if remote is not None:
        _print(call(remote, "POST", f"/v1/persons/{person_key}/consent", json=body))
        return
    from mpi.identity.consent import PersonConsent
    try:
        when = dt.date.fromisoformat(date) if date else None
    except ValueError:
        raise typer.BadParameter("--date must be YYYY-MM-DD") from None
    with open_registry(data_dir) as reg:
        _print(PersonConsent(reg).record(_steward(), person_key, decision=decision,
                                         reason=reason, date=when, source_agency=source_agency))
