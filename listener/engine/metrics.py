"""Prometheus metrics of the daemon, served on REVENUE_ASI_METRICS_PORT when set (prometheus-client)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram, start_http_server

TOUCHES = Counter("revenue_asi_touches", "Touches that reached a terminal status", ["outcome"])
FAILURES = Counter("revenue_asi_touch_failures", "Failed touches by error code", ["error_code"])
DECISIONS = Counter("revenue_asi_fallback_decisions", "Fallback decisions taken", ["decision"])
IN_FLIGHT = Gauge("revenue_asi_sends_in_flight", "Claimed touches not yet completed by this daemon")
STOP_WINDOW = Histogram("revenue_asi_stop_window_seconds",
                        "From a claim's stop/suppression check to the touch's first provider call",
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
RECONNECTS = Counter("revenue_asi_listen_reconnects", "LISTEN connection re-established")


def serve(port: int | None) -> None:
    if port is not None:
        start_http_server(port, addr="127.0.0.1")


def count_outcomes(outcomes: Iterable[tuple[str, str | None]]) -> None:
    """(status, error_code) pairs of completed touches."""
    for status, error_code in outcomes:
        TOUCHES.labels(status).inc()
        if status == "failed":
            FAILURES.labels(error_code or "unknown").inc()


def count_decisions(decisions: Mapping[str, int]) -> None:
    for decision, n in decisions.items():
        DECISIONS.labels(decision).inc(n)
