"""A worker process with a rate limit on type ``tick``, for the three-process test.

argv: redis_url key_prefix queue_name rate. Prints ``READY`` once consuming, then
``START <unix time>`` as each handler starts; runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
import time

import meetq
from meetq import Message


async def main(url: str, prefix: str, queue_name: str, rate: str) -> None:
    qm = await meetq.initialize_queue_system({
        "redis": {"url": url, "key_prefix": prefix},
        "message_queue": {"type": "redis", "queue_name": queue_name, "workers": 8,
                          "rate_limits": {"tick": rate}},
        "event_bus": {"enabled": False},
    })
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("tick")
    async def tick(msg: Message) -> None:
        print(f"START {time.time():.6f}", flush=True)

    await qm.start()
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
