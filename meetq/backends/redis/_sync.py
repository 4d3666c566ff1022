"""The Redis backend's blocking face (``SyncBackend``), for ``meetq.sync``.

Features: publish, batches, stats and dead-letter requeue from plain code (a WSGI view,
a management command) on redis-py's sync client, through the very scripts and call
layouts the async work queue uses (``_scripts.py``), so a message it stores is the one
an async worker claims. One client and one connection pool per process, shared by every
thread: a ``BlockingConnectionPool`` of ``redis.max_connections``, so a burst of threads
waits for a connection (within ``redis.socket_timeout``) instead of failing.
Fork-safe: the pool is rebuilt in a child (gunicorn's pre-fork workers), the parent's
connections untouched. Bounded: every call ends within ``redis.socket_timeout``
(connecting within ``redis.socket_connect_timeout``) with ``BackendUnavailableError``.
Config keys: the ``redis:`` section, as the async backend reads it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Generator, Sequence
from typing import Any, Final, TypeVar

import redis
import redis.exceptions
from redis.client import NEVER_DECODE

from meetq.backends.redis._config import RedisConfig
from meetq.backends.redis._connection import (
    SYNC,
    build_client,
    check_client,
    close_sync_client,
    translate_errors,
)
from meetq.backends.redis._scripts import (
    SHARDED_SCRIPTS,
    Call,
    QueueKeys,
    Script,
    enqueue_call,
    enqueue_ids,
    inspect_steps,
    requeue_steps,
)
from meetq.backends.redis._sharded import is_cluster
from meetq.backends.redis._tracking import RedisSyncTracking
from meetq.core.errors import ClosedError, ValidationError
from meetq.core.protocols import (
    Maintenance,
    QueueSnapshot,
    StoredMessage,
    SyncWorkQueue,
    WorkQueueOptions,
)

__all__ = ["RedisSyncBackend"]

T = TypeVar("T")

_RAW: Final = {NEVER_DECODE: True}


class RedisSyncBackend:
    """Work-queue producer calls and PUBLISH on one sync redis-py client.

    Built from the ``redis:`` section (its own pool, rebuilt after a fork and closed by
    ``close``) or around a given sync client (``redis.Redis``, ``redis.RedisCluster``, a
    sync Sentinel ``master_for`` client, ``fakeredis.FakeRedis``), used as is and left open.
    """

    name = "redis"

    def __init__(self, config: RedisConfig, *, client: Any = None) -> None:
        self.key_prefix = config.key_prefix
        self._config = config
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        if client is not None:
            check_client(client, asynchronous=False)
        self._client = client if client is not None else self._connect()
        self._sharded = is_cluster(self._client)

    def _connect(self) -> Any:
        # The async backend's client in its blocking face: the same mode, bounds,
        # credentials and TLS (a full pool waits within socket_timeout, then fails).
        return build_client(self._config, SYNC)

    def client(self) -> Any:
        """This process's client: the pool is rebuilt the first time a forked child
        calls (a connection must never be shared by two processes)."""
        if self._closed:
            raise ClosedError("this sync producer is closed; create a new one")
        if self._pid != os.getpid() and self._owns_client:
            with self._lock:
                if self._pid != os.getpid():
                    # The parent's pool is dropped, not disconnected: its sockets are
                    # the parent's (redis-py never shuts down a socket of another pid).
                    self._client = self._connect()
                    self._pid = os.getpid()
        return self._client

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> SyncWorkQueue:
        return RedisSyncWorkQueue(self, queue_name, options)

    def eval(self, call: Call) -> Any:
        """One script call: EVALSHA; on NOSCRIPT, EVAL of its source (routed by its keys
        on a cluster, as the async queue does), which loads it there."""
        script, keys, args = call
        client = self.client()
        if self._sharded:  # the scripts whose notifications are sharded Pub/Sub
            script = SHARDED_SCRIPTS[script.name]
        with translate_errors(script.name):
            try:
                return self._evalsha(client, script, keys, args)
            except redis.exceptions.NoScriptError:
                return client.execute_command(
                    "EVAL", script.source, len(keys), *keys, *args, **_RAW
                )

    @staticmethod
    def _evalsha(client: Any, script: Script, keys: Any, args: Any) -> Any:
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **_RAW)

    def run(self, steps: Generator[Call, Any, T]) -> T:
        """Drive a multi-step call of ``_scripts``, one EVALSHA per step."""
        call = next(steps)
        while True:
            reply = self.eval(call)
            try:
                call = steps.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def publish(self, channel: str, data: bytes) -> int:
        client = self.client()
        with translate_errors("PUBLISH"):
            return int(client.execute_command("PUBLISH", channel, data))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_client and self._pid == os.getpid():
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                close_sync_client(self._client)


class RedisSyncWorkQueue(RedisSyncTracking):
    """One queue's producer calls; the keys are built as the async queue builds them.
    Tracking (status, cancel, result) comes from ``_tracking.RedisSyncTracking``."""

    def __init__(self, backend: RedisSyncBackend, queue_name: str, options: WorkQueueOptions):
        self.name = queue_name
        self._backend = backend
        self._options = options
        # Shared by the threads: its caches only ever gain entries, and two threads
        # racing on inspect's known types cost at most one extra round trip.
        self._keys = QueueKeys(backend.key_prefix, queue_name)

    def enqueue(self, messages: Sequence[StoredMessage]) -> list[str]:
        if not messages:
            return []
        return enqueue_ids(messages, self._backend.eval(enqueue_call(self._keys, messages)))

    def inspect(self) -> QueueSnapshot:
        return self._backend.run(inspect_steps(self._keys, self._options))

    def _drive(self, steps: Generator[Call, Any, Any]) -> Any:
        return self._backend.run(steps)

    def _sync_client(self) -> Any:
        return self._backend.client()

    def maintain(self, request: Maintenance) -> int:
        if request.action != "requeue_dead":
            raise ValidationError("action", request.action, "the sync producer only requeues")
        return self._backend.run(
            requeue_steps(self._keys, self._options, request.limit, request.message_type)
        )
