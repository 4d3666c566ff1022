"""The contract suite's own tools: RecordingBackend, the capability mark, the declarations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

from meetq import (
    BackendContext,
    Message,
    MessageQueue,
    PubSub,
    PubSubMessage,
    build_registry,
    load_config,
    make_plugin_manager,
)
from meetq.backend import CAP_DURABLE, CAPABILITIES, BackendSpec, BackendUnavailableError
from meetq.core.errors import ValidationError
from meetq.testing import QUICK, RecordingBackend, eventually, requires
from meetq.testing._marks import MARK_NAME


@pytest.fixture
async def recording() -> AsyncIterator[RecordingBackend]:
    registry = build_registry(make_plugin_manager(entry_points=False))
    memory = registry.create("memory", BackendContext(config=load_config({}), client=None))
    wrapped = RecordingBackend(memory)
    yield wrapped
    await wrapped.aclose()


def _queue(recording: RecordingBackend) -> MessageQueue:
    # A name of this test's own: memory backends in one process may share a broker.
    return MessageQueue(recording, **{**QUICK, "queue_name": f"kit-{uuid.uuid4().hex}"})


async def test_a_fault_fails_the_next_calls_by_name_then_the_backend_answers(
    recording: RecordingBackend,
) -> None:
    mq = _queue(recording)
    down = BackendUnavailableError("staged", backend="memory")
    recording.fail("enqueue", down, times=2)
    for _ in range(2):
        with pytest.raises(BackendUnavailableError) as info:
            await mq.publish(Message(type="t"))
        assert info.value is down
    assert await mq.publish(Message(type="t"))
    assert recording.count("enqueue") == 3
    assert await mq.queue_length() == 1  # only the call that reached the backend stored


async def test_a_lasting_fault_holds_until_healed(recording: RecordingBackend) -> None:
    mq = _queue(recording)
    recording.fail("enqueue", BackendUnavailableError("staged", backend="memory"), times=None)
    for _ in range(3):
        with pytest.raises(BackendUnavailableError):
            await mq.publish(Message(type="t"))
    recording.heal("enqueue")
    assert await mq.publish(Message(type="t"))


async def test_around_sees_the_arguments_and_may_change_the_result(
    recording: RecordingBackend,
) -> None:
    mq = _queue(recording)

    async def shifted(call_next: Callable[..., Any]) -> Any:
        real = await call_next()
        return attrs.evolve(real, waiting={p: n + 100 for p, n in real.waiting.items()})

    recording.around("inspect", shifted)
    assert await mq.queue_length() == 400  # four priorities, each shifted by 100
    recording.around("inspect", None)
    assert await mq.queue_length() == 0
    assert recording.count("inspect") == 2


async def test_calls_are_recorded_with_their_target_and_arguments(
    recording: RecordingBackend,
) -> None:
    mq = _queue(recording)
    done = asyncio.Event()

    @mq.handler("t")
    async def handle(message: Message) -> None:
        done.set()

    async with mq, PubSub(recording) as ps:
        await mq.publish(Message(type="t"))
        await asyncio.wait_for(done.wait(), 5)
        await ps.publish(f"news-{uuid.uuid4().hex}", PubSubMessage(type="n"))
    enqueue = next(c for c in recording.calls if c.name == "enqueue")
    assert enqueue.target == f"work_queue:{mq.name}"
    assert [stored.type for stored in enqueue.args[0]] == ["t"]
    assert any(c.target == "pubsub" and c.name == "publish" for c in recording.calls)
    await eventually(lambda: recording.count("exchange") >= 1)
    assert len(recording.work_queues) == 1 and len(recording.transports) == 1


def test_a_fault_needs_a_positive_count(recording: RecordingBackend) -> None:
    with pytest.raises(ValidationError) as info:
        recording.fail("enqueue", RuntimeError("x"), times=0)
    assert info.value.field == "times"


def test_requires_is_the_suites_mark_and_refuses_an_unknown_capability() -> None:
    mark = requires(CAP_DURABLE).mark
    assert (mark.name, mark.args) == (MARK_NAME, ("durable",))
    with pytest.raises(ValidationError) as info:
        requires("durabel")
    assert (info.value.field, info.value.value) == ("capabilities", "durabel")
    with pytest.raises(ValidationError):
        requires()


def _no_backend(context: BackendContext) -> Any:
    raise AssertionError("never built")


def test_a_spec_declares_only_known_capabilities() -> None:
    spec = BackendSpec(name="x", factory=_no_backend, capabilities=CAPABILITIES)
    assert spec.capabilities == CAPABILITIES
    with pytest.raises(ValidationError) as info:
        BackendSpec(name="x", factory=_no_backend, capabilities={"durable", "fast"})
    assert (info.value.field, info.value.value) == ("capabilities", "fast")
    assert "cross_process, durable" in str(info.value)


def test_a_marked_test_is_skipped_naming_the_missing_capability(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from meetq.testing import BackendContract, requires

        class TestMemory(BackendContract):
            @pytest.fixture
            def backend_config(self):
                return {"message_queue": {"type": "memory"}, "event_bus": {"type": "memory"}}

            @requires("durable")
            async def test_needs_durable(self, backend):
                raise AssertionError("must not run on memory")

            async def test_runs(self, backend):
                assert backend.name == "memory"
        """
    )
    result = pytester.runpytest_subprocess(
        "-rs", "-p", "no:cacheprovider", "-o", "asyncio_mode=strict",
        "-o", "asyncio_default_fixture_loop_scope=function", "--strict-markers",
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*backend 'memory' does not declare capability 'durable'*"])


def test_a_leftover_pytest_plugins_line_is_harmless(pytester: pytest.Pytester) -> None:
    # Before the pytest11 entry point, users loaded the plugin by hand; that line must
    # not become a second registration (pytest raises on one).
    pytester.makeconftest('pytest_plugins = ["meetq.testing.pytest_plugin"]\n')
    pytester.makepyfile(
        """
        def test_fixture_from_the_plugin(meetq_namespace, pytestconfig):
            import meetq.testing.pytest_plugin as plugin
            manager = pytestconfig.pluginmanager
            assert [p for p in manager.get_plugins() if p is plugin] == [plugin]
            assert meetq_namespace.startswith("mqt")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
