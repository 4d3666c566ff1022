"""What a publish does before it reaches a backend, and the queue-wide stats, once.

The async ``MessageQueue`` and the sync producer (``meetq.sync``) both publish: each
message is validated and encoded here, so both refuse the same input with the same
error naming the same field, and both describe a queue with the same keys.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from meetq.core._limits import type_limits
from meetq.core._validation import (
    MAX_DEAD_LETTER_BATCH,
    check_count,
    check_name,
    check_seconds,
    check_unix_time,
    plain_str,
)
from meetq.core.config import MessageQueueConfig
from meetq.core.errors import ValidationError
from meetq.core.protocols import Maintenance, QueueSnapshot, StoredMessage, WorkQueueOptions
from meetq.core.serialization import Serializer, encode_message
from meetq.core.types import Message, Priority

__all__ = [
    "MAX_BATCH",
    "check_batch",
    "default_source",
    "prepare_batch",
    "prepare_message",
    "queue_options",
    "queue_totals",
    "requeue_request",
]

#: The most messages one ``publish_batch`` takes.
MAX_BATCH = 100_000


def prepare_message(
    message: object,
    delay: object,
    not_before: object,
    field: str,
    serializer: Serializer,
    max_retries: int,
) -> StoredMessage:
    """``message`` checked and encoded for ``enqueue``; ``field`` names it in errors."""
    if not isinstance(message, Message):
        raise ValidationError(field, message, "expected a meetq.Message")
    delay_s = 0.0
    if delay is not None and not_before is not None:
        raise ValidationError("delay", delay, "give delay or not_before, not both")
    if delay is not None:
        delay_s = check_seconds("delay", delay)
    if not_before is not None:
        delay_s = max(0.0, check_unix_time("not_before", not_before) - time.time())
    try:
        body = encode_message(message, serializer, max_retries=max_retries)
    except ValidationError as exc:
        # "message.payload.x" reads better as "<field>.payload.x".
        inner = exc.field.removeprefix("message")
        raise type(exc)(f"{field}{inner}", exc.value, exc.problem) from None
    return StoredMessage(
        id=message.id,
        type=message.type,
        priority=int(message.priority),
        body=body,
        delay_ms=int(delay_s * 1000),
        dedup_key=message.dedup_key,
    )


def check_batch(messages: object) -> None:
    """A batch is a sequence (not a string) of at most ``MAX_BATCH`` items."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ValidationError("messages", messages, "expected a list of meetq.Message")
    if len(messages) > MAX_BATCH:
        raise ValidationError(
            "messages", f"<{len(messages)} messages>", f"at most {MAX_BATCH} per batch"
        )


def prepare_batch(
    messages: object, delay: object, serializer: Serializer, max_retries: int
) -> list[StoredMessage]:
    """Every message of a batch checked and encoded, or the first error (nothing sent)."""
    check_batch(messages)
    assert isinstance(messages, Sequence)
    return [
        prepare_message(m, delay, None, f"messages[{i}]", serializer, max_retries)
        for i, m in enumerate(messages)
    ]


def requeue_request(max_count: object, message_type: object) -> Maintenance:
    """``requeue_dead_letters``' arguments checked: up to ``max_count`` (at most
    ``MAX_DEAD_LETTER_BATCH``) oldest dead letters, of ``message_type`` only when given."""
    limit = check_count("max_count", max_count, MAX_DEAD_LETTER_BATCH)
    only: str | None = None
    if message_type is not None:
        check_name("message_type", message_type)
        only = plain_str(message_type)  # a TaskType member: sent as its string
    return Maintenance(action="requeue_dead", limit=limit, message_type=only)


def queue_totals(queue_name: str, backend_name: str, snapshot: QueueSnapshot) -> dict[str, Any]:
    """The queue-wide part of ``MessageQueue.stats()``: shared by every process."""
    counts, lengths = snapshot.counters, snapshot.waiting
    by_name = {p.name.lower(): lengths.get(int(p), 0) for p in Priority}
    return {
        "queue_name": queue_name,
        "backend": backend_name,
        "total_published": counts.get("published", 0),
        "total_processed": counts.get("processed", 0),
        "total_failed": counts.get("failed", 0),
        "total_retried": counts.get("retried", 0),
        "total_dead_letter": counts.get("dead_letter", 0),
        "total_dropped": counts.get("dropped", 0),
        "total_cancelled": snapshot.cancelled,
        "queue_length": {**by_name, "total": sum(lengths.values())},
        "processing_count": snapshot.processing,
        "dead_letter_count": snapshot.dead,
        "unhandled_count": snapshot.unhandled,
    }


def queue_options(cfg: MessageQueueConfig) -> WorkQueueOptions:
    """The limits a backend keeps for a queue, from its ``message_queue`` section."""
    return WorkQueueOptions(
        dead_letter_max_size=cfg.dead_letter_max_size,
        dead_letter_max_age_ms=int(cfg.dead_letter_max_age * 1000),
        limits=type_limits(cfg.rate_limits, cfg.concurrency_limits),
    )


def default_source() -> str:
    """``PubSubMessage.source`` when none is given: the program name and pid."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return f"{name or 'python'}:{os.getpid()}"
