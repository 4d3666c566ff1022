"""A worker process for test_cancel_processes.py: its ``hold`` handlers wait until cancelled.

argv: redis_url key_prefix queue_name. Prints ``READY <worker name>`` once consuming,
``STARTED <id> <attempt>`` when a ``hold`` handler starts (after reporting progress 0.5)
and ``CANCELLED <id>`` when one is cancelled; ``quick`` handlers return their payload's
``n``. Drains and exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

import meetq
from meetq import Message


async def main(url: str, prefix: str, queue_name: str) -> None:
    qm = await meetq.initialize_queue_system({
        "redis": {"url": url, "key_prefix": prefix},
        "message_queue": {"type": "redis", "queue_name": queue_name, "workers": 4,
                          "visibility_timeout": "2s", "poll_interval": "50ms",
                          "max_retries": 3, "retry_backoff_base": "10ms",
                          "result_ttl": "60s"},
        "event_bus": {"enabled": False},
    })
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("hold")
    async def hold(msg: Message) -> None:
        meetq.current_delivery().progress(0.5, {"stage": "holding"})
        print(f"STARTED {msg.id} {msg.attempt}", flush=True)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print(f"CANCELLED {msg.id}", flush=True)
            raise

    @mq.handler("quick")
    async def quick(msg: Message) -> dict[str, int]:
        return {"n": int(msg.payload["n"])}

    await qm.start()
    print(f"READY {mq.worker_name}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await qm.stop()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
