"""``redis.mode`` from the config reaches real servers: the Sentinel setup of the session
(``meetq_redis_sentinel``) and a one-node Redis Cluster, through the asyncio client the
backend builds and the blocking one ``meetq.sync`` builds, with the configured bounds.

What the work queue and Pub/Sub do on these clients is tested beside the features
(test_redis_sentinel.py, the cluster tests); here: the config makes the right client.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from meetq import Message, RedisConfig, load_config
from meetq.backends.redis._connection import (
    SYNC,
    blocking_client,
    bounds_of,
    build_client,
    close_client,
    close_sync_client,
)
from meetq.sync import SyncProducer
from meetq.testing._redis_sentinel import SERVICE, RedisSentinelSetup
from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, free_port
from meetq.testing.work_queue_suite import eventually


def redis_section(raw: dict[str, object]) -> RedisConfig:
    return load_config({"redis": raw}, environ={}).section(RedisConfig)


async def test_sentinel_mode_reaches_the_master_on_both_faces(
    meetq_redis_sentinel: RedisSentinelSetup, meetq_namespace: str
) -> None:
    cfg = redis_section(
        {
            "mode": "sentinel",
            "sentinels": meetq_redis_sentinel.sentinel_hosts,
            "sentinel_service": SERVICE,
            "socket_timeout": 2,
        }
    )
    master = meetq_redis_sentinel.master_port()
    client = blocking_client(cfg)
    try:
        assert bounds_of(client).socket_timeout == 2.0
        role = await client.execute_command("ROLE")
        assert role[0] in (b"master", "master")
        await client.set(f"{meetq_namespace}:k", "v")
        info = await client.connection_pool.get_master_address()
        assert info[1] == master
    finally:
        await close_client(client)  # the sentinels' connections too
    sync_client = build_client(cfg, SYNC)
    try:
        assert sync_client.get(f"{meetq_namespace}:k") == b"v"
        assert sync_client.connection_pool.get_master_address()[1] == master
    finally:
        close_sync_client(sync_client)


@pytest.fixture
def cluster_node() -> Iterator[RedisServer]:
    server = RedisServer()
    server.extra_args = (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(server.directory / "nodes.conf"),
        "--cluster-port",
        str(free_port()),
    )
    try:
        server.start()
    except RedisServerUnavailable as exc:
        pytest.fail(f"could not start a cluster-mode redis-server: {exc}")
    try:
        admin = redis.Redis(port=server.port)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        yield server
        admin.close()
    finally:
        server.close()


async def test_cluster_mode_builds_cluster_clients_from_the_url_of_one_node(
    cluster_node: RedisServer, meetq_namespace: str
) -> None:
    admin = aioredis.Redis(port=cluster_node.port)

    async def ready() -> bool:
        info = await admin.execute_command("CLUSTER", "INFO")
        return b"cluster_state:ok" in info

    await eventually(ready, timeout=20)
    await admin.aclose()
    cfg = redis_section({"mode": "cluster", "url": cluster_node.url, "socket_timeout": 2})
    client = blocking_client(cfg)
    try:
        assert isinstance(client, aioredis.RedisCluster)
        await client.set(f"{meetq_namespace}:k", "v")
        assert await client.get(f"{meetq_namespace}:k") == b"v"
        assert bounds_of(client).socket_timeout == 2.0
    finally:
        await client.aclose()
    sync_client = build_client(cfg, SYNC)
    try:
        assert isinstance(sync_client, redis.RedisCluster)
        assert sync_client.get(f"{meetq_namespace}:k") == b"v"
    finally:
        sync_client.close()
    # The sync producer's scripts run through it (each call's keys share one slot).
    config = {
        "redis": {"mode": "cluster", "startup_nodes": [f"127.0.0.1:{cluster_node.port}"]},
        "message_queue": {"type": "redis", "queue_name": meetq_namespace},
    }
    with SyncProducer(config) as producer:
        producer.publish(Message(type="t", payload={}))
        assert producer.stats()["queue_length"]["normal"] == 1
