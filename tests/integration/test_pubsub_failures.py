"""Redis Pub/Sub when things go wrong: foreign bytes on the wire, Redis down at start(),
subscription calls that time out, are cancelled or overlap close. Real redis-server.

Several tests drive ``RedisPubSubTransport`` without a reader on purpose: then Redis's
confirmation is never read, so a call is deterministically still waiting for it.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from meetq import BackendUnavailableError, ClosedError, PubSub, PubSubMessage
from meetq.backends.redis import _pubsub
from meetq.backends.redis._backend import RedisBackend
from meetq.backends.redis._pubsub import RedisPubSubTransport
from meetq.core.serialization import JsonSerializer, encode_pubsub_message
from meetq.testing import Collector, RecordingBackend
from meetq.testing._redis_server import RedisServer

TIMEOUT = 10.0


@pytest_asyncio.fixture
async def admin(meetq_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(meetq_redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def make_transport(meetq_redis_url: str) -> AsyncIterator[Callable[[], Any]]:
    made: list[tuple[RedisPubSubTransport, Any]] = []

    def make() -> RedisPubSubTransport:
        client = aioredis.Redis.from_url(meetq_redis_url)
        transport = RedisPubSubTransport(client)
        made.append((transport, client))
        return transport

    yield make
    for transport, client in made:
        await transport.aclose()
        await client.aclose()


async def subscribers(admin: aioredis.Redis, channel: str) -> int:
    [(_, count)] = await admin.pubsub_numsub(channel)
    return int(count)


async def wait_for_subscribers(admin: aioredis.Redis, channel: str, count: int) -> None:
    async def poll() -> None:
        # Redis's own count offers no event to wait on.
        while await subscribers(admin, channel) != count:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), TIMEOUT)


def read_in_background(transport: RedisPubSubTransport) -> asyncio.Task[None]:
    async def read() -> None:
        async for _ in transport.messages():
            pass

    return asyncio.create_task(read())


def channel_name() -> str:
    return f"t:{uuid.uuid4().hex}"


async def test_a_channel_name_that_is_not_utf8_is_a_decode_error(
    meetq_redis_url: str, meetq_namespace: str, admin: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(meetq_redis_url)
    ps = PubSub(RedisBackend(client), namespace=meetq_namespace)
    try:
        await ps.start()
        pattern_got, plain_got = Collector(), Collector()
        await ps.psubscribe("meeting.*", pattern_got)
        await ps.subscribe("plain", plain_got)
        # Another process publishes a well-formed event on a matching channel whose
        # name is not UTF-8: the name is what makes it undecodable.
        event = encode_pubsub_message(PubSubMessage(type="foreign"), JsonSerializer())
        assert await admin.publish(f"{meetq_namespace}:meeting.\xff".encode("latin-1"), event) == 1
        assert await ps.publish("plain", PubSubMessage(type="after")) == 1
        assert await ps.publish("meeting.a", PubSubMessage(type="after")) == 1
        # Both arrive after the foreign one on the same connection: it was handled.
        await plain_got.wait_for(1)
        await pattern_got.wait_for(1)
        assert pattern_got.types == ["after"]
        stats = await ps.stats()
        assert stats["decode_errors"] == 1 and stats["total_received"] == 3
        assert ps._reader is not None and not ps._reader.done()
    finally:
        await ps.stop()
        await client.aclose()


async def test_start_while_redis_is_down_can_be_retried(
    meetq_redis_server: RedisServer, meetq_namespace: str
) -> None:
    client = aioredis.Redis.from_url(meetq_redis_server.url)
    ps = PubSub(RedisBackend(client), namespace=meetq_namespace)
    try:
        got = Collector()
        await ps.subscribe("room", got)  # recorded before start
        await asyncio.to_thread(meetq_redis_server.stop)
        with pytest.raises(BackendUnavailableError):
            await ps.start()
        await asyncio.to_thread(meetq_redis_server.start)
        await ps.start()  # a retry does the work, it is not a silent no-op
        assert await ps.publish("room", PubSubMessage(type="x")) == 1
        assert [m.type for m in await got.wait_for(1)] == ["x"]
    finally:
        await ps.stop()
        await client.aclose()


async def test_a_subscribe_overlapping_close_raises_closed_error(
    make_transport: Callable[[], RedisPubSubTransport], admin: aioredis.Redis
) -> None:
    transport, channel = make_transport(), channel_name()
    waiting = asyncio.create_task(transport.subscribe([channel]))
    await wait_for_subscribers(admin, channel, 1)  # sent; its confirmation is unread
    await transport.aclose()
    # Its caller was not cancelled, so it must not see CancelledError.
    with pytest.raises(ClosedError):
        await waiting


async def test_a_subscribe_that_times_out_is_not_kept(
    make_transport: Callable[[], RedisPubSubTransport],
    admin: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pubsub, "CONFIRM_TIMEOUT", 0.2)
    transport, channel = make_transport(), channel_name()
    with pytest.raises(BackendUnavailableError) as info:
        await transport.subscribe([channel])
    assert "not confirmed" in str(info.value)
    assert channel not in transport._channels  # not restored on a reconnect either
    await wait_for_subscribers(admin, channel, 0)  # and undone in Redis
    # The late confirmations of both commands are told apart from a new call's.
    reader = read_in_background(transport)
    try:
        monkeypatch.setattr(_pubsub, "CONFIRM_TIMEOUT", TIMEOUT)
        await transport.subscribe([channel])
        assert await subscribers(admin, channel) == 1
        assert transport._waiting == {}
    finally:
        reader.cancel()


async def test_a_cancelled_subscribe_is_not_kept(
    make_transport: Callable[[], RedisPubSubTransport], admin: aioredis.Redis
) -> None:
    transport, channel = make_transport(), channel_name()
    waiting = asyncio.create_task(transport.subscribe([channel]))
    await wait_for_subscribers(admin, channel, 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert channel not in transport._channels
    await wait_for_subscribers(admin, channel, 0)


async def test_a_cancelled_unsubscribe_is_cancelled_and_still_done(
    make_transport: Callable[[], RedisPubSubTransport], admin: aioredis.Redis
) -> None:
    transport, channel = make_transport(), channel_name()
    reader = read_in_background(transport)
    try:
        await transport.subscribe([channel])
        await transport._send_lock.acquire()  # a send in progress, e.g. the watchdog's PING
        leaving = asyncio.create_task(transport.unsubscribe([channel]))
        await asyncio.sleep(0)  # it waits for the lock
        leaving.cancel()
        await asyncio.sleep(0)
        transport._send_lock.release()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert channel not in transport._channels
        await wait_for_subscribers(admin, channel, 0)
    finally:
        reader.cancel()


async def test_a_cancelled_pubsub_subscribe_keeps_no_handler(
    meetq_redis_url: str, meetq_namespace: str, admin: aioredis.Redis
) -> None:
    client = aioredis.Redis.from_url(meetq_redis_url)
    # The wrapper hands over the real transport, so the test holds its send lock without
    # reaching into PubSub.
    recording = RecordingBackend(RedisBackend(client))
    ps = PubSub(recording, namespace=meetq_namespace)
    try:
        await ps.start()
        await ps.subscribe("warmup", Collector())
        (transport,) = recording.transports
        await transport._send_lock.acquire()  # type: ignore[attr-defined]
        joining = asyncio.create_task(ps.subscribe("room", Collector()))
        await asyncio.sleep(0)
        joining.cancel()
        transport._send_lock.release()  # type: ignore[attr-defined]
        with pytest.raises(asyncio.CancelledError):
            await joining
        assert ps.subscribed_channels() == ["warmup"]
        assert await subscribers(admin, f"{meetq_namespace}:room") == 0
        # The name is free to subscribe again, and then it works.
        got = Collector()
        await ps.subscribe("room", got)
        assert await ps.publish("room", PubSubMessage(type="x")) == 1
        await got.wait_for(1)
    finally:
        await ps.stop()
        await client.aclose()


async def test_subscribe_waits_for_a_concurrent_unsubscribe_of_the_name(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    # subscribe / unsubscribe / subscribe of one name, each issued before the previous
    # one is confirmed: the last wins on the wire, not just in the handler table.
    client = aioredis.Redis.from_url(meetq_redis_url)
    recording = RecordingBackend(RedisBackend(client))
    ps = PubSub(recording, namespace=meetq_namespace)
    try:
        await ps.start()
        first, second = Collector(), Collector()
        calls = [
            asyncio.create_task(ps.subscribe("room", first)),
            asyncio.create_task(ps.unsubscribe("room")),
            asyncio.create_task(ps.subscribe("room", second)),
        ]
        await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT)
        (transport,) = recording.transports
        assert transport._channels == {f"{meetq_namespace}:room"}  # type: ignore[attr-defined]
        assert await ps.publish("room", PubSubMessage(type="x")) == 1
        assert [m.type for m in await second.wait_for(1)] == ["x"]
        assert first.messages == []
    finally:
        await ps.stop()
        await client.aclose()



async def test_a_failed_start_leaves_nothing_running(meetq_namespace: str) -> None:
    # Once the transport's watchdog went on running after start() failed.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed at once: nothing listens there
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=2)
    ps = PubSub(RedisBackend(client), namespace=meetq_namespace)
    before = asyncio.all_tasks()
    try:
        await ps.subscribe("room", Collector())  # recorded: start() subscribes it
        await ps.psubscribe("rooms.*", Collector())
        with pytest.raises(BackendUnavailableError):
            await ps.start()
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert left == [], [t.get_name() for t in left]
        with pytest.raises(BackendUnavailableError):
            await ps.start()  # still startable, and again nothing is left behind
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert left == [], [t.get_name() for t in left]
    finally:
        await ps.stop()
        await client.aclose()
