"""Redis over TLS with ACL users, configured the way a user does: a real redis-server that
speaks TLS only and has no anonymous access (``meetq_redis_tls_server``).

What a refused client sees is a meetq error that says what happened: no or wrong
credentials name authentication, a SUBSCRIBE the ACL refuses fails that call at once
(the connection is fine, so it is not reconnected), a CA that did not sign the server's
certificate names the certificate.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
import redis.exceptions

import meetq
from meetq import (
    BackendAccessDeniedError,
    BackendUnavailableError,
    Message,
    PubSubMessage,
    QueueManager,
)
from meetq.sync import SyncProducer
from meetq.testing import Collector, ContractSuite
from meetq.testing._redis_tls import ADMIN, TlsRedisServer

TIMEOUT = 10.0


def tls_keys(server: TlsRedisServer, user: tuple[str, str] | None, ca: str = "") -> dict[str, Any]:
    """The ``redis:`` keys that reach ``server`` as ``user`` (name, password) with the
    client certificate, trusting ``ca`` (default: the server's)."""
    tls = server.tls
    keys: dict[str, Any] = {
        "url": server.url,
        "ssl_ca_certs": ca or str(tls.ca_cert),
        "ssl_certfile": str(tls.client_cert),
        "ssl_keyfile": str(tls.client_key),
        "socket_timeout": 3,
    }
    if user is not None:
        keys.update(username=user[0], password=user[1])
    return keys


def config(redis: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "redis": {"key_prefix": namespace, **redis},
        "message_queue": {"type": "redis"},
        "event_bus": {"type": "redis_pubsub", "namespace": namespace},
    }


@pytest_asyncio.fixture
async def admin(meetq_redis_tls_server: TlsRedisServer) -> AsyncIterator[aioredis.Redis]:
    server = meetq_redis_tls_server
    name, password = ADMIN
    client = aioredis.Redis.from_url(
        server.url, username=name, password=password, ssl_ca_certs=str(server.tls.ca_cert)
    )
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def make_user(admin: aioredis.Redis) -> AsyncIterator[Any]:
    """``await make_user(*rules)``: a new ACL user (on, a fresh password) -> (name, password)."""
    made: list[str] = []

    async def make(*rules: str) -> tuple[str, str]:
        name, password = f"u{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
        await admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)
        made.append(name)
        return name, password

    yield make
    if made:
        await admin.execute_command("ACL", "DELUSER", *made)


@pytest_asyncio.fixture
async def make_manager() -> AsyncIterator[Any]:
    made: list[QueueManager] = []

    async def make(cfg: Mapping[str, Any]) -> QueueManager:
        manager = await meetq.initialize_queue_system(cfg)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.stop()


async def test_no_credentials_is_an_authentication_error(
    meetq_redis_tls_server: TlsRedisServer, meetq_namespace: str, make_manager: Any
) -> None:
    manager = await make_manager(config(tls_keys(meetq_redis_tls_server, None), meetq_namespace))
    with pytest.raises(BackendAccessDeniedError, match="authentication") as caught:
        await manager.start()
    assert caught.value.reason == "authentication"
    assert "redis.password" in str(caught.value)


async def test_a_wrong_password_is_an_authentication_error(
    meetq_redis_tls_server: TlsRedisServer,
    meetq_namespace: str,
    make_manager: Any,
    make_user: Any,
) -> None:
    name, _ = await make_user("~*", "&*", "+@all")
    keys = tls_keys(meetq_redis_tls_server, (name, "wrong"))
    manager = await make_manager(config(keys, meetq_namespace))
    with pytest.raises(BackendAccessDeniedError, match="authentication failed") as caught:
        await manager.start()
    assert caught.value.reason == "authentication"
    assert "invalid username-password pair" in str(caught.value)


async def test_a_ca_that_did_not_sign_the_server_is_a_certificate_error(
    meetq_redis_tls_server: TlsRedisServer,
    meetq_namespace: str,
    make_manager: Any,
    make_user: Any,
) -> None:
    user = await make_user("~*", "&*", "+@all")
    keys = tls_keys(meetq_redis_tls_server, user, ca=str(meetq_redis_tls_server.tls.other_ca))
    manager = await make_manager(config(keys, meetq_namespace))
    with pytest.raises(BackendUnavailableError, match="TLS certificate verification failed") as e:
        await manager.start()
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
    assert "redis.ssl_ca_certs" in str(e.value)
    assert not isinstance(e.value, BackendAccessDeniedError)


async def test_a_subscribe_the_acl_refuses_fails_that_call_without_reconnecting(
    meetq_redis_tls_server: TlsRedisServer,
    meetq_namespace: str,
    make_manager: Any,
    make_user: Any,
) -> None:
    ns = meetq_namespace
    # Keys and the queues' channels of this namespace; of the broadcast channels only
    # those under ns:allowed.
    user = await make_user(f"~{ns}:*", f"&{ns}:{{*", f"&{ns}:allowed*", "+@all", "-@dangerous")
    manager = await make_manager(config(tls_keys(meetq_redis_tls_server, user), ns))
    await manager.start()
    pubsub = manager.get_pubsub()
    assert pubsub is not None
    received = Collector()
    with pytest.raises(BackendAccessDeniedError, match="NOPERM") as caught:
        async with asyncio.timeout(TIMEOUT):  # at once, not after the confirmation timeout
            await pubsub.subscribe("forbidden", received)
    assert caught.value.reason == "permission"
    assert f"SUBSCRIBE {ns}:forbidden" in str(caught.value)
    assert "no permissions" in str(caught.value)
    # The connection was not taken for lost, and what the ACL allows still works on it.
    await pubsub.subscribe("allowed", received)
    assert await pubsub.publish("allowed", PubSubMessage(type="t", payload={"n": 1})) == 1
    [got] = await received.wait_for(1)
    assert got.payload == {"n": 1}
    assert (await pubsub.stats())["reconnects"] == 0
    assert pubsub.subscribed_channels() == ["allowed"]
    # The work queue of the same manager is unaffected.
    queue = manager.get_message_queue()
    assert queue is not None
    await queue.publish(Message(type="t", payload={}))


# -- configured from keys, as a user would ---------------------------------------------


def documented_acl(name: str, password: str, namespace: str) -> list[str]:
    """The ``ACL SETUSER`` arguments docs/deployment.md gives, for this user and prefix."""
    text = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text(encoding="utf-8")
    [line] = [line for line in text.splitlines() if line.startswith("ACL SETUSER meetq-app ")]
    words = line.split()[2:]
    assert words[0] == "meetq-app" and ">app-password" in words
    swap = {"meetq-app": name, ">app-password": f">{password}"}
    return [swap.get(w, w).replace("meetq:*", f"{namespace}:*") for w in words]


# The patterns the shipped suite subscribes to (meetq/testing/pubsub_suite.py), under
# the namespace; "{ns}" is replaced by it.
_SUITE_PATTERNS = (
    *(f"{{ns}}:{p}" for p in ("meeting.*", "early.*", "room.*")),
    *(f"{{ns}}:{p}" for p in ("[b-a]", "u[]", "v[^]", "w[ab", "x[a-]")),
    "{ns}\\[1\\]\\*:meeting.*",  # a namespace with glob characters, escaped
    "{ns}*",  # channels of the look-alike namespaces some tests publish on
)


@pytest.fixture
def least_privileged(
    meetq_redis_tls_server: TlsRedisServer, meetq_namespace: str
) -> Iterator[tuple[str, str]]:
    """A user with exactly the rights docs/deployment.md lists, for this namespace."""
    server = meetq_redis_tls_server
    name, password = f"app-{meetq_namespace}", uuid.uuid4().hex
    admin_name, admin_password = ADMIN
    admin = redis.Redis.from_url(
        server.url,
        username=admin_name,
        password=admin_password,
        ssl_ca_certs=str(server.tls.ca_cert),
    )
    # Redis compares a PSUBSCRIBE pattern literally with the user's channel rules, so
    # each pattern the suite subscribes to is granted as written (docs/deployment.md).
    patterns = ["&" + p.replace("{ns}", meetq_namespace) for p in _SUITE_PATTERNS]
    try:
        rules = documented_acl(name, password, meetq_namespace)
        admin.execute_command("ACL", "SETUSER", *rules, *patterns)
        yield name, password
        admin.execute_command("ACL", "DELUSER", name)
    finally:
        admin.close()


class TestContractOverTlsAsALeastPrivilegedUser(ContractSuite):
    """The whole shipped suite over TLS (client certificate, CA, host name checked), as
    an ACL user with exactly the documented rights, built from the config keys alone."""

    @pytest.fixture
    def backend_config(
        self, meetq_redis_tls_server: TlsRedisServer, least_privileged: tuple[str, str]
    ) -> Mapping[str, Any]:
        return {
            "redis": tls_keys(meetq_redis_tls_server, least_privileged),
            "message_queue": {"type": "redis"},
            "event_bus": {"type": "redis_pubsub"},
        }


async def test_the_documented_user_is_refused_what_it_was_not_granted(
    meetq_redis_tls_server: TlsRedisServer, least_privileged: tuple[str, str]
) -> None:
    server = meetq_redis_tls_server
    client = aioredis.Redis.from_url(
        server.url,
        username=least_privileged[0],
        password=least_privileged[1],
        ssl_ca_certs=str(server.tls.ca_cert),
    )
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.execute_command("FLUSHALL")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.execute_command("GET", "someone-else:key")
    finally:
        await client.aclose()


async def test_credentials_from_a_file_an_environment_variable_or_the_url(
    meetq_redis_tls_server: TlsRedisServer,
    meetq_namespace: str,
    make_manager: Any,
    least_privileged: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, password = least_privileged
    secret = tmp_path / "redis-password"
    secret.write_text(password + "\n", encoding="utf-8")
    monkeypatch.setenv("APP_REDIS_PASSWORD", password)
    base = tls_keys(meetq_redis_tls_server, None)
    host = meetq_redis_tls_server.url.removeprefix("rediss://")
    for keys in (
        {**base, "username": name, "password_file": str(secret)},
        {**base, "username": name, "password_env": "APP_REDIS_PASSWORD"},
        {**base, "url": f"rediss://{name}:{password}@{host}"},
    ):
        manager = await make_manager(config(keys, meetq_namespace))
        async with manager:
            queue = manager.get_message_queue()
            assert queue is not None
            await queue.publish(Message(type="t", payload={}))
            assert await queue.queue_length() >= 1


def test_the_sync_producer_uses_the_same_keys(
    meetq_redis_tls_server: TlsRedisServer,
    meetq_namespace: str,
    least_privileged: tuple[str, str],
) -> None:
    cfg = config(tls_keys(meetq_redis_tls_server, least_privileged), meetq_namespace)
    with SyncProducer(cfg) as producer:
        producer.publish(Message(type="t", payload={"n": 1}))
        assert producer.stats()["queue_length"]["normal"] == 1
    refused = config(tls_keys(meetq_redis_tls_server, (least_privileged[0], "x")), meetq_namespace)
    with SyncProducer(refused) as producer, pytest.raises(BackendAccessDeniedError) as caught:
        producer.publish(Message(type="t", payload={}))
    assert caught.value.reason == "authentication"
