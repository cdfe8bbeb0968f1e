"""The ``mpi`` command line (typer + rich): ``main.py`` builds the app, the other modules add
command groups (``common`` holds the shared options)."""

from __future__ import annotations

from mpi.cli.main import app, main

__all__ = ["app", "main"]
