"""The contracts: what a backend must do, and what each component promises its users.

A backend implements a few primitives (``WorkQueueBackend``, ``PubSubTransport``); the
components (``meetq.queue``, ``meetq.broadcast``, ``meetq.inprocess``, ``meetq.dispatch``)
add everything users touch (validation, serialization, retry policy, statistics) once, on
top. The docstrings below *are* the contract that ``meetq.testing`` checks on every
backend. This module imports no component: the kernel names what a component promises
(``MessageQueueProtocol`` ...), the component implements it (``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from meetq.core._limits import TypeLimit
from meetq.core.tasks import Task, TaskRequest, TaskResponse, TaskSnapshot, TaskStatus
from meetq.core.types import LocalEvent, Message, PubSubMessage

__all__ = [
    "CAPABILITIES",
    "CAP_CROSS_PROCESS",
    "CAP_DURABLE",
    "CAP_LIMITS",
    "CAP_SCHEDULES",
    "CAP_TRACKING",
    "COUNTER_NAMES",
    "OUTCOME_COUNTERS",
    "Backend",
    "Claimed",
    "DeadRecord",
    "DeliveryCallback",
    "ExchangeResult",
    "LeaseRef",
    "LocalEventBusProtocol",
    "Maintenance",
    "MaintenanceAction",
    "MessageQueueProtocol",
    "PubSubProtocol",
    "PubSubTransport",
    "QueueSnapshot",
    "ScheduleStore",
    "Settlement",
    "StoredMessage",
    "StoredSchedule",
    "SyncBackend",
    "SyncWorkQueue",
    "TaskDispatcherProtocol",
    "TaskSchedulerProtocol",
    "TransportMessage",
    "WakeCallback",
    "WorkQueueBackend",
    "WorkQueueOptions",
]

#: Capability: stored messages survive the process that published them.
CAP_DURABLE = "durable"
#: Capability: separate processes share queues and channels through this backend.
CAP_CROSS_PROCESS = "cross_process"
#: Capability: the backend enforces ``WorkQueueOptions.limits`` (rate and concurrency
#: per message type) inside ``exchange``. A ``MessageQueue`` configured with limits
#: refuses to start consuming on a backend without it.
CAP_LIMITS = "limits"
#: Capability: the work queues store named schedules (``ScheduleStore``, reached through
#: the queue handle's ``schedule_store()``) and fire each of them once per fire time.
CAP_SCHEDULES = "schedules"
#: Capability: messages can be looked up, cancelled and awaited by id
#: (``meetq.core.tracking.TrackingWorkQueue``).
CAP_TRACKING = "tracking"
#: Every capability a ``BackendSpec`` may declare and a contract test may require
#: (``meetq.testing.requires``): the one list of their names.
CAPABILITIES = frozenset(
    {CAP_DURABLE, CAP_CROSS_PROCESS, CAP_LIMITS, CAP_SCHEDULES, CAP_TRACKING}
)

Outcome = Literal["ack", "retry", "dead", "drop", "release"]

#: The counters each settlement outcome adds one to: one policy, applied by every
#: backend in the same atomic step as the state change (handed over in
#: ``WorkQueueOptions.outcome_counters``). ``dead_letter`` is counted by the move into
#: the dead-letter queue itself (a sweep or a corrupt message moves one there too).
OUTCOME_COUNTERS: Mapping[str, tuple[str, ...]] = {
    "ack": ("processed",),
    "retry": ("failed", "retried"),
    "dead": ("failed",),
    "drop": ("failed", "dropped"),
    "release": (),
}

#: The totals a backend keeps: ``published`` per stored message, ``dead_letter`` per move
#: into the dead-letter queue, and the names ``OUTCOME_COUNTERS`` uses.
COUNTER_NAMES: tuple[str, ...] = (
    "published",
    "processed",
    "failed",
    "retried",
    "dead_letter",
    "dropped",
)

CounterPolicy = tuple[tuple[str, tuple[str, ...]], ...]


def _counter_policy(value: Mapping[str, Sequence[str]] | CounterPolicy) -> CounterPolicy:
    # Stored as nested tuples so the options stay hashable and compare by value.
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(outcome), tuple(names)) for outcome, names in items)


def _limit_tuple(value: Sequence[TypeLimit]) -> tuple[TypeLimit, ...]:
    return tuple(value)  # hashable, compared by value, like the counter policy


@attrs.frozen(kw_only=True)
class WorkQueueOptions:
    """Per-queue rules a backend applies itself, handed over as data (they live in core).

    - ``dead_letter_max_size`` / ``dead_letter_max_age_ms``: the dead-letter caps;
    - ``outcome_counters``: (outcome, counter names) pairs, ``OUTCOME_COUNTERS`` by
      default: the counters a settlement of that outcome adds one to;
    - ``limits``: one ``TypeLimit`` per limited message type, sorted by type (a backend
      declaring ``CAP_LIMITS`` applies them in ``exchange``; see there).
    """

    dead_letter_max_size: int = 100_000
    dead_letter_max_age_ms: int = 7 * 86_400_000
    outcome_counters: CounterPolicy = attrs.field(
        default=_counter_policy(OUTCOME_COUNTERS), converter=_counter_policy
    )
    limits: tuple[TypeLimit, ...] = attrs.field(default=(), converter=_limit_tuple)

    def counters_for(self, outcome: str) -> tuple[str, ...]:
        """The counter names a settlement with ``outcome`` adds one to."""
        for name, counters in self.outcome_counters:
            if name == outcome:
                return counters
        return ()


@attrs.frozen(kw_only=True)
class StoredMessage:
    """A message as handed to a backend: routing fields plus its encoded body.

    ``delay_ms`` > 0 makes it invisible to workers until that many milliseconds (of the
    backend's clock) have passed. ``dedup_key`` non-None: while a message with the same
    key is waiting or running, enqueueing returns that message's id and stores nothing.
    """

    id: str
    type: str
    priority: int
    body: bytes
    delay_ms: int = 0
    dedup_key: str | None = None


@attrs.frozen(kw_only=True)
class Claimed:
    """One delivery: the message, its 1-based attempt number and the lease token.

    The backend makes the token and returns it here as it recorded it; core only ever
    hands it back (``LeaseRef.token``) and never builds one."""

    id: str
    type: str
    priority: int
    body: bytes
    attempt: int
    token: str


@attrs.frozen(kw_only=True)
class LeaseRef:
    """Names one delivery; only the holder of the current token may settle it."""

    id: str
    type: str
    token: str


@attrs.frozen(kw_only=True)
class Settlement:
    """What became of one delivery.

    - ``ack``: done; every trace of the message is removed.
    - ``retry``: back to waiting after ``delay_ms`` (computed by core: the backoff is
      core's); counts as a failed attempt.
    - ``dead``: moved to the dead-letter queue with ``error`` and ``traceback``.
    - ``drop``: removed without a dead letter (dead-letter queue disabled); counted.
    - ``release``: back to waiting at once, at its old position, the attempt not charged.

    The counters each outcome adds to are ``WorkQueueOptions.outcome_counters``.
    ``record`` and ``keep_ms`` are for a ``CAP_TRACKING`` backend only (the finished
    record to keep, and for how long: ``meetq.core.tracking``); others ignore them.
    """

    lease: LeaseRef
    outcome: Outcome
    delay_ms: int = 0
    error: str = ""
    traceback: str = ""
    record: bytes = b""
    keep_ms: int = 0


@attrs.frozen(kw_only=True)
class ExchangeResult:
    """``settled[i]`` is False when settlement i was refused (its lease was lost).

    ``retry_after_ms`` > 0: a ready message of the claimed types waits only for a rate
    limit's next token, due in that many milliseconds (the caller may sleep exactly that
    instead of polling); 0: nothing waits for a token."""

    settled: list[bool]
    claimed: list[Claimed]
    retry_after_ms: int = 0


@attrs.frozen(kw_only=True)
class DeadRecord:
    """A dead letter as stored: the raw body beside why and when it died."""

    id: str
    type: str
    body: bytes
    error: str
    traceback: str
    attempts: int
    failed_at: float
    priority: int = 1


@attrs.frozen(kw_only=True)
class QueueSnapshot:
    """One look at a queue, taken in one round trip (``WorkQueueBackend.inspect``).

    - ``waiting``: messages waiting (ready or scheduled) by priority value, keys 0..3;
    - ``processing``: messages leased to a worker now;
    - ``dead``: dead letters kept, after the size and age caps are applied;
    - ``unhandled``: ready messages whose type no live worker handles now;
    - ``counters``: the totals, one entry per name in ``COUNTER_NAMES``;
    - ``delayed``: of ``waiting``, the messages held back (a delay or a retry's backoff)
      and not yet made ready; one whose time has come may still count here until an
      ``exchange`` of its type makes it ready;
    - ``workers``: every type a live worker handles -> the names of the workers whose
      ``heartbeat(..., worker=name)`` for it has not expired, sorted (a heartbeat without
      a name keeps the type alive and lists no worker);
    - ``oldest_age``: seconds the longest-waiting deliverable message has waited since
      it became ready (its publish, or the end of its delay, backoff or lease), 0.0
      when none is ready; a delayed message whose time has come counts from its due
      time even before an ``exchange`` makes it ready. None: the backend does not know.
      A backend may look only at the first few messages of each type and priority in
      delivery order (Redis looks at 16): a message that went back to the front (a
      release) hides older ones behind it;
    - ``cancelled``: messages removed by a cancel (backends with ``CAP_TRACKING``).

    ``delayed``, ``workers``, ``oldest_age`` and ``cancelled`` have defaults so a
    backend written before them still builds a snapshot; the contract suite checks them.
    """

    waiting: dict[int, int]
    processing: int
    dead: int
    unhandled: int
    counters: dict[str, int]
    delayed: int = 0
    workers: dict[str, list[str]] = attrs.field(factory=dict)
    oldest_age: float | None = None
    cancelled: int = 0


MaintenanceAction = Literal["requeue_dead", "purge_waiting", "purge_dead", "sweep_unhandled"]


@attrs.frozen(kw_only=True)
class Maintenance:
    """One maintenance job for ``WorkQueueBackend.maintain``; its result is a count.

    - ``requeue_dead``: move up to ``limit`` oldest dead letters (of ``message_type``
      only, when it is not None) back to ready, attempts reset, at the back of their
      priority; a record without a readable type or priority stays a dead letter (and
      does not count against ``limit``). Returns how many moved.
    - ``purge_waiting``: remove every waiting message (not leased ones), or at most
      ``limit`` of them when ``limit`` > 0; how many.
    - ``purge_dead``: remove every dead letter and its body, or the ``limit`` oldest when
      ``limit`` > 0; how many.
    - ``sweep_unhandled``: dead-letter up to ``limit`` ready messages of types no live
      worker handled (``heartbeat``) for ``unhandled_timeout_ms``, counted from the later
      of the message becoming ready and the type's last handler going away. Each one's
      error is ``reason.format(type=<its type>)``. Returns how many.
    """

    action: MaintenanceAction
    limit: int = 0
    unhandled_timeout_ms: int = 0
    reason: str = ""
    message_type: str | None = None


#: A wake-up callback: cheap, never raises, called on the event loop's thread.
WakeCallback = Callable[[], None]
#: Takes a delivery a backend handed over at enqueue (``listen``): True when the caller
#: runs it, False when the backend must release it. The same rules as ``WakeCallback``.
DeliveryCallback = Callable[[Claimed], bool]


@runtime_checkable
class WorkQueueBackend(Protocol):
    """Storage and delivery for one named work queue: a name and nine calls.

    Guarantees every implementation gives:

    - **Atomic enqueue**: ``enqueue`` stores all of its messages or none.
    - **Strict priority**: ``exchange`` hands out, among the ready messages of the
      requested types, the highest priority first and FIFO within a priority.
    - **No loss window**: taking a message and recording its lease is one atomic step.
      A lease that is not extended before it expires makes the message ready again
      (with its attempt already charged); a settlement or extension that carries a
      token other than the current one is refused and changes nothing.
    - **Bounded growth**: after ``ack``/``drop`` nothing of the message remains; the
      dead-letter queue keeps at most ``dead_letter_max_size`` entries, none older than
      ``dead_letter_max_age_ms``.
    - **Counters** (``inspect().counters``) change in the same atomic step as the state:
      ``published`` per stored message, ``dead_letter`` per move into the dead-letter
      queue, and for each applied settlement the names ``options.counters_for(outcome)``.
    - After the backend is closed every call raises ``ClosedError``.
    """

    name: str

    async def enqueue(self, messages: Sequence[StoredMessage]) -> list[str]:
        """Store all ``messages`` atomically; return their ids (a dedup hit: the holder's).

        An id already stored (waiting, running or dead-lettered) stores nothing and
        returns that id. A message ready at once wakes the listeners (``listen``)."""
        ...

    async def exchange(
        self,
        settlements: Sequence[Settlement],
        *,
        types: Sequence[str],
        claim: int,
        lease_ms: int,
    ) -> ExchangeResult:
        """Apply ``settlements``, then lease up to ``claim`` ready messages of ``types``.

        Due delayed messages and expired leases of ``types`` become ready first; each
        claimed message carries the token the backend recorded for its lease. One round
        trip, so a busy worker pays one network hop per batch. A message made ready at
        once (a release, a retry without delay, more promoted than claimed) wakes the
        listeners.

        Limits (``options.limits``, backends declaring ``CAP_LIMITS``), applied in the
        same atomic step for every caller in every process: a type with ``concurrency``
        N is not leased while N of its messages are leased (to anyone); a rate-limited
        type is leased only while its token bucket (``burst`` tokens, refilled at
        ``rate_per_ms`` on the backend's clock, full at first) holds a whole token, and
        each lease takes one. A message held back by a limit stays ready — never
        charged an attempt, never failed — the other types are claimed as usual, and
        strict priority holds among the messages a limit lets through. When a
        settlement frees a slot of a concurrency-limited type that has ready messages,
        the listeners are woken; when a token is what a ready message waits for,
        ``retry_after_ms`` says when it comes. A type with a limit is never handed over
        at enqueue (``listen``).
        """
        ...

    async def extend(self, leases: Sequence[LeaseRef], lease_ms: int) -> list[bool]:
        """Push the deadline of each held lease ``lease_ms`` ahead; False where lost."""
        ...

    async def listen(
        self, callback: WakeCallback, deliver: DeliveryCallback | None = None
    ) -> Callable[[], None]:
        """Call ``callback()`` whenever a message may have become ready; return a
        function that ends the calls (idempotent).

        A backend MAY hand a message over at enqueue instead: when an exchange of the
        caller that passed ``deliver`` left it idle (it claimed fewer than it asked),
        the backend may lease the next message of its types to it — a delivery like
        one ``exchange`` returns, attempt and token recorded, every guarantee above
        kept (a message of those types ready ahead of it goes first) — and pass it to
        ``deliver(claimed)``. The caller runs it and settles it through ``exchange``
        (True), or refuses it (False: no free slot, stopping), and then the backend
        releases it, uncharged. An ``exchange`` that claims nothing ends the hand-offs
        to its caller. Backends that never hand over ignore ``deliver``.

        Returns once the wake-up path is primed, so a message stored after ``listen``
        returns leads to a call — or, when the path is down, within a bounded time
        anyway (core's ``poll_interval`` timer covers the gap). Calls may be spurious:
        callers re-check with ``exchange``. After the path was interrupted (a reconnect)
        ``callback`` is called once, since wake-ups sent meanwhile are lost. Every
        listener gets every wake-up.
        """
        ...

    async def heartbeat(self, types: Sequence[str], ttl_ms: int, worker: str = "") -> None:
        """Declare that a live worker handles ``types`` for the next ``ttl_ms``; a
        non-empty ``worker`` names it in ``inspect().workers`` for that long."""
        ...

    async def inspect(self) -> QueueSnapshot:
        """Lengths, delayed, dead and unhandled counts, the totals and the live workers,
        in one round trip (see ``QueueSnapshot``)."""
        ...

    async def dead_letters(self, limit: int) -> list[DeadRecord]:
        """Up to ``limit`` dead letters, oldest first."""
        ...

    async def maintain(self, request: Maintenance) -> int:
        """Run one maintenance job (see ``Maintenance``); return its count."""
        ...

    async def aclose(self) -> None:
        """Stop the wake-up path; later calls raise ``ClosedError``. Idempotent."""
        ...


@attrs.frozen(kw_only=True)
class StoredSchedule:
    """A named schedule as a backend keeps it (``ScheduleStore``).

    ``definition`` is core's encoding of it (canonical JSON; the backend never reads
    it, only compares it); ``revision`` changes each time a different definition is
    stored under the name; ``next_fire_ms`` is its next fire time, Unix milliseconds.
    """

    name: str
    definition: bytes
    revision: str
    next_fire_ms: int


@runtime_checkable
class ScheduleStore(Protocol):
    """The named schedules of one work queue (capability ``CAP_SCHEDULES``): a work
    queue handle of a backend declaring it has ``schedule_store() -> ScheduleStore``.

    Core computes every fire time (``meetq.core._schedules``); the store keeps them and
    applies each fire step atomically:

    - **Exactly once per fire time**: ``fire`` is a compare-and-set. It applies only
      when the schedule still has ``revision`` and its stored next fire time is
      ``expected_ms``; then, in one atomic step, it stores ``message`` exactly as
      ``WorkQueueBackend.enqueue`` would (wake-ups included) and sets the next fire
      time to ``next_ms``. Otherwise it changes nothing. A caller that dies before or
      after the step leaves the schedule whole: fired or not, never half.
    - A corrupt stored record fails the call naming its key, with nothing written.
    - Every call ends within the backend's bound; after the backend's ``aclose`` it
      raises ``ClosedError``.
    """

    async def put(self, schedule: StoredSchedule) -> StoredSchedule:
        """Store ``schedule`` under its name and return what is stored: when the
        stored one has the same ``definition`` it is kept as it is (its revision and
        next fire time: storing an unchanged schedule again moves nothing), else
        ``schedule`` replaces it (or is added). A change wakes the watchers."""
        ...

    async def remove(self, name: str) -> bool:
        """Delete the schedule ``name``; False when there was none. Wakes the watchers."""
        ...

    async def list(self) -> list[StoredSchedule]:
        """Every schedule of the queue, by name. A stored record the backend cannot
        read comes back with ``revision`` "" and its raw bytes as ``definition``: core
        lists it with an error and never fires it."""
        ...

    async def fire(
        self, name: str, *, revision: str, expected_ms: int, next_ms: int,
        message: StoredMessage | None,
    ) -> bool:
        """The compare-and-set above; True when it applied (``message`` None: only the
        next fire time moves, a skipped fire)."""
        ...

    async def watch(self, callback: WakeCallback) -> Callable[[], None]:
        """Call ``callback()`` (cheap, never raising, on the loop's thread) after a
        ``put`` that changed something or a ``remove``, from any process sharing the
        store, until the returned function is called. Best effort across processes (a
        lost connection loses wake-ups; callers re-read now and then)."""
        ...


@attrs.frozen(kw_only=True)
class TransportMessage:
    """One message a ``PubSubTransport`` received: full channel name, matching pattern."""

    channel: str
    data: bytes
    pattern: str | None = None


@runtime_checkable
class PubSubTransport(Protocol):
    """At-most-once broadcast of byte strings on named channels: one "connection".

    Guarantees every implementation gives (``meetq.testing.PubSubContract`` checks them):

    - **Confirmed subscriptions**: ``subscribe``/``psubscribe`` return once the
      subscription is in force: a message published after that reaches ``messages()``.
    - **Order**: messages of one channel arrive in the order they were published.
    - **Patterns** follow Redis's ``PSUBSCRIBE`` glob rules byte for byte on the UTF-8
      channel name (``*``, ``?``, ``[...]`` with ranges, ``^`` negation and ``\\``
      escapes; a reversed range ``[b-a]`` means ``[a-b]``, ``[]`` matches nothing, an
      unclosed ``[`` runs to the end). No pattern may break a later publish.
    - **At most once**: on a lost connection the transport reconnects with backoff,
      re-subscribes everything and then calls the ``on_reconnect`` callbacks; messages
      published meanwhile are lost.
    - **Bounded time**: every call ends within the backend's configured bound, raising
      ``BackendUnavailableError``; after ``aclose()`` every call raises ``ClosedError``.
    """

    name: str

    async def publish(self, channel: str, data: bytes) -> int:
        """Send ``data`` to ``channel``; return how many subscriptions received it (as
        Redis counts: one per matching channel subscription or pattern, so a connection
        holding both a channel and a matching pattern counts twice)."""
        ...

    async def publish_many(self, channel: str, items: Sequence[bytes]) -> list[int]:
        """``publish`` each of ``items`` in order, in as few round trips as the backend
        can; one receiver count per item."""
        ...

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Subscribe to each of ``channels`` (exact names); return once confirmed.
        Subscribing to a channel already held is harmless."""
        ...

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Stop receiving ``channels``; names not held are ignored. A message already
        received stays in ``messages()``."""
        ...

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        """Subscribe to each glob of ``patterns``; return once confirmed. A received
        message then carries the ``pattern`` it matched."""
        ...

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        """Stop receiving ``patterns``; patterns not held are ignored."""
        ...

    def messages(self) -> AsyncIterator[TransportMessage]:
        """Every received message, in arrival order, for one consumer (the PubSub
        reader); the iteration ends when the transport is closed."""
        ...

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` after each reconnect, once every subscription is renewed
        (a transport that never disconnects accepts it and never calls it)."""
        ...

    @property
    def reconnects(self) -> int:
        """How many times the transport has reconnected since it was made."""
        ...

    async def aclose(self) -> None:
        """Close the connection; ``messages()`` ends; later calls raise ``ClosedError``.
        Idempotent."""
        ...


@runtime_checkable
class Backend(Protocol):
    """What a backend plugin provides: factories for the component primitives."""

    name: str
    capabilities: frozenset[str]

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> WorkQueueBackend:
        """A handle on the queue named ``queue_name``: every call with one name reaches the
        same stored queue. Core calls it once per backend and name (it caches the handle
        and checks that every opener asks for the same ``options``)."""
        ...

    def pubsub_transport(self) -> PubSubTransport: ...

    async def aclose(self) -> None:
        """Release everything (idempotent). Afterwards every call on the queues and
        transports it made raises ``ClosedError``: the same on every backend, checked by
        the contract suite."""
        ...


class SyncWorkQueue(Protocol):
    """The producer's side of one work queue, for plain (non-async) code: ``meetq.sync``.

    The same stored queue as ``WorkQueueBackend`` with the same name, and the same
    semantics for these three calls (core validates and encodes first). Safe to call
    from many threads at once; no event loop needed. Every call ends within the
    backend's configured bound (``BackendUnavailableError``); after the backend's
    ``close`` it raises ``ClosedError``.
    """

    def enqueue(self, messages: Sequence[StoredMessage]) -> list[str]:
        """As ``WorkQueueBackend.enqueue``: all or none, a dedup hit returns the holder."""
        ...

    def inspect(self) -> QueueSnapshot:
        """As ``WorkQueueBackend.inspect``."""
        ...

    def maintain(self, request: Maintenance) -> int:
        """As ``WorkQueueBackend.maintain`` (the sync producer asks ``requeue_dead``)."""
        ...


@runtime_checkable
class SyncBackend(Protocol):
    """A backend's blocking face, built by ``BackendSpec.sync_factory``.

    It reaches the same queues and channels as the async backend built from the same
    config (another process on one Redis; the in-process broker on memory). Thread-safe;
    after ``os.fork`` the child must not share the parent's connections (rebuild them).
    """

    name: str

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> SyncWorkQueue: ...

    def publish(self, channel: str, data: bytes) -> int:
        """As ``PubSubTransport.publish``: ``channel`` is the full (namespaced) name."""
        ...

    def close(self) -> None:
        """Release connections (idempotent); later calls raise ``ClosedError``."""
        ...


MessageHandler = Callable[[Message], Any]


class MessageQueueProtocol(Protocol):
    """A reliable priority work queue (see ``meetq.MessageQueue`` for the full contract)."""

    def register_handler(self, message_type: str, handler: MessageHandler) -> None: ...

    async def publish(self, message: Message, *, delay: float | None = None) -> str: ...

    async def publish_batch(self, messages: Sequence[Message]) -> list[str]: ...

    async def start(self) -> None: ...

    async def stop(self, grace: float | None = None) -> None: ...

    async def stats(self) -> Mapping[str, Any]: ...


class PubSubProtocol(Protocol):
    """Cross-process broadcast: every subscriber of a channel receives each message."""

    async def subscribe(self, channel: str, handler: Callable[[PubSubMessage], Any]) -> None: ...

    async def publish(self, channel: str, message: PubSubMessage) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def stats(self) -> Mapping[str, Any]: ...


class LocalEventBusProtocol(Protocol):
    """In-process events: per-handler order, non-blocking emit, counted overflow."""

    def on(self, event_type: str, handler: Callable[[LocalEvent], Any]) -> None: ...

    def emit(
        self, event_type: str, payload: Mapping[str, Any], source: str | None = None
    ) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> Mapping[str, Any]: ...


class TaskSchedulerProtocol(Protocol):
    """Runs in-process tasks by priority, at a set time, with timeout, retry and cancel.

    In-process only, on every backend: a task holds a Python callable, so it is never
    persisted and never crosses a process (see ``meetq.TaskScheduler``).

    - ``submit_task`` never blocks and returns the task's id. It raises ``ValidationError``
      for a bad task, an id already waiting or running, or a delayed task while delayed
      tasks are disabled; ``QueueFull`` when ``buffer_size`` tasks are waiting (pending,
      scheduled or retrying); ``ClosedError`` after ``stop()``.
    - **Strict priority**: among ready tasks the highest priority starts first, FIFO (by
      the moment it became ready) within a priority; at most ``workers`` run at once.
    - **Time**: a delayed task is not started before its ``scheduled_at``; nothing polls.
    - **Timeout and retry**: an attempt past its ``timeout`` is cancelled and counts as a
      failed attempt; failed attempts are retried up to ``max_retries`` times after an
      exponential backoff, without holding a worker while waiting. The last attempt's
      outcome is final: ``completed``, ``failed`` or ``timed_out``.
    - **Cancel**: ``cancel_task`` ends a waiting or running task as ``cancelled`` (True),
      or returns False for an unknown or final one.
    - A handler's exception ends its attempt only. No lock is held across user code;
      ``stop()`` from inside a handler does not deadlock.
    - ``stop(grace)`` refuses new tasks, cancels waiting ones, lets running ones finish
      within ``grace`` seconds, then cancels them. Idempotent.
    """

    def submit_task(self, task: Task) -> str: ...

    def cancel_task(self, task_id: str) -> bool: ...

    def get_task(self, task_id: str) -> TaskSnapshot | None: ...

    def status(self, task_id: str) -> TaskStatus | None: ...

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskSnapshot: ...  # noqa: ASYNC109  (waits without cancelling the task)

    async def start(self) -> None: ...

    async def stop(self, grace: float | None = None) -> None: ...

    def stats(self) -> Mapping[str, Any]: ...


class TaskDispatcherProtocol(Protocol):
    """Routes typed task requests to registered services and tracks their status.

    Built only on the MessageQueue (and optionally PubSub) public API, so it behaves the
    same on every backend (see ``meetq.TaskDispatcher`` and ``docs/task-dispatcher.md``).

    - **Routing**: ``register_route(type, service)`` names the one service that runs a
      type. With routing on, a task is claimed only by processes that ``serve`` its type
      under that service name; a type without route raises ``ValidationError`` naming
      ``request.type`` and listing the known types. With routing off every task goes to
      the shared queue and any process serving its type may run it.
    - **Dispatch** returns at once with status ``pending``; bad input raises
      ``ValidationError`` naming the field and publishes nothing. ``dispatch_batch``
      validates every request first and publishes all or none. ``ClosedError`` after
      ``stop()``.
    - **Execution** is the MessageQueue's: at least once, each attempt limited to the
      request's ``timeout``, failures retried up to ``max_retries`` times, then
      dead-lettered. A handler may run more than once for one task: make it idempotent.
    - **Status** travels back as MessageQueue messages addressed to the dispatching
      object (at least once, applied idempotently and in any order): ``running`` and
      ``retrying`` are best effort; the final ``completed``/``failed`` report is stored
      before the attempt is acknowledged. A task with no final report within
      ``timeout * (max_retries + 1)`` plus the retry backoff plus ``deadline_margin``
      becomes ``timed_out``; a later final report still updates it (the callback does
      not run again). ``stop()`` turns unfinished tasks ``cancelled``.
    - **Callbacks** run once per task, on its first final status; a raising callback is
      logged and counted in ``callbacks_failed``. With callbacks disabled a request
      carrying one raises ``ValidationError``.
    - Records live in the dispatching process only; the last ``keep_finished`` finished
      ones are kept. On a backend with ``CAP_TRACKING`` the task's message is visible
      and cancellable from any process (``task_status``, ``task_result``,
      ``cancel_task``: the ``MessageQueue`` calls by the task's id).
    """

    async def dispatch_task(self, request: TaskRequest) -> TaskResponse: ...

    async def dispatch_batch(self, requests: Sequence[TaskRequest]) -> list[TaskResponse]: ...

    def get_task_status(self, task_id: str) -> TaskResponse | None: ...

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResponse: ...  # noqa: ASYNC109  (waits without cancelling the task)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> Mapping[str, Any]: ...
