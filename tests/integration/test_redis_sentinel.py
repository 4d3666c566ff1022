"""meetq on Redis Sentinel: the shipped contract suite, and failovers ridden out.

The session's Sentinel setup (``meetq_redis_sentinel``: a master, two replicas, three
sentinels with a one-second down-after) serves every test here; each test that fails
the master over leaves it to the fixture to heal before the next one.

A failover test runs a producer and a worker (two queue managers, as two processes
would be) and a subscriber under load, fails the master (SIGKILL: connections reset;
SIGSTOP: nothing answers, like a hung host), and checks that every message whose
publish returned is handled, and that the worker, the producer and the subscriber (a
channel and a pattern) carry on by themselves on the promoted replica; it runs on
``master_for`` clients passed in and on queue managers built from ``redis.mode:
sentinel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio.sentinel import Sentinel

from meetq import (
    BackendUnavailableError,
    Message,
    PubSubMessage,
    QueueManager,
    initialize_queue_system,
    pubsub_from,
)
from meetq.testing import Collector, ContractSuite, RedisSentinelSetup, eventually
from meetq.testing._redis_sentinel import SERVICE

# Short bounds, so a failover is noticed within about a second (the defaults allow more).
BOUNDS: Mapping[str, float] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "health_check_interval": 0.2,
}
# How long a failover may take to be ridden out before the test gives up (a generous
# correctness bound on a shared machine, not a figure: bench/bench_failover.py measures).
RIDE_OUT = 30.0


def _master_client(setup: RedisSentinelSetup, **bounds: float) -> tuple[Sentinel, Any]:
    sentinel = Sentinel(setup.sentinel_addresses, socket_timeout=BOUNDS["socket_timeout"])
    return sentinel, sentinel.master_for(SERVICE, **{**BOUNDS, **bounds})


async def _close(sentinel: Sentinel, client: Any) -> None:
    await client.aclose()
    for node in sentinel.sentinels:
        await node.aclose()


class TestSentinel(ContractSuite):
    """The whole contract on a ``Sentinel.master_for`` client passed in."""

    @pytest.fixture
    def backend_config(self) -> Mapping[str, Any]:
        return {"message_queue": {"type": "redis"}, "event_bus": {"type": "redis_pubsub"}}

    @pytest_asyncio.fixture
    async def backend_client(self, meetq_redis_sentinel: RedisSentinelSetup) -> AsyncIterator[Any]:
        sentinel, client = _master_client(meetq_redis_sentinel)
        try:
            yield client
        finally:
            await _close(sentinel, client)


def _config(namespace: str) -> dict[str, Any]:
    return {
        "redis": {"key_prefix": namespace},
        "message_queue": {
            "type": "redis",
            "queue_name": namespace,
            "poll_interval": "50ms",
            "visibility_timeout": "3s",
            "retry_backoff_base": "10ms",
            "retry_backoff_max": "100ms",
        },
        "event_bus": {
            "type": "redis_pubsub",
            "namespace": namespace,
            "reconnect_backoff_base": "20ms",
            "reconnect_backoff_max": "200ms",
        },
        "task_dispatcher": {"enabled": False},
    }


def _sentinel_config(setup: RedisSentinelSetup, namespace: str) -> dict[str, Any]:
    """``_config`` with the ``redis:`` section of a user who configures Sentinel."""
    config = _config(namespace)
    config["redis"].update(
        mode="sentinel",
        sentinels=setup.sentinel_hosts,
        sentinel_service=SERVICE,
        socket_timeout=f"{BOUNDS['socket_timeout']}s",
        socket_connect_timeout=f"{BOUNDS['socket_connect_timeout']}s",
        health_check_interval=f"{BOUNDS['health_check_interval']}s",
    )
    return config


@pytest_asyncio.fixture
async def managers(
    request: pytest.FixtureRequest, meetq_redis_sentinel: RedisSentinelSetup, meetq_namespace: str
) -> AsyncIterator[tuple[QueueManager, QueueManager]]:
    """A worker's and a producer's queue manager, each on a client of its own: a
    ``master_for`` client passed in, or (parameter ``"config"``) built from
    ``redis.mode: sentinel``."""
    from_config = getattr(request, "param", "client") == "config"
    made: list[tuple[Sentinel, Any]] = []
    qms: list[QueueManager] = []
    try:
        for _ in range(2):
            if from_config:
                config = _sentinel_config(meetq_redis_sentinel, meetq_namespace)
                qms.append(await initialize_queue_system(config))
                continue
            sentinel, client = _master_client(meetq_redis_sentinel)
            made.append((sentinel, client))
            qms.append(await initialize_queue_system(_config(meetq_namespace), redis=client))
        yield qms[0], qms[1]
    finally:
        for qm in qms:
            await qm.stop()
        for sentinel, client in made:
            await _close(sentinel, client)


@pytest.mark.parametrize("managers", ["client", "config"], indirect=True)
@pytest.mark.parametrize("failure", ["kill", "freeze"])
async def test_a_failover_is_ridden_out_with_no_acknowledged_message_lost(
    meetq_redis_sentinel: RedisSentinelSetup,
    managers: tuple[QueueManager, QueueManager],
    failure: str,
) -> None:
    setup = meetq_redis_sentinel
    worker, producer = managers
    mq, ps = worker.get_message_queue(), worker.get_pubsub()
    out_mq, out_ps = producer.get_message_queue(), producer.get_pubsub()
    assert mq is not None and ps is not None and out_mq is not None and out_ps is not None
    handled: set[int] = set()

    @mq.handler("job")
    async def job(msg: Message) -> None:
        handled.add(msg.payload["n"])

    on_channel, on_pattern = Collector(), Collector()
    await worker.start()
    await producer.start()
    await ps.subscribe("news", on_channel)
    await ps.psubscribe("alerts.*", on_pattern)

    acknowledged: list[int] = []
    broadcast = itertools.count(1)
    sent: dict[str, int] = {}  # the last broadcast number each publisher got through

    async def produce() -> None:
        for n in itertools.count(1):
            while True:  # a failed publish is not acknowledged: the producer retries it
                try:
                    await out_mq.publish(Message(type="job", payload={"n": n}))
                    break
                except BackendUnavailableError:
                    await asyncio.sleep(0.02)
            acknowledged.append(n)
            k = next(broadcast)
            for channel in ("news", "alerts.fire"):
                try:
                    await out_ps.publish(channel, PubSubMessage(type="b", payload={"k": k}))
                    sent[channel] = k
                except BackendUnavailableError:
                    pass  # at most once: lost while the connection is down
            await asyncio.sleep(0.005)

    producing = asyncio.create_task(produce())
    try:
        await eventually(lambda: len(handled) >= 20 and len(on_pattern.messages) >= 5)
        failed = setup.kill_master() if failure == "kill" else setup.freeze_master()
        at_failure = len(acknowledged)
        promoted = await asyncio.to_thread(setup.wait_for_new_master, failed, RIDE_OUT)
        assert promoted != failed
        # Carrying on: new messages are acknowledged and handled, and both subscriptions
        # hear what is published after the promotion.
        after = next(broadcast)

        def heard(collector: Collector) -> bool:
            return any(m.payload["k"] > after for m in collector.messages)

        await eventually(
            lambda: len(acknowledged) > at_failure + 20
            and max(handled) > at_failure + 20
            and heard(on_channel)
            and heard(on_pattern),
            timeout=RIDE_OUT,
        )
    finally:
        producing.cancel()
        await asyncio.gather(producing, return_exceptions=True)
    # Every acknowledged message is handled (some maybe twice: at least once).
    await eventually(lambda: set(acknowledged) <= handled, timeout=RIDE_OUT)
    assert (await ps.stats())["reconnects"] >= 1  # the subscriber reconnected, by itself



async def test_a_publish_after_a_frozen_master_resumes_reaches_the_new_master(
    meetq_redis_sentinel: RedisSentinelSetup, managers: tuple[QueueManager, QueueManager]
) -> None:
    # The hung master comes back and, until Sentinel demotes it (seconds later), still
    # acts as a master: a publishing connection left open to it from before the freeze
    # would deliver to nobody, as every subscriber moved to the promoted replica.
    setup = meetq_redis_sentinel
    worker, _ = managers
    ps = worker.get_pubsub()
    assert ps is not None
    heard = Collector()
    await worker.start()
    await ps.subscribe("news", heard)
    await ps.publish("news", PubSubMessage(type="before"))  # leaves a publishing connection
    await heard.wait_for(1)
    failed = setup.freeze_master()
    await asyncio.to_thread(setup.wait_for_new_master, failed, RIDE_OUT)
    # The subscriber finds the promoted replica by itself (its reconnect asks the
    # sentinels), then the old master resumes.
    await eventually(lambda: _reconnected(ps), timeout=RIDE_OUT)
    setup.thaw(failed)
    await ps.publish("news", PubSubMessage(type="after"))
    await heard.wait_for(2)
    assert heard.types == ["before", "after"]


async def _reconnected(ps: Any) -> bool:
    return bool((await ps.stats())["reconnects"] >= 1)


async def test_a_subscriber_leaves_a_master_the_sentinels_replaced(
    meetq_redis_sentinel: RedisSentinelSetup,
    managers: tuple[QueueManager, QueueManager],
    meetq_namespace: str,
) -> None:
    # A socket_timeout longer than the freeze: the PING the watchdog sends is answered
    # once the old master resumes, so only asking the sentinels tells the subscriber that
    # it sits on a master nobody publishes to any more (Sentinel closes its clients only
    # when it demotes it, seconds later).
    setup = meetq_redis_sentinel
    _, producer = managers
    out_ps = producer.get_pubsub()
    assert out_ps is not None
    sentinel, client = _master_client(setup, socket_timeout=RIDE_OUT)
    subscriber = pubsub_from(_config(meetq_namespace), redis=client)
    heard = Collector()
    try:
        await subscriber.start()
        await producer.start()
        await subscriber.subscribe("news", heard)
        failed = setup.freeze_master()
        await asyncio.to_thread(setup.wait_for_new_master, failed, RIDE_OUT)
        setup.thaw(failed)
        numbers = itertools.count(1)

        async def heard_on_the_new_master() -> bool:
            with contextlib.suppress(BackendUnavailableError):
                await out_ps.publish("news", PubSubMessage(type="m", payload={"k": next(numbers)}))
            return bool(heard.messages)

        await eventually(heard_on_the_new_master, timeout=RIDE_OUT)
        # Not Sentinel's doing: it has not demoted the old master yet.
        assert setup.role(failed) == "master"
    finally:
        await subscriber.stop()
        await _close(sentinel, client)
