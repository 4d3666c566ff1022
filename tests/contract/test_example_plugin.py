"""A third-party backend found through its entry point, and bound to the contract suites.

``tests/plugin_example`` holds the package ``meetq_example_backend`` and a committed
``.dist-info`` naming its entry point, so putting that directory on ``sys.path`` is all
``importlib.metadata`` needs: no ``pip install``. The path is added per test (and taken
away after), before any fixture builds a plugin manager.
"""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

import meetq
from meetq import Message, PubSubMessage, build_registry, make_plugin_manager
from meetq.backend import WorkQueueOptions
from meetq.core.protocols import Backend
from meetq.testing import ContractSuite

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugin_example"
# What an outside author imports of meetq: the backend face, nothing private, no backend.
# (QueueSnapshot, Maintenance and WakeCallback are not in meetq.backend yet.)
PUBLIC_MEETQ = {"meetq.backend", "meetq.core.protocols"}


@pytest.fixture(autouse=True)
def example_plugin_on_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the example distribution discoverable for this test only."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    return PLUGIN_DIR


def test_entry_point_is_discovered_by_make_plugin_manager() -> None:
    pm = make_plugin_manager()
    plugin = pm.get_plugin("example")
    assert plugin is not None
    assert type(plugin).__module__ == "meetq_example_backend"
    dists = {dist.project_name for _, dist in pm.list_plugin_distinfo()}
    assert "meetq-example-backend" in dists

    registry = build_registry(pm)
    assert "example" in registry.names()
    assert registry.owner("example") == "example"


def test_without_the_path_the_plugin_is_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # drop the autouse sys.path entry
    assert str(PLUGIN_DIR) not in sys.path
    assert make_plugin_manager().get_plugin("example") is None
    assert "example" not in build_registry(make_plugin_manager()).names()


def test_entry_points_can_be_turned_off() -> None:
    assert make_plugin_manager(entry_points=False).get_plugin("example") is None


def test_example_backend_satisfies_the_backend_protocol() -> None:
    from meetq_example_backend import ExampleBackend

    backend = ExampleBackend()
    assert isinstance(backend, Backend)
    assert backend.name == "example"
    assert backend.capabilities == frozenset()


def test_example_is_written_from_scratch_on_public_names_only() -> None:
    sources = sorted((PLUGIN_DIR / "meetq_example_backend").glob("*.py"))
    assert len(sources) >= 2
    imported: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
    from_meetq = {name for name in imported if name.split(".")[0] == "meetq"}
    assert from_meetq == PUBLIC_MEETQ, f"private imports: {from_meetq - PUBLIC_MEETQ}"


def test_the_example_section_is_checked_when_the_plugin_is_installed() -> None:
    from meetq_example_backend import ExampleConfig

    config = meetq.load_config({"example": {"max_queues": 2}}, environ={})
    assert config.section(ExampleConfig).max_queues == 2
    with pytest.raises(meetq.ConfigError) as info:
        meetq.load_config({"example": {"max_queue": 2}}, environ={})
    assert str(info.value) == (
        "config example.max_queue=2: unknown key; did you mean 'max_queues'?"
    )
    with pytest.raises(meetq.ConfigError, match=r"example\.max_queues=0: must be between"):
        meetq.load_config({"example": {"max_queues": 0}}, environ={})
    env = {"MEETQ_EXAMPLE__MAX_QUEUES": "7"}
    assert meetq.load_config(environ=env).section(ExampleConfig).max_queues == 7


def test_without_the_plugin_its_section_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # drop the autouse sys.path entry: the plugin is not installed
    config = meetq.load_config({"example": {"max_queues": 0}}, environ={})
    assert config.others["example"] == {"max_queues": 0}


async def test_the_example_backend_applies_its_section() -> None:
    qm = await meetq.initialize_queue_system(
        {
            "message_queue": {"type": "example", "queue_name": "first"},
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
            "example": {"max_queues": 1},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    async with qm:
        with pytest.raises(meetq.BackendError, match=r"example\.max_queues is 1") as info:
            mq.backend.work_queue("second", WorkQueueOptions())
    assert info.value.backend == "example"


async def test_type_example_is_selectable_by_config() -> None:
    qm = await meetq.initialize_queue_system(
        {
            "message_queue": {"type": "example", "queue_name": "plug"},
            "event_bus": {"type": "example"},
        }
    )
    mq, pubsub = qm.get_message_queue(), qm.get_pubsub()
    assert mq is not None
    assert pubsub is not None
    assert mq.backend.name == "example"
    loop = asyncio.get_running_loop()
    got: asyncio.Future[Message] = loop.create_future()
    heard: asyncio.Future[PubSubMessage] = loop.create_future()

    @mq.handler("ping")
    async def ping(message: Message) -> None:
        got.set_result(message)

    async def on_news(message: PubSubMessage) -> None:
        heard.set_result(message)

    async with qm:
        await pubsub.subscribe("news", on_news)
        sent_id = await mq.publish(Message(type="ping", payload={"n": 1}))
        await pubsub.publish("news", PubSubMessage(type="headline", payload={"t": "x"}))
        received = await asyncio.wait_for(got, 10)
        broadcast = await asyncio.wait_for(heard, 10)
    assert (received.id, received.payload) == (sent_id, {"n": 1})
    assert (broadcast.channel, broadcast.payload) == ("news", {"t": "x"})


class TestExamplePlugin(ContractSuite):
    """The whole shipped contract suite, bound in one class to the entry-point backend."""

    @pytest.fixture
    def backend_config(self) -> dict[str, Any]:
        return {"message_queue": {"type": "example"}, "event_bus": {"type": "example"}}

    def test_bound_backends_are_the_plugin(
        self, backend: Backend, pubsub_backend: Backend
    ) -> None:
        assert type(backend).__module__ == "meetq_example_backend"
        assert type(pubsub_backend).__module__ == "meetq_example_backend"


async def test_limits_on_a_backend_without_the_capability_refuse_to_start() -> None:
    # The example backend does not declare CAP_LIMITS: a queue that would consume with
    # limits it cannot enforce fails at start, naming the key, instead of ignoring them.
    qm = await meetq.initialize_queue_system(
        {
            "message_queue": {
                "type": "example",
                "queue_name": "limited",
                "rate_limits": {"mail": "10/s"},
            },
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("mail")
    async def mail(message: Message) -> None: ...

    with pytest.raises(meetq.ConfigError) as info:
        await mq.start()
    assert info.value.key == "message_queue.rate_limits"
    assert "does not declare capability 'limits'" in str(info.value)
    # Publishing needs no limit: it still works.
    assert await mq.publish(Message(type="mail"))
    await qm.stop()
