"""A worker process that consumes a queue and so runs its schedules' fire loop.

argv: redis_url key_prefix queue_name. Prints ``READY`` once started; stops gracefully
when its stdin closes (SIGKILL is the test's other way out).
"""

from __future__ import annotations

import asyncio
import sys

import meetq
from meetq import Message


async def main(url: str, prefix: str, queue_name: str) -> None:
    qm = await meetq.initialize_queue_system({
        "redis": {"url": url, "key_prefix": prefix},
        "message_queue": {"type": "redis", "queue_name": queue_name,
                          "visibility_timeout": "2s", "poll_interval": "50ms"},
        "event_bus": {"enabled": False},
    })
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("other")  # a consumer of the queue: it runs the fire loop
    async def other(msg: Message) -> None:
        pass

    await qm.start()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await qm.stop()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
