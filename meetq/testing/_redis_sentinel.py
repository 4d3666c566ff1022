"""Start and stop a private Redis Sentinel setup for tests: a master, replicas, three sentinels.

Every process is a ``redis-server`` child (``--sentinel`` for the sentinels, each with a
``sentinel.conf`` of its own, which Sentinel rewrites) on free loopback ports, in one
temporary directory. The sentinels watch the service ``SERVICE`` with a quorum of two and
short timers (``down_after_ms``, ``failover_timeout_ms``), so a failover takes seconds.

A test makes the master fail with ``kill_master()`` (SIGKILL: connections reset at once)
or ``freeze_master()`` (SIGSTOP: connections stay open and nothing is answered, like a
hung host), then ``wait_for_new_master(old)`` returns the promoted replica's address.
``heal()`` restarts a killed node and thaws a frozen one (Sentinel turns the old master
into a replica of the new one) and waits until the sentinels see the whole setup again,
so a session-scoped setup can serve the next test. Only the pids started here are ever
signalled; ``close()`` thaws and stops them all.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from meetq.testing._redis_server import RedisServer, RedisServerUnavailable

__all__ = ["SERVICE", "RedisSentinelSetup"]

#: The name the sentinels monitor the master under (``sentinel_service``).
SERVICE = "meetq"
_QUORUM = 2
# Every data node: replicas announce the loopback address (clients reach whichever is
# promoted), and a master starts a replica's full sync at once instead of waiting five
# seconds for more replicas to share the transfer (Redis 7's diskless-sync delay).
_NODE_OPTIONS = ("--replica-announce-ip", "127.0.0.1", "--repl-diskless-sync-delay", "0")


def _command(port: int, *args: str, timeout: float = 1.0) -> list[str] | str | None:
    """One command over a raw socket (RESP2, no redis-py: the launcher stays dependency
    free); the reply flattened to text, or None if the node does not answer."""
    payload = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%b\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(payload)
            return _read_reply(sock.makefile("rb"))
    except (OSError, ValueError):
        return None


def _read_reply(reader: BinaryIO) -> list[str] | str | None:
    line = reader.readline()
    if not line:
        raise ValueError("connection closed")
    kind, rest = line[:1], line[1:-2].decode()
    if kind in (b"+", b"-", b":"):
        return rest
    if kind == b"$":
        if rest == "-1":
            return None
        data = reader.read(int(rest) + 2)
        return data[:-2].decode()
    if kind == b"*":
        if rest == "-1":
            return None
        items: list[str] = []
        for _ in range(int(rest)):
            item = _read_reply(reader)
            if isinstance(item, list):
                items.extend(item)
            elif item is not None:
                items.append(item)
        return items
    raise ValueError(f"unexpected reply {line!r}")


def _pairs(reply: list[str] | str | None) -> dict[str, str]:
    if not isinstance(reply, list):
        return {}
    return dict(zip(reply[::2], reply[1::2], strict=False))


class _Sentinel(RedisServer):
    """A ``redis-server --sentinel`` with its own config file (Sentinel rewrites it)."""

    def __init__(self, master_port: int, down_after_ms: int, failover_timeout_ms: int) -> None:
        super().__init__()
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} {_QUORUM}\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 2\n"
        )
        self._conf = conf

    def _arguments(self) -> list[str]:
        # The config file comes first: redis-server reads it, then the options after it.
        binary, *options = super()._arguments()
        return [binary, str(self._conf), "--sentinel", *options]


class RedisSentinelSetup:
    """A master, ``replicas`` replicas and three sentinels on loopback ports."""

    def __init__(
        self,
        *,
        replicas: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RedisServerUnavailable(
                "redis-server not found on PATH; install it (Debian: apt-get install redis-server)"
            )
        self.directory = Path(tempfile.mkdtemp(prefix="meetq-sentinel-"))
        first = RedisServer()
        self.nodes: list[RedisServer] = [first]
        for _ in range(replicas):
            replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(first.port)))
            self.nodes.append(replica)
        for node in self.nodes:
            node.extra_args += _NODE_OPTIONS
        self.sentinels = [
            _Sentinel(first.port, down_after_ms, failover_timeout_ms) for _ in range(3)
        ]
        self._frozen: set[int] = set()

    # -- addresses ----------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each sentinel, as ``redis.asyncio.sentinel.Sentinel`` takes them."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def sentinel_hosts(self) -> list[str]:
        """The same as ``"host:port"`` strings (the ``redis.sentinels`` config form)."""
        return [f"{host}:{port}" for host, port in self.sentinel_addresses]

    def master_port(self) -> int | None:
        """The master's port as a majority of sentinels report it, or None."""
        seen: dict[int, int] = {}
        for sentinel in self.sentinels:
            reply = _command(sentinel.port, "SENTINEL", "get-master-addr-by-name", SERVICE)
            if isinstance(reply, list) and len(reply) == 2:
                port = int(reply[1])
                seen[port] = seen.get(port, 0) + 1
        for port, votes in seen.items():
            if votes >= _QUORUM:
                return port
        return None

    def role(self, address: tuple[str, int]) -> str | None:
        """``master`` or ``slave`` as the node at ``address`` says (``ROLE``), or None."""
        reply = _command(address[1], "ROLE")
        return reply[0] if isinstance(reply, list) and reply else None

    def master(self) -> RedisServer:
        """The node the sentinels currently call the master."""
        port = self.master_port()
        for node in self.nodes:
            if node.port == port:
                return node
        raise RedisServerUnavailable(f"no node is the master (sentinels say port {port})")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every node and sentinel; return once the sentinels know each other and
        every replica (a failover needs both)."""
        try:
            for node in self.nodes:
                node.start()
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every sentinel agrees on a reachable master that has all the other
        nodes as connected replicas, and knows the other two sentinels."""
        deadline = time.monotonic() + timeout
        problem = "not checked yet"
        while time.monotonic() < deadline:
            problem = self._not_ready()
            if not problem:
                return
            time.sleep(0.05)
        raise RedisServerUnavailable(f"the sentinel setup is not ready: {problem}")

    def _not_ready(self) -> str:
        port = self.master_port()
        if port is None:
            return "the sentinels do not agree on a master"
        role = self.role(("127.0.0.1", port))
        if role != "master":
            return f"port {port} is not a master: {role!r}"
        expected = len(self.nodes) - 1
        online = _command(port, "INFO", "replication")
        text = online if isinstance(online, str) else ""
        if text.count("state=online") < expected:
            return f"the master has fewer than {expected} replicas online"
        for sentinel in self.sentinels:
            state = _pairs(_command(sentinel.port, "SENTINEL", "master", SERVICE))
            if state.get("num-other-sentinels") != str(len(self.sentinels) - 1):
                return f"sentinel {sentinel.port} does not know the others yet"
            if state.get("num-slaves") != str(expected) or "s_down" in state.get("flags", ""):
                return f"sentinel {sentinel.port} does not see the replicas up yet"
            replicas = _command(sentinel.port, "SENTINEL", "replicas", SERVICE)
            if isinstance(replicas, list) and "s_down" in " ".join(replicas):
                return f"sentinel {sentinel.port} still sees a replica down"
        return ""

    def kill_master(self) -> tuple[str, int]:
        """SIGKILL the current master (its connections reset); return its old address."""
        node = self.master()
        node.kill()
        return ("127.0.0.1", node.port)

    def freeze_master(self) -> tuple[str, int]:
        """SIGSTOP the current master (it answers nothing); return its old address."""
        node = self.master()
        node.freeze()
        self._frozen.add(node.port)
        return ("127.0.0.1", node.port)

    def thaw(self, address: tuple[str, int]) -> None:
        """Resume the frozen node at ``address`` (SIGCONT): a hung host coming back. It
        still acts as a master until Sentinel demotes it; ``heal()`` restarts it."""
        for node in self.nodes:
            if node.port == address[1]:
                node.thaw()

    def wait_for_new_master(self, old: tuple[str, int], timeout: float = 30.0) -> tuple[str, int]:
        """Wait until the sentinels promoted another node and it acts as master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and port != old[1] and self.role(("127.0.0.1", port)) == "master":
                return ("127.0.0.1", port)
            time.sleep(0.02)
        raise RedisServerUnavailable(f"no new master replaced {old[0]}:{old[1]} within {timeout}s")

    def heal(self, timeout: float = 30.0) -> None:
        """Restart killed and frozen nodes as replicas of the current master and wait
        until the whole setup is ready again.

        A frozen node is killed, not thawed: a thawed old master goes on acting as a
        master until Sentinel notices and demotes it (about eight seconds, Sentinel's own
        timer), which a test of the freeze itself does not need to wait for."""
        for node in self.nodes:
            if node.port in self._frozen:
                node.kill()
            if not node.running:
                # Back as a replica of the current master: started as a master, it would
                # be one for a moment (Sentinel reconfigures it only once it notices).
                master = self.master_port()
                node.extra_args = _NODE_OPTIONS
                if master is not None and master != node.port:
                    node.extra_args += ("--replicaof", "127.0.0.1", str(master))
                node.start()
        self._frozen.clear()
        self.wait_ready(timeout)

    def close(self) -> None:
        """Stop every process (frozen ones are thawed first) and remove the files."""
        for server in [*self.sentinels, *self.nodes]:
            server.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisSentinelSetup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

