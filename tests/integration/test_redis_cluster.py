"""The work queue on a real Redis Cluster: three primaries, one replica each.

One cluster serves the whole session (``meetq_redis_cluster``); a test that kills a node
restarts it before it ends.
"""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from meetq.testing import LocalRedisCluster


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
