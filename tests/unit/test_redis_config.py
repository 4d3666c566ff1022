"""The ``redis:`` section past one server: mode, cluster and sentinel addresses, TLS and
credentials. Every contradiction is refused at load naming the key; secrets are never
shown; list keys work from the environment; each mode builds its client (asyncio and
blocking) with the same bounds. No server is needed: building a client connects nothing
(the blocking RedisCluster, which connects at once, and each mode against real servers:
tests/integration/test_redis_modes_config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel
import redis.sentinel

from meetq import ConfigError, RedisConfig, ValidationError, load_config
from meetq.backends.redis._backend import RedisBackend
from meetq.backends.redis._config import resolve_password
from meetq.backends.redis._connection import SYNC, blocking_client, bounds_of, build_client
from meetq.backends.redis._sync import RedisSyncBackend
from meetq.core.registry import BackendContext


def redis_section(raw: dict[str, Any], environ: dict[str, str] | None = None) -> RedisConfig:
    return load_config({"redis": raw}, environ=environ or {}).section(RedisConfig)


SENTINEL = {"mode": "sentinel", "sentinels": ["10.0.0.1:26379"], "sentinel_service": "main"}


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"mode": "clustr"}, "redis.mode", "expected one of standalone, cluster, sentinel"),
        ({"startup_nodes": ["h:1"]}, "redis.startup_nodes", "only used with mode: cluster"),
        ({"mode": "cluster", "startup_nodes": ["h"]}, "redis.startup_nodes[0]", "host:port"),
        (
            {"mode": "cluster", "startup_nodes": ["h:1", "h:70000"]},
            "redis.startup_nodes[1]",
            "from 1 to 65535",
        ),
        ({"mode": "cluster", "startup_nodes": [7000]}, "redis.startup_nodes[0]", "string"),
        ({"mode": "cluster", "startup_nodes": 7000}, "redis.startup_nodes", "a list of strings"),
        ({"mode": "cluster", "db": 1}, "redis.db", "only database 0"),
        ({"mode": "cluster", "url": "redis://h:1/3"}, "redis.url", "only database 0"),
        ({"mode": "cluster", "url": "unix:///tmp/r.sock"}, "redis.url", "host:port"),
        ({"mode": "sentinel"}, "redis.sentinels", "at least one host:port"),
        (
            {"mode": "sentinel", "sentinels": ["h:1"]},
            "redis.sentinel_service",
            "the name the sentinels monitor",
        ),
        ({"sentinels": ["h:1"]}, "redis.sentinels", "only used with mode: sentinel"),
        ({"sentinel_username": "s"}, "redis.sentinel_username", "only used with mode: sentinel"),
        (
            {**SENTINEL, "sentinel_password": "a", "sentinel_password_file": "/f"},
            "redis.sentinel_password_file",
            "redis.sentinel_password is set too",
        ),
        ({"ssl_ca_certs": "/ca.pem"}, "redis.ssl_ca_certs", "TLS is off"),
        ({"ssl_certfile": "/c.pem"}, "redis.ssl_certfile", "TLS is off"),
        ({"ssl": True, "ssl_keyfile": "/k.pem"}, "redis.ssl_keyfile", "needs redis.ssl_certfile"),
        ({"ssl": True, "ssl_cert_reqs": "maybe"}, "redis.ssl_cert_reqs", "expected one of"),
        ({"ssl": "yes"}, "redis.ssl", "expected true or false"),
        ({"ssl": True, "url": "unix:///tmp/r.sock"}, "redis.ssl", "unix socket"),
        ({"password": "a", "password_env": "PW"}, "redis.password_env", "redis.password is set"),
        ({"password_file": "/f", "password_env": "PW"}, "redis.password_env", "is set too"),
        ({"password_env": "1PW"}, "redis.password_env", "an environment variable"),
        ({"password_env": "PW-X"}, "redis.password_env", "an environment variable"),
        ({"url": "redis://:pw@h:1/0", "password": "x"}, "redis.password", "has a password too"),
        ({"url": "redis://:pw@h:1/0", "password_file": "/f"}, "redis.password_file", "too"),
        ({"url": "redis://u:pw@h:1/0", "username": "v"}, "redis.username", "a user name too"),
        ({"db": -1}, "redis.db", "between 0 and"),
        ({"require_full_coverage": 1}, "redis.require_full_coverage", "true or false"),
    ],
)
def test_a_bad_key_is_named(raw: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        redis_section(raw)
    assert info.value.key == key
    assert problem in info.value.problem


def test_a_password_is_never_shown() -> None:
    cfg = RedisConfig(password="hunter2", sentinel_password=None)
    assert "hunter2" not in repr(cfg)
    for raw in (
        {"password": ["hunter2"]},
        {"url": "redis://:pw@h:1/0", "password": "hunter2"},
        {"password": "hunter2", "password_file": "/f"},
    ):
        with pytest.raises(ConfigError) as info:
            redis_section(raw)
        assert "hunter2" not in str(info.value)
        assert "<secret>" in str(info.value) or info.value.key != "redis.password"
    with pytest.raises(ConfigError) as info:
        load_config({}, environ={"MEETQ_REDIS__PASSWORD": "hunter2", "MEETQ_REDIS__SSL": "x"})
    assert "hunter2" not in str(info.value)


def test_the_defaults_are_one_server_without_tls_or_credentials() -> None:
    cfg = redis_section({})
    assert (cfg.mode, cfg.tls, cfg.username, cfg.password) == ("standalone", False, None, None)
    assert (cfg.ssl_cert_reqs, cfg.ssl_check_hostname, cfg.require_full_coverage) == (
        "required",
        True,
        True,
    )
    assert redis_section({"url": "rediss://h:1/0"}).tls


@pytest.mark.parametrize(
    "text",
    ["h1:7000,h2:7001", " h1:7000 , h2:7001 ", "[h1:7000, h2:7001]", '["h1:7000","h2:7001"]'],
)
def test_list_keys_come_from_the_environment(text: str) -> None:
    environ = {"MEETQ_REDIS__MODE": "cluster", "MEETQ_REDIS__STARTUP_NODES": text}
    cfg = load_config({}, environ=environ).section(RedisConfig)
    assert cfg.startup_nodes == ("h1:7000", "h2:7001")


def test_a_bad_list_item_from_the_environment_names_the_variable() -> None:
    environ = {"MEETQ_REDIS__MODE": "sentinel", "MEETQ_REDIS__SENTINELS": "h1:1,h2"}
    with pytest.raises(ConfigError) as info:
        load_config({}, environ=environ)
    assert info.value.key == "MEETQ_REDIS__SENTINELS"
    assert "expected host:port" in str(info.value)
    assert "(it sets redis.sentinels)" in str(info.value)


def test_a_password_comes_from_a_file_or_a_variable(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n", encoding="utf-8")
    assert resolve_password(redis_section({"password_file": str(secret)})) == "s3cret"
    cfg = redis_section({"password_env": "APP_REDIS_PW"})
    assert resolve_password(cfg, environ={"APP_REDIS_PW": "from-env"}) == "from-env"
    assert resolve_password(redis_section({"password": "inline"})) == "inline"
    assert resolve_password(redis_section({})) is None
    sentinel = redis_section({**SENTINEL, "sentinel_password_env": "SENTINEL_PW"})
    assert resolve_password(sentinel, "sentinel_", environ={"SENTINEL_PW": "s"}) == "s"


def test_an_unreadable_password_names_its_key(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError) as info:
        resolve_password(redis_section({"password_file": str(missing)}))
    assert (info.value.key, info.value.value) == ("redis.password_file", str(missing))
    assert "cannot be read" in info.value.problem
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="the file is empty"):
        resolve_password(redis_section({"password_file": str(empty)}))
    with pytest.raises(ConfigError) as info:
        resolve_password(redis_section({"password_env": "NOT_SET_HERE"}), environ={})
    assert info.value.key == "redis.password_env"
    assert "not set" in info.value.problem


TLS = {
    "ssl": True,
    "ssl_ca_certs": "/etc/ca.pem",
    "ssl_certfile": "/etc/client.pem",
    "ssl_keyfile": "/etc/client.key",
    "ssl_check_hostname": False,
    "username": "app",
    "password": "pw",
}


def _expect_connection_options(options: dict[str, Any]) -> None:
    """The bounds, TLS and credentials every mode's connections get."""
    assert options["socket_timeout"] == 5.0
    assert options["socket_connect_timeout"] == 5.0
    assert options["health_check_interval"] == 10.0
    assert options["socket_keepalive"] is True
    assert options["ssl_ca_certs"] == "/etc/ca.pem"
    assert options["ssl_certfile"] == "/etc/client.pem"
    assert options["ssl_keyfile"] == "/etc/client.key"
    assert options["ssl_check_hostname"] is False
    assert (options["username"], options["password"]) == ("app", "pw")


@pytest.mark.parametrize("face", ["async", "sync"])
async def test_standalone_builds_a_blocking_pool_with_tls_and_credentials(face: str) -> None:
    cfg = redis_section({**TLS, "url": "redis://10.0.0.5:6380/2", "db": 3})
    client = blocking_client(cfg) if face == "async" else build_client(cfg, SYNC)
    pool = client.connection_pool
    ssl_class = aioredis.SSLConnection if face == "async" else redis.SSLConnection
    blocking = aioredis.BlockingConnectionPool if face == "async" else redis.BlockingConnectionPool
    assert isinstance(pool, blocking)
    assert pool.connection_class is ssl_class
    assert pool.max_connections == 64
    _expect_connection_options(pool.connection_kwargs)
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"]) == ("10.0.0.5", 6380)
    assert pool.connection_kwargs["db"] == 3
    assert bounds_of(client).socket_timeout == 5.0
    if face == "async":
        await client.aclose()
    else:
        client.close()


async def test_url_credentials_and_a_rediss_url_keep_working() -> None:
    cfg = redis_section({"url": "rediss://u:p%40ss@h:1/4?ssl_cert_reqs=none"})
    client = blocking_client(cfg)
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is aioredis.SSLConnection
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("u", "p@ss", 4)
    assert kwargs["ssl_cert_reqs"] == "none"  # the URL's query still wins, as before
    await client.aclose()


async def test_cluster_builds_a_redis_cluster_with_the_same_options() -> None:
    cfg = redis_section(
        {**TLS, "mode": "cluster", "startup_nodes": ["10.0.0.1:7000", "[::1]:7001"]}
    )
    client = blocking_client(cfg)
    assert isinstance(client, aioredis.RedisCluster)
    nodes = {(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()}
    assert nodes == {("10.0.0.1", 7000), ("::1", 7001)}
    assert client.nodes_manager.require_full_coverage is True
    assert client.connection_kwargs["connection_class"] is aioredis.SSLConnection
    assert client.connection_kwargs["max_connections"] == 64
    _expect_connection_options(client.connection_kwargs)
    assert bounds_of(client).socket_timeout == 5.0
    await client.aclose()


async def test_cluster_from_the_url_of_one_node() -> None:
    cfg = redis_section({"mode": "cluster", "url": "redis://u:p@10.0.0.9:7005"})
    client = blocking_client(cfg)
    [node] = client.nodes_manager.startup_nodes.values()
    assert (node.host, node.port) == ("10.0.0.9", 7005)
    assert (client.connection_kwargs["username"], client.connection_kwargs["password"]) == (
        "u",
        "p",
    )
    await client.aclose()


@pytest.mark.parametrize("face", ["async", "sync"])
async def test_sentinel_builds_the_master_for_client(face: str) -> None:
    cfg = redis_section(
        {
            **TLS,
            **SENTINEL,
            "sentinels": ["10.0.0.1:26379", "10.0.0.2:26380"],
            "db": 2,
            "sentinel_username": "watcher",
            "sentinel_password": "spw",
        }
    )
    client = blocking_client(cfg) if face == "async" else build_client(cfg, SYNC)
    module = redis.asyncio.sentinel if face == "async" else redis.sentinel
    pool = client.connection_pool
    assert isinstance(pool, module.SentinelConnectionPool)
    assert pool.service_name == "main"
    assert pool.connection_class is module.SentinelManagedSSLConnection
    assert pool.connection_kwargs["db"] == 2
    _expect_connection_options(pool.connection_kwargs)
    sentinels = pool.sentinel_manager.sentinels
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ]
    assert addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    sentinel_kwargs = sentinels[0].connection_pool.connection_kwargs
    assert (sentinel_kwargs["username"], sentinel_kwargs["password"]) == ("watcher", "spw")
    assert sentinel_kwargs["socket_timeout"] == 5.0
    assert sentinel_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert bounds_of(client).socket_timeout == 5.0
    if face == "async":
        await client.aclose()
    else:
        client.close()


async def test_the_async_backend_takes_any_asyncio_client_and_refuses_a_blocking_one() -> None:
    cfg = load_config({"message_queue": {"type": "redis"}}, environ={})
    clients = [
        aioredis.Redis(),
        aioredis.RedisCluster(host="10.0.0.1", port=7000),
        aioredis.Sentinel([("10.0.0.1", 26379)]).master_for("main"),
    ]
    for client in clients:
        backend = RedisBackend.from_context(BackendContext(config=cfg, client=client))
        assert backend.client is client
        await client.aclose()
    blocking = redis.Redis()
    with pytest.raises(ValidationError) as info:
        RedisBackend.from_context(BackendContext(config=cfg, client=blocking))
    assert info.value.field == "redis"
    assert "a blocking client; this needs an asyncio one" in str(info.value)
    blocking.close()


async def test_the_sync_producer_refuses_an_asyncio_client() -> None:
    client = aioredis.Redis()
    with pytest.raises(ValidationError, match="an asyncio client; this needs a blocking one"):
        RedisSyncBackend(RedisConfig(), client=client)
    await client.aclose()
    sentinel_client = redis.Sentinel([("10.0.0.1", 26379)]).master_for("main")
    backend = RedisSyncBackend(RedisConfig(), client=sentinel_client)
    backend.close()
    sentinel_client.close()
