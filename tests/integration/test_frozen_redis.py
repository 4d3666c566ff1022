"""Bounded time against an unresponsive Redis: a server frozen with SIGSTOP.

A frozen server is what a hung host or a partition looks like from the client: the
connections stay open, the kernel even accepts new ones, and nothing is ever answered.
Every call must still end within the configured bound (``redis.socket_timeout``,
``redis.socket_connect_timeout``), ``stop()`` within its grace plus that bound, and the
components must carry on by themselves once the server resumes (SIGCONT).

Each test freezes a private redis-server of its own (never a shared one); the fixture
resumes and kills it whatever happens. The upper bounds asserted below are correctness
bounds with a generous margin for a loaded machine, not performance figures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from meetq import (
    BackendUnavailableError,
    Message,
    MessageQueue,
    PubSub,
    PubSubMessage,
    QueueManager,
    RedisConfig,
    initialize_queue_system,
)
from meetq.testing import Collector
from meetq.testing._redis_server import RedisServer
from meetq.testing.work_queue_suite import eventually

# Slack on top of a bound: scheduling on a busy 2-core machine, not a tolerance of the
# bound itself.
SLACK = 3.0
# The short bound of the tests that are not about the defaults (keeps the suite fast).
SHORT = 1.0
DEFAULTS = RedisConfig()
# How long a call may block before the test gives up on it (it would hang forever).
GUARD = 30.0


@pytest.fixture
def server(meetq_redis_server: RedisServer) -> Iterator[RedisServer]:
    """A private server this test may freeze; resumed (and then killed) in teardown."""
    try:
        yield meetq_redis_server
    finally:
        meetq_redis_server.thaw()


def _config(server: RedisServer, namespace: str, **redis: Any) -> dict[str, Any]:
    return {
        "redis": {"url": server.url, "key_prefix": namespace, **redis},
        "message_queue": {"type": "redis", "queue_name": namespace},
        "event_bus": {"type": "redis_pubsub", "namespace": namespace},
        "task_dispatcher": {"enabled": False},
    }


def _short(server: RedisServer, namespace: str, **extra: Any) -> dict[str, Any]:
    config = _config(
        server,
        namespace,
        socket_timeout=f"{SHORT}s",
        socket_connect_timeout=f"{SHORT}s",
        health_check_interval="200ms",
    )
    config["message_queue"].update(poll_interval="50ms")
    config["event_bus"].update(reconnect_backoff_base="20ms", reconnect_backoff_max="200ms")
    for section, values in extra.items():
        config[section].update(values)
    return config


async def _timed(awaitable: Any) -> tuple[BaseException | None, float]:
    """Await it under an outer guard (so a hang fails the test instead of the suite);
    return what it raised and how long it took."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(GUARD):
            await awaitable
    except TimeoutError as exc:
        if time.monotonic() - start >= GUARD:
            raise AssertionError(f"still blocked after {GUARD:g} s against a frozen Redis") from exc
        return exc, time.monotonic() - start
    except Exception as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


def _parts(qm: QueueManager) -> tuple[MessageQueue, PubSub]:
    mq, ps = qm.get_message_queue(), qm.get_pubsub()
    assert mq is not None and ps is not None
    return mq, ps


async def test_publish_fails_within_the_default_bound(
    server: RedisServer, meetq_namespace: str
) -> None:
    # Nothing but the address: the defaults themselves must bound every call.
    qm = await initialize_queue_system(_config(server, meetq_namespace))
    mq, ps = _parts(qm)
    bound = max(DEFAULTS.socket_timeout, DEFAULTS.socket_connect_timeout)
    assert 0 < bound <= 10, "the defaults must set a bound of a few seconds"
    try:
        await qm.start()
        await mq.publish(Message(type="job"))  # both connections are up and warm
        await ps.publish("events", PubSubMessage(type="warm"))
        server.freeze()
        (mq_error, mq_took), (ps_error, ps_took) = await asyncio.gather(
            _timed(mq.publish(Message(type="job"))),
            _timed(ps.publish("events", PubSubMessage(type="lost"))),
        )
        assert isinstance(mq_error, BackendUnavailableError), mq_error
        assert isinstance(ps_error, BackendUnavailableError), ps_error
        assert "timeout" in str(mq_error).lower() or "reply" in str(mq_error).lower()
        assert mq_took < bound + SLACK
        assert ps_took < bound + SLACK
    finally:
        server.thaw()
        await qm.stop()


async def test_calls_that_must_connect_to_a_frozen_server_are_bounded(
    server: RedisServer, meetq_namespace: str
) -> None:
    # Its kernel still accepts connections; the greeting redis-py waits for never comes.
    qm = await initialize_queue_system(_short(server, meetq_namespace))
    mq, ps = _parts(qm)
    mq.register_handler("job", lambda msg: None)
    await ps.subscribe("events", Collector())  # before start(): only recorded
    server.freeze()
    try:
        calls = {
            "publish": mq.publish(Message(type="job")),
            "publish_batch": mq.publish_batch([Message(type="job"), Message(type="job")]),
            "queue_length": mq.queue_length(),  # a plain redis-py command
            "stats": mq.stats(),
            "pubsub publish": ps.publish("events", PubSubMessage(type="lost")),
            "start": qm.start(),
        }
        results = await asyncio.gather(*(_timed(call) for call in calls.values()))
        for name, (error, took) in zip(calls, results, strict=True):
            assert isinstance(error, BackendUnavailableError), (name, error)
            # start() makes several calls one after another (wake-up channel, heartbeat,
            # subscriptions), each within the bound.
            limit = 4 * SHORT if name == "start" else SHORT
            assert took < limit + SLACK, (name, took)
    finally:
        server.thaw()
        await qm.stop()


async def test_stop_returns_within_grace_plus_the_bound(
    server: RedisServer, meetq_namespace: str
) -> None:
    grace = 0.5
    qm = await initialize_queue_system(
        _short(server, meetq_namespace, message_queue={"shutdown_grace": f"{grace}s"},
               event_bus={"shutdown_grace": f"{grace}s"})
    )
    mq, ps = _parts(qm)
    entered, never = asyncio.Event(), asyncio.Event()

    @mq.handler("stuck")
    async def stuck(msg: Message) -> None:
        entered.set()
        await never.wait()

    await ps.subscribe("events", Collector())
    await qm.start()
    await mq.publish(Message(type="stuck"))
    await asyncio.wait_for(entered.wait(), 10)
    server.freeze()
    # The stuck handler holds the grace; its release and every other call then meet a
    # server that answers nothing.
    error, took = await _timed(qm.stop())
    assert error is None
    # Each component gets its grace and one bound (MessageQueue, then PubSub), then the
    # backend closes its connections (each close bounded by the connect timeout).
    assert took < 2 * (grace + SHORT) + SHORT + SLACK


async def test_message_queue_stop_alone_is_bounded(
    server: RedisServer, meetq_namespace: str
) -> None:
    qm = await initialize_queue_system(_short(server, meetq_namespace))
    mq, _ = _parts(qm)
    mq.register_handler("job", lambda msg: None)
    await qm.start()
    try:
        server.freeze()
        # A running worker has a claim on the wire almost always; stop() must not wait
        # for it longer than the bound, and must not retry it after backing off.
        error, took = await _timed(mq.stop(grace=0))
        assert error is None
        assert took < SHORT + SLACK
    finally:
        server.thaw()
        await qm.stop()


async def test_cancelling_a_stuck_stop_raises_cancelled_error(
    server: RedisServer, meetq_namespace: str
) -> None:
    # The defaults: a stop() stuck behind them for longer than the test cares to wait.
    qm = await initialize_queue_system(_config(server, meetq_namespace))
    mq, _ = _parts(qm)
    entered = asyncio.Event()

    @mq.handler("stuck")
    async def stuck(msg: Message) -> None:
        entered.set()
        await asyncio.Event().wait()

    await qm.start()
    try:
        await mq.publish(Message(type="stuck"))
        await asyncio.wait_for(entered.wait(), 10)
        server.freeze()
        # grace=0: the handler is released at once and stop() goes on to hand it back,
        # which the frozen server holds up for the whole bound.
        stopping = asyncio.create_task(mq.stop(grace=0))
        await asyncio.sleep(0.5)
        assert not stopping.done(), "stop() should still be waiting for the frozen server"
        stopping.cancel()
        start = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        assert time.monotonic() - start < SLACK
        assert stopping.cancelled()
    finally:
        server.thaw()
        await qm.stop()


async def test_cancelling_queue_manager_stop_raises_cancelled_error(
    server: RedisServer, meetq_namespace: str
) -> None:
    config = _config(server, meetq_namespace)
    config["message_queue"]["shutdown_grace"] = 0  # straight on to the frozen server
    qm = await initialize_queue_system(config)
    mq, _ = _parts(qm)
    entered = asyncio.Event()

    @mq.handler("stuck")
    async def stuck(msg: Message) -> None:
        entered.set()
        await asyncio.Event().wait()

    await qm.start()
    await mq.publish(Message(type="stuck"))
    await asyncio.wait_for(entered.wait(), 10)
    server.freeze()
    try:
        stopping = asyncio.create_task(qm.stop())
        await asyncio.sleep(0.5)
        assert not stopping.done()
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
    finally:
        server.thaw()
        await mq.stop(grace=0)
        await qm.stop()


async def test_cancelling_pubsub_stop_raises_and_a_second_stop_finishes(
    server: RedisServer, meetq_namespace: str
) -> None:
    config = _config(server, meetq_namespace)
    config["message_queue"]["enabled"] = False
    qm = await initialize_queue_system(config)
    ps = qm.get_pubsub()
    assert ps is not None
    entered = asyncio.Event()

    async def stuck(message: PubSubMessage) -> None:
        entered.set()
        await asyncio.Event().wait()

    await ps.subscribe("events", stuck)
    await qm.start()
    await ps.publish("events", PubSubMessage(type="hold"))
    await asyncio.wait_for(entered.wait(), 10)
    server.freeze()
    try:
        stopping = asyncio.create_task(ps.stop(grace=30))
        await asyncio.sleep(0.5)
        assert not stopping.done()
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        # The cancelled call closed nothing; the next one finishes within the bound.
        error, took = await _timed(ps.stop(grace=0))
        assert error is None
        assert took < DEFAULTS.socket_connect_timeout + SLACK
        server.thaw()
        admin = aioredis.Redis.from_url(server.url)
        try:
            # Its subscriber connection is closed: Redis counts no subscriber any more.
            channel = f"{meetq_namespace}:events"
            await eventually(lambda: _subscribers(admin, channel, 0))
        finally:
            await admin.aclose()
    finally:
        server.thaw()
        await qm.stop()


async def _subscribers(admin: aioredis.Redis, channel: str, count: int) -> bool:
    [(_, found)] = await admin.pubsub_numsub(channel)
    return int(found) == count


async def test_pubsub_subscriber_notices_a_silent_server_and_recovers(
    server: RedisServer, meetq_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meetq.redis.pubsub")
    config = _short(server, meetq_namespace)
    config["message_queue"]["enabled"] = False
    qm, other = await initialize_queue_system(config), await initialize_queue_system(config)
    async with qm, other:
        sub, pub = qm.get_pubsub(), other.get_pubsub()
        assert sub is not None and pub is not None
        got = Collector()
        reconnected = asyncio.Event()
        sub.on_reconnect(reconnected.set)
        await sub.subscribe("events", got)
        assert await pub.publish("events", PubSubMessage(type="before")) == 1
        await got.wait_for(1)

        server.freeze()
        # No FIN, no RST: only the unanswered PING tells the reader its peer is gone.
        await eventually(
            lambda: any("unanswered" in r.getMessage() for r in caplog.records), timeout=20
        )
        server.thaw()
        await asyncio.wait_for(reconnected.wait(), 20)
        assert (await sub.stats())["reconnects"] >= 1
        await eventually(_delivers(pub, got), timeout=20)
        assert got.types[0] == "before"


def _delivers(pub: PubSub, got: Collector) -> Any:
    async def check() -> bool:
        await pub.publish("events", PubSubMessage(type="after"))
        return "after" in got.types

    return check


async def test_worker_carries_on_after_the_server_resumes(
    server: RedisServer, meetq_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    config = _short(server, meetq_namespace, message_queue={"visibility_timeout": "3s"})
    config["event_bus"]["enabled"] = False
    qm = await initialize_queue_system(config)
    mq = qm.get_message_queue()
    assert mq is not None
    done: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()

    @mq.handler("long")
    async def long(msg: Message) -> None:
        entered.set()
        await release.wait()
        done.append(msg.id)

    @mq.handler("job")
    async def job(msg: Message) -> None:
        done.append(msg.id)

    async with qm:
        running = await mq.publish(Message(type="long"))
        await asyncio.wait_for(entered.wait(), 10)
        server.freeze()

        def logged(text: str) -> bool:
            return any(text in r.getMessage() for r in caplog.records)

        # The exchange loop, the lease keeper and the wake-up listener each meet the
        # frozen server and say so; none of them dies of it.
        await eventually(lambda: logged("backend error, retrying"), timeout=20)
        await eventually(lambda: logged("could not renew"), timeout=20)
        await eventually(lambda: logged("wake-up listener"), timeout=20)
        server.thaw()

        release.set()  # its ack goes out once Redis answers again
        after = await _publish_until_it_works(mq)
        await eventually(lambda: running in done and after in done, timeout=20)
        # The janitor and the others are still alive (a task that died would be done).
        names = {f"meetq:{mq.name}:{part}" for part in ("exchange", "leases", "janitor", "wakeups")}
        alive = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
        assert names <= alive
        stats = await mq.stats()
        assert stats["total_processed"] == 2
        assert stats["processing_count"] == 0


async def _publish_until_it_works(mq: MessageQueue) -> str:
    async with asyncio.timeout(20):
        while True:
            try:
                return await mq.publish(Message(type="job"))
            except BackendUnavailableError:
                await asyncio.sleep(0.05)
