"""A worker process that takes messages and hangs in its handler until it is killed.

argv: redis_url key_prefix queue_name. Prints ``STARTED <id>`` for each message it runs.
"""

from __future__ import annotations

import asyncio
import sys

import meetq
from meetq import Message


async def main(url: str, prefix: str, queue_name: str) -> None:
    qm = await meetq.initialize_queue_system({
        "redis": {"url": url, "key_prefix": prefix},
        "message_queue": {"type": "redis", "queue_name": queue_name, "workers": 8,
                          "visibility_timeout": "500ms", "poll_interval": "50ms"},
        "event_bus": {"enabled": False},
    })
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("job")
    async def hang(msg: Message) -> None:
        print(f"STARTED {msg.id}", flush=True)
        await asyncio.Event().wait()

    await qm.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
