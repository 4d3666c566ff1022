"""Redis Pub/Sub transport: one subscriber connection, one reader, automatic reconnect.

Features: the ``PubSubTransport`` contract on Redis ``PUBLISH``/``SUBSCRIBE``/``PSUBSCRIBE``
(also on fakeredis). Subscription calls wait for Redis's confirmation, which the reader
(the consumer of ``messages()``) sees on the same connection. When the connection drops
the reader reconnects with exponential backoff and jitter, re-subscribes every channel
and pattern, counts the reconnect and, once Redis confirmed them all, calls the
``on_reconnect`` callbacks. A connection silent for ``redis.health_check_interval`` is
probed with ``PING``; no reply within ``redis.socket_timeout`` and it is cut and
reconnected, so a frozen or vanished server (no FIN, no RST) is noticed too. Publishing
packs ``PUBLISH`` itself and sends it on connections the transport keeps (from the same
private pool, one per concurrent publisher), so the subscriber's connection only ever
carries subscriptions.
Modes (where connections go: ``_ClientEndpoint``, ``_ClusterEndpoint``):
- standalone ``Redis``: the client's server.
- Sentinel (a ``master_for`` client): each connection asks the sentinels for the master
  when it connects, so a reconnect after a failover reaches the promoted replica; the
  watchdog also asks them every ``health_check_interval`` and leaves a master they no
  longer name (a frozen master that resumed answers PING but is a dead end); an idle
  publishing connection to such a node is dropped before it is used.
- ``RedisCluster``: classic ``PUBLISH``/``SUBSCRIBE``/``PSUBSCRIBE`` on one node, moving
  to another node (and re-subscribing) when it fails. Design (why not sharded Pub/Sub):
  ``SSUBSCRIBE`` keeps a channel's traffic on the primary of its slot, but it has no
  pattern form, a subscriber would need a connection per primary its channels hash to
  and a re-subscribe on every slot move, and Redis < 7 lacks it. Classic Pub/Sub is
  broadcast over the cluster bus to every node, so one connection anywhere hears every
  channel and pattern, with the exact contract of a single server; the price is that
  every message crosses the bus to every node, which suits notifications, not a
  firehose. Every transport prefers the same node (the first primary by address) and
  publishes where it subscribes, so receiver counts, which ``PUBLISH`` takes from its own
  node only, stay exact while the cluster is whole.
Capabilities: ``cross_process``. Delivery is at most once: what is published while the
connection is down is lost.
Config keys: ``event_bus.reconnect_backoff_base`` / ``reconnect_backoff_max`` (through
the backend); the ``redis:`` section for the connection: ``socket_timeout`` bounds each
publish as a whole (connecting included), each subscription command's send and its
confirmation; the subscriber's reads have no timer (it is idle by nature), ``_watch``
checks it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import redis.exceptions
from redis.asyncio.client import PubSub as PubSubConnection
from redis.asyncio.cluster import RedisCluster

from meetq.backends.redis._connection import (
    DRIVER_ERRORS,
    Bounds,
    bounds_of,
    translate_errors,
    translated,
    untimed_pool,
    untimed_pool_of,
)
from meetq.backends.redis._deadline import SharedDeadline
from meetq.core._backoff import Backoff
from meetq.core.errors import BackendUnavailableError, ClosedError, MeetqError
from meetq.core.protocols import TransportMessage

__all__ = ["RedisPubSubTransport"]

log = logging.getLogger("meetq.redis.pubsub")

# A publishing connection idle longer than this is checked (and reconnected if Redis
# closed it) before it is used again; one in steady use is not, which saves a timer
# (redis-py's readiness probe) per publish.
_IDLE_RECHECK = 0.25
# Idle publishing connections kept beyond this many go back to the pool.
_MAX_IDLE_PUBLISHERS = 4
# How long a subscription call waits for Redis to confirm it (at most; a client with a
# socket_timeout waits that long instead, if it is shorter).
CONFIRM_TIMEOUT = 30.0
# A client without health_check_interval (or socket_timeout) has its idle connection
# probed after this long (and gives the PING this long to be answered).
IDLE_PROBE = 15.0

# The pushes the reader turns into messages, as Redis sends them:
# [b"message", channel, data] and [b"pmessage", pattern, channel, data].
_PLAIN, _PATTERN = 1, 2
_MESSAGE = {b"message": _PLAIN, "message": _PLAIN, b"pmessage": _PATTERN, "pmessage": _PATTERN}
_CONFIRMATIONS = frozenset({"subscribe", "psubscribe", "unsubscribe", "punsubscribe"})
# RedisClusterException (no node reachable at all) is not a RedisError.
_DRIVER_ERRORS = DRIVER_ERRORS
# What says the node itself is gone or unresponsive (not, say, an ACL refusal).
_NODE_FAILURES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.RedisClusterException,
    OSError,
)
# What a failed call raises: the caller sees a meetq error, never a driver one.
_FAILURES = (MeetqError, *_DRIVER_ERRORS)
# The command that undoes a subscription command.
_UNDO = {"subscribe": "unsubscribe", "psubscribe": "punsubscribe"}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            # Not from meetq (whose names are text), e.g. a foreign PUBLISH matching a
            # pattern: keep the bytes recoverable; the front end counts it as undecodable.
            return value.decode("utf-8", "surrogateescape")
    return str(value)


def _data(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class _ClientEndpoint:
    """Where a plain client's transport connects: one pool like the client's.

    A Sentinel ``master_for`` client's connections are Sentinel-managed: each one asks
    the sentinels for the master whenever it connects, so a reconnect after a failover
    reaches the promoted replica by itself. What it cannot notice is an *idle*
    connection still open to a demoted master (one that froze and came back): ``stale``
    tells, by comparing it with the master the sentinels last named.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        pool = getattr(client, "connection_pool", None)
        self._sentinel_pool = pool if hasattr(pool, "sentinel_manager") else None

    async def pool(self) -> Any:
        return untimed_pool(self._client)

    async def failed(self, pool: Any) -> bool:
        """The node behind ``pool`` failed; False: keep the pool (it reconnects alike)."""
        return False

    def stale(self, connection: Any) -> bool:
        """Whether ``connection`` is open to a node other than the master the sentinels
        named last (no round trip: what the last connect or ``moved`` learnt)."""
        sentinel_pool = self._sentinel_pool
        if sentinel_pool is None or not connection.is_connected:
            return False
        master = sentinel_pool.master_address
        return master is not None and (connection.host, connection.port) != tuple(master)

    async def moved(self, connection: Any) -> bool:
        """Ask the sentinels: is ``connection`` open to a node that is not the master?

        The subscriber's watchdog asks once per ``health_check_interval``: a master that
        froze and resumed answers ``PING`` again, yet a replica was promoted meanwhile and
        the publishers are there; Sentinel itself closes the old master's clients only
        when it demotes it, seconds later."""
        sentinel_pool = self._sentinel_pool
        if sentinel_pool is None or not connection.is_connected:
            return False
        try:
            await sentinel_pool.get_master_address()  # also drops the client's idle ones
        except _DRIVER_ERRORS:
            return False  # no master known now: the connection's own failure will tell
        return self.stale(connection)


class _ClusterEndpoint:
    """Where a ``RedisCluster`` client's transport connects: one node, another when it fails.

    Classic Pub/Sub on a cluster is broadcast over the cluster bus: a ``PUBLISH`` on any
    node reaches the subscribers of every node, so one connection to any node (primary
    or replica) hears every channel and every pattern. But ``PUBLISH`` counts only the
    receivers on the node it ran on, so every transport prefers the same node — the first
    primary by ``host:port`` — and publishes where it subscribes: while the cluster is whole the
    counts are exact, and a message needs no hop over the bus. When the node fails the
    transport moves to the next one it has not seen fail and re-subscribes there
    (processes that saw different failures may then sit on different nodes, and a count
    misses the receivers on the others; delivery does not depend on it).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._node: str | None = None
        self._failed: set[str] = set()  # nodes that failed lately: tried last

    async def pool(self) -> Any:
        try:
            with translate_errors("cluster discovery"):
                await self._client.initialize()  # a no-op once the client knows its nodes
                nodes = self._client.get_nodes()
        except redis.exceptions.RedisClusterException as exc:  # not a RedisError
            raise BackendUnavailableError(
                f"redis: cluster discovery failed: {exc}", backend="redis"
            ) from exc
        if not nodes:
            raise BackendUnavailableError(
                "redis: the cluster client knows no node to subscribe on", backend="redis"
            )
        nodes = sorted(nodes, key=lambda node: (node.server_type != "primary", node.name))
        fresh = [node for node in nodes if node.name not in self._failed]
        if not fresh:
            self._failed.clear()  # every node failed once: try them all again
            fresh = [node for node in nodes if node.name != self._node] or nodes
        node = fresh[0]
        self._node = node.name
        options = dict(node.connection_kwargs)
        # The cluster's parser only adds MOVED/ASK, which Pub/Sub never gets; the default
        # one is redis-py's fastest (hiredis when installed).
        options.pop("parser_class", None)
        return untimed_pool_of(node.connection_class, node.max_connections, options)

    async def failed(self, pool: Any) -> bool:
        if self._node is not None:
            self._failed.add(self._node)
        with contextlib.suppress(*_DRIVER_ERRORS):
            await pool.disconnect()
        return True

    def stale(self, connection: Any) -> bool:
        return False

    async def moved(self, connection: Any) -> bool:
        return False  # a cluster node that answers still broadcasts every channel

    @property
    def node(self) -> str | None:
        """``host:port`` of the node in use (None before the first connection)."""
        return self._node


def _node_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the node is gone or unresponsive: a lost connection, or a
    meetq timeout (no cause), not a refusal such as an ACL's NOPERM."""
    if isinstance(exc, MeetqError):
        return exc.__cause__ is None or isinstance(exc.__cause__, _NODE_FAILURES)
    return isinstance(exc, _NODE_FAILURES)


def _endpoint(client: Any) -> _ClientEndpoint | _ClusterEndpoint:
    if isinstance(client, RedisCluster):
        return _ClusterEndpoint(client)
    return _ClientEndpoint(client)


# Each reconnect waits between half and all of its backoff ceiling.
_RECONNECT_JITTER = 0.5


class RedisPubSubTransport:
    """Pub/Sub over one dedicated connection of ``client`` (``redis.asyncio.Redis``).

    ``backoff`` is (base, max) seconds of the kernel's ``Backoff``, with jitter 0.5:
    reconnect attempt n waits a random time between half and all of its ceiling
    (jitter spreads the reconnects of many processes).
    """

    name = "redis"

    def __init__(self, client: Any, *, backoff: tuple[float, float] = (0.1, 5.0)) -> None:
        self._client = client
        self._backoff = Backoff(backoff[0], backoff[1], _RECONNECT_JITTER)
        self._ps: Any = None  # redis.asyncio.client.PubSub of the current connection
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        # (reply kind, name) -> futures of calls waiting for that confirmation, FIFO.
        self._waiting: dict[tuple[str, str], deque[asyncio.Future[None]]] = {}
        # Names to unsubscribe from on the current connection, because a subscribe that
        # was sent then timed out or was cancelled (or an unsubscribe cancelled before it
        # was sent). Sent under the send lock before any later command, so in order.
        self._undo: list[tuple[str, list[str]]] = []
        self._undo_task: asyncio.Task[None] | None = None
        # SUBSCRIBE/PSUBSCRIBE commands sent on the current connection whose replies are
        # still due, oldest first: [kind, names, confirmations due, the caller's futures
        # (None for a re-subscription)]. Redis answers in order, and answers a command
        # the ACL refuses (NOPERM) with one error instead of a confirmation per name:
        # that error belongs to the oldest entry, whose caller it fails (no reconnect).
        self._due: deque[list[Any]] = deque()
        # Confirmations still expected after a reconnect; callbacks run when it empties.
        self._resubscribing: set[tuple[str, str]] = set()
        self._connected = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._reconnecting = False
        self._reconnects = 0
        self._callbacks: list[Callable[[], Awaitable[None]]] = []
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._traffic = 0  # responses read; the watchdog compares it between periods
        # Where connections go: the client's server (Sentinel: its master), or one
        # cluster node at a time.
        self._endpoint = _endpoint(client)
        self._pool: Any = None  # our own connections: the subscriber's, the publishers'
        # Idle publishing connections (taken from that pool, kept) and since when idle.
        self._publishers: list[tuple[Any, float]] = []
        self._publish_heads: dict[str, bytes] = {}
        self._checkout_takes_name = False  # channel -> packed "PUBLISH channel"
        # The client's limits: socket_timeout bounds each publish (one shared timer for
        # all of them), each subscription command and the watchdog's PING.
        self._bounds: Bounds = bounds_of(client)
        timeout = self._bounds.socket_timeout
        self._publish_timeout = timeout
        self._deadline: Any = (
            SharedDeadline(timeout, "redis.socket_timeout").scope
            if timeout
            else contextlib.nullcontext
        )
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> int:
        return (await self._publish(channel, (data,), "PUBLISH"))[0]

    async def publish_many(self, channel: str, items: Sequence[bytes]) -> list[int]:
        """All ``items`` in one pipelined round trip (no MULTI: Pub/Sub needs no atomicity)."""
        return await self._publish(channel, items, "PUBLISH (pipeline)")

    async def _publish(self, channel: str, items: Sequence[bytes], what: str) -> list[int]:
        # Publishing is the hot path of a broadcast, so it skips redis-py's generic
        # command machinery (argument packing, pool checkout with its zero-timeout
        # readiness probe, pipeline bookkeeping): PUBLISH is packed here, sent on a
        # connection this transport keeps for publishing, and its integer replies are
        # read with the connection's own parser. Errors are translated as everywhere.
        self._check_open()
        pool = self._pool
        if pool is None:
            # Opening the pool may ask a cluster for its nodes: bounded like the publish.
            with translate_errors(what), self._reply_deadline(what), self._deadline():
                pool = await self._open_pool()
        head = self._publish_heads.get(channel)
        if head is None:
            head = self._publish_head(pool, channel)
        parts: list[bytes] = []
        for data in items:
            if type(data) is not bytes:
                data = bytes(data)
            parts += (head, b"$%d\r\n" % len(data), data, b"\r\n")
        try:
            with translate_errors(what), self._reply_deadline(what), self._deadline():
                # Checking out counts: a new connection to a frozen server is accepted by
                # its kernel and then never greeted.
                connection = await self._publishing_connection(pool)
                try:
                    replies = await _send_and_read(connection, parts, len(items))
                except BaseException:
                    # Replies may be unread: this connection must not serve another call.
                    await connection.disconnect(nowait=True)
                    await pool.release(connection)
                    raise
        except BackendUnavailableError as exc:
            # No reply in time (no cause) or a lost connection: the next publish goes to
            # another cluster node. A refusal (an ACL's NOPERM, say) does not move it.
            if _node_failure(exc):
                await self._node_failed(pool)
            raise
        if len(self._publishers) < _MAX_IDLE_PUBLISHERS:
            self._publishers.append((connection, asyncio.get_running_loop().time()))
        else:
            await pool.release(connection)
        return replies

    def _publish_head(self, pool: Any, channel: str) -> bytes:
        name = pool.get_encoder().encode(channel)
        head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n" % (len(name), name)
        if len(self._publish_heads) >= 1024:
            self._publish_heads.clear()  # channel names are unbounded; the cache is not
        self._publish_heads[channel] = head
        return head

    async def _publishing_connection(self, pool: Any) -> Any:
        """An idle publishing connection, or a new one from this transport's pool.

        Our pool has no socket_timeout (see ``untimed_pool``); the client's still bounds
        each publish, as one deadline around it (``_deadline``).
        """
        publishers = self._publishers
        if publishers:
            connection, idle_since = publishers.pop()
            if self._endpoint.stale(connection):
                # Open to a demoted Sentinel master: what it is sent reaches nobody
                # subscribed to the new one. Connecting again asks the sentinels.
                await connection.disconnect()
                return connection
            if asyncio.get_running_loop().time() - idle_since < _IDLE_RECHECK:
                return connection
            # Idle for a while: Redis may have closed it meanwhile (a restart, its
            # ``timeout`` setting). Hand it back; the checkout below probes it the way
            # redis-py does for every command, and reconnects if it was closed.
            await pool.release(connection)
        if self._checkout_takes_name:
            return await pool.get_connection("PUBLISH")
        return await pool.get_connection()

    @contextlib.contextmanager
    def _reply_deadline(self, what: str) -> Iterator[None]:
        try:
            yield
        except TimeoutError:
            # Our deadline cancelled the call and the connection was dropped, so no late
            # reply can be read by the next command.
            raise BackendUnavailableError(
                f"redis: {what} got no reply within {self._publish_timeout:g}s "
                "(redis.socket_timeout); is the server overloaded or unreachable?",
                backend="redis",
            ) from None

    @contextlib.asynccontextmanager
    async def _sending(self, what: str) -> AsyncIterator[None]:
        """Bound a command sent on the subscriber connection (connecting, waiting for the
        send lock, the send) by socket_timeout; a timeout is a BackendUnavailableError."""
        timeout = self._bounds.socket_timeout
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError:
            raise BackendUnavailableError(
                f"redis: {what} could not be sent within {timeout:g}s "
                "(redis.socket_timeout); is the server overloaded or unreachable?",
                backend="redis",
            ) from None

    # -- subscriptions ------------------------------------------------------------------

    async def subscribe(self, channels: Sequence[str]) -> None:
        await self._change("subscribe", self._channels, channels, add=True)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        await self._change("psubscribe", self._patterns, patterns, add=True)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        await self._change("unsubscribe", self._channels, channels, add=False)

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        await self._change("punsubscribe", self._patterns, patterns, add=False)

    async def _change(
        self, kind: str, wanted: set[str], names: Sequence[str], *, add: bool
    ) -> None:
        names = list(dict.fromkeys(names))
        if not names:
            return
        if add:
            self._check_open()
            if self._reconnecting:
                raise BackendUnavailableError(
                    f"redis: cannot {kind} while the pub/sub connection is down "
                    "(reconnecting); retry later",
                    backend="redis",
                )
            wanted.update(names)
        else:
            wanted.difference_update(names)
            if self._ps is None or self._reconnecting or self._closed:
                return  # the next connection is made without them
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in names]
        due: list[Any] = []
        for name, future in zip(names, futures, strict=True):
            self._waiting.setdefault((kind, name), deque()).append(future)
        try:
            async with self._sending(kind.upper()), self._send_lock:
                self._check_open()  # closed while this call waited for the lock
                if self._ps is None:
                    self._ps = await self._new_pubsub()
                with translate_errors(kind.upper()):
                    await self._send_undo()
                    # Due before it is sent: the reader may see the reply first.
                    due = [kind, names, len(names), futures]
                    if add:
                        self._due.append(due)
                    await self._ps.execute_command(kind.upper(), *names)
            self._connected.set()
        except BaseException as exc:
            if due in self._due:
                self._due.remove(due)
            # Not sent (or the connection broke sending it, and the reader reconnects).
            self._forget(kind, names, futures)
            if add:
                wanted.difference_update(names)
                if not self._channels and not self._patterns and not self._connected.is_set():
                    # Never connected and nothing wanted (a start() against a server that
                    # is down): nothing may be left running, the watchdog included.
                    await self._drop_connection()
                    await self._stop_watchdog()
                raise
            if isinstance(exc, _FAILURES):
                return  # unsubscribing from a broken connection: its replacement lacks them
            # Cancelled before UNSUBSCRIBE went out: it still must, or Redis keeps
            # sending what nobody wants (and the names are no longer ``wanted``).
            self._undo_later(kind, names)
            raise
        confirm_within = min(CONFIRM_TIMEOUT, self._bounds.socket_timeout or CONFIRM_TIMEOUT)
        try:
            async with asyncio.timeout(confirm_within):
                await asyncio.gather(*futures)
        except BaseException as exc:
            # The command went out; its confirmations will still come, in order, and
            # must resolve these (now cancelled) futures rather than a later call's.
            for future in futures:
                future.cancel()
            if add and not self._closed:
                # A subscription that raised is not kept: not wanted, and undone in Redis.
                wanted.difference_update(names)
                self._undo_later(_UNDO[kind], names)
            if isinstance(exc, TimeoutError):
                raise BackendUnavailableError(
                    f"redis: {kind} of {names!r} was not confirmed within "
                    f"{confirm_within:g}s (is the server unresponsive, or the reader not "
                    "running, i.e. was the PubSub not started?)",
                    backend="redis",
                ) from None
            raise

    def _undo_later(self, kind: str, names: list[str]) -> None:
        if self._ps is None or self._closed:
            return  # no connection: the next one is made without them
        self._undo.append((kind, names))
        if self._undo_task is None or self._undo_task.done():
            self._undo_task = asyncio.get_running_loop().create_task(
                self._flush_undo(), name="meetq-redis-pubsub-undo"
            )

    async def _flush_undo(self) -> None:
        # Best effort: if the connection is broken, the reconnect drops these names anyway.
        with contextlib.suppress(*_FAILURES):
            async with self._sending("UNSUBSCRIBE"), self._send_lock:
                with translate_errors("UNSUBSCRIBE"):
                    await self._send_undo()

    async def _send_undo(self) -> None:
        """Send the pending undo commands; the caller holds the send lock."""
        while self._undo and self._ps is not None:
            kind, names = self._undo.pop(0)
            # Their confirmations resolve placeholders, not a later unsubscribe's future.
            for name in names:
                placeholder = asyncio.get_running_loop().create_future()
                placeholder.cancel()
                self._waiting.setdefault((kind, name), deque()).append(placeholder)
            await self._ps.execute_command(kind.upper(), *names)

    def _forget(self, kind: str, names: list[str], futures: list[asyncio.Future[None]]) -> None:
        for name, future in zip(names, futures, strict=True):
            queue = self._waiting.get((kind, name))
            if queue is not None and future in queue:
                queue.remove(future)
                if not queue:
                    del self._waiting[(kind, name)]
            future.cancel()

    def _refused(self, exc: redis.exceptions.NoPermissionError) -> None:
        """The oldest subscription command due was refused: fail its call, keep the
        connection (re-subscribing would only be refused again)."""
        if not self._due:
            log.error("meetq redis pub/sub: a command was refused: %s", exc)
            return
        kind, names, _, futures = self._due.popleft()
        wanted = self._channels if kind == "subscribe" else self._patterns
        wanted.difference_update(names)
        error = translated(f"{kind.upper()} {' '.join(names)}", exc)
        if futures is None:
            log.error("meetq redis pub/sub: re-subscribing dropped %s: %s", names, error)
            waited = bool(self._resubscribing)
            self._resubscribing.difference_update((kind, name) for name in names)
            if waited and not self._resubscribing:
                self._run_callbacks()
            return
        for future in futures:
            if not future.done():
                future.set_exception(error)

    def _confirmed(self, kind: str, name: str) -> None:
        if kind in _UNDO and self._due:
            due = self._due[0]
            due[2] -= 1
            if due[2] <= 0:
                self._due.popleft()
        queue = self._waiting.get((kind, name))
        if queue:
            future = queue.popleft()
            if not queue:
                del self._waiting[(kind, name)]
            if not future.done():
                future.set_result(None)
        if self._resubscribing:
            self._resubscribing.discard((kind, name))
            if not self._resubscribing:
                self._run_callbacks()

    # -- receiving ----------------------------------------------------------------------

    async def messages(self) -> AsyncIterator[TransportMessage]:
        """Received messages in arrival order, across reconnects; ends at ``aclose()``.

        Must be consumed for subscriptions to be confirmed (the reader sees the replies).
        """
        while not self._closed:
            ps = self._ps
            connection = None if ps is None else ps.connection
            if connection is None or not self._connected.is_set():
                await self._connected.wait()
                continue
            try:
                # Straight from the connection, not PubSub.parse_response: that one would
                # quietly reconnect a dropped connection (and redis-py's retry policy
                # retry on a new one) without our subscriptions, where _reconnect
                # restores them; it also costs a retry wrapper per message. No read
                # timeout on this connection (see _new_pubsub): the watchdog notices a
                # silent one.
                response = await connection.read_response(
                    disconnect_on_error=False, push_request=True
                )
            except redis.exceptions.NoPermissionError as exc:
                # A reply, read whole: the connection is fine, the ACL refused a command.
                self._refused(exc)
                continue
            except _DRIVER_ERRORS as exc:
                if self._closed:
                    return
                await self._reconnect(exc)
                continue
            if response is None:
                continue
            self._traffic += 1
            kind = _MESSAGE.get(response[0])
            if kind == _PLAIN:  # [b"message", channel, data]
                yield TransportMessage(channel=_text(response[1]), data=_data(response[2]))
            elif kind == _PATTERN:  # [b"pmessage", pattern, channel, data]
                yield TransportMessage(
                    channel=_text(response[2]), data=_data(response[3]), pattern=_text(response[1])
                )
            elif isinstance(response, list | tuple) and len(response) >= 2:
                reply = _text(response[0])
                if reply in _CONFIRMATIONS and response[1] is not None:
                    self._confirmed(reply, _text(response[1]))

    async def _new_pubsub(self) -> Any:
        # A pool of its own, copied from the client's but without socket_timeout: a
        # subscriber is idle for long stretches, and a read timeout would either drop it
        # or (as a per-read timer) cost about a third of the delivery rate. Liveness is
        # checked by the watchdog instead.
        pool = self._pool or await self._open_pool()
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(), name="meetq-redis-pubsub-watchdog"
            )
        return PubSubConnection(pool)

    async def _open_pool(self) -> Any:
        if self._pool is None:
            pool = await self._endpoint.pool()
            if self._pool is None:  # another task opened one meanwhile: keep that
                self._pool = pool
                # redis-py < 5.3 requires a command name here; 5.3 deprecates passing one.
                name = inspect.signature(pool.get_connection).parameters.get("command_name")
                self._checkout_takes_name = name is not None and name.default is name.empty
        return self._pool

    async def _node_failed(self, pool: Any) -> None:
        """The node behind ``pool`` failed: on a cluster, the next connection (the
        subscriber's and the publishers') goes to another node."""
        if pool is None or pool is not self._pool:
            return  # already moved on
        if await self._endpoint.failed(pool) and pool is self._pool:
            self._pool = None
            self._publishers.clear()  # their connections were the old pool's
            self._publish_heads.clear()

    async def _watch(self) -> None:
        """After ``health_check_interval`` without traffic, PING; if nothing at all is
        read within ``socket_timeout`` after it, cut the connection so the reader
        reconnects (a frozen or vanished peer sends no FIN). On a Sentinel client it
        also cuts, every ``health_check_interval``, a connection to a node the sentinels
        no longer name as the master."""
        probe_after = self._bounds.health_check_interval or IDLE_PROBE
        reply_within = self._bounds.socket_timeout or IDLE_PROBE
        loop = asyncio.get_running_loop()
        seen = -1
        while not self._closed:
            await asyncio.sleep(probe_after)
            ps = self._ps
            if ps is None or self._reconnecting or await self._left_master(ps, reply_within):
                seen = self._traffic
                continue
            if self._traffic != seen:
                seen = self._traffic
                continue
            try:
                async with self._sending("PING"), self._send_lock:
                    await ps.execute_command("PING")
            except _FAILURES:
                continue  # the reader sees the broken connection too
            deadline = loop.time() + reply_within
            while self._traffic == seen and (left := deadline - loop.time()) > 0:
                await asyncio.sleep(min(probe_after, left))
                if self._ps is not ps or await self._left_master(ps, reply_within):
                    break
            else:
                if self._ps is ps and self._traffic == seen and not self._reconnecting:
                    log.warning(
                        "meetq redis pub/sub: PING unanswered for %gs (redis.socket_timeout); "
                        "reconnecting",
                        reply_within,
                    )
                    await _cut(ps)
            seen = self._traffic

    async def _left_master(self, ps: Any, within: float) -> bool:
        """Whether the sentinels name a master other than the node ``ps`` is connected
        to (then the connection is cut: the reader reconnects to the new one)."""
        connection = getattr(ps, "connection", None)
        if connection is None or self._reconnecting:
            return False
        try:
            async with asyncio.timeout(within):
                moved = await self._endpoint.moved(connection)
        except TimeoutError:
            return False  # the sentinels do not answer: nothing learnt
        if moved and self._ps is ps:
            log.warning("meetq redis pub/sub: the sentinels name another master; reconnecting")
            await _cut(ps)
        return moved

    async def _reconnect(self, exc: BaseException) -> None:
        self._reconnecting = True
        self._connected.clear()
        log.warning(
            "meetq redis pub/sub connection lost (%s); reconnecting. Messages published "
            "until it is back are lost.",
            exc,
        )
        await self._node_failed(self._pool)
        await self._drop_connection()
        # Pending unsubscribes are done: the new connection is made without those names.
        for (kind, _name), queue in list(self._waiting.items()):
            if kind in ("unsubscribe", "punsubscribe"):
                for future in queue:
                    if not future.done():
                        future.set_result(None)
                del self._waiting[(kind, _name)]
        attempt = 0
        while not self._closed:
            attempt += 1
            await asyncio.sleep(self._backoff.delay(attempt))
            channels, patterns = sorted(self._channels), sorted(self._patterns)
            if not channels and not patterns:
                # Nothing to restore: connect again on the next subscribe.
                self._reconnecting = False
                return
            ps = None
            try:
                async with self._sending("SUBSCRIBE"), self._send_lock:
                    ps = await self._new_pubsub()
                    self._due.clear()
                    if channels:
                        self._due.append(["subscribe", channels, len(channels), None])
                        await ps.execute_command("SUBSCRIBE", *channels)
                    if patterns:
                        self._due.append(["psubscribe", patterns, len(patterns), None])
                        await ps.execute_command("PSUBSCRIBE", *patterns)
            except _FAILURES as retry_exc:
                if ps is not None:
                    await _close_quietly(ps)
                if _node_failure(retry_exc):
                    await self._node_failed(self._pool)
                log.info("meetq redis pub/sub reconnect attempt %d failed: %s", attempt, retry_exc)
                continue
            self._ps = ps
            self._reconnects += 1
            self._resubscribing = {("subscribe", c) for c in channels} | {
                ("psubscribe", p) for p in patterns
            }
            self._reconnecting = False
            self._connected.set()
            log.warning(
                "meetq redis pub/sub reconnected after %d attempt(s); re-subscribed %d "
                "channel(s) and %d pattern(s)",
                attempt,
                len(channels),
                len(patterns),
            )
            return

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after each reconnect once every re-subscription is confirmed."""
        self._callbacks.append(callback)

    def _run_callbacks(self) -> None:
        for callback in self._callbacks:
            task = asyncio.get_running_loop().create_task(_contained(callback))
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_tasks.discard)

    @property
    def reconnects(self) -> int:
        """How many times the connection was lost and restored."""
        return self._reconnects

    # -- closing ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this pub/sub transport is closed")

    async def _stop_watchdog(self) -> None:
        # The next connection (_new_pubsub) starts a new one.
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _drop_connection(self) -> None:
        ps, self._ps = self._ps, None
        self._connected.clear()
        self._undo.clear()  # a new connection is made without those names anyway
        self._due.clear()
        if ps is not None:
            await _close_quietly(ps)

    async def aclose(self) -> None:
        """Close the connection; ``messages()`` ends. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._connected.set()  # wake a reader waiting for a first subscription
        # A call waiting for its confirmation fails like any call on a closed transport
        # (its caller was not cancelled, so it must not see CancelledError).
        for queue in self._waiting.values():
            for future in queue:
                if not future.done():
                    future.set_exception(ClosedError("this pub/sub transport is closed"))
        self._waiting.clear()
        self._undo.clear()
        if self._undo_task is not None:
            self._undo_task.cancel()
            await asyncio.gather(self._undo_task, return_exceptions=True)
        for task in list(self._callback_tasks):
            task.cancel()
        await asyncio.gather(*self._callback_tasks, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        ps, self._ps = self._ps, None
        if ps is not None:
            await _close_quietly(ps)
        self._publishers.clear()
        if self._pool is not None:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await self._pool.disconnect()


async def _send_and_read(connection: Any, parts: list[bytes], count: int) -> list[int]:
    await connection.send_packed_command(parts)
    replies: list[int] = []
    for _ in range(count):
        reply = await connection.read_response()  # raises ResponseError for "-ERR ..."
        if type(reply) is not int:
            raise BackendUnavailableError(
                f"redis: unexpected reply to PUBLISH: {reply!r}", backend="redis"
            )
        replies.append(reply)
    return replies


async def _cut(ps: Any) -> None:
    """Disconnect the subscriber connection of ``ps``: its reader sees it and reconnects."""
    connection = getattr(ps, "connection", None)
    if connection is not None:
        with contextlib.suppress(*_DRIVER_ERRORS):
            await connection.disconnect()


async def _close_quietly(ps: Any) -> None:
    # Closing a connection that is already broken may raise; there is nothing to save.
    with contextlib.suppress(*_DRIVER_ERRORS):
        await ps.aclose()


async def _contained(callback: Callable[[], Awaitable[None]]) -> None:
    try:
        await callback()
    except Exception:
        log.exception("meetq redis pub/sub on_reconnect callback %r failed", callback)
