"""Sync producer throughput: meetq.sync next to redis-py's sync RPUSH, same run.

    python bench/bench_sync.py [--runs 5] [--count 4000] [--threads 1,8]

Starts its own redis-server on a free loopback port. For each thread count, each run
publishes ``--count`` messages in total, split evenly over the threads (which start
together at a barrier), and reports publishes per second:

- ``meetq.sync``: ``SyncProducer.publish`` of a small ``Message`` (built inside the
  timed span: a view builds it per request) with the default config (only the URL and a
  fresh key prefix set): validation, JSON encoding, one EVALSHA of enqueue_one.lua on
  the BlockingConnectionPool the producer keeps;
- ``RPUSH``: redis-py's sync client pushing the same JSON body the message encodes to,
  on a ``BlockingConnectionPool`` of the same size: the least any Redis-list producer
  does, and the ceiling for one command per publish.

Kinds alternate within a run, so machine noise hits both alike; the figure is the
median over ``--runs`` runs, with the meetq/RPUSH ratio's range across runs beside it.
The machine is shared and has 2 cores: compare ratios within one run, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from meetq import Message, RedisConfig
from meetq.sync import SyncProducer
from meetq.testing import RedisServer

PAYLOAD = {"user_id": 42, "action": "send_email", "to": "someone@example.com"}


def timed(threads: int, count: int, publish: Callable[[int], Any]) -> float:
    """Publishes per second: ``count`` calls of ``publish`` over ``threads`` threads."""
    each = count // threads
    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work() -> None:
        start.wait()
        try:
            for i in range(each):
                publish(i)
        except BaseException as exc:  # reported below: a benchmark must not hide one
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    took = time.perf_counter() - began
    if errors:
        raise errors[0]
    return each * threads / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--threads", default="1,8")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    server = RedisServer()
    server.start()
    try:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        config = {
            "redis": {"url": server.url, "key_prefix": prefix},
            "message_queue": {"type": "redis", "queue_name": "bench"},
        }
        producer = SyncProducer(config)
        pool = redis.BlockingConnectionPool.from_url(
            server.url, max_connections=RedisConfig().max_connections, timeout=5
        )
        client = redis.Redis(connection_pool=pool)
        body = json.dumps({"type": "job", "payload": PAYLOAD}).encode()
        key = f"{prefix}:list"

        def meetq_publish(i: int) -> Any:
            return producer.publish(Message(type="job", payload=PAYLOAD))

        def rpush(i: int) -> Any:
            return client.rpush(key, body)

        kinds = {"meetq.sync": meetq_publish, "RPUSH": rpush}
        for publish in kinds.values():  # warm up: connections, script loading
            timed(1, 200, publish)
        results: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.runs):
            for threads in thread_counts:
                for name, publish in kinds.items():
                    rate = timed(threads, args.count, publish)
                    results.setdefault((name, threads), []).append(rate)
            client.delete(key)
        print(
            f"redis-server {server.url}, {args.runs} runs x {args.count} publishes, "
            "median publishes/s"
        )
        print(f"{'threads':>7}  {'meetq.sync':>11}  {'RPUSH':>9}  {'ratio':>6}  ratio range")
        for threads in thread_counts:
            mine, bare = results[("meetq.sync", threads)], results[("RPUSH", threads)]
            ratios = [m / b for m, b in zip(mine, bare, strict=True)]
            print(
                f"{threads:>7}  {statistics.median(mine):>11,.0f}  "
                f"{statistics.median(bare):>9,.0f}  {statistics.median(ratios):>6.2f}  "
                f"{min(ratios):.2f}-{max(ratios):.2f}"
            )
        producer.close()
        client.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
