"""The Lua scripts and how each call of them is built: shared by the async work queue
(``_work_queue.py``) and the sync producer (``_sync.py``).

Why one module: a script's KEYS and ARGV layout is a contract with its ``.lua`` file
(each file's header lists it). Both clients build their calls here, so a change to a
script's arguments is made once and cannot drift between them. The multi-step calls
(``inspect`` learning new types, ``requeue`` reading then moving) are written as
generators that yield each call and receive its reply; each client drives them with its
own EVALSHA, awaited or blocking.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from meetq.core.protocols import COUNTER_NAMES, QueueSnapshot, StoredMessage, WorkQueueOptions

__all__ = [
    "COUNT_FIELDS",
    "FIXED_KEYS",
    "SCRIPTS",
    "SHARDED_SCRIPTS",
    "Call",
    "QueueKeys",
    "Script",
    "batch_layout",
    "dead_entries",
    "dead_info",
    "dead_kept",
    "dead_list_call",
    "enqueue_call",
    "enqueue_ids",
    "inspect_steps",
    "live_workers",
    "lossy_text",
    "merged_enqueue",
    "requeue_steps",
    "text",
]

_LUA_DIR = Path(__file__).parent / "lua"

# Fixed key names, in the order _lib.lua documents (KEYS[1..14]).
FIXED_KEYS: Final = (
    "m:body",
    "m:score",
    "m:attempts",
    "m:token",
    "m:dedup",
    "m:ready_at",
    "dedup",
    "dead",
    "dinfo",
    "counts",
    "seq",
    "types",
    "handlers",
    "notify",
)
# The counter fields inspect.lua returns, in _lib.lua's COUNT_FIELDS order.
COUNT_FIELDS: Final = (
    "published",
    "processed",
    "failed",
    "retried",
    "dead_letter",
    "dropped",
    "waiting:0",
    "waiting:1",
    "waiting:2",
    "waiting:3",
    "processing",
    "cancelled",
)
# How many unreadable dead-letter records one requeue call looks past.
MAX_SKIPPED_DEAD: Final = 10_000


class Script:
    """One Lua script: the shared helpers plus its own file, known by its SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()


# Where _lib.lua's head (the key names, BAND, now_ms) ends and its helpers begin.
_HEAD_END: Final = "-- HEAD END\n"
# Loaded with the head only: the publish hot path uses none of the helpers.
_HEAD_ONLY: Final = frozenset({"enqueue_one"})


def _load_scripts() -> dict[str, Script]:
    prelude = (_LUA_DIR / "_lib.lua").read_text(encoding="utf-8")
    head = prelude[: prelude.index(_HEAD_END) + len(_HEAD_END)]
    names = (
        "enqueue",
        "enqueue_one",
        "exchange",
        "extend",
        "heartbeat",
        "inspect",
        "unhandled_types",
        "sweep",
        "dead_list",
        "requeue",
        "clear",
        "clear_dead",
        "status",
        "cancel",
        "track",
        "progress",
        "schedule_put",
        "schedule_remove",
        "schedule_list",
        "schedule_fire",
    )
    return {
        name: Script(name, (head if name in _HEAD_ONLY else prelude) + "\n" + _lua(name))
        for name in names
    }


def _lua(name: str) -> str:
    return (_LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


SCRIPTS: Final = _load_scripts()

# The command's name as a Lua string literal, however the call is written.
_PUBLISH: Final = re.compile(r"""(['"])PUBLISH\1""")


def _sharded(script: Script) -> Script:
    # Every channel a script publishes on carries the queue's hash tag, so it is a shard
    # channel of the script's own slot, which a script on a cluster may SPUBLISH to.
    return Script(script.name, _PUBLISH.sub(r"\1SPUBLISH\1", script.source))


#: The scripts for a Redis Cluster: the same, with every ``PUBLISH`` (wake-ups, hand-offs)
#: a ``SPUBLISH``, so a notification stays on the queue's primary instead of being
#: broadcast to every node, and reaches the ``SSUBSCRIBE`` listener there (``_sharded.py``).
SHARDED_SCRIPTS: Final = {name: _sharded(script) for name, script in SCRIPTS.items()}

#: One script call: the script, its KEYS, its ARGV.
Call = tuple[Script, Sequence[bytes], Sequence[Any]]


def text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class QueueKeys:
    """The key names of one queue (see ``_work_queue.py``'s key map), built once."""

    __slots__ = (
        "_single",
        "_type_keys",
        "channel",
        "fixed",
        "known_types",
        "limits",
        "prefix",
        "workers",
    )

    def __init__(self, key_prefix: str, queue_name: str) -> None:
        self.prefix = f"{key_prefix}:{{{queue_name}}}:"
        self.fixed: list[bytes] = [self.key(name) for name in FIXED_KEYS]
        self.channel = self.fixed[-1]
        # Not in the fixed layout (that would move every script's type triplets): the
        # two scripts that use it take it as one key more (heartbeat.lua, inspect.lua).
        self.workers = self.key("workers")
        self.limits = self.key("limits")  # the token buckets (exchange.lua, last key)
        self._type_keys: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._single: dict[str, tuple[bytes, ...]] = {}  # enqueue_one's, per type
        # The types whose keys inspect passes; grows when the script names a new one.
        self.known_types: list[str] = []

    def key(self, name: str) -> bytes:
        return (self.prefix + name).encode("utf-8")

    def of_type(self, message_type: str) -> tuple[bytes, bytes, bytes]:
        keys = self._type_keys.get(message_type)
        if keys is None:
            keys = self._type_keys[message_type] = (
                self.key(f"ready:{message_type}"),
                self.key(f"delayed:{message_type}"),
                self.key(f"lease:{message_type}"),
            )
        return keys

    def with_types(self, types: Sequence[str]) -> list[bytes]:
        keys = list(self.fixed)
        for message_type in types:
            keys.extend(self.of_type(message_type))
        return keys

    def parked(self, types: Sequence[str], nclaim: int) -> list[bytes]:
        """The keys of ``types``, then the parked keys of the first ``nclaim`` of them
        (exchange.lua; enqueue_one.lua with its one type)."""
        keys = self.with_types(types)
        keys.append(self.key("parked"))
        keys.extend(self.key(f"parked:{t}") for t in types[:nclaim])
        return keys

    def exchange(self, types: Sequence[str], nclaim: int) -> list[bytes]:
        """exchange.lua's keys: ``parked(types, nclaim)``, then the token buckets."""
        keys = self.parked(types, nclaim)
        keys.append(self.limits)
        return keys

    def single(self, message_type: str) -> tuple[bytes, ...]:
        # The one-message publish is the latency path: its keys are built once per
        # type, as the tuple a packed-head cache can be keyed by.
        keys = self._single.get(message_type)
        if keys is None:
            keys = self._single[message_type] = tuple(self.parked((message_type,), 1))
        return keys


def enqueue_call(keys: QueueKeys, messages: Sequence[StoredMessage]) -> Call:
    """The call storing ``messages`` (not empty): enqueue_one.lua for one message
    without a dedup key, enqueue.lua otherwise. Its reply goes to ``enqueue_ids``."""
    if len(messages) == 1 and messages[0].dedup_key is None:
        m = messages[0]
        return (
            SCRIPTS["enqueue_one"],
            keys.single(m.type),
            (m.id, m.type, m.priority, m.delay_ms, m.body),
        )
    names, args = batch_layout(messages)
    return SCRIPTS["enqueue"], keys.with_types(names), args


def batch_layout(messages: Sequence[StoredMessage]) -> tuple[list[str], list[Any]]:
    """The types of ``messages`` (their KEYS triplets' order) and the batch as
    enqueue.lua's ARGV lays it out (``store_batch`` in _lib.lua reads it)."""
    index: dict[str, int] = {}
    body: list[Any] = []
    for m in messages:
        t = index.get(m.type)
        if t is None:
            t = index[m.type] = len(index) + 1
        # "" means no key; a real key travels behind "=" so even "" stays a key.
        key = "" if m.dedup_key is None else "=" + m.dedup_key
        body += (m.id, t, m.priority, m.delay_ms, key, m.body)
    names = list(index)
    return names, [len(names), *names, *body]


#: Fewer enqueue_one calls than this in one coalesced write go out as they are: for two,
#: enqueue.lua's checks of every key cost Redis more than the two scripts; at three it
#: is about even (and one reply to read instead of three), from four on it is cheaper.
MERGE_MIN: Final = 3


def merged_enqueue(calls: Sequence[Call]) -> tuple[Call, list[int]] | None:
    """One enqueue.lua call storing the messages of the enqueue_one calls among ``calls``
    (built by ``enqueue_call``), in their order, and those calls' indexes; None when
    there are fewer than ``MERGE_MIN``.

    enqueue.lua checks every key before its first write, so it stores all of them or,
    failing, none: the caller may then send each one alone for its own outcome. Each
    of them succeeds with enqueue_one's reply 1 (the message's own id)."""
    one = SCRIPTS["enqueue_one"]
    singles = [i for i, call in enumerate(calls) if call[0] is one]
    if len(singles) < MERGE_MIN:
        return None
    keys: list[bytes] = list(calls[singles[0]][1][: len(FIXED_KEYS)])
    index: dict[Any, int] = {}
    body: list[Any] = []
    for i in singles:
        _, call_keys, (message_id, message_type, priority, delay_ms, data) = calls[i]
        t = index.get(message_type)
        if t is None:
            t = index[message_type] = len(index) + 1
            # enqueue_one's KEYS: the fixed ones, then its type's triplet.
            keys += call_keys[len(FIXED_KEYS) : len(FIXED_KEYS) + 3]
        body += (message_id, t, priority, delay_ms, "", data)
    return (SCRIPTS["enqueue"], keys, [len(index), *index, *body]), singles


def enqueue_ids(messages: Sequence[StoredMessage], reply: Any) -> list[str]:
    """The id of each message: its own, or a dedup key's holder the script named."""
    ids = [m.id for m in messages]
    if isinstance(reply, list):  # enqueue_one replies 1 or 0: the id is the message's
        for i in range(0, len(reply), 2):
            ids[int(reply[i]) - 1] = text(reply[i + 1])
    return ids


# inspect.lua's reply (its header): the COUNT_FIELDS values, then these.
(
    _INSPECT_DEAD,
    _INSPECT_UNHANDLED,
    _INSPECT_MISSING,
    _INSPECT_DELAYED,
    _INSPECT_LIVE_TYPES,
    _INSPECT_WORKERS,
    _INSPECT_OLDEST_MS,
) = range(len(COUNT_FIELDS), len(COUNT_FIELDS) + 7)


def inspect_steps(
    keys: QueueKeys, options: WorkQueueOptions
) -> Generator[Call, Any, QueueSnapshot]:
    """inspect.lua. It needs the keys of every type; a type it was not given comes back
    named, and the call is repeated once with it (a second round trip only the first
    time a type is seen by this handle)."""
    reply: Any = None
    for _ in range(2):
        names = keys.known_types
        reply = yield (
            SCRIPTS["inspect"],
            [*keys.with_types(names), keys.workers],
            [options.dead_letter_max_size, options.dead_letter_max_age_ms, len(names), *names],
        )
        missing = [text(t) for t in reply[_INSPECT_MISSING]]
        if not missing:
            break
        keys.known_types = sorted({*names, *missing})
    values = dict(zip(COUNT_FIELDS, reply, strict=False))
    return QueueSnapshot(
        waiting={p: int(values[f"waiting:{p}"]) for p in range(4)},
        processing=int(values["processing"]),
        dead=int(reply[_INSPECT_DEAD]),
        unhandled=int(reply[_INSPECT_UNHANDLED]),
        counters={name: int(values[name]) for name in COUNTER_NAMES},
        cancelled=int(values["cancelled"]),
        delayed=int(reply[_INSPECT_DELAYED]),
        workers=live_workers(reply[_INSPECT_LIVE_TYPES], reply[_INSPECT_WORKERS]),
        oldest_age=max(0, int(reply[_INSPECT_OLDEST_MS])) / 1000.0,
    )


def lossy_text(value: bytes | str) -> str:
    # An id written by hand may not be UTF-8; showing it beats failing the whole listing.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def live_workers(live_types: Sequence[bytes], entries: Sequence[bytes]) -> dict[str, list[str]]:
    """inspect.lua's live types and ``<len>:<worker><type>`` entries as type -> workers."""
    live: dict[str, list[str]] = {lossy_text(t): [] for t in live_types}
    for entry in entries:
        size, _, rest = entry.partition(b":")
        if not size.isdigit() or int(size) > len(rest):
            continue  # not written by heartbeat.lua: nothing to show for it
        worker, message_type = lossy_text(rest[: int(size)]), lossy_text(rest[int(size) :])
        if message_type in live:
            live[message_type].append(worker)
    return {t: sorted(names) for t, names in sorted(live.items())}


def dead_entries(reply: Sequence[Any], *, bodies: bool) -> Iterator[tuple[Any, Any, Any]]:
    """dead_list.lua's entries as (id, info JSON, body — None without ``bodies``);
    ``reply[0]`` is how many dead letters are kept (``dead_kept``)."""
    step = 3 if bodies else 2
    for i in range(1, len(reply), step):
        yield reply[i], reply[i + 1], reply[i + 2] if bodies else None


def dead_kept(reply: Sequence[Any]) -> int:
    """How many dead letters dead_list.lua found kept, after the caps."""
    return int(reply[0])


def dead_list_call(keys: QueueKeys, options: WorkQueueOptions, limit: int, *, bodies: bool) -> Call:
    return (
        SCRIPTS["dead_list"],
        keys.fixed,
        [
            options.dead_letter_max_size,
            options.dead_letter_max_age_ms,
            max(0, limit),
            "1" if bodies else "0",
        ],
    )


def requeue_steps(
    keys: QueueKeys, options: WorkQueueOptions, max_count: int, message_type: str | None
) -> Generator[Call, Any, int]:
    """Move up to ``max_count`` oldest dead letters (of ``message_type`` only, when
    given) back to ready, attempts reset.

    Two steps: read the oldest ids with their types, then one script that takes
    those types' keys and skips any id that left the dead-letter queue meanwhile.
    """
    index: dict[str, int] = {}
    items: list[Any] = []
    window = max_count
    while True:
        # Unreadable records are skipped, so the window widens past them: a run of
        # corrupt oldest entries must not hide the good ones behind it.
        reply = yield dead_list_call(keys, options, window, bodies=False)
        index, items, skipped, other = {}, [], 0, 0
        for dead_id, raw_info, _ in dead_entries(reply, bodies=False):
            info = dead_info(raw_info)
            if isinstance(info, str):
                # No type or priority: no ready set to go back to. It stays a dead
                # letter (listed with the reason) rather than being lost.
                skipped += 1
                continue
            if message_type is not None and info["type"] != message_type:
                other += 1
                continue
            if len(items) == 3 * max_count:
                break
            t = index.get(info["type"])
            if t is None:
                t = index[info["type"]] = len(index) + 1
            items += (dead_id, t, info["priority"])
        wider = max_count + min(skipped, MAX_SKIPPED_DEAD) + other
        if other:  # letters of other types may lie far ahead: widen geometrically
            wider = max(wider, 2 * window)
        if len(items) == 3 * max_count or wider <= window or window >= dead_kept(reply):
            break
        window = wider
    if not items:
        return 0
    names = list(index)
    moved = yield SCRIPTS["requeue"], keys.with_types(names), [len(names), *names, *items]
    return int(moved)


_DEAD_INFO_TEXT: Final = ("type", "error", "traceback")
_DEAD_INFO_NUMBERS: Final = ("attempts", "failed_at", "priority")


def dead_info(raw: Any) -> dict[str, Any] | str:
    """A dead letter's ``dinfo`` record checked field by field, or why it is unusable.

    The record is written by our scripts, but the key is plain Redis: anyone can
    overwrite it, and one bad record must not make ``dead_letters()`` raise."""
    if raw is None:
        return "its record is missing"
    try:
        info = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return f"the record is not JSON ({type(exc).__name__}): {raw[:60]!r}"
    if not isinstance(info, dict):
        return f"the record is not a JSON object: {raw[:60]!r}"
    for name in _DEAD_INFO_TEXT:
        if not isinstance(info.get(name), str):
            return f"field {name!r} of the record is not a string"
    for name in _DEAD_INFO_NUMBERS:
        value = info.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"field {name!r} of the record is not a number"
        if not -(2**53) <= value <= 2**53:  # also false for NaN
            return f"field {name!r} of the record is out of range"
    info["attempts"], info["priority"] = int(info["attempts"]), int(info["priority"])
    if not 0 <= info["priority"] <= 3 or not info["type"]:
        return "the record names no valid type and priority"
    return info
