"""HTTP layer over mpi: parse, authorize, call one mpi function, shape the response."""
