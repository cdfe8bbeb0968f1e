"""Shared test helpers (no tests, no fixtures): world builders, token records, servers, paths."""
