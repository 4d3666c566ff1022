"""RedisPubSubTransport's publishing path on a real redis-server: it packs PUBLISH itself
and keeps its connections, so check what redis-py would otherwise have guaranteed —
errors are translated, a call that failed midway never leaves a reply behind for the
next one, the client's socket_timeout still bounds a call, and a connection Redis
closed while it sat idle is replaced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import redis.exceptions

from meetq.backends.redis import _pubsub
from meetq.backends.redis._pubsub import RedisPubSubTransport
from meetq.core.errors import BackendUnavailableError

Factory = Callable[..., RedisPubSubTransport]


@pytest_asyncio.fixture
async def make_transport(meetq_redis_url: str) -> AsyncIterator[Factory]:
    made: list[tuple[RedisPubSubTransport, Any]] = []

    def make(url: str = meetq_redis_url, **client_options: Any) -> RedisPubSubTransport:
        client = aioredis.Redis.from_url(url, **client_options)
        transport = RedisPubSubTransport(client)
        made.append((transport, client))
        return transport

    yield make
    for transport, client in made:
        await transport.aclose()
        await client.aclose()


async def listen(transport: RedisPubSubTransport, channel: str) -> asyncio.Task[None]:
    """Subscribe ``transport`` to ``channel`` with a reader running; return the reader."""

    async def read() -> None:
        async for _ in transport.messages():
            pass

    reader = asyncio.create_task(read())
    await transport.subscribe([channel])
    return reader


def channel_name() -> str:
    return f"t:{uuid.uuid4().hex}"


async def test_publish_counts_receivers_and_keeps_order_of_replies(
    make_transport: Factory,
) -> None:
    listened, silent = channel_name(), channel_name() + ":é"
    sub = make_transport()
    reader = await listen(sub, listened)
    pub = make_transport()
    assert await pub.publish(listened, b"x") == 1
    assert await pub.publish(silent, b"y") == 0
    assert await pub.publish_many(listened, [b"a", b"b", b"c"]) == [1, 1, 1]
    assert await pub.publish_many(silent, [bytearray(b"z")]) == [0]
    # Concurrent calls each get their own connection and their own replies.
    counts = await asyncio.gather(
        *(pub.publish(listened if i % 2 else silent, b"c") for i in range(20))
    )
    assert counts == [i % 2 for i in range(20)]
    reader.cancel()


async def test_an_error_reply_is_translated_and_leaves_nothing_unread(
    make_transport: Factory, meetq_redis_url: str
) -> None:
    admin = aioredis.Redis.from_url(meetq_redis_url)
    user = f"nopub{uuid.uuid4().hex[:8]}"
    await admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all",
                                "-publish")
    try:
        host_port = meetq_redis_url.split("//", 1)[1]
        pub = make_transport(f"redis://{user}:pw@{host_port}")
        with pytest.raises(BackendUnavailableError) as info:
            await pub.publish_many(channel_name(), [b"1", b"2", b"3"])
        assert not isinstance(info.value, redis.exceptions.RedisError)
        assert "PUBLISH" in str(info.value)
        await admin.execute_command("ACL", "SETUSER", user, "+publish")
        # The two unread error replies went with the dropped connection.
        assert await pub.publish(channel_name(), b"ok") == 0
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_socket_timeout_bounds_a_publish_and_no_late_reply_is_misread(
    make_transport: Factory, meetq_redis_url: str
) -> None:
    listened, silent = channel_name(), channel_name()
    sub = make_transport()
    reader = await listen(sub, listened)
    pub = make_transport(socket_timeout=0.2)
    assert await pub.publish(silent, b"warm") == 0
    admin = aioredis.Redis.from_url(meetq_redis_url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "600", "WRITE")
        with pytest.raises(BackendUnavailableError) as info:
            await pub.publish(listened, b"late")  # its reply (1) comes after the pause
        assert "0.2s" in str(info.value)
        await admin.execute_command("CLIENT", "UNPAUSE")
        # A connection reused with the late reply unread would answer 1 here.
        assert await pub.publish(silent, b"next") == 0
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
    reader.cancel()


async def test_a_connection_closed_while_idle_is_replaced(
    make_transport: Factory, meetq_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pubsub, "_IDLE_RECHECK", 0.0)
    pub = make_transport()
    name = f"pub{uuid.uuid4().hex[:8]}"
    (await pub._open_pool()).connection_kwargs["client_name"] = name
    assert await pub.publish(channel_name(), b"1") == 0
    admin = aioredis.Redis.from_url(meetq_redis_url)
    try:
        clients = await admin.client_list()
        ids = [c["id"] for c in clients if c.get("name") == name]
        assert ids
        for client_id in ids:
            await admin.client_kill_filter(_id=client_id)
    finally:
        await admin.aclose()
    assert await pub.publish(channel_name(), b"2") == 0


async def test_publishing_after_close_is_refused(make_transport: Factory) -> None:
    pub = make_transport()
    await pub.publish(channel_name(), b"1")
    await pub.aclose()
    with pytest.raises(Exception) as info:
        await pub.publish(channel_name(), b"2")
    assert not isinstance(info.value, redis.exceptions.RedisError)
