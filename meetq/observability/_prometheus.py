"""Prometheus metrics for meetq (the ``prometheus`` extra: ``pip install 'meetq[prometheus]'``).

Design (why it looks like this):

- Counters and histograms come from middleware (``meetq.core.middleware``) on each
  instrumented ``MessageQueue``: they count what *this process* published and processed.
  The middleware keeps plain ints and bucket counts in dicts by label tuple (a message
  costs a dict lookup, a bisect and two additions, on the loop thread, with no lock);
  they become Prometheus samples only when collected. prometheus-client's own
  ``Counter``/``Histogram`` (a lock and a ``labels()`` lookup per call) cost a no-op
  drain about a fifth of its throughput. A scrape copies each dict's items in one C-level
  call, so it never sees one change size mid-read.
- Gauges and the PubSub / event-bus counters come from a collector that reads
  ``MessageQueue.inspect()`` (one backend round trip per queue) and ``PubSub.stats()`` /
  ``LocalEventBus.stats()``. Prometheus collects synchronously on its HTTP thread while
  those are async on the components' loop: a scrape from another thread runs ``refresh()``
  on that loop (``run_coroutine_threadsafe``) and waits at most ``stats_timeout`` seconds;
  past that, or when the loop is not running, or when it is collected on the loop itself
  (where it cannot block), it serves the last snapshot. ``await metrics.refresh()`` takes
  one on demand.
- Labels stay low-cardinality: queue, type, priority, outcome, state; never a message id.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from meetq.broadcast._pubsub import PubSub
from meetq.core.errors import MissingDependencyError, ValidationError
from meetq.core.middleware import Delivery, Outcome
from meetq.core.types import Message, Priority
from meetq.inprocess._event_bus import LocalEventBus
from meetq.manager._manager import QueueManager
from meetq.queue._inspection import QueueInfo
from meetq.queue._message_queue import MessageQueue

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["Metrics", "MetricsServer", "default_metrics", "instrument", "serve_metrics"]

log = logging.getLogger("meetq.observability")

INSTALL = "pip install 'meetq[prometheus]'"

_PRIORITY_NAMES = {int(p): p.name.lower() for p in Priority}

# Seconds: from 1 ms (a handler that only acks) to 10 minutes (a long model call).
PROCESSING_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 600)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


def _require() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MissingDependencyError(
            "prometheus", "prometheus-client", INSTALL, feature="meetq's Prometheus metrics"
        ) from None
    return prometheus_client


class _Histogram:
    """One label set's histogram, kept as plain numbers: per-bucket (not cumulative)
    counts with the overflow last, and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.total = 0.0


class _MetricsMiddleware:
    """The per-message half of ``Metrics``: plain counts and bucket counts by label tuple,
    turned into Prometheus samples only when collected (see the module doc)."""

    def __init__(self) -> None:
        self.published: dict[tuple[str, str, str], int] = {}
        self.processed: dict[tuple[str, str, str], int] = {}
        self.processing: dict[tuple[str, str], _Histogram] = {}
        self.wait: dict[tuple[str, str], _Histogram] = {}

    def after_publish(
        self, queue: str, message: Message, message_id: str | None, error: BaseException | None
    ) -> None:
        if error is None:
            key = (queue, message.type, _PRIORITY_NAMES[message.priority])
            self.published[key] = self.published.get(key, 0) + 1

    def before_process(self, delivery: Delivery) -> None:
        # Publish to handler start, from the message's own timestamp: only the first
        # attempt, since a retry's wait would also hold the backoff (and every earlier
        # attempt's run). A delayed message's wait includes its delay.
        if delivery.attempt == 1:
            message = delivery.message
            wait = time.time() - message.timestamp
            key = (delivery.queue, _PRIORITY_NAMES[message.priority])
            hist = self.wait.get(key)
            if hist is None:
                hist = self.wait[key] = _Histogram(len(WAIT_BUCKETS))
            hist.counts[bisect.bisect_left(WAIT_BUCKETS, wait)] += 1
            hist.total += max(0.0, wait)

    def after_process(
        self, delivery: Delivery, outcome: Outcome, duration: float, error: str | None
    ) -> None:
        kind = delivery.message.type
        key = (delivery.queue, kind)
        hist = self.processing.get(key)
        if hist is None:
            hist = self.processing[key] = _Histogram(len(PROCESSING_BUCKETS))
        hist.counts[bisect.bisect_left(PROCESSING_BUCKETS, duration)] += 1
        hist.total += duration
        if outcome != "release":  # handed back uncharged: not processed
            counted = (delivery.queue, kind, outcome)
            self.processed[counted] = self.processed.get(counted, 0) + 1


def _histogram_family(
    name: str, text: str, labels: list[str], buckets: tuple[float, ...], data: dict[Any, _Histogram]
) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, text, labels=labels)
    for key, hist in list(data.items()):
        counts = list(hist.counts)  # one copy: the loop thread may add meanwhile
        cumulative, running = [], 0
        for bound, count in zip((*buckets, float("inf")), counts, strict=True):
            running += count
            cumulative.append((_bucket_label(bound), running))
        family.add_metric(list(key), cumulative, hist.total)
    return family


def _bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """meetq's Prometheus metrics in one ``CollectorRegistry``.

    ``Metrics()`` registers into prometheus-client's global ``REGISTRY`` (what
    ``serve_metrics`` and ``prometheus_client.generate_latest()`` show); pass your own
    ``registry`` to keep them apart or to mount them in your app. A registry holds one
    ``Metrics`` (the metric names are unique); ``default_metrics()`` is the global one.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, stats_timeout: float = 2.0
    ) -> None:
        pc = _require()
        self.registry: CollectorRegistry = pc.REGISTRY if registry is None else registry
        self.stats_timeout = stats_timeout
        reg = self.registry
        self.middleware = _MetricsMiddleware()
        self._queues: list[MessageQueue] = []
        self._pubsubs: list[PubSub] = []
        self._buses: list[LocalEventBus] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue_info: dict[str, QueueInfo] = {}
        self._pubsub_stats: list[dict[str, int]] = []
        reg.register(_Collector(self))

    def instrument(self, *targets: object) -> None:
        """Measure ``targets``: a ``QueueManager`` (every component it built), a
        ``MessageQueue``, ``PubSub`` or ``LocalEventBus``. Call it from the loop they run
        on (or call ``refresh()`` there once) so a scrape knows where to read stats."""
        for target in targets:
            if isinstance(target, QueueManager):
                parts = [
                    target.get_message_queue(),
                    target.get_pubsub(),
                    target.get_event_bus(),
                ]
                self.instrument(*(p for p in parts if p is not None))
            elif isinstance(target, MessageQueue):
                if target not in self._queues:
                    target.add_middleware(self.middleware)
                    self._queues.append(target)
            elif isinstance(target, PubSub):
                if target not in self._pubsubs:
                    self._pubsubs.append(target)
            elif isinstance(target, LocalEventBus):
                if target not in self._buses:
                    self._buses.append(target)
            else:
                raise ValidationError(
                    "target",
                    target,
                    "expected a QueueManager, MessageQueue, PubSub or LocalEventBus",
                )
        self._bind_loop()

    def _bind_loop(self) -> None:
        with contextlib.suppress(RuntimeError):  # not on a loop: bound at refresh()
            self._loop = asyncio.get_running_loop()

    async def refresh(self) -> None:
        """Read every instrumented component's figures now (``MessageQueue.inspect()``:
        one backend round trip per queue); the collector serves them until the next."""
        self._bind_loop()
        queue_info = {}
        for mq in self._queues:
            queue_info[mq.name] = await mq.inspect()
        self._queue_info = queue_info
        self._pubsub_stats = [await ps.stats() for ps in self._pubsubs]

    def _fresh(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            return  # cannot block the loop it would wait on: serve the last snapshot
        future = asyncio.run_coroutine_threadsafe(self.refresh(), loop)
        try:
            future.result(self.stats_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            log.warning(
                "meetq: metrics: stats took over %.1fs; serving the last snapshot",
                self.stats_timeout,
            )
        except Exception as exc:  # a backend down must not fail the scrape
            log.warning("meetq: metrics: could not read stats (%s); serving the last one", exc)

    def collect_gauges(self) -> Iterator[Metric]:
        """The collector's metrics, from a fresh snapshot where one can be had."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield from self._collect_counts()
        self._fresh()
        messages = GaugeMetricFamily(
            "meetq_queue_messages",
            "Messages in a queue by state (waiting, of which delayed; running; dead) and "
            "priority (empty but for waiting).",
            labels=["queue", "state", "priority"],
        )
        unhandled = GaugeMetricFamily(
            "meetq_queue_unhandled_messages",
            "Ready messages whose type no live worker handles.",
            labels=["queue"],
        )
        for name, info in self._queue_info.items():
            for priority in _PRIORITY_NAMES.values():
                messages.add_metric([name, "waiting", priority], info.waiting.get(priority, 0))
            messages.add_metric([name, "delayed", ""], info.delayed)
            messages.add_metric([name, "running", ""], info.running)
            messages.add_metric([name, "dead", ""], info.dead)
            unhandled.add_metric([name], info.unhandled)
        yield messages
        yield unhandled
        if self._pubsubs:
            for key, metric, text in (
                ("total_published", "meetq_pubsub_published", "PubSub messages sent."),
                ("total_received", "meetq_pubsub_received", "PubSub messages that arrived."),
                ("dropped", "meetq_pubsub_dropped", "PubSub messages dropped (overflow, stop)."),
                ("reconnects", "meetq_pubsub_reconnects", "PubSub transport reconnects."),
            ):
                family = CounterMetricFamily(metric, text)
                family.add_metric([], sum(s.get(key, 0) for s in self._pubsub_stats))
                yield family
        if self._buses:
            events = CounterMetricFamily(
                "meetq_event_bus_events",
                "Local events by what became of them (accepted, processed, failed, dropped).",
                labels=["state"],
            )
            pending = GaugeMetricFamily(
                "meetq_event_bus_pending_events", "Local events accepted and not yet handled."
            )
            # Plain ints read off the bus: safe from the scrape thread.
            bus_stats = [bus.stats() for bus in self._buses]
            for state, key in (
                ("accepted", "total_events"),
                ("processed", "processed_events"),
                ("failed", "failed_events"),
                ("dropped", "dropped_events"),
            ):
                events.add_metric([state], sum(s[key] for s in bus_stats))
            pending.add_metric([], sum(s["pending_events"] for s in bus_stats))
            yield events
            yield pending


    def _collect_counts(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        mw = self.middleware
        published = CounterMetricFamily(
            "meetq_messages_published",
            "Messages this process published, by queue, type and priority.",
            labels=["queue", "type", "priority"],
        )
        for key, count in list(mw.published.items()):
            published.add_metric(list(key), count)
        yield published
        processed = CounterMetricFamily(
            "meetq_messages_processed",
            "Deliveries this process settled, by outcome (ack, retry, dead, dropped).",
            labels=["queue", "type", "outcome"],
        )
        for key, count in list(mw.processed.items()):
            processed.add_metric(list(key), count)
        yield processed
        yield _histogram_family(
            "meetq_message_processing_seconds",
            "Handler run time of a delivery, until it was settled.",
            ["queue", "type"],
            PROCESSING_BUCKETS,
            mw.processing,
        )
        yield _histogram_family(
            "meetq_message_wait_seconds",
            "From a message's timestamp (its publish) to its first handler start.",
            ["queue", "priority"],
            WAIT_BUCKETS,
            mw.wait,
        )


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect_gauges()

    def describe(self) -> list[Metric]:
        # No description: prometheus-client would otherwise call collect() (and read the
        # backend) at registration time to learn the metric names.
        return []


_default: Metrics | None = None


def default_metrics() -> Metrics:
    """The process-wide ``Metrics`` on prometheus-client's global ``REGISTRY``."""
    global _default
    if _default is None:
        _default = Metrics()
    return _default


def instrument(*targets: object) -> Metrics:
    """``default_metrics().instrument(*targets)``; returns the default ``Metrics``."""
    metrics = default_metrics()
    metrics.instrument(*targets)
    return metrics


class MetricsServer:
    """The HTTP server ``serve_metrics`` started (a daemon thread); ``close()`` stops it."""

    def __init__(self, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    def close(self) -> None:
        """Stop serving; idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


def serve_metrics(
    port: int,
    *targets: object,
    addr: str = "0.0.0.0",
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve ``registry`` (default: the global one, where ``default_metrics()`` lives) on
    ``http://addr:port/metrics`` from a daemon thread; port 0 picks a free one
    (``MetricsServer.port``). ``targets`` are instrumented with ``default_metrics()`` first.
    """
    pc = _require()
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValidationError("port", port, "expected a TCP port number, 0 to 65535")
    if targets:
        instrument(*targets)
    else:
        default_metrics()
    server, thread = pc.start_http_server(
        port, addr=addr, registry=pc.REGISTRY if registry is None else registry
    )
    return MetricsServer(server, thread)
