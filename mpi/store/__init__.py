"""All SQL against the registry file lives in this package (and nowhere else).

Values always go in as parameters or registered Arrow tables, never through f-strings.
"""

from mpi.store.db import Store

__all__ = ["Store"]
