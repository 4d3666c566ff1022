"""RedisWorkQueue at the backend level, on fakeredis and on a real redis-server.

The contract suite checks the behaviour users see through ``MessageQueue``; these tests
drive the primitives directly and also look at the keys, to check what the contract
cannot see from outside: nothing is left behind, scripts survive a SCRIPT FLUSH, and
wake-ups travel between clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from meetq.backends.redis._work_queue import RedisWorkQueue
from meetq.core.errors import BackendUnavailableError
from meetq.core.protocols import (
    Claimed,
    LeaseRef,
    Maintenance,
    Settlement,
    StoredMessage,
    WorkQueueBackend,
    WorkQueueOptions,
)
from meetq.queue._message_queue import unhandled_reason
from meetq.testing._redis_server import free_port
from meetq.testing.work_queue_suite import eventually

# Keys that may outlive every message: totals, the position sequence, type bookkeeping.
_LASTING = {"counts", "seq", "types", "handlers"}


class _Server:
    """Makes clients of one server (fake or real) and closes them at the end."""

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self.url = url
        self._fake = fakeredis.FakeServer() if kind == "fake" else None
        self._clients: list[Any] = []

    def client(self) -> Any:
        if self._fake is not None:
            client = fakeredis.FakeAsyncRedis(server=self._fake)
        else:
            assert self.url is not None
            client = aioredis.Redis.from_url(self.url)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture(params=["fake", "real"])
def server_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest_asyncio.fixture
async def server(server_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[_Server]:
    url = request.getfixturevalue("meetq_redis_url") if server_kind == "real" else None
    made = _Server(server_kind, url)
    yield made
    await made.aclose()


MakeQueue = Callable[..., RedisWorkQueue]


@pytest_asyncio.fixture
async def make(server: _Server, meetq_namespace: str) -> AsyncIterator[MakeQueue]:
    queues: list[RedisWorkQueue] = []

    def make_queue(client: Any = None, name: str = "jobs", **options: Any) -> RedisWorkQueue:
        queue = RedisWorkQueue(
            client if client is not None else server.client(),
            name,
            WorkQueueOptions(**options),
            key_prefix=meetq_namespace,
        )
        queues.append(queue)
        return queue

    yield make_queue
    for queue in queues:
        await queue.aclose()


def msg(i: int | str, *, type: str = "job", priority: int = 1, **kw: Any) -> StoredMessage:
    return StoredMessage(id=f"m{i}", type=type, priority=priority, body=f"body-{i}".encode(), **kw)


def sweep(timeout_ms: int, limit: int) -> Maintenance:
    return Maintenance(
        action="sweep_unhandled",
        limit=limit,
        unhandled_timeout_ms=timeout_ms,
        reason=unhandled_reason(timeout_ms),
    )


def lease(c: Claimed) -> LeaseRef:
    return LeaseRef(id=c.id, type=c.type, token=c.token)


def settle(c: Claimed, outcome: Any, **kw: Any) -> Settlement:
    return Settlement(lease=lease(c), outcome=outcome, **kw)


async def claim(
    q: WorkQueueBackend, n: int = 100, types: tuple[str, ...] = ("job",), lease_ms: int = 30_000
) -> list[Claimed]:
    return (await q.exchange([], types=list(types), claim=n, lease_ms=lease_ms)).claimed


async def keys_of(q: RedisWorkQueue) -> dict[str, str]:
    """Every key of the queue: short name -> Redis type."""
    client = q._client
    prefix = q._prefix
    found: dict[str, str] = {}
    async for key in client.scan_iter(match=f"{prefix}*".replace("{", "\\{").replace("}", "\\}")):
        name = key.decode() if isinstance(key, bytes) else key
        kind = await client.type(name)
        found[name[len(prefix):]] = kind.decode() if isinstance(kind, bytes) else kind
    return found


async def wait_past(ms: float) -> None:
    """Let ``ms`` milliseconds of (server) time pass: leases and delays are clocked."""
    await asyncio.sleep(ms / 1000)


# -- ordering ------------------------------------------------------------------------


async def test_strict_priority_then_fifo(make: MakeQueue) -> None:
    q = make()
    order = [(0, 0), (1, 3), (2, 1), (3, 3), (4, 0), (5, 2), (6, 1), (7, 3)]
    await q.enqueue([msg(i, priority=p) for i, p in order])
    got = await claim(q)
    assert [c.id for c in got] == ["m1", "m3", "m7", "m5", "m2", "m6", "m0", "m4"]
    assert [c.priority for c in got] == [3, 3, 3, 2, 1, 1, 0, 0]
    assert all(c.attempt == 1 for c in got)
    assert got[0].body == b"body-1"


async def test_claim_takes_global_best_across_types(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1, type="a", priority=1), msg(2, type="b", priority=2)])
    await q.enqueue([msg(3, type="a", priority=2), msg(4, type="c", priority=3)])
    got = await claim(q, 2, types=("a", "b"))
    assert [(c.id, c.type) for c in got] == [("m2", "b"), ("m3", "a")]
    rest = await claim(q, 5, types=("b", "a"))
    assert [c.id for c in rest] == ["m1"]
    assert (await q.inspect()).waiting == {0: 0, 1: 0, 2: 0, 3: 1}  # m4, type c


async def test_claim_is_bounded_and_tokens_are_distinct(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(i) for i in range(10)])
    first = await claim(q, 4)
    second = await claim(q, 4)
    assert [c.id for c in first + second] == [f"m{i}" for i in range(8)]
    assert len({c.token for c in first + second}) == 8
    assert (await q.inspect()).processing == 8
    assert (await q.inspect()).waiting == {0: 0, 1: 2, 2: 0, 3: 0}


# -- enqueue ----------------------------------------------------------------------------


async def test_batch_is_all_or_nothing(make: MakeQueue) -> None:
    q = make()
    bad = StoredMessage(id="bad", type="job", priority=7, body=b"x")
    with pytest.raises(BackendUnavailableError):
        await q.enqueue([msg(1), msg(2), bad])
    assert (await q.inspect()).waiting == {0: 0, 1: 0, 2: 0, 3: 0}
    assert (await q.inspect()).counters["published"] == 0
    assert not {k for k in await keys_of(q) if k.startswith(("m:", "ready:"))}
    assert await q.enqueue([msg(1), msg(2)]) == ["m1", "m2"]
    assert (await q.inspect()).counters["published"] == 2


async def test_dedup_within_batch_and_while_waiting_or_running(make: MakeQueue) -> None:
    q = make()
    ids = await q.enqueue([msg(1, dedup_key="k"), msg(2, dedup_key="k"), msg(3, dedup_key="")])
    assert ids == ["m1", "m1", "m3"]
    assert await q.enqueue([msg(4, dedup_key="k")]) == ["m1"]
    assert (await q.inspect()).waiting == {0: 0, 1: 2, 2: 0, 3: 0}
    running = await claim(q, 1)
    assert await q.enqueue([msg(5, dedup_key="k")]) == ["m1"]  # still running
    await q.exchange([settle(running[0], "ack")], types=[], claim=0, lease_ms=1)
    assert await q.enqueue([msg(6, dedup_key="k")]) == ["m6"]
    assert (await q.inspect()).counters["published"] == 3


async def test_dead_letter_frees_the_dedup_key(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1, dedup_key="k")])
    [c] = await claim(q)
    await q.exchange([settle(c, "dead", error="E")], types=[], claim=0, lease_ms=1)
    assert await q.enqueue([msg(2, dedup_key="k")]) == ["m2"]


async def test_same_id_twice_is_stored_once(make: MakeQueue) -> None:
    q = make()
    assert await q.enqueue([msg(1), msg(1)]) == ["m1", "m1"]
    assert await q.enqueue([msg(1)]) == ["m1"]
    assert len(await claim(q)) == 1
    assert (await q.inspect()).counters["published"] == 1


# -- leases -----------------------------------------------------------------------------


async def test_expired_lease_is_reclaimed_with_the_attempt_charged(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1)])
    [old] = await claim(q, lease_ms=100)
    assert await claim(q) == []
    await wait_past(150)
    [new] = await claim(q)
    assert new.id == old.id and new.attempt == 2 and new.token != old.token
    # The stuck worker's late ack and extension change nothing...
    late = await q.exchange([settle(old, "ack")], types=[], claim=0, lease_ms=1)
    assert late.settled == [False]
    assert await q.extend([lease(old)], 10_000) == [False]
    assert (await q.inspect()).processing == 1
    # ...while the current holder settles normally.
    done = await q.exchange([settle(new, "ack")], types=[], claim=0, lease_ms=1)
    assert done.settled == [True]
    assert (await q.inspect()).counters["processed"] == 1
    assert (await q.inspect()).processing == 0


async def test_extend_keeps_the_lease(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1), msg(2)])
    held, lost = await claim(q, 2, lease_ms=150)
    wrong = LeaseRef(id=lost.id, type=lost.type, token="not-the-token")
    assert await q.extend([lease(held), wrong], 10_000) == [True, False]
    await wait_past(250)
    again = await claim(q)
    assert [c.id for c in again] == [lost.id]  # only the unextended one expired
    settled = await q.exchange([settle(held, "ack")], types=[], claim=0, lease_ms=1)
    assert settled.settled == [True]


async def test_settlement_with_a_wrong_type_is_refused(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1)])
    [c] = await claim(q)
    wrong = Settlement(lease=LeaseRef(id=c.id, type="other", token=c.token), outcome="ack")
    assert (await q.exchange([wrong], types=[], claim=0, lease_ms=1)).settled == [False]
    assert (await q.exchange([settle(c, "ack")], types=[], claim=0, lease_ms=1)).settled == [True]


# -- settlements ------------------------------------------------------------------------


async def test_retry_waits_its_delay_and_charges_the_attempt(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1)])
    [c] = await claim(q)
    result = await q.exchange([settle(c, "retry", delay_ms=200)], types=["job"], claim=5,
                              lease_ms=1000)
    assert result.settled == [True] and result.claimed == []
    assert (await q.inspect()).waiting == {0: 0, 1: 1, 2: 0, 3: 0}
    assert (await q.inspect()).processing == 0
    await wait_past(250)
    [again] = await claim(q)
    assert again.id == "m1" and again.attempt == 2
    counts = (await q.inspect()).counters
    assert (counts["failed"], counts["retried"]) == (1, 1)


async def test_retried_message_keeps_its_position(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1), msg(2)])
    [first] = await claim(q, 1)
    await q.exchange([settle(first, "retry")], types=[], claim=0, lease_ms=1)
    assert [c.id for c in await claim(q)] == ["m1", "m2"]


async def test_release_keeps_position_and_does_not_charge(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(i) for i in range(3)])
    [first] = await claim(q, 1)
    back = await q.exchange([settle(first, "release")], types=["job"], claim=2, lease_ms=1000)
    assert back.settled == [True]
    assert [(c.id, c.attempt) for c in back.claimed] == [("m0", 1), ("m1", 1)]
    assert (await q.inspect()).processing == 2
    assert (await q.inspect()).waiting == {0: 0, 1: 1, 2: 0, 3: 0}


async def test_dead_letter_keeps_body_and_reason_beside_it(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1, priority=2)])
    [c] = await claim(q)
    before = time.time()
    await q.exchange([settle(c, "dead", error="ValueError: x", traceback="Traceback ...")],
                     types=[], claim=0, lease_ms=1)
    [dead] = await q.dead_letters(10)
    assert dead.id == "m1" and dead.type == "job" and dead.body == b"body-1"
    assert (dead.error, dead.traceback, dead.attempts) == ("ValueError: x", "Traceback ...", 1)
    assert dead.priority == 2
    assert dead.failed_at == pytest.approx(before, abs=30)
    counts = (await q.inspect()).counters
    assert (counts["failed"], counts["dead_letter"]) == (1, 1)
    assert (await q.inspect()).dead == 1
    assert (await q.inspect()).processing == 0


async def test_drop_removes_and_counts(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1)])
    [c] = await claim(q)
    await q.exchange([settle(c, "drop")], types=[], claim=0, lease_ms=1)
    counts = (await q.inspect()).counters
    assert (counts["failed"], counts["dropped"], counts["dead_letter"]) == (1, 1, 0)
    assert (await q.inspect()).dead == 0


async def test_one_exchange_settles_and_claims(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(i) for i in range(4)])
    a, b = await claim(q, 2)
    result = await q.exchange(
        [settle(a, "ack"), settle(b, "retry", delay_ms=60_000), settle(a, "ack")],
        types=["job"], claim=10, lease_ms=1000,
    )
    assert result.settled == [True, True, False]  # the second ack of m0 finds no lease
    assert [c.id for c in result.claimed] == ["m2", "m3"]
    assert (await q.inspect()).counters == {
        "published": 4, "processed": 1, "failed": 1, "retried": 1, "dead_letter": 0, "dropped": 0
    }


# -- dead-letter queue ------------------------------------------------------------------


async def _kill(q: RedisWorkQueue, n: int, start: int = 0) -> None:
    await q.enqueue([msg(i) for i in range(start, start + n)])
    claimed = await claim(q, n)
    await q.exchange([settle(c, "dead", error=f"E{c.id}") for c in claimed],
                     types=[], claim=0, lease_ms=1)


async def test_dead_letter_queue_is_capped_by_size_oldest_first(make: MakeQueue) -> None:
    q = make(dead_letter_max_size=3)
    await _kill(q, 5)
    dead = await q.dead_letters(10)
    assert [d.id for d in dead] == ["m2", "m3", "m4"]
    assert [d.error for d in dead] == ["Em2", "Em3", "Em4"]
    assert (await q.inspect()).counters["dead_letter"] == 5
    bodies = await q._client.hkeys(q._key("m:body"))
    assert sorted(bodies) == [b"m2", b"m3", b"m4"]  # trimmed bodies went too


async def test_dead_letter_queue_drops_entries_past_max_age(make: MakeQueue) -> None:
    q = make(dead_letter_max_age_ms=100)
    await _kill(q, 2)
    assert (await q.inspect()).dead == 2
    await wait_past(200)
    assert (await q.inspect()).dead == 0
    assert await q.dead_letters(10) == []
    assert not {k for k in await keys_of(q) if k not in _LASTING}


async def test_requeue_resets_attempts_and_goes_to_the_back(make: MakeQueue) -> None:
    q = make()
    await _kill(q, 3)
    await q.enqueue([msg("fresh")])
    assert await q.maintain(Maintenance(action="requeue_dead", limit=2)) == 2
    assert [d.id for d in await q.dead_letters(10)] == ["m2"]
    got = await claim(q)
    assert [(c.id, c.attempt) for c in got] == [("mfresh", 1), ("m0", 1), ("m1", 1)]
    assert got[1].body == b"body-0"
    assert await q.maintain(Maintenance(action="requeue_dead", limit=10)) == 1
    assert await q.maintain(Maintenance(action="requeue_dead", limit=10)) == 0
    assert (await q.inspect()).dead == 0


async def test_clear_dead_letters(make: MakeQueue) -> None:
    q = make()
    await _kill(q, 3)
    assert await q.maintain(Maintenance(action="purge_dead")) == 3
    assert (await q.inspect()).dead == 0
    assert not {k for k in await keys_of(q) if k not in _LASTING}


# -- inspection and housekeeping --------------------------------------------------------


async def test_counts_and_clear(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1, priority=0), msg(2, priority=3), msg(3, priority=3),
                     msg(4, type="other", priority=2, delay_ms=60_000)])
    [running] = await claim(q, 1)
    assert running.id == "m2"
    assert (await q.inspect()).waiting == {0: 1, 1: 0, 2: 1, 3: 1}
    assert (await q.inspect()).processing == 1
    assert await q.maintain(Maintenance(action="purge_waiting")) == 3
    assert (await q.inspect()).waiting == {0: 0, 1: 0, 2: 0, 3: 0}
    assert await claim(q, 10, types=("job", "other")) == []
    # The leased message stays with its worker and can still be settled.
    done = await q.exchange([settle(running, "ack")], types=[], claim=0, lease_ms=1)
    assert done.settled == [True]


async def test_nothing_is_left_after_ack_and_drop(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(i, type=f"t{i % 3}", priority=i % 4, dedup_key=f"k{i}")
                     for i in range(30)])
    await q.enqueue([msg("late", delay_ms=1)])
    stored = await keys_of(q)
    assert {"m:body", "m:score", "m:dedup", "dedup", "ready:t0", "delayed:job"} <= set(stored)
    await wait_past(5)
    types = ("t0", "t1", "t2", "job")
    first = await claim(q, 12, types=types, lease_ms=50)
    await wait_past(80)  # let those leases expire: they come back and are claimed again
    pending: list[Settlement] = []
    for n in range(100):
        result = await q.exchange(pending, types=list(types), claim=7, lease_ms=10_000)
        outcome = "drop" if n % 2 else "ack"
        pending = [settle(c, outcome) for c in result.claimed]
        if not result.claimed and not pending:
            break
    assert len(first) == 12
    left = await keys_of(q)
    assert set(left) <= _LASTING, left
    counts = (await q.inspect()).counters
    assert counts["processed"] + counts["dropped"] == 31
    assert (await q.inspect()).processing == 0
    assert (await q.inspect()).waiting == {0: 0, 1: 0, 2: 0, 3: 0}


async def test_heartbeat_sweep_and_unhandled_count(make: MakeQueue) -> None:
    q = make()
    await q.heartbeat(["job"], 60_000)
    await q.enqueue([msg(1), msg(2, type="orphan"), msg(3, type="orphan", delay_ms=60_000)])
    assert (await q.inspect()).unhandled == 1
    assert await q.maintain(sweep(60_000, 100)) == 0
    await wait_past(150)
    assert await q.maintain(sweep(100, 100)) == 1
    [dead] = await q.dead_letters(10)
    assert dead.id == "m2" and dead.type == "orphan"
    assert dead.error == "no live worker handles type 'orphan' (waited 0.1s)"
    assert (await q.inspect()).unhandled == 0
    assert (await q.inspect()).waiting == {0: 0, 1: 2, 2: 0, 3: 0}  # m1 and the delayed m3
    counts = (await q.inspect()).counters
    assert (counts["dead_letter"], counts["failed"]) == (1, 0)
    # A handled type is never swept.
    assert [c.id for c in await claim(q)] == ["m1"]


async def test_heartbeat_expires_and_never_shortens(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1)])
    await q.heartbeat(["job"], 100)
    await q.heartbeat(["job"], 60_000)
    await q.heartbeat(["job"], 50)  # GT: the longer claim stands
    await wait_past(150)
    assert (await q.inspect()).unhandled == 0
    other = make(name="other")
    await other.enqueue([msg(2)])
    await other.heartbeat(["job"], 50)
    await wait_past(100)
    assert (await other.inspect()).unhandled == 1


async def test_named_heartbeats_list_live_workers_and_drop_expired_ones(
    make: MakeQueue,
) -> None:
    q = make()
    await q.heartbeat(["job", "a:b"], 60_000, "host:1")
    await q.heartbeat(["job"], 1, "gone")
    await q.heartbeat(["other"], 60_000)  # no name: the type lives, no worker listed
    await wait_past(20)
    await q.heartbeat(["job"], 60_000, "host:2")  # this call drops the lapsed "gone"
    assert (await q.inspect()).workers == {
        "a:b": ["host:1"],
        "job": ["host:1", "host:2"],
        "other": [],
    }
    members = await q._client.zrange(q._workers_key, 0, -1)
    assert sorted(members) == [b"6:host:1a:b", b"6:host:1job", b"6:host:2job"]


# -- robustness -------------------------------------------------------------------------


async def test_scripts_reload_after_script_flush(make: MakeQueue) -> None:
    q = make()
    await q.enqueue([msg(1)])
    await q._client.script_flush()
    await q.enqueue([msg(2)])
    await q._client.script_flush()
    assert [c.id for c in await claim(q)] == ["m1", "m2"]
    await q._client.script_flush()
    assert (await q.inspect()).dead == 0


async def test_driver_errors_become_backend_unavailable(server_kind: str) -> None:
    if server_kind == "fake":
        fake = fakeredis.FakeServer()
        fake.connected = False
        client: Any = fakeredis.FakeAsyncRedis(server=fake)
    else:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    q = RedisWorkQueue(client, "jobs", WorkQueueOptions(), key_prefix="unreachable")
    try:
        with pytest.raises(BackendUnavailableError) as info:
            await q.enqueue([msg(1)])
        assert info.value.backend == "redis"
        with pytest.raises(BackendUnavailableError):
            await q.inspect()
        # No server: listen returns (bounded) instead of failing; core's timer polls.
        stop = await asyncio.wait_for(q.listen(lambda: None), 10)
        stop()
    finally:
        await q.aclose()
        await client.aclose()


# -- wake-ups ---------------------------------------------------------------------------


class _Wakes:
    """A listen() callback that counts its calls and lets a test wait for the next."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()

    async def next(self, timeout: float = 10) -> None:  # noqa: ASYNC109  (a test bound)
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


async def test_listen_wakes_on_enqueue_from_another_client(
    make: MakeQueue, server: _Server
) -> None:
    worker = make()
    publisher = make(server.client())
    wakes = _Wakes()
    await worker.listen(wakes)  # subscribe; returns once confirmed
    assert wakes.calls == 0
    await publisher.enqueue([msg(1)])
    await wakes.next()
    assert [c.id for c in await claim(worker)] == ["m1"]


async def test_every_listener_hears_and_a_stopped_one_does_not(
    make: MakeQueue, server: _Server
) -> None:
    worker = make()
    first, second = _Wakes(), _Wakes()
    stop_first = await worker.listen(first)
    await worker.listen(second)
    await make(server.client()).enqueue([msg(1)])
    await first.next()
    await second.next()
    stop_first()
    stop_first()  # idempotent
    await make(server.client()).enqueue([msg(2)])
    await second.next()
    assert first.calls == 1


async def test_delayed_message_does_not_wake_but_release_does(
    make: MakeQueue, server: _Server
) -> None:
    worker = make()
    other = make(server.client())
    wakes = _Wakes()
    await worker.listen(wakes)
    await other.enqueue([msg(1, delay_ms=60_000)])
    await other.enqueue([msg(2)])
    await wakes.next()  # the ready one (both enqueues were published before it)
    [c] = await claim(other)
    assert wakes.calls == 1  # the delayed one and the claim published nothing
    await other.exchange([settle(c, "release")], types=[], claim=0, lease_ms=1)
    await wakes.next()
    assert wakes.calls == 2


# Real server only: fakeredis has no CLIENT KILL to cut the listener's connection.
@pytest.mark.parametrize("server_kind", ["real"])
async def test_listener_resubscribes_after_its_connection_is_killed(
    make: MakeQueue, server: _Server, server_kind: str
) -> None:
    worker = make()
    admin = server.client()
    wakes = _Wakes()
    await worker.listen(wakes)
    listener = worker._listener
    await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    async def resubscribed() -> bool:
        channels = await admin.pubsub_numsub(worker._channel)
        return bool(channels[0][1]) and wakes.calls >= 1

    await eventually(resubscribed)  # a fresh subscription, and a wake-up to re-check
    wakes.event.clear()
    await make(server.client()).enqueue([msg(1)])
    await wakes.next()
    assert worker._listener is listener and not listener.done()


async def test_aclose_is_idempotent_and_stops_the_listener(make: MakeQueue) -> None:
    q = make()
    await q.listen(lambda: None)
    listener = q._listener
    assert listener is not None
    await q.aclose()
    await q.aclose()
    assert listener.done()
