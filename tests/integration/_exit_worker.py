"""A worker process whose handler calls ``sys.exit(0)`` for ``exit`` messages.

argv: redis_url key_prefix queue_name. Prints ``RAN <id>`` for each ``job`` it handles.
"""

from __future__ import annotations

import asyncio
import sys

import meetq
from meetq import Message


async def main(url: str, prefix: str, queue_name: str) -> None:
    qm = await meetq.initialize_queue_system({
        "redis": {"url": url, "key_prefix": prefix},
        "message_queue": {"type": "redis", "queue_name": queue_name, "workers": 2,
                          "poll_interval": "50ms"},
        "event_bus": {"enabled": False},
    })
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("exit")
    def leave(msg: Message) -> None:
        sys.exit(0)

    @mq.handler("exit_async")
    async def leave_async(msg: Message) -> None:
        sys.exit(0)

    @mq.handler("job")
    async def job(msg: Message) -> None:
        print(f"RAN {msg.id}", flush=True)

    await qm.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
