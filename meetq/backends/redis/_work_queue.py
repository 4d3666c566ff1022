"""The Redis work queue: ``WorkQueueBackend`` on Redis hashes, sorted sets and Lua.

Features: every state change is one Lua script (``lua/*.lua``) run with ``EVALSHA`` in a
single round trip, so a worker pays one network hop per batch of settlements and claims;
strict priority then FIFO through one ready ZSET per type scored
``(3 - priority) * 2**44 + seq``; leases with tokens so a late settlement from a worker
that lost its lease changes nothing (the script makes each token and returns it); push
wake-ups on a Pub/Sub channel, handed to ``listen`` callbacks; hand-off at enqueue: a
worker whose last exchange left it idle is *parked*, and the next publish of its types
is leased to it inside ``enqueue_one`` and sent on the worker's own channel, so it
starts without a claim round trip (see ``lua/enqueue_one.lua``); ``inspect`` is one
script; concurrent ``enqueue`` calls coalesce (``_coalesce.py``): those made while
round trips are on the wire (two at most) go out together in the next write on one
connection, their single publishes as one ``enqueue.lua`` call; the clock is Redis
``TIME``, so every process agrees on it.
Core's rules arrive as data: the dead-letter caps and the outcome-to-counter policy in
``WorkQueueOptions``, retry delays in each ``Settlement``, the sweep's reason text in
``Maintenance``.
Capabilities: ``durable``, ``cross_process``, ``schedules`` (``_schedules.py``),
``tracking`` (declared by ``RedisBackend``; tracking is the mixin in ``_tracking.py``,
with its keys ``P t:<id>`` and ``P cancel``).
Config keys: ``redis.key_prefix`` (via ``RedisBackend``); per queue
``WorkQueueOptions.dead_letter_max_size`` and ``dead_letter_max_age_ms``.

Keys of queue ``q`` under prefix ``meetq`` all carry the hash tag ``{q}``, so one queue
lives in one Redis Cluster slot (``P`` = ``meetq:{q}:``):

- ``P m:body``, ``P m:score``, ``P m:attempts``, ``P m:token``, ``P m:dedup``,
  ``P m:ready_at``: one HASH per field, keyed by message id. Per-message hashes keep
  the key count fixed, and every key a script touches can be named in ``KEYS``.
- ``P ready:T`` / ``P delayed:T`` / ``P lease:T``: ZSETs per type ``T`` (score: position,
  due time, lease deadline).
- ``P dedup`` (key -> id), ``P dead`` + ``P dinfo`` (dead letters beside their bodies),
  ``P counts``, ``P seq``, ``P types``, ``P handlers``; channel ``P notify``.
- ``P workers``: ZSET ``<byte length>:<worker><type>`` -> heartbeat expiry, the live
  workers of each type (heartbeat.lua drops expired entries).
- ``P parked`` (HASH worker channel -> free slots and lease ms) and ``P parked:T`` (ZSET
  worker channel -> park deadline): the idle workers a publish may hand off to; each
  worker's channel is ``P w:<random>``.

After ``ack`` or ``drop`` nothing of a message remains in any of them.

Corrupt keys (see docs/reliability.md): Redis keeps the writes of a script that fails
midway, so every script checks the keys it will write (``TYPE``, counter fields) before
its first write. A corrupt fixed key fails the call, naming the key, with nothing
written; a type whose own ZSETs are corrupt is skipped by ``exchange`` (and named in its
reply, logged here at most once a minute per type, listed in ``corrupt_types``) while
the other types keep flowing; a message with a corrupt field is dead-lettered with an
error naming the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import redis.exceptions
from redis.asyncio.connection import AbstractConnection
from redis.client import NEVER_DECODE

from meetq.backends.redis._coalesce import Coalescer
from meetq.backends.redis._connection import (
    DRIVER_ERRORS,
    bounds_of,
    connection_kwargs,
    translate_errors,
    translated,
    untimed_pool,
)
from meetq.backends.redis._deadline import SharedDeadline
from meetq.backends.redis._scripts import SCRIPTS as _SCRIPTS
from meetq.backends.redis._scripts import (
    SHARDED_SCRIPTS,
    QueueKeys,
    dead_entries,
    dead_info,
    dead_list_call,
    enqueue_call,
    enqueue_ids,
    inspect_steps,
    merged_enqueue,
    requeue_steps,
)
from meetq.backends.redis._scripts import Call as _Call
from meetq.backends.redis._scripts import Script as _Script
from meetq.backends.redis._scripts import lossy_text as _lossy_text
from meetq.backends.redis._scripts import text as _text
from meetq.backends.redis._sharded import ShardedSubscription, is_cluster
from meetq.backends.redis._tracking import RedisTracking, track_call
from meetq.core._backoff import Backoff
from meetq.core.errors import ClosedError, MeetqError, ValidationError
from meetq.core.protocols import (
    Claimed,
    DeadRecord,
    DeliveryCallback,
    ExchangeResult,
    LeaseRef,
    Maintenance,
    QueueSnapshot,
    Settlement,
    StoredMessage,
    WakeCallback,
    WorkQueueOptions,
)
from meetq.core.tracking import CancelCallback, LeaseLabel

if TYPE_CHECKING:
    from meetq.backends.redis._schedules import RedisSchedules

__all__ = ["RedisWorkQueue"]

T = TypeVar("T")

log = logging.getLogger("meetq.redis.work_queue")

# Outcome -> the one-letter code exchange.lua reads.
_OUTCOME_CODES: Final = {"ack": "a", "retry": "r", "dead": "d", "drop": "x", "release": "l"}

# Always ask redis-py for raw bytes: bodies are binary, and a client built with
# decode_responses=True must not turn them into text.
_RAW: Final = {NEVER_DECODE: True}

# listen: how long the first call waits for the subscription to be confirmed;
# how long the listener waits in silence before it PINGs, and for the reply, when the
# client has no health_check_interval (or socket_timeout) to say; the reconnect backoff.
_SUBSCRIBE_WAIT = 5.0
# How long one exchange parks an idle worker for hand-offs. An idle worker exchanges
# every poll_interval and so renews it; kept short because a frozen worker (still
# subscribed) would receive the hand-offs of that window and hold them until their
# lease expires.
_PARK_MS = 1000
_LISTEN_IDLE = 15.0
# aclose() re-cancels the listener this often until it ends (see aclose).
_LISTEN_CANCEL_RETRY = 0.05
_LISTEN_BACKOFF = Backoff(0.1, 5.0)
# Connections kept between calls (at most _MAX_IDLE), and how long one may sit idle
# before it is checked again through the pool.
_MAX_IDLE = 4
_IDLE_RECHECK = 0.25
# A corrupt type is named in every exchange's reply; the log repeats it this rarely.
_FAULT_LOG_EVERY = 60.0


_NOSCRIPT: Final = redis.exceptions.NoScriptError


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return b"%d" % value
    return str(value).encode()


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


class RedisWorkQueue(RedisTracking):
    """One named work queue stored in Redis; see the module docstring for its keys.

    Any number of instances, in any number of processes, may serve one queue: all
    coordination happens inside the Lua scripts. ``aclose`` stops the wake-up listener
    and leaves the client open (the backend owns it).
    """

    def __init__(
        self,
        client: Any,
        queue_name: str,
        options: WorkQueueOptions,
        *,
        key_prefix: str = "meetq",
    ) -> None:
        self.name = queue_name
        self._client = client
        self._options = options
        # The key names, shared with the sync producer (_scripts.py builds both's calls).
        self._keys = QueueKeys(key_prefix, queue_name)
        self._prefix = self._keys.prefix
        self._fixed = self._keys.fixed
        self._channel = self._keys.channel
        self._workers_key = self._keys.workers
        self._key = self._keys.key
        self._keys_with = self._keys.with_types
        # Token prefixes: a per-instance random part and a per-call counter; the script
        # appends its own number and returns each token whole.
        self._token_base = uuid.uuid4().hex[:12]
        self._token_calls = itertools.count(1)
        # Core's outcome-to-counter rule in the form exchange.lua reads (ARGV[8]).
        self._policy = ";".join(
            f"{_OUTCOME_CODES[outcome]}={','.join(names)}"
            for outcome, names in options.outcome_counters
            if outcome in _OUTCOME_CODES
        ).encode()
        # Core's limits per type (WorkQueueOptions.limits), written per call for the
        # types it names (exchange.lua's last ARGV); empty, the script skips them.
        self._limits = {limit.type: limit for limit in options.limits}
        self._limit_args: dict[tuple[str, ...], bytes] = {}
        self._listeners: list[WakeCallback] = []
        # Called on a schedule wake-up ("s" on notify: _schedules.py) instead of those.
        self.schedule_watchers: list[WakeCallback] = []
        self._schedules: RedisSchedules | None = None
        # Hand-offs: this instance's own channel and the callbacks that take deliveries.
        # Parked only while exactly one is registered (the caller of exchange is then
        # known) and the subscription stands.
        self._handoff = self._key(f"w:{uuid.uuid4().hex}")
        self._deliverers: list[DeliveryCallback] = []
        # Tracking: cancels of leased messages arrive on this channel (_tracking.py).
        self._cancels = self._key("cancel")
        self._cancel_callbacks: list[CancelCallback] = []
        self._track_loaded = False
        self._subscribed = False
        self._orphans: set[asyncio.Task[Any]] = set()
        # A client that decodes replies would hand bodies over as text: no hand-offs.
        self._can_hand_off = not connection_kwargs(client).get("decode_responses", False)
        # On a Redis Cluster the wake-ups and hand-offs are sharded Pub/Sub on the
        # queue's primary: scripts that SPUBLISH, a listener that SSUBSCRIBEs there.
        self._sharded = is_cluster(client)
        self._first_attempt = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self._packed_heads: dict[tuple[str, tuple[bytes, ...]], bytes] = {}
        self._idle: list[tuple[Any, float]] = []
        # Types the last exchange that named them skipped as corrupt -> the fault text.
        self.corrupt_types: dict[str, str] = {}
        self._fault_logged: dict[str, float] = {}
        # The hand-packed EVALSHA path needs a plain redis-py client with a pool;
        # anything else (fakeredis, a single-connection client) uses execute_command.
        pool = getattr(client, "connection_pool", None)
        conn_class = getattr(pool, "connection_class", None)
        # redis-py 5.3 deprecates naming the command when taking a connection; 5.0-5.2
        # require it.
        get = getattr(pool, "get_connection", None)
        params = inspect.signature(get).parameters if get is not None else {}
        first = next(iter(params.values()), None)
        self._bare_get = first is None or first.default is not inspect.Parameter.empty
        self._fast = (
            getattr(client, "connection", None) is None
            and isinstance(conn_class, type)
            and issubclass(conn_class, AbstractConnection)
            and conn_class.__module__.startswith("redis.")
        )
        # The fast path's connections come from a pool without redis-py's per-command
        # timers; one shared timer bounds each call by the client's socket_timeout.
        self._bounds = bounds_of(client)
        self._pool: Any = untimed_pool(client) if self._fast else None
        # redis-py >= 5.1; without it (5.0) every connection goes straight back.
        self._pool_has_room: Callable[[], bool] = getattr(
            self._pool, "can_get_connection", lambda: False
        )
        timeout = self._bounds.socket_timeout
        self._deadline: Any = (
            SharedDeadline(timeout, "redis.socket_timeout").scope
            if timeout
            else contextlib.nullcontext
        )
        self._enqueues: Coalescer[_Call] = Coalescer(
            self._eval_call, self._eval_coalesced, name=f"meetq:{queue_name}:enqueue"
        )

    # -- plumbing ----------------------------------------------------------------------

    async def _run(self, steps: Generator[_Call, Any, T]) -> T:
        """Drive a multi-step call of ``_scripts`` (each step one EVALSHA)."""
        call = next(steps)
        while True:
            reply = await self._eval(*call)
            try:
                call = steps.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def _eval(self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """EVALSHA in one round trip; on NOSCRIPT (a restarted, flushed or newly promoted
        server) the script's source once, which loads it there for the next EVALSHA."""
        self._check_open()
        if self._sharded:
            script = SHARDED_SCRIPTS[script.name]
        with translate_errors(script.name):
            try:
                return await self._evalsha(script, keys, args)
            except redis.exceptions.NoScriptError:
                return await self._eval_source(script, keys, args)

    async def _eval_source(
        self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]
    ) -> Any:
        # EVAL rather than SCRIPT LOAD: it is routed by its keys as EVALSHA is, so a
        # cluster client sends it to the primary of the queue's slot (SCRIPT LOAD names
        # no key and cannot be routed), and Redis keeps the script it ran.
        self._track_loaded = False  # that server lost its scripts: track's too
        return await self._client.execute_command(
            "EVAL", script.source, len(keys), *keys, *args, **_RAW
        )

    async def _load_script(self, script: _Script) -> None:
        """``SCRIPT LOAD`` where this queue's scripts run: on a cluster, the primary of
        the queue's slot, named to the client (the command has no key to route by)."""
        if not self._sharded:
            await self._command(script.name, "SCRIPT", "LOAD", script.source)
            return
        with translate_errors(script.name):
            await self._client.initialize()
            node = self._client.get_node_from_key(self._channel)
        await self._command(
            script.name, "SCRIPT", "LOAD", SHARDED_SCRIPTS[script.name].source, target_nodes=node
        )

    async def _eval_call(self, call: _Call) -> Any:
        return await self._eval(*call)

    async def _eval_many(self, calls: Sequence[_Call]) -> list[object]:
        """Every call in one write on one connection; a reply or an error for each.

        A script error (a corrupt key, a bad message) is that call's error alone; a
        failed round trip fails each call with its own error object."""
        try:
            self._check_open()
            if self._sharded:
                calls = [(SHARDED_SCRIPTS[s.name], keys, args) for s, keys, args in calls]
            replies = await self._evalsha_many(calls)
            # A restarted, flushed or promoted server: those calls again, from source.
            for i, reply in enumerate(replies):
                if isinstance(reply, _NOSCRIPT):
                    try:
                        replies[i] = await self._eval_source(*calls[i])
                    except redis.exceptions.ResponseError as exc:
                        replies[i] = exc
        except ClosedError as exc:
            return [ClosedError(str(exc)) for _ in calls]
        except DRIVER_ERRORS as exc:
            return [translated(call[0].name, exc) for call in calls]
        return [
            translated(call[0].name, reply)
            if isinstance(reply, redis.exceptions.RedisError)
            else reply
            for call, reply in zip(calls, replies, strict=True)
        ]

    async def _eval_coalesced(self, calls: Sequence[_Call]) -> list[object]:
        """The coalesced enqueues: their single publishes as one enqueue.lua call.

        One script run for many messages costs Redis a fraction of one run each (the
        script's fixed cost and its counter, sequence and notify commands are paid
        once). It stores all of them or none; if the server refused it (a corrupt key),
        each is sent again alone, so each caller gets its own outcome."""
        merged = merged_enqueue(calls)
        if merged is None:
            return await self._eval_many(calls)
        call, singles = merged
        alone = set(singles)
        rest = [i for i in range(len(calls)) if i not in alone]
        replies = await self._eval_many([call, *(calls[i] for i in rest)])
        out: list[object] = [1] * len(calls)  # enqueue_one's "stored"
        for i, reply in zip(rest, replies[1:], strict=True):
            out[i] = reply
        failed = replies[0]
        if isinstance(failed, BaseException):
            cause = failed.__cause__
            if isinstance(cause, redis.exceptions.ResponseError):
                again = await self._eval_many([calls[i] for i in singles])
            elif isinstance(cause, redis.exceptions.RedisError | OSError):
                # The round trip failed (one more would, too): its error, one per caller.
                again = [translated("enqueue", cause) for _ in singles]
            else:
                again = [ClosedError(str(failed)) for _ in singles]
            for i, reply in zip(singles, again, strict=True):
                out[i] = reply
        return out

    async def _evalsha_many(self, calls: Sequence[_Call]) -> list[Any]:
        if not self._fast:
            pipe = self._client.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **_RAW)
            return list(await pipe.execute(raise_on_error=False))
        packed = b"".join([self._pack(script, keys, args) for script, keys, args in calls])
        pool = self._pool
        replies: list[Any] = []
        with self._deadline():
            conn = await self._take_connection(pool)
            try:
                await conn.send_packed_command(packed, check_health=False)
                for _ in calls:
                    try:
                        replies.append(await conn.read_response(disable_decoding=True))
                    except redis.exceptions.ResponseError as exc:  # read whole: stream intact
                        replies.append(exc)
            except BaseException:
                await conn.disconnect(nowait=True)
                await pool.release(conn)
                raise
        if not self._keep(conn):
            await pool.release(conn)
        return replies

    def _pack(self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]) -> bytes:
        # redis-py's pure-Python packer costs about 1 us per argument, more than the
        # script itself for a batch; the keys of a call repeat, so their packed form is
        # cached and only the arguments are packed here.
        head = self._packed_heads.get((script.sha, tuple(keys)))
        if head is None:
            head = b"".join(
                _bulk(p) for p in (b"EVALSHA", script.sha.encode(), b"%d" % len(keys), *keys)
            )
            if len(self._packed_heads) < 1024:
                self._packed_heads[(script.sha, tuple(keys))] = head
        parts = [b"*%d\r\n" % (3 + len(keys) + len(args)), head]
        append = parts.append
        for arg in args:
            data = arg if type(arg) is bytes else _as_bytes(arg)
            append(b"$%d\r\n%b\r\n" % (len(data), data))
        return b"".join(parts)

    async def _evalsha(self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        if not self._fast:
            return await self._client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args, **_RAW
            )
        packed = self._pack(script, keys, args)
        pool = self._pool
        with self._deadline():  # connecting included: a frozen server accepts, never greets
            conn = await self._take_connection(pool)
            try:
                await conn.send_packed_command(packed, check_health=False)
                reply = await conn.read_response(disable_decoding=True)
            except BaseException:
                # A half-sent or half-read command leaves the stream unusable.
                await conn.disconnect(nowait=True)
                await pool.release(conn)
                raise
        if not self._keep(conn):
            await pool.release(conn)
        return reply

    def _keep(self, conn: Any) -> bool:
        """Keep a connection that just answered for the next call; False: give it back.

        Only while the pool has more to give: a call waiting for a connection of a full
        pool would otherwise wait out its timeout beside an idle one."""
        if len(self._idle) < _MAX_IDLE and not self._closed and self._pool_has_room():
            self._idle.append((conn, asyncio.get_running_loop().time()))
            return True
        return False

    async def _take_connection(self, pool: Any) -> Any:
        """A connection used moments ago, or one from the pool.

        redis-py's checkout probes every connection for unread data with a zero-length
        timer, a cost comparable to the script itself; a connection this queue used less
        than ``_IDLE_RECHECK`` ago skips it. One idle longer goes back through the probe,
        which reconnects it if Redis closed it meanwhile.
        """
        idle = self._idle
        while idle:
            conn, since = idle.pop()
            if asyncio.get_running_loop().time() - since < _IDLE_RECHECK:
                return conn
            await pool.release(conn)
        return await (pool.get_connection() if self._bare_get else pool.get_connection("EVALSHA"))

    def _check_open(self) -> None:
        # A closed backend must not quietly reopen connections that nobody will close.
        if self._closed:
            raise ClosedError(f"work queue {self.name!r}: its backend was closed")

    async def _command(self, what: str, *args: Any, **options: Any) -> Any:
        self._check_open()
        with translate_errors(what):
            return await self._client.execute_command(*args, **_RAW, **options)

    # -- WorkQueueBackend --------------------------------------------------------------

    async def enqueue(self, messages: Sequence[StoredMessage]) -> list[str]:
        """Store all ``messages`` atomically; return their ids (a dedup hit: the holder's)."""
        if not messages:
            return []
        # The one-message publish (the latency path) builds its keys once per type, as
        # the tuple the packed-head cache is keyed by (QueueKeys.single).
        call = enqueue_call(self._keys, messages)
        pipe = self._enqueues
        if pipe.take_slot():  # nothing waits: out at once (Coalescer.call, inlined)
            try:
                reply = await self._eval(*call)
            finally:
                pipe.slot_done()
        else:
            reply = await pipe.queue(call)
        return enqueue_ids(messages, reply)

    async def exchange(
        self,
        settlements: Sequence[Settlement],
        *,
        types: Sequence[str],
        claim: int,
        lease_ms: int,
        worker: str = "",
    ) -> ExchangeResult:
        """Apply ``settlements``, then lease up to ``claim`` ready messages of ``types``.

        One EVALSHA: due delayed messages and expired leases of ``types`` become ready,
        then the best ``claim`` scores across ``types`` are leased. Each token starts
        with ``worker`` and the claim time (``LeaseLabel``); settlements that leave a
        record behind add track.lua to the same write, before the exchange.
        """
        channel = (
            self._handoff
            if len(self._deliverers) == 1 and self._subscribed and self._can_hand_off
            else b""
        )
        return await self._exchange(
            settlements,
            types=types,
            claim=claim,
            lease_ms=lease_ms,
            channel=channel,
            worker=worker,
        )

    async def _exchange(
        self,
        settlements: Sequence[Settlement],
        *,
        types: Sequence[str],
        claim: int,
        lease_ms: int,
        channel: bytes,
        worker: str = "",
    ) -> ExchangeResult:
        index: dict[str, int] = {}
        for message_type in types:
            if message_type not in index:
                index[message_type] = len(index) + 1
        nclaim = len(index)
        for s in settlements:
            if s.lease.type not in index:
                index[s.lease.type] = len(index) + 1
        names = list(index)
        label = LeaseLabel.prefix(worker, int(time.time() * 1000))
        prefix = f"{label}{self._token_base}.{next(self._token_calls)}."
        opts = self._options
        args: list[Any] = [
            lease_ms,
            claim,
            prefix,
            opts.dead_letter_max_size,
            opts.dead_letter_max_age_ms,
            nclaim,
            len(names),
            self._policy,
            channel,
            _PARK_MS,
            *names,
        ]
        for s in settlements:
            lease = s.lease
            if s.outcome == "dead":
                args += ("d", index[lease.type], lease.id, lease.token, s.error, s.traceback)
            else:
                args += (
                    _OUTCOME_CODES[s.outcome],
                    index[lease.type],
                    lease.id,
                    lease.token,
                    s.delay_ms,
                    "",
                )
        args.append(self._limits_of(names) if self._limits else b"")
        call: _Call = (_SCRIPTS["exchange"], self._keys.exchange(names, nclaim), args)
        tracked = track_call(self._keys, settlements) if settlements else None
        if tracked is None:
            reply = await self._eval(*call)
        else:
            if not self._track_loaded:
                # Loaded ahead: a NOSCRIPT rerun would come after the exchange, when the
                # lease it checks is gone (after a SCRIPT FLUSH, one batch's records are).
                await self._load_script(tracked[0])
                self._track_loaded = True
            kept, reply = await self._eval_many([tracked, call])
            if isinstance(reply, BaseException):
                raise reply
            if isinstance(kept, BaseException):  # the settlements applied all the same
                log.warning("meetq: %s: could not keep finished records: %s", self.name, kept)
        flags, faults = reply[_EXCHANGE_FLAGS], reply[_EXCHANGE_FAULTS]
        if faults or self.corrupt_types:
            self._note_faults(names, _exchange_faults(faults, names))
        return ExchangeResult(
            settled=[flag == 0x31 for flag in flags],  # b"1" / b"0" per settlement
            claimed=_exchange_claimed(reply, names),
            retry_after_ms=int(reply[_EXCHANGE_RETRY_AFTER]),
        )

    def _limits_of(self, names: Sequence[str]) -> bytes:
        """exchange.lua's limits argument for the types ``names`` (by their index)."""
        key = tuple(names)
        encoded = self._limit_args.get(key)
        if encoded is None:
            parts = []
            for i, name in enumerate(names, 1):
                limit = self._limits.get(name)
                if limit is not None:
                    parts.append(
                        f"{i} {limit.concurrency} {limit.rate_per_ms!r} {limit.bucket!r}"
                    )
            encoded = ";".join(parts).encode()
            if len(self._limit_args) < 1024:
                self._limit_args[key] = encoded
        return encoded

    def _note_faults(self, names: Sequence[str], skipped: dict[str, str]) -> None:
        """Track the types this exchange skipped as corrupt; log each once a minute."""
        now = asyncio.get_running_loop().time()
        for name in names:
            fault = skipped.get(name)
            if fault is None:
                if self.corrupt_types.pop(name, None) is not None:
                    log.info("work queue %r: type %r flows again", self.name, name)
                continue
            self.corrupt_types[name] = fault
            if now - self._fault_logged.get(name, -_FAULT_LOG_EVERY) >= _FAULT_LOG_EVERY:
                self._fault_logged[name] = now
                log.error(
                    "work queue %r: type %r skipped, %s; its messages wait until the key "
                    "is repaired, other types flow on",
                    self.name,
                    name,
                    fault,
                )

    async def extend(self, leases: Sequence[LeaseRef], lease_ms: int) -> list[bool]:
        """Push the deadline of each held lease ``lease_ms`` ahead; False where lost."""
        if not leases:
            return []
        index: dict[str, int] = {}
        args: list[Any] = [lease_ms]
        for lease in leases:
            t = index.get(lease.type)
            if t is None:
                t = index[lease.type] = len(index) + 1
            args += (t, lease.id, lease.token)
        reply = await self._eval(_SCRIPTS["extend"], self._keys_with(list(index)), args)
        return [flag == 0x31 for flag in reply]

    async def listen(
        self, callback: WakeCallback, deliver: DeliveryCallback | None = None
    ) -> Callable[[], None]:
        """Call ``callback`` on every wake-up on the notify channel, and ``deliver`` on
        every hand-off to this instance, until the returned function is called.

        The first call starts the listener and returns once the subscription is
        confirmed (or failed, or ``_SUBSCRIBE_WAIT`` passed), so a publish after it
        returns is heard.
        """
        self._check_open()
        self._listeners.append(callback)
        if deliver is not None:
            self._deliverers.append(deliver)
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name=f"meetq:{self.name}:wakeups")
        if not self._first_attempt.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SUBSCRIBE_WAIT):
                    await self._first_attempt.wait()

        def stop() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)
            if deliver is not None and deliver in self._deliverers:
                self._deliverers.remove(deliver)

        return stop

    def _wake(self, data: bytes = b"") -> None:
        """A notify message (``data``), or a reconnect (``b""``: anything was missed)."""
        if data != b"s":
            for callback in list(self._listeners):
                callback()
        if data != b"1":  # a schedule changed (_schedules.py), or maybe did meanwhile
            for callback in list(self.schedule_watchers):
                callback()

    def schedule_store(self) -> RedisSchedules:
        """This queue's schedules (capability ``schedules``), made on first use."""
        if self._schedules is None:
            from meetq.backends.redis._schedules import RedisSchedules

            self._schedules = RedisSchedules(self)
        return self._schedules

    def _handed(self, data: bytes) -> None:
        """A hand-off from enqueue_one.lua: to the deliverer, or back to the queue."""
        try:
            head, _, rest = data.partition(b"\n")
            id_len, type_len, token_len, priority, attempt = (int(v) for v in head.split())
            a, b = id_len, id_len + type_len
            claimed = Claimed(
                id=_text(rest[:a]),
                type=_text(rest[a:b]),
                priority=priority,
                body=rest[b + token_len :],
                attempt=attempt,
                token=_text(rest[b : b + token_len]),
            )
        except (ValueError, UnicodeDecodeError):
            # Not one of ours (a stray PUBLISH): a real hand-off's lease expires anyway.
            log.warning("meetq: %s: unreadable hand-off ignored: %r", self.name, data[:80])
            return
        if self._deliverers and self._deliverers[0](claimed):
            return
        # Refused (no free slot) or its worker stopped listening meanwhile: back to
        # ready at once, uncharged.
        lease = LeaseRef(id=claimed.id, type=claimed.type, token=claimed.token)
        task = asyncio.create_task(self._release_orphan(lease))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def _release_orphan(self, lease: LeaseRef) -> None:
        try:
            await self._exchange(
                [Settlement(lease=lease, outcome="release")],
                types=[],
                claim=0,
                lease_ms=1,
                channel=b"",
            )
        except (MeetqError, OSError) as exc:  # the lease expires and it is redelivered
            log.warning("meetq: %s: could not release hand-off %s: %s", self.name, lease.id, exc)

    async def _listen(self) -> None:
        """Keep one subscription to the notify channel; each message calls the listeners.

        On a connection error the listeners hear nothing (core's poll timer covers the
        gap) while this loop resubscribes with backoff; a re-established subscription
        calls them once,
        since notifications sent meanwhile are lost. A frozen or cut-off server sends no
        FIN, so silence is checked: after ``health_check_interval`` without traffic a PING
        goes out, and no reply within ``socket_timeout`` counts as a lost connection.
        """
        failures = 0  # connection failures in a row
        subscribed_before = False
        lost_since: float | None = None  # when the current outage began (logged once)
        probe_after = self._bounds.health_check_interval or _LISTEN_IDLE
        reply_within = self._bounds.socket_timeout or _LISTEN_IDLE
        loop = asyncio.get_running_loop()
        while not self._closed:
            pubsub = ShardedSubscription(self._client) if self._sharded else self._client.pubsub()
            try:
                # Hand-off channel first: confirmed before notify's confirmation, which
                # is what allows parking (_subscribed).
                await pubsub.subscribe(self._handoff, self._cancels, self._channel)
                ping_due: float | None = None  # the PONG (or any traffic) is due by then
                # Not `while True`: a cancellation from aclose() can be swallowed below us
                # (Python 3.11's wait_for returns the result of a read that completed as
                # the cancellation came, fakeredis reads that way), so closing is also
                # checked after every read.
                while not self._closed:
                    wait = probe_after if ping_due is None else max(0.0, ping_due - loop.time())
                    message = await pubsub.get_message(timeout=wait)
                    if message is None:
                        if ping_due is not None and loop.time() >= ping_due:
                            raise redis.exceptions.TimeoutError(
                                f"no reply to PING within {reply_within:g}s (redis.socket_timeout)"
                            )
                        if ping_due is None:
                            await pubsub.ping()
                            ping_due = loop.time() + reply_within
                        continue
                    ping_due = None  # anything read shows the server is alive
                    kind = message["type"]
                    kind = kind.decode() if isinstance(kind, bytes) else kind
                    if kind == "message":
                        heard = _as_bytes(message["channel"])
                        if heard == self._handoff:
                            self._handed(message["data"])
                        elif heard == self._cancels:
                            self._cancel_heard(_as_bytes(message["data"]))
                        else:
                            self._wake(_as_bytes(message["data"]))
                    elif kind == "subscribe":
                        if _as_bytes(message["channel"]) != self._channel:
                            continue  # the hand-off channel: its confirmation says nothing new
                        if subscribed_before:
                            self._wake()
                        subscribed_before = True
                        self._subscribed = True
                        failures = 0
                        self._first_attempt.set()
                        if lost_since is not None:
                            log.warning(
                                "meetq: %s: wake-up listener reconnected after %.1fs",
                                self.name,
                                loop.time() - lost_since,
                            )
                            lost_since = None
            except Exception as exc:  # any failure: workers fall back to polling; retry
                self._subscribed = False
                self._first_attempt.set()
                if lost_since is None:
                    lost_since = loop.time()
                    log.warning(
                        "meetq: %s: wake-up listener lost its connection (%s); workers poll "
                        "every poll_interval until it is back",
                        self.name,
                        exc,
                    )
                failures += 1
                await asyncio.sleep(_LISTEN_BACKOFF.delay(failures))
            finally:
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await pubsub.aclose()

    async def heartbeat(self, types: Sequence[str], ttl_ms: int, worker: str = "") -> None:
        """Declare that a live worker handles ``types`` for the next ``ttl_ms``; a named
        ``worker`` is listed in ``inspect().workers`` for that long."""
        if types:
            await self._eval(
                _SCRIPTS["heartbeat"],
                [*self._fixed, self._workers_key],
                [ttl_ms, worker, *types],
            )

    async def _unhandled_types(self) -> list[str]:
        reply = await self._eval(_SCRIPTS["unhandled_types"], self._fixed, [])
        return [_text(t) for t in reply]

    async def _sweep_unhandled(self, unhandled_timeout_ms: int, limit: int, reason: str) -> int:
        """Dead-letter ready messages whose type no live worker handled for the timeout.

        Two steps: read the candidate types, then one script that takes those types'
        keys and re-checks everything before it moves a message.
        """
        types = await self._unhandled_types()
        if not types or limit <= 0:
            return 0
        args: list[Any] = [
            unhandled_timeout_ms,
            limit,
            self._options.dead_letter_max_size,
            self._options.dead_letter_max_age_ms,
            len(types),
        ]
        for t in types:
            args += (t, reason.format(type=t))
        swept = await self._eval(_SCRIPTS["sweep"], self._keys_with(types), args)
        return int(swept)

    async def inspect(self) -> QueueSnapshot:
        """One script: counters, lengths, dead and unhandled counts.

        It needs the keys of every type; a type it was not given comes back named, and
        the call is repeated once with it (a second round trip only the first time a
        type is seen by this instance).
        """
        return await self._run(inspect_steps(self._keys, self._options))

    async def _dead_list(self, limit: int, *, bodies: bool) -> list[Any]:
        reply: list[Any] = await self._eval(
            *dead_list_call(self._keys, self._options, limit, bodies=bodies)
        )
        return reply

    async def dead_letters(self, limit: int) -> list[DeadRecord]:
        """Up to ``limit`` dead letters, oldest first."""
        reply = await self._dead_list(limit, bodies=True)
        records = []
        for raw_id, raw_info, raw_body in dead_entries(reply, bodies=True):
            dead_id, body = _lossy_text(raw_id), raw_body or b""
            info = dead_info(raw_info)
            if isinstance(info, str):  # reported, not raised; requeue leaves it in place
                records.append(
                    DeadRecord(
                        id=dead_id,
                        type="",
                        body=body,
                        error=f"corrupt dead-letter record (in {self._key('dinfo')!r}): {info}",
                        traceback="",
                        attempts=0,
                        failed_at=0.0,
                    )
                )
                continue
            records.append(
                DeadRecord(
                    id=dead_id,
                    type=info["type"],
                    body=body,
                    error=info["error"],
                    traceback=info["traceback"],
                    attempts=info["attempts"],
                    failed_at=info["failed_at"] / 1000.0,
                    priority=info["priority"],
                )
            )
        return records

    async def maintain(self, request: Maintenance) -> int:
        """One maintenance job; each is one script after the reads it needs."""
        action = request.action
        if action == "requeue_dead":
            return await self._requeue_dead(request.limit, request.message_type)
        if action == "purge_waiting":
            return await self._purge_waiting(max(0, request.limit))
        if action == "purge_dead":
            return int(
                await self._eval(_SCRIPTS["clear_dead"], self._fixed, [max(0, request.limit)])
            )
        if action == "sweep_unhandled":
            return await self._sweep_unhandled(
                request.unhandled_timeout_ms, request.limit, request.reason
            )
        raise ValidationError("action", action, "not a maintenance action")

    async def _requeue_dead(self, max_count: int, message_type: str | None) -> int:
        """Move up to ``max_count`` oldest dead letters (of ``message_type`` only, when
        given) back to ready, attempts reset.

        Two steps: read the oldest ids with their types, then one script that takes
        those types' keys and skips any id that left the dead-letter queue meanwhile.
        """
        return await self._run(
            requeue_steps(self._keys, self._options, max_count, message_type)
        )

    async def _purge_waiting(self, limit: int) -> int:
        """Remove every waiting message (not leased ones), or at most ``limit`` > 0 of
        them; return how many."""
        members = await self._command("clear", "SMEMBERS", self._key("types"))
        types = sorted(_text(t) for t in members)
        if not types:
            return 0
        return int(await self._eval(_SCRIPTS["clear"], self._keys_with(types), [limit]))

    async def aclose(self) -> None:
        """Stop the wake-up listener; the client stays open. Safe to call again."""
        if self._closed:
            return
        self._closed = True
        self._listeners.clear()
        self.schedule_watchers.clear()
        self._deliverers.clear()
        self._cancel_callbacks.clear()
        self._subscribed = False
        await self._enqueues.aclose()
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await self._pool.release(conn)
        for orphan in list(self._orphans):
            orphan.cancel()
        listener, self._listener = self._listener, None
        while listener is not None and not listener.done():
            # Cancelled again until it ends: a cancellation swallowed by the client's
            # read (see _listen) would otherwise leave aclose(), and stop(), waiting for
            # as long as that read's timeout, or for ever. asyncio.wait, not a bare
            # await: a cancellation of aclose() itself must go on.
            listener.cancel()
            await asyncio.wait({listener}, timeout=_LISTEN_CANCEL_RETRY)
        if listener is not None and not listener.cancelled():
            listener.exception()  # retrieved (so asyncio does not warn); _listen logs its own
        if self._pool is not None:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self._pool.disconnect()


# exchange.lua's reply (its header): the settled flags, the faults, then per claimed
# message _CLAIMED_FIELDS values: id, type index (1-based, into the names passed), priority,
# body, attempt, lease token.
_EXCHANGE_FLAGS: Final = 0
_EXCHANGE_FAULTS: Final = 1
_EXCHANGE_RETRY_AFTER: Final = 2
_EXCHANGE_CLAIMED: Final = 3
_CLAIMED_FIELDS: Final = 6


def _exchange_faults(faults: Sequence[Any], names: Sequence[str]) -> dict[str, str]:
    """The skipped types, by name, with the text naming their corrupt key (the faults
    come flat: type index, text, ...)."""
    return {names[faults[i] - 1]: _text(faults[i + 1]) for i in range(0, len(faults), 2)}


def _exchange_claimed(reply: Sequence[Any], names: Sequence[str]) -> list[Claimed]:
    return [
        Claimed(
            id=_text(message_id),
            type=names[type_index - 1],
            priority=priority,
            body=body,
            attempt=attempt,
            token=_text(token),
        )
        for message_id, type_index, priority, body, attempt, token in (
            reply[i : i + _CLAIMED_FIELDS]
            for i in range(_EXCHANGE_CLAIMED, len(reply), _CLAIMED_FIELDS)
        )
    ]
