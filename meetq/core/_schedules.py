"""Schedules: when a recurring message fires, as pure functions of the definition and time.

Design (why it looks like this): every process that runs a queue's fire loop must agree
on each fire time, so a fire time is a pure function of the stored definition and the
previous fire time — never of when a process happened to wake. ``Cadence.next_after``
is that function: a cron expression (the ``cronsim`` library, Debian cron's rules,
zoneinfo time zones) or a fixed interval on a grid anchored at the previous fire time.
``plan_fire`` decides what one fire step does (publish or not, which fire time, the next
one) from the stored next fire time and the clock; the backend then applies that step
as one compare-and-set, so however many processes compute it, one applies it.

DST follows cron: a time-of-day expression (fixed minute and hour fields, five fields)
that falls in a spring-forward gap runs at the first minute after the gap, and one in a
fall-back fold runs once, at its first occurrence; an expression stepping through hours
or minutes (``*/15 * * * *``) counts real time and runs in both halves of a fold.
The definition travels to the backend as canonical JSON (``encode_definition``), so
storing an unchanged definition again can be recognised and keeps its next fire time.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from meetq.core._durations import parse_duration
from meetq.core._validation import check_name
from meetq.core.errors import ValidationError
from meetq.core.types import Message, Priority

__all__ = [
    "DEFAULT_GRACE",
    "FIRE_TIME_HEADER",
    "MIN_EVERY",
    "MISFIRE_POLICIES",
    "SCHEDULE_HEADER",
    "Cadence",
    "FirePlan",
    "ScheduleDefinition",
    "decode_definition",
    "encode_definition",
    "fire_headers",
    "parse_cadence",
    "plan_fire",
    "schedules_from_config",
]

MisfirePolicy = Literal["skip", "run_once"]
#: What a fire time missed while no fire loop ran becomes.
MISFIRE_POLICIES: tuple[str, ...] = ("skip", "run_once")
#: The shortest ``every`` (seconds): each fire is a backend round trip per process.
MIN_EVERY = 0.01
#: The longest a fire time may be found late and still publish, unless a schedule says
#: otherwise: the gap to its successor, at most this (seconds).
DEFAULT_GRACE = 60.0
#: Headers every fired message carries: the schedule's name and the fire time it stands
#: for (ISO 8601, UTC, milliseconds).
SCHEDULE_HEADER = "meetq-schedule"
FIRE_TIME_HEADER = "meetq-fire-time"
MISFIRE_HEADER = "meetq-misfire"

# Fire times are Unix milliseconds; cronsim works to the second, so a time-zone walk
# from a millisecond instant is always strictly after it (see next_after).
_MAX_CRON_STEPS = 10_000


def _zone(field: str, value: object) -> ZoneInfo:
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "expected an IANA time zone name such as 'UTC'")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            field, value, "not a known IANA time zone (such as 'Europe/Berlin' or 'UTC')"
        ) from None


@attrs.frozen(kw_only=True)
class Cadence:
    """When something recurs: a cron expression in a time zone, or a fixed interval.

    Build it with ``parse_cadence`` (which validates); ``next_after`` is the pure
    next-fire function every process computes alike.
    """

    cron: str | None = None
    every: float | None = None  # seconds
    timezone: str = "UTC"

    def next_after(self, after_ms: int, anchor_ms: int | None = None) -> int:
        """The first fire time strictly after ``after_ms`` (Unix ms).

        ``every``: on the grid ``anchor_ms + k * every`` (``anchor_ms`` defaults to
        ``after_ms``, so the answer is ``after_ms + every``). ``cron``: the expression's
        next match in ``timezone``, Debian cron's DST rules (the module docstring).
        """
        if self.every is not None:
            step = max(1, round(self.every * 1000))
            anchor = after_ms if anchor_ms is None else anchor_ms
            if anchor > after_ms:
                return anchor
            return anchor + (((after_ms - anchor) // step) + 1) * step
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        start = datetime.fromtimestamp(after_ms / 1000, tz=UTC).astimezone(zone)
        walk = CronSim(self.cron, start)
        # A time-of-day expression walks the zone's wall clock: after a fold its next
        # match may lie before `after_ms` in real time (01:30, first occurrence, seen
        # from 01:10 of the second one). Such matches are passed over.
        for _ in range(_MAX_CRON_STEPS):
            try:
                found = next(walk)
            except StopIteration:  # cronsim ends its walk at a far year
                break
            at = math.floor(found.timestamp() * 1000)
            if at > after_ms:
                return at
        raise ValidationError("cron", self.cron, "never fires after the given time")

    def describe(self) -> str:
        """``cron '0 3 * * *' in Europe/Berlin`` or ``every 30s``."""
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron!r} in {self.timezone}"


def parse_cadence(
    cron: object = None, every: object = None, timezone: object = None, *, prefix: str = ""
) -> Cadence:
    """A validated ``Cadence``: exactly one of ``cron`` (a 5-field, or 6-field with
    seconds first, cron expression) and ``every`` (seconds, or ``"30s"``/``"5m"``...;
    at least ``MIN_EVERY``). ``timezone`` (default UTC) must be an IANA name; it applies
    to ``cron``. A bad value raises ``ValidationError`` naming ``<prefix>cron`` and so on.
    """
    zone_name = "UTC" if timezone is None else timezone
    _zone(f"{prefix}timezone", zone_name)
    assert isinstance(zone_name, str)
    if (cron is None) == (every is None):
        raise ValidationError(f"{prefix}cron", cron, "give exactly one of cron= and every=")
    if every is not None:
        try:
            seconds = parse_duration(every, number_unit=1.0)
        except ValueError as exc:
            raise ValidationError(f"{prefix}every", every, str(exc)) from None
        if seconds < MIN_EVERY:
            raise ValidationError(
                f"{prefix}every", every, f"must be at least {MIN_EVERY * 1000:g} ms"
            )
        return Cadence(every=seconds, timezone=zone_name)
    if not isinstance(cron, str) or not cron.strip():
        raise ValidationError(
            f"{prefix}cron", cron, "expected a cron expression such as '0 3 * * *'"
        )
    expression = " ".join(cron.split())
    try:
        CronSim(expression, datetime.now(UTC))
    except (CronSimError, ValueError, IndexError, KeyError) as exc:
        raise ValidationError(
            f"{prefix}cron", cron, f"not a valid cron expression ({exc or 'unreadable'})"
        ) from None
    cadence = Cadence(cron=expression, timezone=zone_name)
    try:
        cadence.next_after(_now_ms())
    except ValidationError as exc:
        raise ValidationError(f"{prefix}cron", cron, exc.problem) from None
    return cadence


def _now_ms() -> int:
    return math.floor(datetime.now(UTC).timestamp() * 1000)


def _template_fields(message: Message) -> dict[str, Any]:
    # What each fired message copies; id, timestamp and retry_count are its own.
    return {
        "type": message.type,
        "payload": dict(message.payload),
        "priority": int(message.priority),
        "headers": dict(message.headers),
        "max_retries": message.max_retries,
        "timeout": message.timeout,
        "source": message.source,
        "destination": message.destination,
        "dedup_key": message.dedup_key,
    }


@attrs.frozen(kw_only=True)
class ScheduleDefinition:
    """One named schedule: its cadence, misfire policy and the message it publishes.

    ``misfire_grace`` (seconds, None: the gap to the next fire time, at most
    ``DEFAULT_GRACE``) is how late a fire time may be found and still publish; later,
    it is *missed* and ``misfire`` decides: ``skip`` publishes nothing for it,
    ``run_once`` publishes one message for all the fire times missed in a row.
    """

    name: str
    cadence: Cadence
    misfire: MisfirePolicy = "skip"
    misfire_grace: float | None = None
    # Compared but not hashed (a dict): a config holding schedules stays hashable.
    message: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @classmethod
    def build(
        cls,
        name: object,
        message: object,
        *,
        cron: object = None,
        every: object = None,
        timezone: object = None,
        misfire: object = "skip",
        misfire_grace: object = None,
        prefix: str = "",
    ) -> ScheduleDefinition:
        """Validate every argument (``ValidationError`` naming ``<prefix><field>``)."""
        check_name(f"{prefix}name", name)
        assert isinstance(name, str)
        if not isinstance(message, Message):
            raise ValidationError(f"{prefix}message", message, "expected a meetq.Message")
        cadence = parse_cadence(cron, every, timezone, prefix=prefix)
        if misfire not in MISFIRE_POLICIES:
            raise ValidationError(
                f"{prefix}misfire", misfire, f"expected one of {', '.join(MISFIRE_POLICIES)}"
            )
        grace: float | None = None
        if misfire_grace is not None:
            try:
                grace = parse_duration(misfire_grace, number_unit=1.0)
            except ValueError as exc:
                raise ValidationError(f"{prefix}misfire_grace", misfire_grace, str(exc)) from None
        fields = _template_fields(message)
        try:
            json.dumps(fields, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"{prefix}message.payload",
                message.payload,
                f"a schedule's message is stored as JSON: {exc}",
            ) from None
        return cls(
            name=name,
            cadence=cadence,
            misfire=misfire,  # type: ignore[arg-type]  # checked against MISFIRE_POLICIES
            misfire_grace=grace,
            message=fields,
        )

    def grace_ms(self, fire_ms: int) -> int:
        """How late ``fire_ms`` may be found and still publish (see the class)."""
        if self.misfire_grace is not None:
            return round(self.misfire_grace * 1000)
        gap = self.cadence.next_after(fire_ms, fire_ms) - fire_ms
        return min(gap, round(DEFAULT_GRACE * 1000))

    def first_fire(self, now_ms: int) -> int:
        """The next fire time of a schedule stored at ``now_ms``."""
        return self.cadence.next_after(now_ms)

    def message_for(
        self, fire_ms: int, *, misfire: bool = False, message_id: str | None = None
    ) -> Message:
        """The message a fire publishes: the template with the schedule's headers."""
        fields = dict(self.message)
        headers = dict(fields.pop("headers", {}) or {})
        headers.update(fire_headers(self.name, fire_ms))
        if misfire:
            headers[MISFIRE_HEADER] = self.misfire
        extra: dict[str, Any] = {} if message_id is None else {"id": message_id}
        return Message(headers=headers, **fields, **extra)

    def summary(self) -> dict[str, Any]:
        """The definition as plain values (``MessageQueue.schedules()``)."""
        return {
            "cron": self.cadence.cron,
            "every": self.cadence.every,
            "timezone": self.cadence.timezone,
            "misfire": self.misfire,
            "misfire_grace": self.misfire_grace,
        }


def fire_headers(name: str, fire_ms: int) -> dict[str, str]:
    when = datetime.fromtimestamp(fire_ms / 1000, tz=UTC)
    return {SCHEDULE_HEADER: name, FIRE_TIME_HEADER: when.isoformat(timespec="milliseconds")}


def encode_definition(definition: ScheduleDefinition) -> bytes:
    """Canonical JSON: the same definition always gives the same bytes."""
    cadence = definition.cadence
    data = {
        "v": 1,
        "cron": cadence.cron,
        "every": cadence.every,
        "timezone": cadence.timezone,
        "misfire": definition.misfire,
        "misfire_grace": definition.misfire_grace,
        "message": definition.message,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def decode_definition(name: str, data: bytes) -> ScheduleDefinition:
    """The definition ``encode_definition`` wrote; ``ValueError`` for anything else
    (a record overwritten by hand), naming what is wrong."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != 1:
            raise ValueError("not a meetq schedule record (version 1)")
        cadence = parse_cadence(raw.get("cron"), raw.get("every"), raw.get("timezone"))
        message = raw.get("message")
        if not isinstance(message, dict):
            raise ValueError("no message template")
        misfire = raw.get("misfire")
        if misfire not in MISFIRE_POLICIES:
            raise ValueError(f"misfire={misfire!r}")
        grace = raw.get("misfire_grace")
        if grace is not None:
            grace = parse_duration(grace, number_unit=1.0)
        Message(**message)  # the template still makes a message
        Priority.parse(message.get("priority", 1))
    except (ValueError, TypeError, ValidationError) as exc:
        raise ValueError(f"unreadable schedule {name!r}: {exc}") from None
    return ScheduleDefinition(
        name=name, cadence=cadence, misfire=misfire, misfire_grace=grace, message=message
    )


@attrs.frozen(kw_only=True)
class FirePlan:
    """One fire step: publish a message for ``fire_ms`` (None: publish nothing), and
    store ``next_ms`` as the next fire time. ``missed``: the message stands for fire
    times found later than their grace (``run_once``)."""

    fire_ms: int | None
    next_ms: int
    missed: bool = False


def plan_fire(definition: ScheduleDefinition, next_ms: int, now_ms: int) -> FirePlan | None:
    """What the fire loop does with a schedule whose stored next fire time is
    ``next_ms`` at ``now_ms``; None while it is not due.

    - found within its grace: publish it; the next is its successor (which may be due
      too: the loop catches up one step at a time, each its own compare-and-set);
    - found later (missed): ``skip`` publishes nothing, ``run_once`` publishes one
      message for the run of missed fire times; the next is the first fire time still
      within its grace or in the future.
    """
    if next_ms > now_ms:
        return None
    cadence = definition.cadence
    grace = definition.grace_ms(next_ms)
    if now_ms - next_ms <= grace:
        return FirePlan(fire_ms=next_ms, next_ms=cadence.next_after(next_ms, next_ms))
    resume = cadence.next_after(max(next_ms, now_ms - grace - 1), next_ms)
    if definition.misfire == "run_once":
        return FirePlan(fire_ms=next_ms, next_ms=resume, missed=True)
    return FirePlan(fire_ms=None, next_ms=resume, missed=True)


#: The keys of one ``message_queue.schedules`` entry.
CONFIG_KEYS: tuple[str, ...] = (
    "name",
    "cron",
    "every",
    "timezone",
    "misfire",
    "misfire_grace",
    "type",
    "payload",
    "priority",
    "headers",
    "max_retries",
    "timeout",
)


def schedules_from_config(path: str, value: object) -> tuple[ScheduleDefinition, ...]:
    """``message_queue.schedules`` (a list of mappings) as definitions; a bad entry
    raises ``ValidationError`` whose field is the full key (``<path>[1].cron``)."""
    if value is None:
        return ()
    if isinstance(value, tuple) and all(isinstance(v, ScheduleDefinition) for v in value):
        return value  # already built (a config class made in code, or evolved)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        raise ValidationError(path, value, "expected a list of schedules")
    built: list[ScheduleDefinition] = []
    names: set[str] = set()
    for i, entry in enumerate(value):
        where = f"{path}[{i}]"
        if isinstance(entry, ScheduleDefinition):
            built.append(entry)
            continue
        if not isinstance(entry, Mapping):
            raise ValidationError(where, entry, "expected a mapping with name, cron or every, type")
        for key in entry:
            if key not in CONFIG_KEYS:
                close = difflib.get_close_matches(str(key), CONFIG_KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValidationError(
                    f"{where}.{key}",
                    entry[key],
                    f"unknown key (known: {', '.join(CONFIG_KEYS)}){hint}",
                )
        if "type" not in entry:
            raise ValidationError(f"{where}.type", None, "a schedule needs the message type")
        fields = {
            k: entry[k]
            for k in ("type", "payload", "priority", "headers", "max_retries", "timeout")
            if k in entry and entry[k] is not None
        }
        try:
            message = Message(**fields)
        except ValidationError as exc:
            raise ValidationError(f"{where}.{exc.field}", exc.value, exc.problem) from None
        except TypeError as exc:  # a field of the wrong shape attrs itself refused
            raise ValidationError(where, entry, str(exc)) from None
        definition = ScheduleDefinition.build(
            entry.get("name"),
            message,
            cron=entry.get("cron"),
            every=entry.get("every"),
            timezone=entry.get("timezone"),
            misfire=entry.get("misfire", "skip"),
            misfire_grace=entry.get("misfire_grace"),
            prefix=f"{where}.",
        )
        if definition.name in names:
            raise ValidationError(f"{where}.name", definition.name, "two schedules have this name")
        names.add(definition.name)
        built.append(definition)
    return tuple(built)
