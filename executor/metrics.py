"""Prometheus metrics, recorded in the server process from verdicts (never inside a task)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from potsandbox.executor.pool import ZygotePool
from potsandbox.executor.result import Result


class Metrics:
    """The service's series, on a registry of its own so several servers can share a process."""

    def __init__(self, pool: ZygotePool) -> None:
        self.registry = CollectorRegistry()
        self.tasks = Counter(
            "potsandbox_tasks", "Finished tasks by status.", ["status"], registry=self.registry
        )
        self.latency = Histogram(
            "potsandbox_task_seconds",
            "Wall-clock time of a task, from admission to verdict.",
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=self.registry,
        )
        self.rejected = Counter(
            "potsandbox_rejected",
            "Requests refused before running.",
            ["code"],
            registry=self.registry,
        )
        Gauge(
            "potsandbox_queue_depth", "Tasks waiting for a worker.", registry=self.registry
        ).set_function(lambda: pool.queued)
        Gauge("potsandbox_busy_workers", "Tasks running now.", registry=self.registry).set_function(
            lambda: pool.busy
        )
        Gauge(
            "potsandbox_zygote_restarts", "Zygotes replaced after dying.", registry=self.registry
        ).set_function(lambda: pool.restarts)

    def observe(self, result: Result, seconds: float) -> None:
        """Count one verdict."""
        self.tasks.labels(result.status.value).inc()
        self.latency.observe(seconds)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP on a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
