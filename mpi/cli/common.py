"""What every ``mpi`` command module shares: the ``--data-dir`` option and opening a registry.

Owns: ``DataDir``, ``settings_for`` and ``open_registry``. Must not: define commands or import
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
