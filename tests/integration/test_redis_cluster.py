"""The work queue on a real Redis Cluster: three primaries, one replica each.

One cluster serves the whole session (``meetq_redis_cluster``); a test that kills a node
restarts it before it ends. The shipped contract suite runs on it with each test's queue
on the next primary in turn, and a test after the class checks where their keys went.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from meetq import Message, MessageQueue, initialize_queue_system
from meetq.backends.redis._backend import RedisBackend
from meetq.backends.redis._scripts import SHARDED_SCRIPTS
from meetq.core.errors import BackendUnavailableError
from meetq.sync import SyncProducer
from meetq.testing import (
    ContractSuite,
    LocalRedisCluster,
    PubSubContract,
    RecordingBackend,
    eventually,
    free_port,
)

# Contract tests whose queue's slot held keys on its primary afterwards, per primary.
_CONTRACT_PLACEMENT: Counter[int] = Counter()
_NEXT_PRIMARY = itertools.count()
# Every mixin of the shipped suite but Pub/Sub's (see TestRedisClusterContract).
_QUEUE_CONTRACTS = tuple(m for m in ContractSuite.__bases__ if m is not PubSubContract)


# Far more than any test here needs; a test still running then is stuck.
HANG_BOUND = 120.0


@pytest_asyncio.fixture(autouse=True)
async def _bounded() -> AsyncIterator[None]:
    """A test of this module that hangs fails after ``HANG_BOUND`` seconds, naming where
    each task waited, instead of holding up the whole session."""
    loop = asyncio.get_running_loop()
    stacks: list[str] = []

    def expire() -> None:
        for task in asyncio.all_tasks(loop):
            text = io.StringIO()
            task.print_stack(file=text)
            stacks.append(f"{task.get_name()}:\n{text.getvalue()}")
            task.cancel()

    timer = loop.call_later(HANG_BOUND, expire)
    yield
    timer.cancel()
    if stacks:
        pytest.fail(f"stuck after {HANG_BOUND:g}s; its tasks were at:\n" + "\n".join(stacks))


def _queue_on(cluster: LocalRedisCluster, primary: int, start: int) -> str:
    """A queue name whose keys (hash tag ``{name}``) live on ``primary``."""
    for i in range(start, start + 10_000):
        if cluster.owner_of(f"{{q{i}}}") == primary:
            return f"q{i}"
    raise AssertionError(f"no queue name of 10,000 lands on primary {primary}")


async def test_the_session_cluster_has_three_primaries_each_with_a_replica(
    meetq_redis_cluster: LocalRedisCluster, meetq_namespace: str
) -> None:
    primaries = meetq_redis_cluster.primaries()
    assert len(primaries) == 3
    assert all(len(meetq_redis_cluster.replicas_of(port)) == 1 for port in primaries)
    keys = [f"{meetq_namespace}:{{q{i}}}" for i in range(30)]
    owners = {meetq_redis_cluster.owner_of(key) for key in keys}
    assert owners == set(primaries)  # thirty hash tags land on every primary
    client = RedisCluster.from_url(meetq_redis_cluster.url)
    try:
        for key in keys:
            await client.set(key, key)
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
    finally:
        await client.aclose()


class TestRedisClusterContract(*_QUEUE_CONTRACTS):  # type: ignore[misc]
    """The shipped contract suite on a ``RedisCluster`` client passed in, but for
    ``PubSubContract``, which tests/integration/test_pubsub_cluster.py binds."""

    @pytest.fixture
    def placement(self, meetq_redis_cluster: LocalRedisCluster) -> Iterator[tuple[int, str]]:
        primaries = meetq_redis_cluster.primaries()
        primary = primaries[next(_NEXT_PRIMARY) % len(primaries)]
        name = _queue_on(meetq_redis_cluster, primary, start=0)
        yield primary, name
        slot = meetq_redis_cluster.slot_of(f"{{{name}}}")
        with meetq_redis_cluster.client(primary) as node:
            if int(node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) > 0:  # type: ignore[no-untyped-call]
                _CONTRACT_PLACEMENT[primary] += 1

    @pytest.fixture
    def contract_queue_name(self, placement: tuple[int, str]) -> str:
        return placement[1]

    @pytest.fixture
    def backend_config(self, meetq_redis_cluster: LocalRedisCluster) -> Mapping[str, Any]:
        return {
            "redis": {"url": meetq_redis_cluster.url},
            "message_queue": {"type": "redis"},
            "event_bus": {"type": "redis_pubsub"},
        }

    @pytest.fixture
    async def backend_client(self, meetq_redis_cluster: LocalRedisCluster) -> AsyncIterator[Any]:
        client = RedisCluster.from_url(meetq_redis_cluster.url, socket_timeout=5.0)
        yield client
        await client.aclose()


def test_the_contract_suite_ran_on_every_primary(meetq_redis_cluster: LocalRedisCluster) -> None:
    if not _CONTRACT_PLACEMENT:
        pytest.skip("TestRedisClusterContract did not run in this session")
    assert set(_CONTRACT_PLACEMENT) == set(meetq_redis_cluster.primaries())
    assert min(_CONTRACT_PLACEMENT.values()) >= 5


# -- push wake-ups, hand-offs, errors and failover on the cluster -----------------------

IDLE = {"poll_interval": "60s", "visibility_timeout": "2s"}  # a poll would be too late


class ClusterWorker:
    """A MessageQueue on its own cluster client, recording which ids its exchanges claimed."""

    def __init__(self, url: str, prefix: str, queue_name: str) -> None:
        self.client = RedisCluster.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
        self.recording = RecordingBackend(RedisBackend(self.client, key_prefix=prefix))
        self.claimed: list[str] = []
        self.handled: list[str] = []
        self.mq = MessageQueue(self.recording, queue_name=queue_name, **IDLE)

        async def exchange(call: Any, *args: Any, **kwargs: Any) -> Any:
            result = await call(*args, **kwargs)
            self.claimed += [c.id for c in result.claimed]
            return result

        self.recording.around("exchange", exchange)

        @self.mq.handler("job")
        async def job(msg: Message) -> None:
            self.handled.append(msg.id)

    async def aclose(self) -> None:
        await self.mq.stop()
        await self.recording.aclose()
        await self.client.aclose()


def _shard_subscribers(cluster: LocalRedisCluster, channel: str) -> tuple[int, int]:
    """Subscribers of ``channel`` on its slot's primary: (sharded, classic)."""
    with cluster.client(cluster.owner_of(channel)) as node:
        sharded = node.execute_command("PUBSUB", "SHARDNUMSUB", channel)  # type: ignore[no-untyped-call]
        classic = node.execute_command("PUBSUB", "NUMSUB", channel)  # type: ignore[no-untyped-call]
    return int(sharded[1]), int(classic[1])


async def test_idle_workers_on_every_primary_are_woken_and_handed_off_to_by_sharded_pubsub(
    meetq_redis_cluster: LocalRedisCluster, meetq_namespace: str
) -> None:
    cluster = meetq_redis_cluster
    names = [_queue_on(cluster, primary, start=100) for primary in cluster.primaries()]
    workers = [ClusterWorker(cluster.url, meetq_namespace, name) for name in names]
    producer_client = RedisCluster.from_url(cluster.url)
    producer = RedisBackend(producer_client, key_prefix=meetq_namespace)
    try:
        for worker in workers:
            await worker.mq.start()
        for worker, name in zip(workers, names, strict=True):
            # The listener is SSUBSCRIBEd on the queue's own primary, not SUBSCRIBEd.
            notify = f"{meetq_namespace}:{{{name}}}:notify"
            assert _shard_subscribers(cluster, notify) == (1, 0)
            parked = f"{meetq_namespace}:{{{name}}}:parked"
            await eventually(lambda p=parked: _exists(producer_client, p))  # type: ignore[misc]
            queue = MessageQueue(producer, queue_name=name, **IDLE)
            handed = await queue.publish(Message(type="job"))  # enqueue_one: a hand-off
            await eventually(lambda w=worker, i=handed: i in w.handled)  # type: ignore[misc]
            assert handed not in worker.claimed  # SPUBLISHed to the worker, not claimed
            # A batch does not hand off: the worker claims it after the SPUBLISHed wake-up
            # (its poll is a minute away).
            batch = await queue.publish_batch([Message(type="job"), Message(type="job")])
            await eventually(lambda w=worker, b=batch: set(b) <= set(w.handled))  # type: ignore[misc]
            assert set(batch) <= set(worker.claimed)
        owners = {cluster.owner_of(f"{{{name}}}") for name in names}
        assert owners == set(cluster.primaries())
    finally:
        for worker in workers:
            await worker.aclose()  # stop() works on a cluster client
        await producer.aclose()
        await producer_client.aclose()


def _has_scripts(cluster: LocalRedisCluster, port: int) -> tuple[bool, bool]:
    """Whether the node on ``port`` holds the cluster forms of exchange and enqueue_one."""
    shas = [SHARDED_SCRIPTS[name].sha for name in ("exchange", "enqueue_one")]
    with cluster.client(port) as node:
        found = node.execute_command("SCRIPT", "EXISTS", *shas)  # type: ignore[no-untyped-call]
    return bool(found[0]), bool(found[1])


async def _exists(client: RedisCluster, key: str) -> bool:
    return bool(await client.exists(key))


async def test_an_unreachable_cluster_is_a_backend_unavailable_error(
    meetq_namespace: str,
) -> None:
    client = RedisCluster(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    backend = RedisBackend(client, key_prefix=meetq_namespace)
    try:
        queue = MessageQueue(backend, queue_name="q", **IDLE)
        with pytest.raises(BackendUnavailableError) as caught:
            await queue.publish(Message(type="job"))
        assert isinstance(caught.value.__cause__, RedisClusterException)  # no RedisError
    finally:
        await backend.aclose()
        await client.aclose()


async def test_a_killed_primary_loses_no_acknowledged_message_and_workers_carry_on(
    meetq_redis_cluster: LocalRedisCluster, meetq_namespace: str
) -> None:
    """kill -9 of the primary of a loaded queue: every publish that returned is handled,
    by the same workers, once a replica has taken over; nothing is restarted.

    Replication is asynchronous, so a write the primary acknowledged moments before it
    died may be missing on the replica (docs/reliability.md): the producer pauses while
    the replicas catch up and the primary is killed, then carries on into the failover,
    retrying each publish that fails until one returns. Settlements of that moment may be
    lost; their messages come again (at least once), so the check counts distinct ones.
    """
    cluster = meetq_redis_cluster
    victim = cluster.primaries()[0]
    name = _queue_on(cluster, victim, start=200)
    client = RedisCluster.from_url(cluster.url, socket_timeout=2.0, socket_connect_timeout=1.0)
    qm = await initialize_queue_system(
        {
            "redis": {"key_prefix": meetq_namespace},
            "message_queue": {
                "type": "redis",
                "queue_name": name,
                "workers": 4,
                "poll_interval": "100ms",
                "visibility_timeout": "2s",
            },
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        },
        redis=client,
    )
    mq = qm.get_message_queue()
    assert mq is not None
    handled: set[int] = set()
    acknowledged: set[int] = set()
    paused = asyncio.Event()
    resume = asyncio.Event()
    stop = asyncio.Event()

    @mq.handler("job")
    async def job(msg: Message) -> None:
        await asyncio.sleep(0.002)  # a little work: a backlog builds up
        handled.add(msg.payload["n"])

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            if len(acknowledged) == 300 and not resume.is_set():
                paused.set()
                await resume.wait()
            try:
                await mq.publish(Message(type="job", payload={"n": n}))
            except BackendUnavailableError:
                await asyncio.sleep(0.05)  # the failover: the same message again
                continue
            acknowledged.add(n)
            n += 1

    killed: int | None = None
    try:
        async with qm:
            producer = asyncio.create_task(produce())
            await asyncio.wait_for(paused.wait(), 60)
            assert len(handled) < len(acknowledged)  # a backlog, leases and acks in flight
            await asyncio.to_thread(cluster.wait_replicated, victim)
            (replica,) = cluster.replicas_of(victim)
            assert _has_scripts(cluster, replica) == (False, False)  # they do not replicate
            failover = await asyncio.to_thread(cluster.kill_primary, victim)
            killed = failover.killed
            resume.set()
            await eventually(lambda: len(acknowledged) >= 400, timeout=60)
            stop.set()
            await producer
            await eventually(lambda: handled >= acknowledged, timeout=60)
            assert cluster.owner_of(f"{{{name}}}") == failover.promoted == replica
            assert _has_scripts(cluster, replica) == (True, True)  # loaded there on NOSCRIPT
            notify = f"{meetq_namespace}:{{{name}}}:notify"
            await eventually(lambda: _shard_subscribers(cluster, notify) == (1, 0), timeout=30)
        assert acknowledged <= handled  # not one acknowledged message lost
    finally:
        stop.set()
        resume.set()
        await client.aclose()
        if killed is not None:
            await asyncio.to_thread(cluster.restart, killed)


async def test_a_sync_producer_on_a_sync_cluster_client_wakes_an_idle_worker(
    meetq_redis_cluster: LocalRedisCluster, meetq_namespace: str
) -> None:
    cluster = meetq_redis_cluster
    name = _queue_on(cluster, cluster.primaries()[-1], start=300)
    worker = ClusterWorker(cluster.url, meetq_namespace, name)
    sync_client = redis.RedisCluster.from_url(cluster.url, socket_timeout=2.0)
    producer = SyncProducer(
        {"redis": {"key_prefix": meetq_namespace}, "message_queue": {"type": "redis"}},
        redis=sync_client,
        queue_name=name,
    )
    try:
        await worker.mq.start()
        # One at a time (a hand-off to the parked worker), then a batch (a wake-up): the
        # sync producer runs the same SPUBLISHing scripts; the worker polls once a minute.
        ids = [await asyncio.to_thread(producer.publish, Message(type="job"))]
        ids += await asyncio.to_thread(
            producer.publish_batch, [Message(type="job"), Message(type="job")]
        )
        await eventually(lambda: sorted(worker.handled) == sorted(ids))
    finally:
        producer.close()
        sync_client.close()
        await worker.aclose()
