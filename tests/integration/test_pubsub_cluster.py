"""PubSub on a real Redis Cluster: the shipped PubSub contract, and a dead node ridden out.

Classic Pub/Sub on a cluster is broadcast over the cluster bus, so one connection to any
node hears every channel and pattern; the transport prefers the first primary by
address, and moves to another node (re-subscribing) when its node dies. Which node a
subscriber sits on is read the way an operator would: ``PUBSUB NUMSUB`` / ``NUMPAT`` are
per node on a cluster.

Every test uses the session's cluster (``meetq_redis_cluster``: 3 primaries with one
replica each); the one that kills a node restarts it (it rejoins as a replica).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from meetq import BackendUnavailableError, PubSubMessage, pubsub_from
from meetq.testing import Collector, PubSubContract, eventually, free_port
from meetq.testing._redis_cluster import LocalRedisCluster

# A generous correctness bound for riding out a dead node on a shared machine.
RIDE_OUT = 30.0


def _cluster_client(cluster: LocalRedisCluster) -> RedisCluster:
    nodes = [ClusterNode("127.0.0.1", port) for port in cluster.ports]
    return RedisCluster(
        startup_nodes=nodes, socket_timeout=1.0, socket_connect_timeout=1.0
    )


class TestPubSubOnCluster(PubSubContract):
    """The whole PubSub contract on a ``RedisCluster`` client passed in."""

    @pytest.fixture
    def backend_config(self) -> Mapping[str, Any]:
        return {"message_queue": {"type": "redis"}, "event_bus": {"type": "redis_pubsub"}}

    @pytest_asyncio.fixture
    async def backend_client(
        self, meetq_redis_cluster: LocalRedisCluster
    ) -> AsyncIterator[RedisCluster]:
        client = _cluster_client(meetq_redis_cluster)
        try:
            yield client
        finally:
            await client.aclose()


async def _subscribers_by_node(cluster: LocalRedisCluster, wire: str) -> dict[int, int]:
    """Port -> subscriptions to channel ``wire`` plus patterns, on each live node."""
    counts: dict[int, int] = {}
    for port in cluster.ports:
        node = aioredis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            numsub = await node.execute_command("PUBSUB", "NUMSUB", wire)
            numpat = await node.execute_command("PUBSUB", "NUMPAT")
            counts[port] = int(numsub[1]) + int(numpat)
        except (OSError, aioredis.RedisError):
            continue  # a dead node holds nobody
        finally:
            await node.aclose()
    return {port: count for port, count in counts.items() if count}


async def test_a_subscriber_moves_to_another_node_when_its_node_dies(
    meetq_redis_cluster: LocalRedisCluster, meetq_namespace: str
) -> None:
    cluster = meetq_redis_cluster
    client = _cluster_client(cluster)
    config = {
        "event_bus": {
            "type": "redis_pubsub",
            "namespace": meetq_namespace,
            "reconnect_backoff_base": "20ms",
            "reconnect_backoff_max": "200ms",
        }
    }
    # Two PubSub objects, each with a transport (a connection) of its own, as a
    # subscribing and a publishing process would have.
    ps, publisher = pubsub_from(config, redis=client), pubsub_from(config, redis=client)
    on_channel, on_pattern = Collector(), Collector()
    killed: int | None = None
    try:
        await ps.start()
        await publisher.start()
        await ps.subscribe("news", on_channel)
        await ps.psubscribe("alerts.*", on_pattern)
        await publisher.publish("news", PubSubMessage(type="before"))
        await publisher.publish("alerts.fire", PubSubMessage(type="before"))
        await on_channel.wait_for(1)
        await on_pattern.wait_for(1)
        wire = f"{meetq_namespace}:news"
        [(port, count)] = (await _subscribers_by_node(cluster, wire)).items()
        assert count == 2  # one channel, one pattern, on one connection
        assert port in cluster.primaries()  # the node the transport prefers
        failover = await asyncio.to_thread(cluster.kill_primary, port)
        killed = failover.killed

        numbers = itertools.count(1)

        async def heard_after_the_kill() -> bool:
            k = next(numbers)
            for channel in ("news", "alerts.fire"):
                try:
                    await publisher.publish(channel, PubSubMessage(type="after", payload={"k": k}))
                except BackendUnavailableError:
                    return False  # the publisher moves on to a live node too
            return "after" in on_channel.types and "after" in on_pattern.types

        await eventually(heard_after_the_kill, timeout=RIDE_OUT)
        now = await _subscribers_by_node(cluster, wire)
        assert killed not in now and list(now.values()) == [2]
        assert (await ps.stats())["reconnects"] == 1
    finally:
        await publisher.stop()
        await ps.stop()
        await client.aclose()
        if killed is not None:
            await asyncio.to_thread(cluster.restart, killed)


async def test_an_unreachable_cluster_is_a_meetq_error() -> None:
    # redis-py raises RedisClusterException (not a RedisError) when no startup node
    # answers; the caller sees BackendUnavailableError.
    client = RedisCluster(host="127.0.0.1", port=free_port(), socket_connect_timeout=1.0)
    ps = pubsub_from({"event_bus": {"type": "redis_pubsub"}}, redis=client)
    try:
        await ps.start()
        with pytest.raises(BackendUnavailableError, match="cluster"):
            await ps.publish("news", PubSubMessage(type="m"))
        with pytest.raises(BackendUnavailableError, match="cluster"):
            await ps.subscribe("news", Collector())
    finally:
        await ps.stop()
        await client.aclose()


async def test_pubsub_from_a_cluster_config_hears_channels_and_patterns(
    meetq_redis_cluster: LocalRedisCluster, meetq_namespace: str
) -> None:
    config = {
        "redis": {"mode": "cluster", "startup_nodes": meetq_redis_cluster.startup_nodes},
        "event_bus": {"type": "redis_pubsub", "namespace": meetq_namespace},
    }
    sub, pub = pubsub_from(config), pubsub_from(config)
    on_channel, on_pattern = Collector(), Collector()
    try:
        await sub.start()
        await pub.start()
        await sub.subscribe("news", on_channel)
        await sub.psubscribe("alerts.*", on_pattern)
        # Both on the preferred node: the receiver count is the cluster's.
        assert await pub.publish("news", PubSubMessage(type="n")) == 1
        assert await pub.publish("alerts.fire", PubSubMessage(type="a")) == 1
        assert (await on_channel.wait_for(1))[0].type == "n"
        assert [(m.channel, m.type) for m in await on_pattern.wait_for(1)] == [
            ("alerts.fire", "a")
        ]
    finally:
        await pub.stop()
        await sub.stop()
