"""Sharded Pub/Sub (``SSUBSCRIBE``, Redis >= 7) on the Redis Cluster node owning a slot.

Why: classic ``PUBLISH`` on a cluster is broadcast over the cluster bus to every node, so
each wake-up of every queue would cost every node; a shard channel lives in one slot and
a ``SPUBLISH`` stays on the primary that owns it. The work queue's channels all carry
the queue's hash tag, so its wake-ups and hand-offs stay on the queue's own primary, and
the scripts that send them (``SPUBLISH`` inside ``enqueue_one``/``exchange``) may do so
because the channel hashes to the slot of their keys.

redis-py's asyncio cluster client has no Pub/Sub, so ``ShardedSubscription`` holds one
plain connection to the owner, built with the cluster client's own connection class and
options (credentials and TLS included), and reads replies in the shape of redis-py's
``PubSub.get_message``. It finds the owner from the client's slot map after a routed
read of one of its channels (so a stale map is refreshed first), follows a ``MOVED``
reply, and reports the slot moving away (``sunsubscribe`` pushed by the old owner after a
failover or resharding) as a lost connection, so its caller subscribes again where the
slot now lives.
"""

from __future__ import annotations

from typing import Any, Final

import redis.exceptions

__all__ = ["ShardedSubscription", "is_cluster"]

# MOVED replies followed in one subscribe before it is given up (the caller retries).
_MAX_REDIRECTS: Final = 3
_KINDS: Final = {b"smessage": "message", b"ssubscribe": "subscribe", b"pong": "pong"}


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a redis-py cluster client (asyncio or sync)."""
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, (AsyncRedisCluster, RedisCluster))


class ShardedSubscription:
    """A ``SSUBSCRIBE`` to channels of one slot, on the primary that owns that slot."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._conn: Any = None
        self._channels: tuple[bytes, ...] = ()

    async def subscribe(self, *channels: bytes) -> None:
        """Subscribe on the slot owner; the confirmations arrive through ``get_message``."""
        self._channels = channels
        await self._client.initialize()
        # A routed read first: if the slot map is stale (its owner died, the slot moved)
        # the client refreshes it, and the node it names below is the owner now.
        await self._client.execute_command("EXISTS", channels[0])
        await self._connect(self._client.get_node_from_key(channels[0]))

    async def _connect(self, node: Any) -> None:
        await self.aclose()
        self._conn = node.connection_class(**node.connection_kwargs)
        await self._conn.connect()
        await self._conn.send_command("SSUBSCRIBE", *self._channels)

    async def get_message(self, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109 (redis-py PubSub's signature)
        """The next message or confirmation, or None after ``timeout`` seconds of silence.

        Raises ``redis.exceptions.ConnectionError`` when the slot moved away.
        """
        redirects = 0
        while True:
            try:
                reply = await self._conn.read_response(timeout=timeout, disable_decoding=True)
            except redis.exceptions.MovedError as moved:
                redirects += 1
                node = self._client.get_node(host=moved.host, port=moved.port)
                if node is None or redirects > _MAX_REDIRECTS:
                    raise
                await self._connect(node)
                continue
            if reply is None:
                return None
            kind = reply[0]
            if kind == b"sunsubscribe":
                raise redis.exceptions.ConnectionError(
                    f"shard channel {reply[1]!r} moved to another node"
                )
            # [kind, channel, data]; a PING's reply is [b"pong", payload].
            return {"type": _KINDS.get(kind, kind.decode()), "channel": reply[1], "data": reply[-1]}

    async def ping(self) -> None:
        """Ask for a ``pong``, which ``get_message`` returns: the server is alive."""
        await self._conn.send_command("PING")

    async def aclose(self) -> None:
        """Drop the connection (the subscription ends with it). Safe to call again."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
