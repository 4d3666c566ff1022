"""Cost of building, encoding and decoding one message: the hot path input checks sit on.

    python bench/bench_validation.py

Times ``Message()``, ``encode_message``, ``decode_message``, ``PubSubMessage()`` and the
PubSub wire encode/decode for one small nested payload; each figure is the median of 5
runs of the best of 3 x 20,000 calls, in microseconds per call. To compare two versions,
run it alternately with ``PYTHONPATH`` pointing at each tree and compare the medians.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable

from meetq import JsonSerializer, Message, PubSubMessage
from meetq.core.serialization import (
    decode_message,
    decode_pubsub_message,
    encode_message,
    encode_pubsub_message,
)


def main() -> None:
    serializer = JsonSerializer()
    payload = {"user_id": 123, "meeting_id": 456, "tags": ["a", {"x": [1, {"y": None}]}]}
    message = Message(type="job", payload=payload)
    body = encode_message(message, serializer)
    event = PubSubMessage(type="evt", payload=payload)
    wire = encode_pubsub_message(event, serializer)
    cases: dict[str, Callable[[], object]] = {
        "Message()": lambda: Message(type="job", payload=payload),
        "encode_message": lambda: encode_message(message, serializer),
        "decode_message": lambda: decode_message(body, serializer, retry_count=0),
        "PubSubMessage()": lambda: PubSubMessage(type="evt", payload=payload),
        "encode_pubsub_message": lambda: encode_pubsub_message(event, serializer),
        "decode_pubsub_message": lambda: decode_pubsub_message(wire, serializer, channel="c"),
    }
    for name, call in cases.items():
        runs = [min(timeit.repeat(call, number=20_000, repeat=3)) / 20_000 * 1e6 for _ in range(5)]
        print(f"{name:24s} {statistics.median(runs):6.2f} us")


if __name__ == "__main__":
    main()
