"""``message_queue.rate_limits`` / ``concurrency_limits``: the syntax, the errors naming
key and value, and the form a backend receives (``WorkQueueOptions.limits``)."""

from __future__ import annotations

from typing import Any

import pytest

from meetq import ConfigError, MessageQueue
from meetq.core._limits import RateLimit, TypeLimit
from meetq.core._publishing import queue_options
from meetq.core.config import MessageQueueConfig, load_config


def _section(**keys: Any) -> MessageQueueConfig:
    return load_config({"message_queue": keys}, environ={}).message_queue


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("100/s", RateLimit(count=100, period=1.0, burst=1)),
        ("10/m", RateLimit(count=10, period=60.0, burst=1)),
        ("5/h", RateLimit(count=5, period=3600.0, burst=1)),
        ("1/d", RateLimit(count=1, period=86400.0, burst=1)),
        ("30/10s", RateLimit(count=30, period=10.0, burst=1)),
        ("3/500ms", RateLimit(count=3, period=0.5, burst=1)),
        (" 100 / s  burst 20 ", RateLimit(count=100, period=1.0, burst=20)),
        ({"rate": "100/s", "burst": 20}, RateLimit(count=100, period=1.0, burst=20)),
        ({"rate": "2/s"}, RateLimit(count=2, period=1.0, burst=1)),
    ],
)
def test_rate_syntax(given: object, expected: RateLimit) -> None:
    assert _section(rate_limits={"mail": given}).rate_limits == {"mail": expected}


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("100", "expected a rate such as '100/s'"),
        (100, "expected a rate such as '100/s'"),
        ("100/x", "expected a rate such as '100/s'"),
        ("0/s", "the count must be from 1"),
        ("1/0s", "the period must be longer than 0"),
        ("100/s burst 0", "the burst must be an integer from 1"),
        ("10000000/ms", "at most 1e+06 per second"),
        ({"rate": "1/s", "burst": True}, "the burst must be an integer"),
        ({"rate": "1/s burst 2", "burst": 3}, "give the burst once"),
        ({"burst": 3}, "expected a mapping with 'rate'"),
        ({"rate": "1/s", "bursts": 3}, "expected a mapping with 'rate'"),
    ],
)
def test_a_bad_rate_names_the_key_and_the_value(given: object, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        _section(rate_limits={"mail": given})
    assert info.value.key == "message_queue.rate_limits.mail"
    assert info.value.value == given
    assert problem in str(info.value)


@pytest.mark.parametrize("given", [0, -1, 1.5, True, "2", 10**7])
def test_a_bad_concurrency_limit_names_the_key_and_the_value(given: object) -> None:
    with pytest.raises(ConfigError) as info:
        _section(concurrency_limits={"render": given})
    assert info.value.key == "message_queue.concurrency_limits.render"
    assert "expected an integer from 1 to 1000000" in str(info.value)


def test_limits_must_be_mappings_of_message_types() -> None:
    with pytest.raises(ConfigError, match=r"message_queue\.rate_limits=\['mail'\]: expected a"):
        _section(rate_limits=["mail"])
    with pytest.raises(ConfigError, match=r"concurrency_limits\.='': not a message type"):
        _section(concurrency_limits={"": 1})


def test_a_config_built_in_code_holds_parsed_limits_too() -> None:
    cfg = MessageQueueConfig(rate_limits={"a": "10/m"}, concurrency_limits={"a": 2})
    assert cfg.rate_limits == {"a": RateLimit(count=10, period=60.0, burst=1)}
    with pytest.raises(ConfigError):
        MessageQueueConfig(concurrency_limits={"a": 0})


def test_the_backend_gets_one_type_limit_per_type_as_numbers() -> None:
    cfg = _section(rate_limits={"b": "100/s burst 5", "a": "6/m"}, concurrency_limits={"b": 3})
    assert queue_options(cfg).limits == (
        # the grace: what 20 ms bring, at most half a token
        TypeLimit(type="a", concurrency=0, rate_per_ms=0.0001, burst=1, bucket=1.002),
        TypeLimit(type="b", concurrency=3, rate_per_ms=0.1, burst=5, bucket=5.5),
    )
    assert queue_options(_section()).limits == ()


def test_limits_given_to_the_message_queue_in_code() -> None:
    from meetq.backends.memory._backend import MemoryBackend

    mq = MessageQueue(MemoryBackend(), queue_name="in-code", rate_limits={"mail": "5/s"})
    assert mq.config.rate_limits == {"mail": RateLimit(count=5, period=1.0, burst=1)}
    with pytest.raises(ConfigError) as info:
        MessageQueue(MemoryBackend(), queue_name="in-code-2", concurrency_limits={"x": "2"})
    assert (info.value.key, info.value.value) == ("message_queue.concurrency_limits.x", "2")
