"""The kernel's runtime kit: one backoff, one rate-limited log, one way to call user code."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading

import attrs
import pytest

from meetq import (
    DispatchStatus,
    LocalEventBus,
    Message,
    MessageQueue,
    PubSub,
    PubSubMessage,
    Task,
    TaskDispatcher,
    TaskRequest,
    TaskScheduler,
    TaskStatus,
)
from meetq.backends.memory._backend import MemoryBackend
from meetq.core._backoff import Backoff
from meetq.core._build import build_config
from meetq.core._fastattrs import trusted_builder
from meetq.core._lifecycle import Lifecycle
from meetq.core._ratelog import LogEvery
from meetq.core._usercode import UserCodeFailed, call_user
from meetq.core.config import EventBusConfig, MessageQueueConfig, TaskSchedulerConfig
from meetq.core.errors import ClosedError, ConfigError, HandlerTimeout, ValidationError
from meetq.core.serialization import (
    JsonSerializer,
    decode_message,
    decode_pubsub_message,
    encode_message,
    encode_pubsub_message,
)
from meetq.testing import eventually

# -- Backoff -----------------------------------------------------------------------------


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.ceiling(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_attempt_below_one_is_the_base_and_huge_attempts_do_not_overflow() -> None:
    backoff = Backoff(0.1, 60.0)
    assert backoff.ceiling(0) == 0.1
    assert backoff.ceiling(-5) == 0.1
    assert backoff.ceiling(10**6) == 60.0
    assert Backoff(0.0, 5.0).ceiling(10**6) == 0.0


@pytest.mark.parametrize("jitter", [0.0, 0.2, 0.5, 1.0])
def test_backoff_jitter_only_shortens_by_at_most_its_share(jitter: float) -> None:
    backoff = Backoff(1.0, 300.0, jitter)
    rng_state = random.getstate()
    try:
        random.seed(1234)
        for attempt in range(1, 12):
            ceiling = backoff.ceiling(attempt)
            for _ in range(200):
                delay = backoff.delay(attempt)
                assert ceiling * (1.0 - jitter) <= delay <= ceiling
    finally:
        random.setstate(rng_state)


def test_backoff_jitter_spreads_the_delays() -> None:
    backoff = Backoff(1.0, 300.0, 0.5)
    assert len({backoff.delay(3) for _ in range(50)}) > 1


def test_backoff_total_ceiling_sums_the_waits() -> None:
    backoff = Backoff(1.0, 5.0, 0.2)
    assert backoff.total_ceiling(0) == 0.0
    assert backoff.total_ceiling(4) == 1.0 + 2.0 + 4.0 + 5.0


# -- LogEvery ----------------------------------------------------------------------------


def test_log_every_logs_the_first_then_counts_what_it_held_back() -> None:
    now = [1000.0]
    limiter = LogEvery(5.0, clock=lambda: now[0])
    assert limiter.tick() == 1  # the first occurrence is logged at once
    assert [limiter.tick() for _ in range(3)] == [0, 0, 0]
    now[0] += 4.9
    assert limiter.tick() == 0
    now[0] += 0.1
    assert limiter.tick() == 5  # this line stands for the four held back and itself
    assert limiter.tick() == 0


def test_log_every_first_tick_logs_even_right_after_boot() -> None:
    assert LogEvery(5.0, clock=lambda: 0.5).tick() == 1


# -- call_user ---------------------------------------------------------------------------


async def _double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def test_call_user_runs_async_on_the_loop_and_plain_in_a_thread() -> None:
    threads: list[int] = []

    def plain(x: int) -> int:
        threads.append(threading.get_ident())
        return x + 1

    assert await call_user(_double, 4, is_async=True) == 8
    assert await call_user(plain, 4, is_async=False) == 5
    assert threads and threads[0] != threading.get_ident()


async def test_call_user_awaits_what_a_plain_callable_returns() -> None:
    assert await call_user(lambda x: _double(x), 5, is_async=False) == 10


async def test_call_user_tells_the_handlers_own_cancelled_error_from_its_callers() -> None:
    async def cancelled_by_another(_: object) -> None:
        other = asyncio.get_running_loop().create_future()
        other.cancel()
        await other  # raises CancelledError in this task, which nobody cancelled

    with pytest.raises(UserCodeFailed) as caught:
        await call_user(cancelled_by_another, None, is_async=True)
    assert caught.value.cancelled
    assert caught.value.error == "CancelledError raised by the handler"

    started = asyncio.Event()

    async def forever(_: object) -> None:
        started.set()
        await asyncio.Event().wait()

    call = asyncio.create_task(call_user(forever, None, is_async=True))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call  # the caller's cancellation goes through, unwrapped


async def test_call_user_timeout_is_ours_only_when_our_scope_ran_out() -> None:
    async def slow(_: object) -> None:
        await asyncio.Event().wait()

    with pytest.raises(UserCodeFailed) as caught:
        await call_user(slow, None, is_async=True, timeout=0.01)
    assert caught.value.timeout == 0.01
    assert isinstance(caught.value.exc, HandlerTimeout)
    assert caught.value.format_traceback() == ""

    async def own_timeout(_: object) -> None:
        raise TimeoutError("the HTTP client gave up")

    with pytest.raises(UserCodeFailed) as caught:
        await call_user(own_timeout, None, is_async=True, timeout=30)
    assert caught.value.timeout is None
    assert caught.value.error == "TimeoutError: the HTTP client gave up"


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize("is_async", [False, True])
async def test_call_user_failures_of_every_kind_are_one_outcome(is_async: bool) -> None:
    async def araise(exc: BaseException) -> None:
        raise exc

    func = araise if is_async else _raise
    for exc in (ValueError("bad"), SystemExit(3), GeneratorExit()):
        with pytest.raises(UserCodeFailed) as caught:
            await call_user(func, exc, is_async=is_async)
        assert caught.value.exc is exc
        assert type(exc).__name__ in caught.value.format_traceback()
    with pytest.raises(KeyboardInterrupt):  # the operator's, never a failed call
        await call_user(func, KeyboardInterrupt(), is_async=is_async)


async def test_call_user_plain_stop_iteration_becomes_a_runtime_error() -> None:
    with pytest.raises(UserCodeFailed) as caught:
        await call_user(_raise, StopIteration(), is_async=False)
    assert caught.value.error == "RuntimeError: handler raised StopIteration"


async def test_call_user_with_no_argument() -> None:
    assert await call_user(lambda: 7, is_async=False) == 7


# -- a plain callable returning a coroutine, on every component ----------------------------
# ``lambda m: record(m)`` is not ``async def``: it runs in a thread and hands back a
# coroutine, which must be awaited (warnings are errors here, so "coroutine ... was never
# awaited" fails the test too).


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[object] = []
        self.event = asyncio.Event()

    async def record(self, item: object) -> str:
        await asyncio.sleep(0)
        self.seen.append(item)
        self.event.set()
        return "recorded"


async def test_message_queue_awaits_a_coroutine_a_plain_handler_returns() -> None:
    recorder = _Recorder()
    mq = MessageQueue(MemoryBackend(), queue_name="kit-mq", poll_interval="20ms")
    mq.register_handler("t", lambda m: recorder.record(m))
    async with mq:
        await mq.publish(Message(type="t", payload={"n": 1}))
        await asyncio.wait_for(recorder.event.wait(), 10)
        await eventually(lambda: _processed(mq))
    assert [m.payload for m in recorder.seen] == [{"n": 1}]  # type: ignore[attr-defined]


async def _processed(mq: MessageQueue) -> bool:
    stats = await mq.stats()
    return bool(stats["total_processed"] == 1 and stats["total_failed"] == 0)


async def test_pubsub_awaits_a_coroutine_a_plain_handler_returns() -> None:
    recorder = _Recorder()
    pubsub = PubSub(MemoryBackend(), namespace="kit")
    await pubsub.subscribe("c", lambda m: recorder.record(m))
    async with pubsub:
        await pubsub.publish("c", PubSubMessage(type="e", payload={"n": 2}))
        await asyncio.wait_for(recorder.event.wait(), 10)
        await eventually(lambda: _pubsub_processed(pubsub))
    assert [m.payload for m in recorder.seen] == [{"n": 2}]  # type: ignore[attr-defined]


async def _pubsub_processed(pubsub: PubSub) -> bool:
    stats = await pubsub.stats()
    return stats["total_processed"] == 1 and stats["total_failed"] == 0


async def test_event_bus_awaits_a_coroutine_a_plain_handler_returns() -> None:
    recorder = _Recorder()
    bus = LocalEventBus(workers=1)
    bus.on("e", lambda event: recorder.record(event))
    async with bus:
        await asyncio.wait_for(bus.emit_sync("e", {"n": 3}, wait_handled=True), 10)
        stats = bus.stats()
    assert [e.payload for e in recorder.seen] == [{"n": 3}]  # type: ignore[attr-defined]
    assert stats["processed_events"] == 1 and stats["failed_events"] == 0


async def test_scheduler_awaits_a_coroutine_a_plain_handler_returns() -> None:
    recorder = _Recorder()
    async with TaskScheduler(workers=1) as scheduler:
        task = Task(type="t", handler=lambda t: recorder.record(t))
        scheduler.submit_task(task)
        snapshot = await scheduler.wait(task.id, timeout=10)
    assert snapshot.status is TaskStatus.COMPLETED
    assert snapshot.result == "recorded"
    assert recorder.seen == [task]


async def test_dispatcher_awaits_coroutines_a_plain_handler_and_callback_return() -> None:
    served, called = _Recorder(), _Recorder()
    mq = MessageQueue(MemoryBackend(), queue_name="kit-dispatch", poll_interval="20ms")
    dispatcher = TaskDispatcher(mq, service_name="svc")
    dispatcher.serve("work", lambda task: served.record(task))
    async with mq, dispatcher:
        sent = await dispatcher.dispatch_task(
            TaskRequest(type="work", callback=lambda response: called.record(response))
        )
        done = await dispatcher.wait(sent.task_id, timeout=10)
        await asyncio.wait_for(called.event.wait(), 10)
    assert done.status is DispatchStatus.COMPLETED and done.result == "recorded"
    assert len(served.seen) == 1
    assert [r.task_id for r in called.seen] == [sent.task_id]  # type: ignore[attr-defined]
    assert dispatcher.stats()["callbacks_failed"] == 0


# -- the handler's own CancelledError, on the components that had their own rule -----------


async def _cancelled_by_another(_: object) -> None:
    other = asyncio.get_running_loop().create_future()
    other.cancel()
    await other


async def test_scheduler_handler_raising_cancelled_error_fails_the_attempt() -> None:
    async with TaskScheduler(workers=1) as scheduler:
        task = Task(type="t", handler=_cancelled_by_another, max_retries=0)
        scheduler.submit_task(task)
        snapshot = await scheduler.wait(task.id, timeout=10)
    assert snapshot.status is TaskStatus.FAILED
    assert snapshot.error == "CancelledError raised by the handler"


async def test_dispatcher_handler_raising_cancelled_error_reports_failed() -> None:
    mq = MessageQueue(MemoryBackend(), queue_name="kit-cancel", poll_interval="20ms", max_retries=0)
    dispatcher = TaskDispatcher(mq, service_name="svc")
    dispatcher.serve("work", _cancelled_by_another)
    async with mq, dispatcher:
        sent = await dispatcher.dispatch_task(TaskRequest(type="work", max_retries=0))
        done = await dispatcher.wait(sent.task_id, timeout=10)
    assert done.status is DispatchStatus.FAILED
    assert done.error == "CancelledError raised by the handler"


# -- build_config: every component from its config plus overrides --------------------------


def test_build_config_from_a_section_a_mapping_or_none_with_overrides() -> None:
    section = MessageQueueConfig(workers=2, visibility_timeout=10.0)
    assert build_config(MessageQueueConfig, section, {}) is section
    built = build_config(MessageQueueConfig, section, {"poll_interval": 250})
    assert built.workers == 2 and built.visibility_timeout == 10.0
    assert built.poll_interval == 0.25  # the key's own unit (milliseconds), as in a file
    assert build_config(MessageQueueConfig, {"workers": 3}, {"workers": 5}).workers == 5
    assert build_config(MessageQueueConfig, None, {}) == MessageQueueConfig()


def test_build_config_errors_name_the_key_and_guess_the_typo() -> None:
    with pytest.raises(ConfigError) as bad:
        build_config(MessageQueueConfig, None, {"workers": "four"})
    assert str(bad.value) == "config message_queue.workers='four': expected an integer"
    with pytest.raises(ConfigError, match="did you mean 'workers'"):
        build_config(MessageQueueConfig, MessageQueueConfig(), {"wokers": 2})
    with pytest.raises(ConfigError, match="did you mean 'buffer_size'"):
        build_config(EventBusConfig, {"bufer_size": 2}, {})
    with pytest.raises(ValidationError) as not_config:
        build_config(EventBusConfig, "event_bus", {})  # type: ignore[arg-type]
    assert not_config.value.field == "config"


def test_build_config_as_arguments_names_the_argument() -> None:
    with pytest.raises(ValidationError) as bad:
        build_config(TaskSchedulerConfig, None, {"workers": 0}, as_arguments=True)
    assert bad.value.field == "workers" and bad.value.value == 0
    # A bad key of the config itself is still the config's error.
    with pytest.raises(ConfigError):
        build_config(TaskSchedulerConfig, {"workers": 0}, {}, as_arguments=True)


def test_every_component_takes_its_config_and_overrides() -> None:
    backend = MemoryBackend()
    mq = MessageQueue(backend, {"queue_name": "built"}, workers=3)
    assert (mq.config.queue_name, mq.config.workers) == ("built", 3)
    pubsub = PubSub(backend, EventBusConfig(namespace="a"), subscriber_buffer=9)
    assert (pubsub.config.namespace, pubsub.config.subscriber_buffer) == ("a", 9)
    bus = LocalEventBus(workers=2, config={"buffer_size": 5, "overflow": "drop"})
    assert bus.stats()["buffer_size"] == 5 and bus.stats()["workers"] == 2
    scheduler = TaskScheduler(config=TaskSchedulerConfig(workers=3), retry_jitter=0)
    assert scheduler.config.workers == 3 and scheduler.config.retry_jitter == 0.0
    dispatcher = TaskDispatcher(mq, config={"keep_finished": 7}, deadline_margin="250ms")
    assert dispatcher.keep_finished == 7 and dispatcher.deadline_margin == 0.25
    with pytest.raises(ValidationError) as bad:
        TaskDispatcher(mq, status_channel="")
    assert bad.value.field == "status_channel"
    with pytest.raises(ValidationError) as typo:
        TaskScheduler(retry_jiter=0.1)
    assert typo.value.field == "retry_jiter" and "did you mean 'retry_jitter'" in str(typo.value)


# -- trusted_builder: the attrs-bypass fast paths check their field set at import ----------


@attrs.frozen(kw_only=True)
class _Point:
    x: int = attrs.field(validator=attrs.validators.instance_of(int))
    y: int = 0


def test_trusted_builder_fills_every_field_without_validators() -> None:
    build = trusted_builder(_Point, "x", "y")
    point = build("not checked", 2)  # the caller vouches for the values
    assert (point.x, point.y) == ("not checked", 2)
    assert type(point) is _Point and attrs.asdict(point) == {"x": "not checked", "y": 2}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        point.x = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields", [("x",), ("x", "y", "z"), ("y", "x")], ids=["missing", "extra", "order"]
)
def test_trusted_builder_refuses_a_field_list_that_is_not_the_class(
    fields: tuple[str, ...],
) -> None:
    with pytest.raises(ImportError, match="update the fast path"):
        trusted_builder(_Point, *fields)


def test_a_field_added_without_its_fast_path_fails_at_import() -> None:
    # What happens to meetq.core.serialization if Message gains a field and its fast
    # decoder is not updated: loading the module raises (in a child: no module of this
    # process is touched).
    code = (
        "import importlib, attrs, meetq.core.types as t, meetq.core.serialization as s\n"
        "@attrs.frozen(kw_only=True)\n"
        "class Message(t.Message):\n"
        "    extra: int = 0\n"
        "t.Message = Message\n"
        "importlib.reload(s)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "ImportError" in done.stderr and "update the fast path" in done.stderr


def test_the_fast_paths_build_the_same_values_as_the_constructors() -> None:
    message = Message(type="t", payload={"a": 1}, headers={"h": "v"}, dedup_key="k")
    body = encode_message(message, JsonSerializer())
    decoded = decode_message(body, JsonSerializer(), retry_count=0)
    assert attrs.asdict(decoded) == attrs.asdict(message)
    event = PubSubMessage(type="e", payload={"b": 2}, source="s", headers={})
    data = encode_pubsub_message(event, JsonSerializer(), source=None)
    back = decode_pubsub_message(data, JsonSerializer(), channel="c")
    assert attrs.asdict(back) == {**attrs.asdict(event), "channel": "c"}


# -- one lifecycle state: the base's ------------------------------------------------------


async def test_every_component_keeps_its_lifecycle_in_the_base_only() -> None:
    backend = MemoryBackend()
    mq = MessageQueue(backend, queue_name="kit-life")
    components = [
        mq,
        PubSub(backend, namespace="kit-life"),
        LocalEventBus(),
        TaskScheduler(),
        TaskDispatcher(mq),
    ]
    for component in components:
        # No parallel state strings or closed flags beside AsyncService's.
        assert not hasattr(component, "_state"), type(component).__name__
        if not isinstance(component, LocalEventBus):  # its flag is read by other threads
            assert not hasattr(component, "_closed"), type(component).__name__
    for component in reversed(components):
        assert component.lifecycle is Lifecycle.NEW
        await component.start()
        assert component.lifecycle is Lifecycle.RUNNING
    for component in components:
        await component.stop()
        assert component.lifecycle is Lifecycle.STOPPED
        with pytest.raises(ClosedError):
            await component.start()
