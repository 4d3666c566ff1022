"""Prometheus metrics for meetq (the ``prometheus`` extra: ``pip install 'meetq[prometheus]'``).

Design (why it looks like this):

- Counters and histograms come from middleware (``meetq.core.middleware``) on each
  instrumented ``MessageQueue``: they count what *this process* published and processed.
  Each queue name has its own recorder holding plain ints and bucket counts per message
  type: a delivery costs one hook call, one dict lookup, two bisects and a few additions,
  on the loop thread, with no lock; they become Prometheus samples only when collected.
  prometheus-client's own ``Counter``/``Histogram`` (a lock and a ``labels()`` lookup per
  call) cost a no-op drain about a fifth of its throughput; label tuples built and looked
  up per message, the previous design here, cost about 1 µs a message
  (docs/benchmarks.md, issue 10). A scrape copies each dict and list in one C-level call,
  so it never sees one change size mid-read.
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


# A settled delivery's outcome -> its slot in _TypeFigures.processed; "release" (handed
# back uncharged) is not counted as processed.
_COUNTED = ("ack", "retry", "dead", "dropped")
_OUTCOME_SLOT = {outcome: i for i, outcome in enumerate(_COUNTED)}


class _TypeFigures:
    """What one queue's recorder keeps for one message type."""

    __slots__ = ("processed", "processing", "published")

    def __init__(self) -> None:
        self.published = [0] * len(_PRIORITY_NAMES)  # by priority value
        self.processed = [0] * len(_COUNTED)  # by _OUTCOME_SLOT
        self.processing = _Histogram(len(PROCESSING_BUCKETS))


class _QueueRecorder:
    """The per-message half of ``Metrics`` for one queue name: plain ints and bucket
    counts, found with one dict lookup by message type, turned into Prometheus samples
    only when collected (see the module doc). One hook per delivery: the wait is measured
    to the handler's start, which is ``duration`` before ``after_process``."""

    __slots__ = ("types", "wait")

    def __init__(self) -> None:
        self.types: dict[str, _TypeFigures] = {}
        self.wait: dict[int, _Histogram] = {}  # by priority value

    def _figures(self, kind: str) -> _TypeFigures:
        figures = self.types.get(kind)
        if figures is None:
            figures = self.types[kind] = _TypeFigures()
        return figures

    def after_publish(
        self, queue: str, message: Message, message_id: str | None, error: BaseException | None
    ) -> None:
        if error is None:
            self._figures(message.type).published[message.priority] += 1

    def after_process(
        self, delivery: Delivery, outcome: Outcome, duration: float, error: str | None
    ) -> None:
        message = delivery.message
        figures = self.types.get(message.type) or self._figures(message.type)
        hist = figures.processing
        hist.counts[bisect.bisect_left(PROCESSING_BUCKETS, duration)] += 1
        hist.total += duration
        slot = _OUTCOME_SLOT.get(outcome)
        if slot is not None:
            figures.processed[slot] += 1
        if delivery.attempt == 1:
            # Publish to handler start, from the message's own timestamp: only the first
            # attempt, since a retry's wait would also hold the backoff (and every earlier
            # attempt's run). A delayed message's wait includes its delay.
            wait = time.time() - duration - message.timestamp
            waits = self.wait.get(message.priority)
            if waits is None:
                waits = self.wait[message.priority] = _Histogram(len(WAIT_BUCKETS))
            waits.counts[bisect.bisect_left(WAIT_BUCKETS, wait)] += 1
            waits.total += max(0.0, wait)


def _histogram_family(
    name: str,
    text: str,
    labels: list[str],
    buckets: tuple[float, ...],
    data: list[tuple[list[str], _Histogram]],
) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, text, labels=labels)
    for key, hist in data:
        counts = list(hist.counts)  # one copy: the loop thread may add meanwhile
        cumulative, running = [], 0
        for bound, count in zip((*buckets, float("inf")), counts, strict=True):
            running += count
            cumulative.append((_bucket_label(bound), running))
        family.add_metric(key, cumulative, hist.total)
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
        self._recorders: dict[str, _QueueRecorder] = {}  # by queue name
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
                    recorder = self._recorders.get(target.name)
                    if recorder is None:
                        recorder = self._recorders[target.name] = _QueueRecorder()
                    target.add_middleware(recorder)
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
        oldest = GaugeMetricFamily(
            "meetq_queue_oldest_message_age_seconds",
            "How long the longest-waiting ready message has waited since it became "
            "ready (0 when none is ready).",
            labels=["queue"],
        )
        for name, info in self._queue_info.items():
            for priority in _PRIORITY_NAMES.values():
                messages.add_metric([name, "waiting", priority], info.waiting.get(priority, 0))
            messages.add_metric([name, "delayed", ""], info.delayed)
            messages.add_metric([name, "running", ""], info.running)
            messages.add_metric([name, "dead", ""], info.dead)
            unhandled.add_metric([name], info.unhandled)
            if info.oldest_age is not None:
                oldest.add_metric([name], info.oldest_age)
        yield messages
        yield unhandled
        yield oldest
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

        # Copies taken in one C-level call each: the loop thread may add meanwhile.
        by_type = [
            (queue, kind, figures)
            for queue, recorder in list(self._recorders.items())
            for kind, figures in list(recorder.types.items())
        ]
        published = CounterMetricFamily(
            "meetq_messages_published",
            "Messages this process published, by queue, type and priority.",
            labels=["queue", "type", "priority"],
        )
        processed = CounterMetricFamily(
            "meetq_messages_processed",
            "Deliveries this process settled, by outcome (ack, retry, dead, dropped).",
            labels=["queue", "type", "outcome"],
        )
        processing = []
        for queue, kind, figures in by_type:
            for value, count in enumerate(list(figures.published)):
                if count:
                    published.add_metric([queue, kind, _PRIORITY_NAMES[value]], count)
            for outcome, count in zip(_COUNTED, list(figures.processed), strict=True):
                if count:
                    processed.add_metric([queue, kind, outcome], count)
            if figures.processing.total or any(figures.processing.counts):
                processing.append(([queue, kind], figures.processing))
        yield published
        yield processed
        yield _histogram_family(
            "meetq_message_processing_seconds",
            "Handler run time of a delivery, until it was settled.",
            ["queue", "type"],
            PROCESSING_BUCKETS,
            processing,
        )
        yield _histogram_family(
            "meetq_message_wait_seconds",
            "From a message's timestamp (its publish) to its first handler start.",
            ["queue", "priority"],
            WAIT_BUCKETS,
            [
                ([queue, _PRIORITY_NAMES[value]], hist)
                for queue, recorder in list(self._recorders.items())
                for value, hist in list(recorder.wait.items())
            ],
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
