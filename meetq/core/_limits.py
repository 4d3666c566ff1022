"""Rate and concurrency limits per message type: their syntax, checked once, and the
form a backend receives them in (``WorkQueueOptions.limits``).

Design (why it looks like this): a limit only holds across processes if it is applied
where the claim happens, inside the backend's one atomic step (``exchange``). So core
parses and checks the config here, once, and hands each backend a ``TypeLimit`` per
type as plain numbers; the backend keeps the state (a token bucket per rate-limited
type, the count of leases for a concurrency limit) and never parses anything.

The rate is a token bucket: ``count`` tokens every ``period`` seconds, at most ``burst``
whole tokens kept (1 unless asked: ``"100/s"`` then means one start every 10 ms, never
100 at once). A claim takes one whole token per message it leases; the bucket starts
with ``burst``. Beyond ``burst`` it keeps up to half a token more (``GRACE_TOKENS``, less
for a slow rate: what ``GRACE_MS`` brings): a worker that comes back for the next token
a few milliseconds late — a timer, a round trip, a busy machine — then loses none of the
rate, while in any span ``d`` no more than ``burst + rate * d`` starts happen, give or
take that half token. Syntax:
``"100/s"``, ``"10/m"``, ``"5/h"``, ``"1/d"``, ``"30/10s"`` (any duration after the
slash), optionally ``" burst 20"``; or the mapping ``{rate: "100/s", burst: 20}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from meetq.core._durations import parse_duration
from meetq.core._validation import check_name
from meetq.core.errors import ConfigError, ValidationError

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_RATE_PER_SECOND",
    "RateLimit",
    "TypeLimit",
    "check_concurrency_limits",
    "check_rate_limits",
    "type_limits",
]

#: The largest concurrency limit (a larger one limits nothing a real worker pool reaches).
MAX_CONCURRENCY = 1_000_000
#: The fastest rate accepted, in tokens per second, and the largest count or burst.
MAX_RATE_PER_SECOND = 1_000_000.0
_MAX_COUNT = 10**9
#: The most a bucket keeps beyond ``burst``, in tokens, and the lateness it absorbs.
GRACE_TOKENS = 0.5
GRACE_MS = 20.0

_RATE = re.compile(
    r"^\s*(\d+)\s*/\s*([0-9]*\.?[0-9]*)\s*(ms|s|m|h|d)\s*(?:burst\s+(\d+)\s*)?$"
)
_RATE_HINT = "expected a rate such as '100/s', '10/m', '30/10s' or '100/s burst 20'"


@attrs.frozen(kw_only=True)
class RateLimit:
    """``count`` starts every ``period`` seconds, at most ``burst`` at once (a token
    bucket of ``burst`` tokens, refilled at ``count / period`` per second)."""

    count: int
    period: float
    burst: int = 1

    @property
    def per_second(self) -> float:
        """Tokens added per second."""
        return self.count / self.period

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s burst {self.burst}"


@attrs.frozen(kw_only=True)
class TypeLimit:
    """What a backend enforces for one message type at every claim, in every process.

    ``concurrency`` > 0: at most that many of the type leased at once (leases held by any
    worker count, until settled or expired); ``rate_per_ms`` > 0: a token bucket refilled
    at that many tokens per millisecond of the backend's clock, holding up to ``bucket``
    tokens (``burst`` plus the grace: see the module docstring) and ``floor(bucket)`` =
    ``burst`` at first; a lease takes one whole token. 0 means no such limit."""

    type: str
    concurrency: int = 0
    rate_per_ms: float = 0.0
    burst: int = 0
    bucket: float = 0.0


def _rate(path: str, value: object) -> RateLimit:
    if isinstance(value, RateLimit):
        return value
    burst_given: object = None
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"rate", "burst"})
        if unknown or "rate" not in value:
            raise ConfigError(path, value, "expected a mapping with 'rate' and optional 'burst'")
        text, burst_given = value["rate"], value.get("burst")
        if isinstance(text, str) and "burst" in text:
            raise ConfigError(path, value, "give the burst once: in 'rate' or as 'burst'")
    else:
        text = value
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(path, value, _RATE_HINT)
    count = int(match.group(1))
    try:
        period = parse_duration((match.group(2) or "1") + match.group(3), number_unit=1.0)
    except ValueError as exc:
        raise ConfigError(path, value, str(exc)) from None
    burst: object = match.group(4) and int(match.group(4))
    if burst_given is not None:
        burst = burst_given
    if burst in (None, ""):
        burst = 1
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= _MAX_COUNT:
        raise ConfigError(path, value, f"the burst must be an integer from 1 to {_MAX_COUNT}")
    if not 1 <= count <= _MAX_COUNT:
        raise ConfigError(path, value, f"the count must be from 1 to {_MAX_COUNT}")
    if period <= 0:
        raise ConfigError(path, value, "the period must be longer than 0")
    limit = RateLimit(count=count, period=period, burst=burst)
    if limit.per_second > MAX_RATE_PER_SECOND:
        raise ConfigError(path, value, f"at most {MAX_RATE_PER_SECOND:g} per second")
    return limit


def _type_key(path: str, key: object) -> str:
    try:
        check_name("message_type", key)
    except ValidationError as exc:
        raise ConfigError(f"{path}.{key}", key, f"not a message type: {exc.problem}") from None
    return str(key)


def _mapping(path: str, value: object) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, value, "expected a mapping of message type to limit")
    return value


def check_rate_limits(path: str, value: object) -> dict[str, RateLimit]:
    """``message_queue.rate_limits``: message type -> ``RateLimit`` (see the module
    docstring for the syntax); ``ConfigError`` naming ``path.<type>`` and the value."""
    return {
        _type_key(path, k): _rate(f"{path}.{k}", v) for k, v in _mapping(path, value).items()
    }


def check_concurrency_limits(path: str, value: object) -> dict[str, int]:
    """``message_queue.concurrency_limits``: message type -> at most that many running."""
    out: dict[str, int] = {}
    for key, n in _mapping(path, value).items():
        name = _type_key(path, key)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CONCURRENCY:
            raise ConfigError(
                f"{path}.{key}", n, f"expected an integer from 1 to {MAX_CONCURRENCY}"
            )
        out[name] = n
    return out


def _grace(rate_per_ms: float) -> float:
    return min(GRACE_TOKENS, rate_per_ms * GRACE_MS)


def type_limits(
    rate_limits: Mapping[str, RateLimit], concurrency_limits: Mapping[str, int]
) -> tuple[TypeLimit, ...]:
    """The limits a backend applies, one ``TypeLimit`` per limited type, sorted by type."""
    out = []
    for name in sorted({*rate_limits, *concurrency_limits}):
        rate = rate_limits.get(name)
        out.append(
            TypeLimit(
                type=name,
                concurrency=concurrency_limits.get(name, 0),
                rate_per_ms=0.0 if rate is None else rate.per_second / 1000.0,
                burst=0 if rate is None else rate.burst,
                bucket=0.0 if rate is None else rate.burst + _grace(rate.per_second / 1000.0),
            )
        )
    return tuple(out)
