"""The ``redis.*`` keys that bound every call, what they turn into for redis-py, and the
shared deadline the hot paths use instead of a timer per call."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import redis.asyncio as aioredis

import meetq
from meetq import ConfigError, RedisConfig, load_config
from meetq.backends.redis._connection import bounds_of, client_options, untimed_pool
from meetq.backends.redis._deadline import SharedDeadline


@pytest.fixture(autouse=True)
def _no_ambient_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEETQ_REDIS_URL", raising=False)


def test_defaults_bound_every_call() -> None:
    cfg = load_config(None).section(RedisConfig)
    assert cfg.socket_timeout == 5.0
    assert cfg.socket_connect_timeout == 5.0
    assert cfg.health_check_interval == 10.0
    assert cfg.tcp_keepalive is True
    # A vanished peer is noticed after 15 + 5 * 3 = 30 s instead of about two hours.
    assert (cfg.tcp_keepalive_idle, cfg.tcp_keepalive_interval, cfg.tcp_keepalive_count) == (
        15,
        5,
        3,
    )


def test_bound_keys_take_durations_and_whole_seconds() -> None:
    cfg = load_config(
        {
            "redis": {
                "socket_timeout": "1500ms",
                "health_check_interval": "2s",
                "tcp_keepalive_idle": 60,
                "tcp_keepalive_interval": 10,
                "tcp_keepalive_count": 5,
                "tcp_keepalive": False,
            }
        }
    ).section(RedisConfig)
    assert cfg.socket_timeout == 1.5
    assert cfg.health_check_interval == 2.0
    assert (cfg.tcp_keepalive_idle, cfg.tcp_keepalive_interval, cfg.tcp_keepalive_count) == (
        60,
        10,
        5,
    )
    assert cfg.tcp_keepalive is False


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("socket_timeout", -1, "not negative"),
        ("health_check_interval", "soon", "duration"),
        ("health_check_interval", -0.5, "not negative"),
        ("tcp_keepalive", "yes", "true or false"),
        ("tcp_keepalive_idle", 0, "between 1 and 32767"),
        ("tcp_keepalive_idle", 40_000, "between 1 and 32767"),
        ("tcp_keepalive_idle", "15s", "integer"),
        ("tcp_keepalive_interval", 1.5, "integer"),
        ("tcp_keepalive_count", 128, "between 1 and 127"),
    ],
)
def test_bad_bound_values_name_the_key(key: str, value: Any, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"redis": {key: value}})
    assert info.value.key == f"redis.{key}"
    assert says in str(info.value)


def test_built_directly_the_keys_are_validated_too() -> None:
    with pytest.raises(ConfigError) as info:
        meetq.RedisConfig(tcp_keepalive_count=0)
    assert info.value.key == "redis.tcp_keepalive_count"


def test_client_options_carry_every_bound() -> None:
    options = client_options(load_config(None).section(RedisConfig))
    assert options["socket_timeout"] == 5.0
    assert options["socket_connect_timeout"] == 5.0
    assert options["health_check_interval"] == 10.0
    assert options["socket_keepalive"] is True
    keepalive = options["socket_keepalive_options"]
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert keepalive[socket.TCP_KEEPIDLE] == 15
    if hasattr(socket, "TCP_KEEPINTVL"):
        assert keepalive[socket.TCP_KEEPINTVL] == 5
    if hasattr(socket, "TCP_KEEPCNT"):
        assert keepalive[socket.TCP_KEEPCNT] == 3


def test_zero_means_no_limit_and_unix_sockets_get_no_keepalive() -> None:
    raw = {"url": "unix:///run/redis.sock", "socket_timeout": 0, "socket_connect_timeout": 0}
    cfg = load_config({"redis": raw}).section(RedisConfig)
    options = client_options(cfg)
    assert options["socket_timeout"] is None
    assert options["socket_connect_timeout"] is None
    # redis-py's unix socket connection refuses the keepalive arguments.
    assert "socket_keepalive" not in options
    client = aioredis.Redis.from_url(cfg.url, **options)
    client.connection_pool.make_connection()  # would raise TypeError with them


async def test_a_connection_really_gets_the_keepalive_options(meetq_redis_url: str) -> None:
    raw = {"redis": {"url": meetq_redis_url, "tcp_keepalive_idle": 42}}
    cfg = load_config(raw).section(RedisConfig)
    client = aioredis.Redis.from_url(cfg.url, **client_options(cfg))
    try:
        connection = await client.connection_pool.get_connection()
        try:
            sock = connection._writer.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
        finally:
            await client.connection_pool.release(connection)
    finally:
        await client.aclose()


async def test_the_untimed_pool_keeps_everything_but_the_per_command_timers() -> None:
    raw = {"redis": {"socket_timeout": "2s", "health_check_interval": "3s"}}
    cfg = load_config(raw).section(RedisConfig)
    client = aioredis.Redis.from_url(cfg.url, **client_options(cfg))
    pool = untimed_pool(client)
    try:
        assert pool.connection_kwargs["socket_timeout"] is None
        assert pool.connection_kwargs["health_check_interval"] == 0
        assert pool.connection_kwargs["socket_connect_timeout"] == 5.0
        assert pool.connection_kwargs["socket_keepalive"] is True
        bounds = bounds_of(client)
        assert (bounds.socket_timeout, bounds.connect_timeout) == (2.0, 5.0)
        assert bounds.health_check_interval == 3.0
    finally:
        await pool.disconnect()
        await client.aclose()


# -- SharedDeadline -----------------------------------------------------------------------


async def test_a_call_past_the_deadline_raises_timeout_error() -> None:
    deadline = SharedDeadline(0.05, "redis.socket_timeout")
    never = asyncio.Event()
    with (
        pytest.raises(TimeoutError, match=r"0\.05s \(redis\.socket_timeout\)"),
        deadline.scope(),
    ):
        await never.wait()
    # The task is not left cancelled: it goes on awaiting normally.
    await asyncio.sleep(0)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_calls_that_finish_in_time_are_untouched() -> None:
    deadline = SharedDeadline(0.2)
    for _ in range(100):
        with deadline.scope():
            await asyncio.sleep(0)
    # Several at once, each within its own time.
    results = await asyncio.gather(*(_quick(deadline, i) for i in range(20)))
    assert results == list(range(20))


async def _quick(deadline: SharedDeadline, i: int) -> int:
    with deadline.scope():
        await asyncio.sleep(0.001)
    return i


async def test_each_concurrent_call_expires_at_its_own_deadline() -> None:
    deadline = SharedDeadline(0.1)
    loop = asyncio.get_running_loop()

    async def stuck(after: float) -> float:
        await asyncio.sleep(after)
        start = loop.time()
        try:
            with deadline.scope():
                await asyncio.Event().wait()
        except TimeoutError:
            return loop.time() - start
        raise AssertionError("not expired")

    took = await asyncio.gather(stuck(0), stuck(0.03), stuck(0.06))
    for seconds in took:
        assert 0.1 <= seconds < 1.0


async def test_a_callers_own_cancellation_is_not_turned_into_a_timeout() -> None:
    deadline = SharedDeadline(10)
    entered = asyncio.Event()

    async def call() -> None:
        with deadline.scope():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

