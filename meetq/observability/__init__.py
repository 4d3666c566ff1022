"""Production observability: Prometheus metrics, OpenTelemetry traces, log fields.

Each part needs its extra only when used: ``meetq[prometheus]`` for ``Metrics`` and
``serve_metrics``, ``meetq[otel]`` for ``TracingMiddleware`` (``instrument_tracing`` is a
no-op without it). docs/observability.md shows how to use them.
"""

from meetq.core._logfields import LOG_FIELDS
from meetq.observability._prometheus import (
    Metrics,
    MetricsServer,
    default_metrics,
    instrument,
    serve_metrics,
)
from meetq.observability._tracing import (
    TracingMiddleware,
    instrument_tracing,
    tracing_available,
)

__all__ = [
    "LOG_FIELDS",
    "Metrics",
    "MetricsServer",
    "TracingMiddleware",
    "default_metrics",
    "instrument",
    "instrument_tracing",
    "serve_metrics",
    "tracing_available",
]
