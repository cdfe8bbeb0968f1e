"""The ``mpi`` command line."""
