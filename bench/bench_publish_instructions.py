"""What one publish costs in CPU instructions, on each side, counted by callgrind.

    python bench/bench_publish_instructions.py [--tree NAME=DIR ...] [-n 1280]

Wall-clock figures on the shared 2-core machine swing by 2x from run to run; instruction
counts do not, so a change of a few percent is visible. Needs ``valgrind`` (callgrind)
and ``redis-server``; starts its own servers on free loopback ports (a fresh one under
callgrind for every Redis count, a plain one for the client rows).
Every count is a difference of two runs (``n`` and ``2n`` messages), so fixed costs
(imports, connecting, script loading) cancel. Rows:

- ``redis: enqueue_one``: instructions redis-server runs per lone publish's script
  (``n`` EVALSHA of enqueue_one, pipelined);
- ``redis: enqueue x64``: per message of a coalesced write (enqueue.lua, 64 messages
  per call), for trees that have ``meetq/backends/redis/_scripts.py``;
- ``client: lone publish``: instructions the publishing process runs per awaited
  ``MessageQueue.publish`` (Python, redis-py, syscalls' user side);
- ``RPUSH``: the same two figures for redis-py's awaited ``RPUSH`` (bare reference).

With ``--tree`` each row is repeated with ``DIR/meetq`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

# Stores n messages through one tree's scripts, pipelined (argv: port, mode, n).
STORE = r"""
import sys, uuid, redis
from meetq.core.protocols import StoredMessage
try:
    from meetq.backends.redis._scripts import SCRIPTS, QueueKeys, enqueue_call
    keys = QueueKeys("cg" + uuid.uuid4().hex[:6], "bench")
except ImportError:  # before _scripts.py (9530f95): enqueue_one on the 17 keys
    from meetq.backends.redis._work_queue import _SCRIPTS as SCRIPTS
    pre = "cg" + uuid.uuid4().hex[:6] + ":{bench}:"
    names = ["m:body", "m:score", "m:attempts", "m:token", "m:dedup", "m:ready_at", "dedup",
             "dead", "dinfo", "counts", "seq", "types", "handlers", "notify"]
    k17 = [(pre + n).encode() for n in names] + [(pre + t + ":noop").encode()
                                                 for t in ("ready", "delayed", "lease")]
    keys = None
    def enqueue_call(_keys, ms):
        m = ms[0]
        return SCRIPTS["enqueue_one"], k17, (m.id, m.type, m.priority, m.delay_ms, m.body)
port, mode, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
r = redis.Redis(port=port)
body = b'{"payload":{"i":1}}'
msgs = [StoredMessage(id=uuid.uuid4().hex, type="noop", priority=1, body=body) for _ in range(n)]
for s in SCRIPTS.values():
    r.script_load(s.source)
pipe = r.pipeline(transaction=False)
step = 64 if mode == "batch" else 1
for i in range(0, n, step):
    if mode == "rpush":
        pipe.rpush("bare", msgs[i].body)
        continue
    script, k, a = enqueue_call(keys, msgs[i : i + step])
    pipe.evalsha(script.sha, len(k), *k, *a)
pipe.execute()
"""

# Publishes n messages one at a time, awaiting each (argv: url, n, bare).
LONE = r"""
import asyncio, json, sys, uuid
async def main(url, n, bare):
    if bare:
        import redis.asyncio as aioredis
        client = aioredis.Redis.from_url(url)
        for i in range(n):
            await client.rpush("lonebare", json.dumps({"i": i}))
        await client.delete("lonebare")
        await client.aclose()
        return
    import meetq
    from meetq import Message
    qm = await meetq.initialize_queue_system({
        "redis": {"url": url, "key_prefix": "cg" + uuid.uuid4().hex[:6]},
        "message_queue": {"type": "redis", "queue_name": "bench"},
        "event_bus": {"enabled": False}, "task_dispatcher": {"enabled": False}})
    mq = qm.get_message_queue()
    for i in range(n):
        await mq.publish(Message(type="noop", payload={"i": i}))
    await qm.stop()
asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"))
"""


# Children run from here: "python -c" puts its working directory first on sys.path,
# which from a checkout would shadow the tree on PYTHONPATH.
_CWD = tempfile.gettempdir()


def _env(tree: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, env.get("PYTHONPATH")) if p)
    return env


def _collected(stderr: str) -> int:
    found = re.search(r"Collected : (\d+)", stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{stderr[-400:]}")
    return int(found.group(1))


class Server:
    """redis-server under callgrind; ``count(run)`` is what it runs while ``run`` runs."""

    def __init__(self, port: int, directory: str) -> None:
        self.out = os.path.join(directory, "redis")
        self.proc = subprocess.Popen(
            [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}.%p",
                "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.port = port
        deadline = time.monotonic() + 120
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
            ).stdout.strip()
            != "PONG"
        ):
            if time.monotonic() > deadline:
                raise SystemExit("redis-server under callgrind did not start")
            time.sleep(0.3)

    def count(self, run: Callable[[], object]) -> int:
        pid = str(self.proc.pid)
        subprocess.run(["callgrind_control", "-z", pid], capture_output=True, check=True)
        run()
        subprocess.run(["callgrind_control", "-d", pid], capture_output=True, check=True)
        latest = max(glob.glob(f"{self.out}.{pid}.*"), key=os.path.getmtime)
        with open(latest, encoding="utf-8") as f:
            found = re.search(r"^summary: (\d+)", f.read(), re.M)
        assert found is not None, latest
        return int(found.group(1))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def per_message(count: Callable[[int], int], n: int) -> float:
    return (count(2 * n) - count(n)) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", default=[], help="NAME=DIR")
    parser.add_argument("-n", type=int, default=1280)
    args = parser.parse_args()
    from meetq.testing import RedisServer
    from meetq.testing._redis_server import free_port

    trees: list[tuple[str, str | None]] = [("this tree", None)]
    trees += [(s.partition("=")[0], os.path.abspath(s.partition("=")[2])) for s in args.tree]
    rows: list[tuple[str, str, float]] = []

    def store(tree: str | None, mode: str) -> Callable[[int], int]:
        # A fresh server for every count: what a script costs depends on the server's
        # state (Lua's heap and collector, hash tables mid-resize), so each count starts
        # from the same one.
        def count(n: int) -> int:
            with tempfile.TemporaryDirectory(prefix="meetq-cg-") as directory:
                server = Server(free_port(), directory)
                try:
                    command = [sys.executable, "-c", STORE, str(server.port), mode, str(n)]
                    return server.count(
                        lambda: subprocess.run(command, env=_env(tree), cwd=_CWD, check=True)
                    )
                finally:
                    server.close()

        return count

    with RedisServer() as plain:

        def lone(tree: str | None, bare: bool) -> Callable[[int], int]:
            def count(n: int) -> int:
                out = subprocess.run(
                    [
                        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        sys.executable, "-c", LONE, plain.url, str(n), "1" if bare else "0",
                    ],
                    env=_env(tree), cwd=_CWD, capture_output=True, text=True, check=True,
                )  # fmt: skip
                return _collected(out.stderr)

            return count

        for name, tree in trees:
            has_batch = tree is None or os.path.exists(
                os.path.join(tree, "meetq/backends/redis/_scripts.py")
            )
            rows.append((name, "redis: enqueue_one", per_message(store(tree, "one"), args.n)))
            if has_batch:
                rows.append((name, "redis: enqueue x64", per_message(store(tree, "batch"), args.n)))
            rows.append((name, "client: lone publish", per_message(lone(tree, False), 1000)))
        rows.append(("redis-py", "redis: RPUSH", per_message(store(None, "rpush"), args.n)))
        rows.append(("redis-py", "client: awaited RPUSH", per_message(lone(None, True), 1000)))
    print("instructions per message (callgrind; differences of n and 2n messages)")
    print(f"| {'tree':12} | {'row':24} | {'instructions':>12} |")
    print(f"|{'-' * 14}|{'-' * 26}|{'-' * 13}:|")
    for name, row, value in rows:
        print(f"| {name:12} | {row:24} | {value:12,.0f} |")


if __name__ == "__main__":
    main()
