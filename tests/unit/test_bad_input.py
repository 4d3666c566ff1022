"""Bad input is always a meetq error naming the field and the value (docs/reliability.md).

Each case here raised a non-meetq exception before (OverflowError, ValueError,
UnicodeEncodeError, RecursionError, re.error); the contract suites hold the same rule
through the queue and PubSub on every backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meetq import (
    ConfigError,
    LocalEventBus,
    MeetqError,
    Message,
    MessageQueue,
    PubSub,
    PubSubMessage,
    RedisConfig,
    SerializationError,
    Task,
    TaskRequest,
    TaskScheduler,
    ValidationError,
    initialize_queue_system,
    load_config,
)
from meetq.backends.memory._backend import MemoryBackend
from meetq.backends.memory._pubsub import glob_to_regex
from meetq.core._durations import MAX_DURATION
from meetq.core._validation import MAX_PAYLOAD_DEPTH
from meetq.core.config import MessageQueueConfig
from meetq.core.serialization import JsonSerializer, decode_message

HUGE = [10**400, 1e300, math.inf, -math.inf, math.nan]
HUGE_IDS = ["10**400", "1e300", "inf", "-inf", "nan"]


def nested(levels: int) -> list[Any]:
    tree: list[Any] = []
    for _ in range(levels - 1):
        tree = [tree]
    return tree


# -- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", HUGE, ids=HUGE_IDS)
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("message_queue", "visibility_timeout"),
        ("message_queue", "poll_interval"),  # milliseconds
        ("message_queue", "dead_letter_max_age"),
        ("redis", "socket_connect_timeout"),
        ("event_bus", "reconnect_backoff_max"),
    ],
)
def test_an_impossible_duration_in_config_is_a_config_error(
    section: str, key: str, value: float
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({section: {key: value}})
    assert info.value.key == f"{section}.{key}"


@pytest.mark.parametrize("value", HUGE, ids=HUGE_IDS)
def test_an_impossible_duration_in_a_config_class_is_a_config_error(value: float) -> None:
    with pytest.raises(ConfigError) as info:
        MessageQueueConfig(visibility_timeout=value)
    assert info.value.key == "message_queue.visibility_timeout"


def test_a_duration_string_past_the_maximum_is_refused() -> None:
    with pytest.raises(ConfigError, match="at most"):
        load_config({"message_queue": {"visibility_timeout": "40000d"}})
    with pytest.raises(ConfigError):
        load_config({"message_queue": {"visibility_timeout": "9" * 400 + "s"}})
    assert load_config({"message_queue": {"visibility_timeout": "36500d"}})


@pytest.mark.parametrize("value", [*HUGE, MAX_DURATION * 2], ids=[*HUGE_IDS, "2*max"])
def test_every_other_duration_argument_is_checked(value: float) -> None:
    with pytest.raises(ValidationError) as info:
        Task(type="t", handler=lambda task: None, timeout=value)
    assert info.value.field == "timeout"
    with pytest.raises(ValidationError) as info:
        TaskRequest(type="t", timeout=value)
    assert info.value.field == "timeout"
    with pytest.raises(ValidationError) as info:
        TaskScheduler(shutdown_grace=value)
    assert info.value.field == "shutdown_grace"
    with pytest.raises(ValidationError) as info:
        LocalEventBus(shutdown_grace=value)
    assert info.value.field == "shutdown_grace"
    if value != 1e300 and value != MAX_DURATION * 2:  # far-future times are valid times
        with pytest.raises(ValidationError) as info:
            Task(type="t", handler=lambda task: None, scheduled_at=value)
        assert info.value.field == "scheduled_at"


async def test_waits_and_stops_check_their_durations() -> None:
    scheduler = TaskScheduler()
    bus = LocalEventBus()
    for call, field in (
        (scheduler.wait("x", timeout=10**400), "timeout"),
        (scheduler.stop(grace=math.nan), "grace"),
        (bus.stop(grace=10**400), "grace"),
    ):
        with pytest.raises(ValidationError) as info:
            await call
        assert info.value.field == field
    await scheduler.stop(0)
    await bus.stop(0)


# -- redis.url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "notaurl",
        "redis://localhost:abc/0",
        "redis://[::1",
        "redis://localhost:99999",
        "redis://localhost:0",
        "http://localhost:6379",
        "redis://:6379/0",
        "redis://localhost/notadb",
        "redis://localhost?socket_timeout=soon",
        "redis://localhost?socket_timeout=nan",
        "redis://localhost?db=x",
        "unix://",
        "redis://host\ud800",
    ],
)
def test_a_malformed_redis_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"redis": {"url": url}})
    assert info.value.key == "redis.url" and info.value.value == url
    with pytest.raises(ConfigError):
        RedisConfig(url=url)


def test_a_malformed_redis_url_from_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEETQ_REDIS_URL", "redis://[::1")
    with pytest.raises(ConfigError) as info:
        load_config()
    # Named like every environment override: the variable, and the key it sets.
    assert info.value.key == "MEETQ_REDIS_URL"
    assert str(info.value).endswith("(it sets redis.url)")


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://127.0.0.1:6379/0",
        "rediss://user:pa%40ss@cache.example:6380/2",
        "redis://[::1]:6379/1",
        "unix:///run/redis.sock?db=3",
        "redis://localhost:6379?socket_timeout=2.5&health_check_interval=10",
    ],
)
def test_a_valid_redis_url_is_kept(url: str) -> None:
    assert load_config({"redis": {"url": url}}).section(RedisConfig).url == url


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("message_queue", "queue_name"),
        ("redis", "key_prefix"),
        ("event_bus", "namespace"),
        ("task_dispatcher", "service_name"),
    ],
)
def test_a_config_name_with_a_lone_surrogate_is_refused(section: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({section: {key: "q\ud800"}})
    assert info.value.key == f"{section}.{key}" and "surrogate" in str(info.value)


def test_a_message_name_with_a_lone_surrogate_is_refused() -> None:
    for build in (Message, PubSubMessage, TaskRequest):
        with pytest.raises(ValidationError) as info:
            build(type="t\udfff")
        assert info.value.field == "type"
    with pytest.raises(ValidationError):
        Task(type="t\ud800", handler=lambda task: None)
    # Ordinary non-ASCII names are fine.
    assert Message(type="会议.开始").type == "会议.开始"


# -- payloads and the error messages about them -------------------------------------------


def test_the_payload_depth_limit_is_exact() -> None:
    serializer = JsonSerializer()
    ok = Message(type="t", payload={"k": nested(MAX_PAYLOAD_DEPTH - 1)})
    back = decode_message(serializer.dumps(_body(ok), field="message"), serializer, retry_count=0)
    assert back.payload == ok.payload
    too_deep = Message(type="t", payload={"k": nested(MAX_PAYLOAD_DEPTH)})
    with pytest.raises(SerializationError, match=f"deeper than {MAX_PAYLOAD_DEPTH}"):
        serializer.dumps(_body(too_deep), field="message")


def _body(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "type": message.type,
        "priority": 1,
        "payload": message.payload,
        "timestamp": message.timestamp,
    }


@pytest.mark.parametrize(
    "payload",
    [
        {"deep": nested(5000)},
        {"n": 10**5000},
        {"n": {"m": [-(10**4301)]}},
        {"t": (nested(5000),)},  # the slow path (a tuple) must not recurse either
    ],
    ids=["deep", "long-int", "long-negative-int", "deep-in-a-tuple"],
)
def test_a_payload_json_cannot_hold_is_refused_and_the_message_builds(
    payload: dict[str, Any],
) -> None:
    with pytest.raises(SerializationError) as info:
        JsonSerializer().dumps(payload)
    text = str(info.value)  # building it must not raise either
    assert len(text) < 400 and info.value.field.startswith("payload.")


def test_decoding_bytes_nested_past_the_stack_is_a_value_error() -> None:
    serializer = JsonSerializer()
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_message(b"[" * 100_000 + b"]" * 100_000, serializer, retry_count=0)


def test_an_error_message_never_fails_to_build() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    for value in (10**10_000, nested(100_000), Hostile(), [Hostile()], "x" * 10**6):
        error = ValidationError("payload." + "k" * 10_000, value, "bad")
        assert len(str(error)) < 300
        assert error.value is value  # the subject is kept whole
    config = ConfigError("message_queue.workers", 10**10_000, "expected a small int")
    assert "digits" in str(config)


# -- globs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        ("[b-a]", "a", True),  # a reversed range is the range swapped, as in Redis
        ("[b-a]", "c", False),
        ("[]", "]", False),  # an empty class matches nothing
        ("[^]", "x", True),  # ... and negated, any one byte
        ("[ab", "b", True),  # an unclosed class runs to the end of the pattern
        ("[ab", "[", False),
        ("[a-]", "]", True),  # "a-]" is the range "]".."a"
        ("[\\]]", "]", True),
        ("[a\\", "\\", True),
        ("a\\", "a\\", True),
        ("?", "é", False),  # "?" is one byte, and "é" is two in UTF-8
        ("??", "é", True),
        ("[(]*", "(x", True),  # regex syntax means nothing in a glob
        ("{a,b}", "{a,b}", True),
    ],
)
def test_memory_glob_follows_redis_on_odd_patterns(
    pattern: str, channel: str, matches: bool
) -> None:
    assert bool(glob_to_regex(pattern).fullmatch(channel.encode())) is matches


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab[]^-\\*?", max_size=12))
def test_every_glob_compiles(pattern: str) -> None:
    glob_to_regex(pattern).fullmatch(b"ab")


# -- a fuzz over the value types ---------------------------------------------------------

ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from(["q\ud800", "", "x" * 300, b"bytes", object(), nested(3000), [1], {}]),
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(
        [
            "type",
            "id",
            "priority",
            "timestamp",
            "retry_count",
            "max_retries",
            "timeout",
            "source",
            "destination",
            "headers",
            "dedup_key",
            "payload",
        ]
    ),
    value=ODD,
)
def test_a_message_field_of_any_value_works_or_is_a_meetq_error(field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"type": "t", field: value}
    try:
        message = Message(**kwargs)
    except MeetqError as exc:
        str(exc)
        return
    try:
        JsonSerializer().dumps({"payload": message.payload, "headers": message.headers})
    except MeetqError as exc:
        str(exc)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(
        [
            f"message_queue.{f}"
            for f in (
                "workers",
                "visibility_timeout",
                "poll_interval",
                "retry_jitter",
                "queue_name",
                "enabled",
            )
        ]
        + ["redis.url", "redis.socket_timeout", "event_bus.overflow", "event_bus.namespace"]
    ),
    value=ODD,
)
def test_a_config_key_of_any_value_works_or_is_a_config_error(key: str, value: Any) -> None:
    section, name = key.split(".")
    try:
        load_config({section: {name: value}})
    except ConfigError as exc:
        str(exc)


async def test_a_lookup_by_something_not_a_string_is_a_validation_error() -> None:
    qm = await initialize_queue_system({"event_bus": {"type": "memory"}})
    async with qm:
        scheduler, dispatcher, bus = (
            qm.get_task_scheduler(),
            qm.get_task_dispatcher(),
            qm.get_event_bus(),
        )
        assert scheduler is not None and dispatcher is not None and bus is not None
        key: Any = ["not", "hashable"]
        for call in (
            lambda: scheduler.cancel_task(key),
            lambda: scheduler.get_task(key),
            lambda: scheduler.status(key),
            lambda: dispatcher.get_task_status(key),
            lambda: bus.handler_count(key),
            lambda: bus.emit(key),
        ):
            with pytest.raises(ValidationError):
                call()
        for waiting in (scheduler.wait(key), dispatcher.wait(key), bus.emit_sync(key)):
            with pytest.raises(ValidationError):
                await waiting


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe message_queue: {}", "not UTF-8"),
        (b"a: " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
    ids=["not-utf8", "deep"],
)
def test_a_config_file_that_is_not_yaml_text_is_a_config_error(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "meetq.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=problem) as info:
        load_config(path)
    assert info.value.key == "<file>"


def test_component_names_with_a_lone_surrogate_are_refused() -> None:
    backend = MemoryBackend()
    with pytest.raises(ValidationError) as info:
        MessageQueue(backend, worker_name="w\ud800")
    assert info.value.field == "worker_name"
    with pytest.raises(ValidationError) as info:
        PubSub(backend, source="s\ud800")
    assert info.value.field == "source"


async def test_a_route_to_a_service_name_with_a_lone_surrogate_is_refused() -> None:
    qm = await initialize_queue_system({"event_bus": {"type": "memory"}})
    async with qm:
        dispatcher = qm.get_task_dispatcher()
        assert dispatcher is not None
        with pytest.raises(ValidationError) as info:
            dispatcher.register_route("t", "svc\ud800")
        assert "surrogate" in str(info.value)
        assert dispatcher.routes == {}
