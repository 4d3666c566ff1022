"""Redis backend (redis-py asyncio client; also runs on fakeredis).

Features: durable work queues shared by any number of processes — every state change
is one Lua script on keys that share the queue's hash tag (``meetq:{name}:...``), so a
queue lives in one Redis Cluster slot; push wake-up through a notification channel;
Pub/Sub broadcast over one connection per process with automatic reconnect.
Capabilities: ``durable``, ``cross_process``, ``limits`` (in ``exchange.lua``, across
every process), ``schedules``, ``tracking`` (status, cancel, results by id).
Config keys: ``type: redis`` (``message_queue``), ``type: redis_pubsub`` or ``redis``
(``event_bus``); its own ``redis:`` section, ``RedisConfig`` in ``_config.py`` (mode —
standalone, cluster, sentinel — and its addresses, url, db, TLS and ACL credentials, the
time bounds — socket and connect timeouts, health checks, TCP keepalive —
max_connections, key_prefix; ``MEETQ_REDIS_URL`` is the short form of
``MEETQ_REDIS__URL``); the client is built in ``_connection.py`` (``build_client``).
Registering this plugin does not import ``redis``; selecting it without the package
installed raises ``MissingDependencyError`` with the install command. ``meetq.sync``
builds its blocking face (``_sync.py``: redis-py's sync client, the same scripts).
"""

from __future__ import annotations

from meetq.backend import (
    CAP_CROSS_PROCESS,
    CAP_DURABLE,
    CAP_LIMITS,
    CAP_SCHEDULES,
    CAP_TRACKING,
    Backend,
    BackendContext,
    BackendRegistry,
    BackendSpec,
    Requirement,
    SyncBackend,
    hookimpl,
)
from meetq.backends.redis._config import RedisConfig

__all__ = ["plugin"]


def _create(context: BackendContext) -> Backend:
    from meetq.backends.redis._backend import RedisBackend

    return RedisBackend.from_context(context)


def _create_sync(context: BackendContext) -> SyncBackend:
    from meetq.backends.redis._sync import RedisSyncBackend

    return RedisSyncBackend(context.config.section(RedisConfig), client=context.client)


class _RedisPlugin:
    @hookimpl
    def meetq_register_backends(self, registry: BackendRegistry) -> None:
        registry.register(
            BackendSpec(
                name="redis",
                aliases=("redis_pubsub",),
                factory=_create,
                capabilities=frozenset(
                    {CAP_DURABLE, CAP_CROSS_PROCESS, CAP_LIMITS, CAP_SCHEDULES, CAP_TRACKING}
                ),
                requires=(Requirement(module="redis", install="pip install 'meetq[redis]'"),),
                config=RedisConfig,
                description="durable, cross-process queues and Pub/Sub on Redis",
                sync_factory=_create_sync,
            )
        )


plugin = _RedisPlugin()
