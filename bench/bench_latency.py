"""Idle publish-to-handler latency across processes: meetq next to a bare BRPOP loop.

    python bench/bench_latency.py [--runs 5] [--samples 500] [--pause 5] [--baseline DIR]

    # optional, for the taskiq row (not a meetq dependency; redis-py stays on 5.x):
    .venv/bin/pip install taskiq taskiq-redis 'redis>=5,<6'

Starts its own redis-server on a free loopback port. Each measurement is a pair of
fresh processes, a producer and a worker, on that server:

- ``meetq``: the worker runs ``initialize_queue_system`` with the default config (only
  ``message_queue.type: redis``, the server's URL and a fresh key prefix set) and one
  async handler; the producer is a second meetq process that calls ``publish``.
- ``BRPOP``: the consumer is a bare redis.asyncio loop blocked in ``BRPOP``; the producer
  ``LPUSH``es an item naming the sample. That is how a peer built on BRPOP (taskiq's list
  broker) receives a job, minus anything it does after the pop.
- ``BRPOP+task``: the same loop, plus the least a real peer does after the pop: the
  producer ``LPUSH``es ``json.dumps({"seq": n})``, the consumer ``json.loads`` it and
  runs the handler as a new asyncio task.
- ``taskiq``: the peer itself: taskiq-redis's ``ListQueueBroker`` (LPUSH/BRPOP), the
  worker run by ``taskiq.api.run_receiver_task`` with its defaults (what ``taskiq
  worker`` uses) and one async task; the producer calls ``kiq()``, which builds and
  encodes the message inside the measured span (meetq's ``Message`` is built before).
  Shown as "not installed" without the two packages.
- ``meetq, 1 process`` (for comparison): publisher and worker in one process.
- ``meetq @ baseline`` (with ``--baseline DIR``): the ``meetq`` row again, its two
  processes importing the meetq of another source tree (``DIR/meetq``, put first on
  ``PYTHONPATH``), e.g. a ``git worktree`` of the commit before a change: before and
  after in one run, interleaved.

Idle means: a sample is sent only after the worker reported the previous one and
``--pause`` ms passed, so the worker is waiting, not busy, when it arrives. The first
``--warmup`` samples (connections, script loading) are not counted.

Clock: ``time.monotonic_ns()``, which is CLOCK_MONOTONIC on Linux: one clock for every
process of the machine (``perf_counter_ns`` is not guaranteed to be). The producer builds
the message (a ``Message``, or the item ``b"<seq>"``), reads the clock, and calls
``publish``/``LPUSH``: building a Message is the caller's work, not publish's, so it is
outside the measured span. The worker reads the clock as its handler starts (right after
``BRPOP`` returns) and writes ``(seq, arrived)`` as a 16-byte record to a pipe the
producer reads. The pipe keeps the feedback off Redis and off the measured path.
Latency = arrived - sent, sent as the producer recorded it for that seq.

Figures: p50/p90/p99 of each run's samples, then the median over ``--runs`` runs; the
kinds are interleaved within a run so machine noise hits all alike. The last column is
the range of the per-run p50 ratios to bare BRPOP, a hint of how noisy the machine was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import math
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import redis
import redis.asyncio as aioredis

import meetq
from meetq import Message
from meetq.testing._redis_server import RedisServer

T = TypeVar("T")

# (seq, arrived ns); a write this small to a pipe is atomic.
RECORD: Final = struct.Struct("<qq")
READY_SEQ: Final = -1
# Every wait is bounded: a worker that is not up, a sample that never arrives, a child
# that will not stop.
READY_TIMEOUT: Final = 30.0
SAMPLE_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 10.0
BRPOP_BLOCK: Final = 1  # seconds; the consumer re-checks for shutdown this often

KINDS: Final = {
    "meetq": ("meetq-worker", "meetq-producer"),
    "brpop": ("brpop-worker", "brpop-producer"),
    "brpop-task": ("brpop-task-worker", "brpop-task-producer"),
    "taskiq": ("taskiq-worker", "taskiq-producer"),
    "local": ("meetq-local", ""),
    "baseline": ("meetq-worker", "meetq-producer"),
}
LABELS: Final = {
    "meetq": "meetq",
    "brpop": "bare BRPOP",
    "brpop-task": "BRPOP+json+task",
    "taskiq": "taskiq ListQueue",
    "local": "meetq, 1 process",
    "baseline": "meetq @ baseline",
}
TASKIQ_TASK: Final = "bench_latency_ping"


def _taskiq_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("taskiq", "taskiq_redis"))


def _config(url: str, namespace: str) -> dict[str, Any]:
    # Default config otherwise: what a user who only picks `type: redis` gets.
    return {
        "redis": {"url": url, "key_prefix": namespace},
        "message_queue": {"type": "redis"},
    }


class _PipeReader:
    """Reads the worker's records without blocking the producer's event loop."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        os.set_blocking(fd, False)

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():  # the callback may fire again before it is removed
                ready.set_result(None)

        loop.add_reader(self._fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(self._fd)

    async def record(self, timeout: float) -> tuple[int, int]:  # noqa: ASYNC109  (bounded read)
        async with asyncio.timeout(timeout):
            while len(self._buffer) < RECORD.size:
                try:
                    chunk = os.read(self._fd, 4096)
                except BlockingIOError:
                    await self._readable()
                    continue
                if not chunk:
                    raise RuntimeError("the worker closed its pipe (it exited; see its stderr)")
                self._buffer += chunk
        seq, arrived = RECORD.unpack_from(self._buffer)
        del self._buffer[: RECORD.size]
        return seq, arrived


def _report(fd: int, seq: int, arrived: int) -> None:
    os.write(fd, RECORD.pack(seq, arrived))


async def _until_terminated() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# -- workers (write records) ------------------------------------------------------------


async def meetq_worker(url: str, namespace: str, fd: int) -> None:
    qm = await meetq.initialize_queue_system(_config(url, namespace))
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("ping")
    async def ping(msg: Message) -> None:
        arrived = time.monotonic_ns()
        _report(fd, msg.payload["seq"], arrived)

    await qm.start()  # returns once the wake-up subscription is confirmed
    _report(fd, READY_SEQ, 0)
    await _until_terminated()
    await qm.stop()


async def brpop_worker(url: str, namespace: str, fd: int) -> None:
    client = aioredis.Redis.from_url(url)
    key = f"{namespace}:list"

    async def consume() -> None:
        while True:
            item = await client.brpop([key], timeout=BRPOP_BLOCK)
            arrived = time.monotonic_ns()
            if item is not None:
                _report(fd, int(item[1]), arrived)

    await client.ping()  # connected: the first BRPOP goes out at once
    consumer = asyncio.create_task(consume())
    _report(fd, READY_SEQ, 0)
    await _until_terminated()
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await client.aclose()


async def brpop_task_worker(url: str, namespace: str, fd: int) -> None:
    client = aioredis.Redis.from_url(url)
    key = f"{namespace}:list"
    running: set[asyncio.Task[None]] = set()

    async def handle(body: dict[str, Any]) -> None:
        _report(fd, body["seq"], time.monotonic_ns())

    async def consume() -> None:
        while True:
            item = await client.brpop([key], timeout=BRPOP_BLOCK)
            if item is not None:
                task = asyncio.create_task(handle(json.loads(item[1])))
                running.add(task)
                task.add_done_callback(running.discard)

    await client.ping()
    consumer = asyncio.create_task(consume())
    _report(fd, READY_SEQ, 0)
    await _until_terminated()
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await client.aclose()


def _taskiq_broker(url: str, namespace: str) -> Any:
    from taskiq_redis import ListQueueBroker

    return ListQueueBroker(url, queue_name=f"{namespace}:taskiq")


async def taskiq_worker(url: str, namespace: str, fd: int) -> None:
    from taskiq.api import run_receiver_task

    # Its receiver warns "The listenig task was cancelled." on every clean stop.
    logging.getLogger("taskiq").setLevel(logging.ERROR)
    broker = _taskiq_broker(url, namespace)

    @broker.task(task_name=TASKIQ_TASK)
    async def ping(seq: int) -> None:
        _report(fd, seq, time.monotonic_ns())

    await broker.startup()
    receiver = asyncio.create_task(run_receiver_task(broker))
    # Its first BRPOP may go out a moment after this; the warm-up samples absorb that.
    _report(fd, READY_SEQ, 0)
    await _until_terminated()
    receiver.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await receiver
    await broker.shutdown()


# -- producers (read records, print the latencies) ------------------------------------


async def _produce(
    fd: int,
    samples: int,
    pause: float,
    build: Callable[[int], T],
    send: Callable[[T], Awaitable[object]],
) -> list[int]:
    reader = _PipeReader(fd)
    if (await reader.record(READY_TIMEOUT))[0] != READY_SEQ:
        raise RuntimeError("the worker's first record was not its ready mark")
    latencies = []
    for seq in range(samples):
        await asyncio.sleep(pause)
        message = build(seq)
        sent = time.monotonic_ns()
        await send(message)
        got, arrived = await reader.record(SAMPLE_TIMEOUT)
        if got != seq:
            raise RuntimeError(f"sample {seq}: the worker reported sample {got}")
        latencies.append(arrived - sent)
    return latencies


async def meetq_producer(
    url: str, namespace: str, fd: int, samples: int, pause: float
) -> list[int]:
    qm = await meetq.initialize_queue_system(_config(url, namespace))
    mq = qm.get_message_queue()
    assert mq is not None

    def build(seq: int) -> Message:
        return Message(type="ping", payload={"seq": seq})

    try:
        return await _produce(fd, samples, pause, build, mq.publish)
    finally:
        await qm.stop()


async def brpop_producer(
    url: str, namespace: str, fd: int, samples: int, pause: float
) -> list[int]:
    client = aioredis.Redis.from_url(url)
    key = f"{namespace}:list"

    def build(seq: int) -> bytes:
        return b"%d" % seq

    async def send(item: bytes) -> None:
        await client.lpush(key, item)

    try:
        return await _produce(fd, samples, pause, build, send)
    finally:
        await client.aclose()


async def brpop_task_producer(
    url: str, namespace: str, fd: int, samples: int, pause: float
) -> list[int]:
    client = aioredis.Redis.from_url(url)
    key = f"{namespace}:list"

    def build(seq: int) -> dict[str, int]:
        return {"seq": seq}

    async def send(body: dict[str, int]) -> None:
        await client.lpush(key, json.dumps(body))

    try:
        return await _produce(fd, samples, pause, build, send)
    finally:
        await client.aclose()


async def taskiq_producer(
    url: str, namespace: str, fd: int, samples: int, pause: float
) -> list[int]:
    broker = _taskiq_broker(url, namespace)

    @broker.task(task_name=TASKIQ_TASK)
    async def ping(seq: int) -> None:  # runs in the worker; declared here to kiq it
        pass

    await broker.startup()
    try:
        return await _produce(fd, samples, pause, int, ping.kiq)
    finally:
        await broker.shutdown()


async def meetq_local(url: str, namespace: str, samples: int, pause: float) -> list[int]:
    qm = await meetq.initialize_queue_system(_config(url, namespace))
    mq = qm.get_message_queue()
    assert mq is not None
    arrivals: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    @mq.handler("ping")
    async def ping(msg: Message) -> None:
        arrivals.put_nowait((msg.payload["seq"], time.monotonic_ns()))

    await qm.start()
    latencies = []
    try:
        for seq in range(samples):
            await asyncio.sleep(pause)
            message = Message(type="ping", payload={"seq": seq})
            sent = time.monotonic_ns()
            await mq.publish(message)
            got, arrived = await asyncio.wait_for(arrivals.get(), SAMPLE_TIMEOUT)
            if got != seq:
                raise RuntimeError(f"sample {seq}: the handler saw {got}")
            latencies.append(arrived - sent)
    finally:
        await qm.stop()
    return latencies


# -- orchestration ----------------------------------------------------------------------


def _child(args: argparse.Namespace) -> None:
    total, pause = args.warmup + args.samples, args.pause / 1000
    role, url, ns, fd = args.role, args.url, args.namespace, args.fd
    if role == "meetq-worker":
        asyncio.run(meetq_worker(url, ns, fd))
        return
    if role == "brpop-worker":
        asyncio.run(brpop_worker(url, ns, fd))
        return
    if role == "brpop-task-worker":
        asyncio.run(brpop_task_worker(url, ns, fd))
        return
    if role == "taskiq-worker":
        asyncio.run(taskiq_worker(url, ns, fd))
        return
    if role == "meetq-producer":
        latencies = asyncio.run(meetq_producer(url, ns, fd, total, pause))
    elif role == "brpop-producer":
        latencies = asyncio.run(brpop_producer(url, ns, fd, total, pause))
    elif role == "brpop-task-producer":
        latencies = asyncio.run(brpop_task_producer(url, ns, fd, total, pause))
    elif role == "taskiq-producer":
        latencies = asyncio.run(taskiq_producer(url, ns, fd, total, pause))
    elif role == "meetq-local":
        latencies = asyncio.run(meetq_local(url, ns, total, pause))
    else:
        raise SystemExit(f"unknown --role {role!r}")
    print(json.dumps(latencies[args.warmup :]))


def _spawn(
    role: str, url: str, namespace: str, fd: int, args: argparse.Namespace, kind: str
) -> subprocess.Popen[str]:
    """A child running ``role``; a worker's stdout is dropped, everyone else's is read."""
    command = [sys.executable, __file__, "--role", role, "--url", url, "--namespace", namespace]
    command += ["--fd", str(fd), "--samples", str(args.samples), "--warmup", str(args.warmup)]
    command += ["--pause", str(args.pause)]
    stdout = subprocess.DEVNULL if role.endswith("-worker") else subprocess.PIPE
    env = None
    if kind == "baseline":  # ahead of the installed (editable) meetq on sys.path
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [args.baseline, path]))}
    return subprocess.Popen(
        command, pass_fds=(fd,) if fd >= 0 else (), stdout=stdout, text=True, env=env
    )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _measure(kind: str, url: str, args: argparse.Namespace) -> list[int]:
    """One run of one kind in fresh processes; the latencies in ns."""
    worker_role, producer_role = KINDS[kind]
    namespace = f"lat{uuid.uuid4().hex[:8]}"
    budget = READY_TIMEOUT + (args.warmup + args.samples) * (args.pause / 1000 + 0.05) + 30
    if not producer_role:
        local = _spawn(worker_role, url, namespace, -1, args, kind)
        try:
            out, _ = local.communicate(timeout=budget)
        finally:
            _stop(local)
        if local.returncode != 0:
            raise RuntimeError(f"{kind}: the process failed (exit {local.returncode})")
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
    read_end, write_end = os.pipe()
    worker = producer = None
    try:
        worker = _spawn(worker_role, url, namespace, write_end, args, kind)
        os.close(write_end)  # the worker's exit must reach the producer as end-of-file
        write_end = -1
        producer = _spawn(producer_role, url, namespace, read_end, args, kind)
        os.close(read_end)
        read_end = -1
        out, _ = producer.communicate(timeout=budget)
        if producer.returncode != 0:
            raise RuntimeError(f"{kind}: the producer failed (exit {producer.returncode})")
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
        for process in (producer, worker):
            if process is not None:
                _stop(process)


def _percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest rank, in ms."""
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=500, help="counted samples per run")
    parser.add_argument("--warmup", type=int, default=20, help="samples sent first, not counted")
    parser.add_argument("--pause", type=float, default=5.0, help="ms between handled and next")
    parser.add_argument("--no-local", action="store_true", help="skip the 1-process meetq row")
    parser.add_argument(
        "--baseline", metavar="DIR", help="also measure the meetq of this source tree"
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        _child(args)
        return
    if args.runs < 1 or args.samples < 1 or args.warmup < 0 or args.pause < 0:
        parser.error("--runs and --samples must be >= 1, --warmup and --pause >= 0")

    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "meetq", "__init__.py")):
        parser.error(f"--baseline {args.baseline}: no meetq/__init__.py there")
    kinds = ["meetq", *(["baseline"] if args.baseline else []), "brpop", "brpop-task"]
    missing = [] if _taskiq_installed() else ["taskiq"]
    kinds += [] if missing else ["taskiq"]
    kinds += [] if args.no_local else ["local"]
    load_before = os.getloadavg()[0]
    with RedisServer() as server:
        version = (
            subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, timeout=10
            )
            .stdout.split()[2]
            .removeprefix("v=")
        )
        percentiles: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        for _ in range(args.runs):
            for kind in kinds:  # interleaved, so machine noise hits all alike
                latencies = sorted(_measure(kind, server.url, args))
                percentiles[kind].append(
                    {q: _percentile(latencies, float(q)) for q in ("0.5", "0.9", "0.99")}
                )
    load_after = os.getloadavg()[0]

    def med(kind: str, q: str) -> float:
        return statistics.median(run[q] for run in percentiles[kind])

    clock = time.get_clock_info("monotonic").implementation
    print(
        f"machine: {os.cpu_count()} cores, {platform.system()}, Python "
        f"{platform.python_version()}, redis-py {redis.__version__}, redis-server {version}; "
        f"load avg {load_before:.2f} -> {load_after:.2f}; clock time.monotonic_ns ({clock}); "
        f"median of {args.runs} runs x {args.samples} samples (+{args.warmup} warm-up), "
        f"{args.pause:g} ms pause; producer and worker in separate processes"
        + (f"; baseline: meetq of {args.baseline}" if args.baseline else "")
        + (
            ""
            if missing
            else f"; taskiq {_version('taskiq')}, taskiq-redis {_version('taskiq-redis')}"
        )
    )
    # One row per kind; the ratios compare p50s, per run first (a hint of the noise).
    header = (
        f"| {'idle publish -> handler (ms)':<30} | {'p50':>7} | {'p90':>7} | {'p99':>7} |"
        f" {'p50 / BRPOP':>11} | {'p50 / BRPOP, per run':>20} |"
    )
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    for kind in [*kinds, *missing]:
        if kind in missing:
            print(f"| {LABELS[kind]:<30} | {'not installed':>27} | {'':>11} | {'':>20} |")
            continue
        ratios = [
            mine["0.5"] / bare["0.5"]
            for mine, bare in zip(percentiles[kind], percentiles["brpop"], strict=True)
        ]
        spread = f"{min(ratios):.2f}x .. {max(ratios):.2f}x"
        cells = "".join(f" {med(kind, q):>7.3f} |" for q in ("0.5", "0.9", "0.99"))
        ratio = f"{med(kind, '0.5') / med('brpop', '0.5'):.2f}x"
        print(f"| {LABELS[kind]:<30} |{cells} {ratio:>11} | {spread:>20} |")


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


if __name__ == "__main__":
    main()
