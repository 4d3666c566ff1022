"""The work queue on a 3-primary Redis Cluster next to the same work on one redis-server.

    python bench/bench_cluster.py [--runs 3] [--messages 2000] [--samples 300] [--failovers 3]

Starts its own servers on free loopback ports: a Redis Cluster of 3 primaries with one
replica each (``meetq.testing.LocalRedisCluster``) and one plain redis-server. Every
worker is a process of its own running ``initialize_queue_system`` (the standalone one
from ``redis.url``, the cluster one with a ``RedisCluster`` client passed in) and one
async handler that does nothing.

- **drain**: 8 queues, each filled with ``--messages`` messages beforehand, then 8 worker
  processes (one per queue) start together; throughput = all messages / (last worker
  done - first worker started), on CLOCK_MONOTONIC, which every process shares. On the
  cluster the 8 queues are spread 3/3/2 over the primaries (one queue lives in one slot).
  Redis CPU: ``used_cpu_sys + used_cpu_user`` (INFO CPU) of every node before and after
  the drain; the busiest node's delta per 1,000 messages drained in all.
- **latency**: one worker process, idle (``--pause`` ms between samples, each sent only
  after the previous one was handled); the producer (this process) reads the clock and
  publishes, the handler reads the clock as it starts and reports on a pipe. The worker's
  ``poll_interval`` is 60 s, so every sample arrived by push: a hand-off or a wake-up,
  SPUBLISHed on the cluster, PUBLISHed on the standalone server.
- **failover** (cluster only): a worker process on a queue of one primary, this process
  publishing every 5 ms (a publish that fails is retried); ``kill -9`` of that primary;
  the time from the kill to the first handled message that was published after it, and
  the time the cluster took to promote the replica. The node is restarted (it rejoins
  as a replica) before the next round.

Figures: medians over ``--runs`` runs (of each run's p50/p99 for latency), the setups
interleaved within a run. The machine is shared and has 2 cores: 8 workers and 6 nodes
compete for them, so throughput here says more about CPU spent than about capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import statistics
import sys
import time
import uuid
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster

from meetq import Message, MessageQueue, initialize_queue_system
from meetq.backends.redis._backend import RedisBackend
from meetq.testing import LocalRedisCluster, RedisServer

QUEUES = 8


# -- the worker process ----------------------------------------------------------------


async def _child(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)  # the failover's reconnect warnings: expected
    client: Any = None
    redis_section: dict[str, Any] = {"key_prefix": args.prefix}
    if args.mode == "cluster":
        client = RedisCluster.from_url(args.url, socket_timeout=2.0, socket_connect_timeout=1.0)
    else:
        redis_section["url"] = args.url
    qm = await initialize_queue_system(
        {
            "redis": redis_section,
            "message_queue": {
                "type": "redis",
                "queue_name": args.queue,
                "poll_interval": args.poll,
                "visibility_timeout": "5s",
            },
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        },
        redis=client,
    )
    mq = qm.get_message_queue()
    assert mq is not None
    out = sys.stdout
    done = asyncio.Event()
    handled = 0

    @mq.handler("job")
    async def job(msg: Message) -> None:
        nonlocal handled
        at = time.monotonic_ns()
        handled += 1
        if args.report:
            out.write(f"{msg.payload['seq']} {at}\n")
            out.flush()
        if handled == args.count:
            done.set()

    loop = asyncio.get_running_loop()
    out.write("ready\n")
    out.flush()
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    started = time.monotonic_ns()
    async with qm:
        if args.count:
            await done.wait()
            out.write(f"drained {started} {time.monotonic_ns()}\n")
            out.flush()
        else:
            await loop.run_in_executor(None, sys.stdin.readline)  # stdin closed: stop
    if client is not None:
        await client.aclose()


class Worker:
    """A worker process and its report pipe."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(
        cls, mode: str, url: str, prefix: str, queue: str, *, count: int = 0, report: bool
    ) -> Worker:
        argv = [
            sys.executable, __file__, "child", "--mode", mode, "--url", url,
            "--prefix", prefix, "--queue", queue, "--count", str(count),
            "--poll", "60s" if report else "100ms",
        ] + (["--report"] if report else [])  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        worker = cls(proc)
        assert await worker.line() == "ready"
        return worker

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        if not raw:
            raise RuntimeError(f"worker {self.proc.pid} exited ({await self.proc.wait()})")
        return raw.decode().strip()

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# -- the setups ------------------------------------------------------------------------


class Setup:
    """One of the two deployments: where queues live, how a producer reaches them."""

    def __init__(self, mode: str, url: str, ports: list[int], owner: Any) -> None:
        self.mode = mode
        self.url = url
        self.ports = ports
        self.owner = owner  # key -> port

    def client(self) -> Any:
        if self.mode == "cluster":
            return RedisCluster.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=1.0)
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(self.url, socket_timeout=2.0)

    def cpu(self) -> dict[int, float]:
        used = {}
        for port in self.ports:
            with contextlib.closing(redis.Redis(port=port)) as node:
                try:
                    info = node.info("cpu")
                except redis.exceptions.ConnectionError:
                    continue
            used[port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return used


def _queues(setup: Setup, cluster: LocalRedisCluster | None) -> list[str]:
    """8 queue names; on the cluster, spread over the primaries in turn."""
    if cluster is None:
        return [f"q{i}" for i in range(QUEUES)]
    primaries = cluster.primaries()
    names: list[str] = []
    i = 0
    while len(names) < QUEUES:
        want = primaries[len(names) % len(primaries)]
        while cluster.owner_of(f"{{q{i}}}") != want:
            i += 1
        names.append(f"q{i}")
        i += 1
    return names


async def _drain(setup: Setup, queues: list[str], messages: int) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    client = setup.client()
    backend = RedisBackend(client, key_prefix=prefix)
    try:
        for name in queues:
            mq = MessageQueue(backend, queue_name=name)
            for start in range(0, messages, 500):
                n = min(500, messages - start)
                await mq.publish_batch(
                    [Message(type="job", payload={"seq": start + k}) for k in range(n)]
                )
    finally:
        await backend.aclose()
        await client.aclose()
    workers = await asyncio.gather(
        *(
            Worker.spawn(setup.mode, setup.url, prefix, name, count=messages, report=False)
            for name in queues
        )
    )
    before = setup.cpu()
    for worker in workers:
        worker.go()
    spans = []
    for worker in workers:
        _, start, end = (await worker.line()).split()
        spans.append((int(start), int(end)))
    after = setup.cpu()
    for worker in workers:
        await worker.close()
    seconds = (max(e for _, e in spans) - min(s for s, _ in spans)) / 1e9
    total = messages * len(queues)
    busiest = max(after[p] - before[p] for p in after if p in before)
    return {"rate": total / seconds, "cpu_ms_per_1k": busiest * 1000 / (total / 1000)}


async def _latency(setup: Setup, queue: str, samples: int, pause: float) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    worker = await Worker.spawn(setup.mode, setup.url, prefix, queue, report=True)
    worker.go()
    client = setup.client()
    backend = RedisBackend(client, key_prefix=prefix)
    mq = MessageQueue(backend, queue_name=queue)
    latencies = []
    try:
        await asyncio.sleep(0.5)  # the worker's first exchange parks it
        for seq in range(samples + 20):
            await asyncio.sleep(pause)
            message = Message(type="job", payload={"seq": seq})
            sent = time.monotonic_ns()
            await mq.publish(message)
            got, at = (await worker.line()).split()
            assert int(got) == seq
            if seq >= 20:  # warm-up: connections, script loading
                latencies.append((int(at) - sent) / 1e6)
    finally:
        await worker.close()
        await backend.aclose()
        await client.aclose()
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


async def _failover(setup: Setup, cluster: LocalRedisCluster) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    victim = cluster.primaries()[0]
    queue = next(f"f{i}" for i in range(10_000) if cluster.owner_of(f"{{f{i}}}") == victim)
    worker = await Worker.spawn(setup.mode, setup.url, prefix, queue, report=True)
    worker.go()
    client = setup.client()
    backend = RedisBackend(client, key_prefix=prefix)
    mq = MessageQueue(backend, queue_name=queue)
    sent: dict[int, int] = {}
    stop = asyncio.Event()

    async def produce() -> None:
        seq = 0
        while not stop.is_set():
            # Before the call: the handler may run before publish returns.
            sent[seq] = time.monotonic_ns()
            try:
                await mq.publish(Message(type="job", payload={"seq": seq}))
            except Exception:  # the failover: this one again
                await asyncio.sleep(0.005)
                continue
            seq += 1
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce())
    try:
        await asyncio.sleep(1.0)
        failover = await asyncio.to_thread(cluster.kill_primary, victim)
        killed_at = failover.killed_at_ns
        while True:
            got, at = (await worker.line()).split()
            if sent.get(int(got), 0) > killed_at:
                back = (int(at) - killed_at) / 1e9
                break
    finally:
        stop.set()
        await producer
        await worker.close()
        await backend.aclose()
        await client.aclose()
    await asyncio.to_thread(cluster.restart, failover.killed)
    return {"back": back, "promoted": failover.seconds}


def _med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


async def _main(args: argparse.Namespace) -> None:
    with LocalRedisCluster() as cluster, RedisServer() as server:
        cluster_setup = Setup("cluster", cluster.url, cluster.ports, cluster.owner_of)
        standalone = Setup("standalone", server.url, [server.port], lambda key: server.port)
        setups = {"cluster": (cluster_setup, cluster), "standalone": (standalone, None)}
        drains: dict[str, list[dict[str, float]]] = {k: [] for k in setups}
        latencies: dict[str, list[dict[str, float]]] = {k: [] for k in setups}
        failovers: list[dict[str, float]] = []
        for run in range(args.runs):
            for name, (setup, owner) in setups.items():
                queues = _queues(setup, owner)
                drains[name].append(await _drain(setup, queues, args.messages))
                latencies[name].append(
                    await _latency(setup, queues[0], args.samples, args.pause / 1000)
                )
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
        for _ in range(args.failovers):
            failovers.append(await _failover(cluster_setup, cluster))
        spread = sorted(
            {p: sum(1 for q in _queues(cluster_setup, cluster) if cluster.owner_of(f"{{{q}}}") == p)
             for p in cluster.primaries()}.values()
        )  # fmt: skip
    print(
        f"\nmeetq work queue: Redis Cluster (3 primaries + 3 replicas) vs one redis-server"
        f"\n{platform.python_implementation()} {platform.python_version()}, redis-py "
        f"{redis.__version__}, {os.cpu_count()} CPUs (shared), medians of {args.runs} runs\n"
    )
    print(f"{'':34} {'cluster':>12} {'standalone':>12}  ratio")
    for label, key, table, fmt in (
        (f"drain, msg/s ({QUEUES} queues, 8 workers)", "rate", drains, "{:12.0f}"),
        ("busiest node CPU ms / 1k msgs", "cpu_ms_per_1k", drains, "{:12.1f}"),
        ("idle latency p50, ms", "p50", latencies, "{:12.3f}"),
        ("idle latency p99, ms", "p99", latencies, "{:12.3f}"),
    ):
        c, s = _med(table["cluster"], key), _med(table["standalone"], key)
        print(f"{label:34} {fmt.format(c)} {fmt.format(s)}  {c / s:5.2f}")
    print(f"\ncluster queues per primary: {spread}")
    if failovers:
        each = ", ".join(f"{f['back']:.2f}" for f in failovers)
        print(
            f"failover ({len(failovers)} kill -9 of a primary): first message published "
            f"after the kill handled after {_med(failovers, 'back'):.2f} s (median; "
            f"runs: {each}); replica promoted after {_med(failovers, 'promoted'):.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("child")
    child.add_argument("--mode", required=True)
    child.add_argument("--url", required=True)
    child.add_argument("--prefix", required=True)
    child.add_argument("--queue", required=True)
    child.add_argument("--count", type=int, default=0)
    child.add_argument("--poll", default="100ms")
    child.add_argument("--report", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000, help="per queue, per drain")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--pause", type=float, default=5.0, help="ms between latency samples")
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_child(args) if args.command == "child" else _main(args))


if __name__ == "__main__":
    main()
