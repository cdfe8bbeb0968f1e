"""Identity: the registry of records and persons, enrolment, re-link and the key rules.

Owns: the match state in memory (``state``), its durable counterpart through ``mpi/store``,
the online match-or-create decision, the batch re-link and the person-key rules. Must not:
import the web stack or the steward workflows.
"""
