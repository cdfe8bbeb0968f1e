"""Research extracts (issue #5): disclosure control, the build, the request workflow, the package.

Owns: nothing itself; its modules own one concern each (pseudonym, generalize, protect, aggregate,
signing, package: pure disclosure control; build, workflow, datasets: the use cases). Must not:
run SQL outside mpi/store/ or import HTTP frameworks.
"""
