"""What every ``mpi`` command module shares: the ``--data-dir`` option and opening a registry.

Owns: ``DataDir``, ``settings_for``, ``open_registry``, and the client-certificate options of
the ``--url`` commands (``ClientCert``, ``ClientKey``, ``client_pair``). Must not: define commands or import
the command modules (they import it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mpi.config import Settings

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Registry directory "
                                              "(default: $MPI_DATA_DIR or ./mpi-data).")]
ClientCert = Annotated[Path | None, typer.Option("--client-cert", help="Client certificate (PEM) "
                                                 "for mutual TLS (with --url).")]
ClientKey = Annotated[Path | None, typer.Option("--client-key", help="Client private key (PEM) "
                                                "for mutual TLS (with --url).")]
Tls = tuple[Path | None, Path | None, Path | None]
"""What a ``--url`` command trusts and presents: (CA file, client certificate, client key)."""


def client_pair(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """The client certificate and key for mutual TLS, or None; both or neither."""
    if (cert is None) != (key is None):
        raise typer.BadParameter("--client-cert and --client-key go together")
    return (cert, key) if cert is not None and key is not None else None


def settings_for(data_dir: Path | None) -> Settings:
    """Settings from the environment, with ``data_dir`` overriding MPI_DATA_DIR when given."""
    s = Settings()
    return s.model_copy(update={"data_dir": data_dir}) if data_dir else s


@contextmanager
def open_registry(data_dir: Path | None) -> Iterator[Registry]:
    """The registry of ``data_dir`` (or the configured one), closed when the block ends."""
    from mpi.identity.registry import Registry
    reg = Registry(settings_for(data_dir))
    try:
        yield reg
    finally:
        reg.close()
