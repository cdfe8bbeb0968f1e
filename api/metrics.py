"""Prometheus metrics of one app: request latency per route template, ingest outcomes, size.

Owns: two private ``CollectorRegistry`` objects per app (so several apps can live in one
process): the public one (the latency histogram and the ingest counter: operational figures
that read the same whether a scoped agency's record joins another agency's person or mints a
new one) and the registry-size one (records, persons and open review items, read at scrape
time; these move with cross-agency membership, so only an authenticated operator gets them,
Decision 93). Must not: label anything with a token, a record id or a person key (labels are
route templates, methods, statuses and outcome names), or put a figure that depends on who
holds a person into the public registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _RegistrySize(Collector):
    """Gauges read from the registry when scraped."""

    def __init__(self, stats: Callable[[], dict[str, Any] | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Records by status, person keys by status, open review items by kind."""
        stats = self._stats()
        if stats is None:
            return
        for name, key, label, doc in (
                ("mpi_registry_records", "records", "status", "Source records by status."),
                ("mpi_registry_persons", "persons", "status", "Person keys by status."),
                ("mpi_registry_review_open", "review", "kind", "Open review items by kind.")):
            fam = GaugeMetricFamily(name, doc, labels=[label])
            for value, n in sorted(stats.get(key, {}).items()):
                fam.add_metric([str(value)], float(n))
            yield fam


class Metrics:
    """The metrics of one app."""

    def __init__(self, stats: Callable[[], dict[str, Any] | None]) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("mpi_http_request_duration_seconds",
                                 "Request latency by method, route template and status.",
                                 ["method", "route", "status"], buckets=_BUCKETS,
                                 registry=self.registry)
        self.ingest = Counter("mpi_ingest_records_total", "Records ingested, by outcome.",
                              ["outcome"], registry=self.registry)
        self.size = CollectorRegistry()
        self.size.register(_RegistrySize(stats))

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request's latency."""
        self.latency.labels(method, route, str(status)).observe(seconds)

    def count_ingest(self, counts: dict[str, int]) -> None:
        """Add ingest outcome counts."""
        for outcome, n in counts.items():
            if n:
                self.ingest.labels(outcome).inc(n)

    def render(self) -> bytes:
        """The public exposition text: request latency and ingest outcomes only."""
        return generate_latest(self.registry)

    def render_size(self) -> bytes:
        """The registry-size gauges (records, persons, open review items) for an operator."""
        return generate_latest(self.size)
