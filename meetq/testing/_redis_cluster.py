"""Start and stop a private multi-primary Redis Cluster for tests.

``LocalRedisCluster`` runs ``primaries * (1 + replicas)`` ``redis-server --cluster-enabled
yes`` children (3 primaries with one replica each by default) on free loopback ports, each
with a free cluster-bus port of its own (never ``port + 10000``, which may be taken), joins
them with ``redis-cli --cluster create`` and waits until every node reports
``cluster_state:ok`` and every replica's link to its primary is up. ``stop()`` ends only
the processes it started.

The API a test needs::

    with LocalRedisCluster() as cluster:
        cluster.startup_nodes      # ["127.0.0.1:port", ...] for a cluster client or config
        cluster.ports              # every node's port, in start order
        cluster.primaries()        # the ports of the primaries now (asks the cluster)
        cluster.owner_of(key)      # the port of the primary serving that key's slot
        cluster.slot_of(key)       # the key's hash slot
        failover = cluster.kill_primary(port)   # kill -9, wait for a replica's promotion
        failover.killed, failover.promoted, failover.seconds
        cluster.restart(failover.killed)        # back as a replica of the promoted node

Failover is quick because the nodes run with a short ``cluster-node-timeout`` (1 s by
default) and ``cluster-replica-validity-factor 0`` (a replica may always take over).
Replication is asynchronous: a write acknowledged by the primary just before a kill can
be missing on the promoted replica; ``wait_replicated(port)`` blocks until a primary's
replicas hold everything it had written when it was called.

Node commands go through redis-py's synchronous client, imported on first use.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import attrs

from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, free_port

if TYPE_CHECKING:
    import redis

__all__ = ["ClusterFailover", "LocalRedisCluster"]


@attrs.frozen(kw_only=True)
class ClusterFailover:
    """What ``kill_primary`` did: the port killed, the replica promoted, how long it took
    from the kill (``killed_at_ns``, on ``time.monotonic_ns()``) to the takeover."""

    killed: int
    promoted: int
    seconds: float
    killed_at_ns: int


@attrs.frozen(kw_only=True)
class _NodeLine:
    """One line of ``CLUSTER NODES``, reduced to what the launcher needs."""

    node_id: str
    port: int
    is_primary: bool
    failed: bool
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]


def _parse_nodes(text: str) -> list[_NodeLine]:
    lines = []
    for raw in text.strip().splitlines():
        fields = raw.split()
        # <id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong> <epoch> <state> <slots>
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        flags = set(fields[2].split(","))
        unreachable = fields[7] != "connected" and "myself" not in flags
        slots = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        lines.append(
            _NodeLine(
                node_id=fields[0],
                port=port,
                is_primary="master" in flags,
                failed=bool(flags & {"fail", "fail?", "noaddr"}) or unreachable,
                primary_id=None if fields[3] == "-" else fields[3],
                slots=tuple(slots),
            )
        )
    return lines


class LocalRedisCluster:
    """A Redis Cluster of private ``redis-server`` children on ``127.0.0.1``."""

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
    ) -> None:
        if primaries < 3:
            raise ValueError(f"primaries={primaries!r}: redis-cli --cluster create needs 3 or more")
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerUnavailable(
                "redis-cli not found on PATH; install it (Debian: apt-get install redis-tools)"
            )
        self._cli = cli
        self._replicas = replicas
        self._node_timeout_ms = node_timeout_ms
        self._servers: dict[int, RedisServer] = {}
        ports: set[int] = set()
        while len(ports) < 2 * primaries * (1 + replicas):
            ports.add(free_port())
        port_list = sorted(ports)
        self._pairs = list(zip(port_list[0::2], port_list[1::2], strict=True))

    # -- what a test reads ----------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        """Every node's client port, in start order (killed nodes included)."""
        return [port for port, _bus in self._pairs]

    @property
    def startup_nodes(self) -> list[str]:
        """``host:port`` of every node, for ``startup_nodes`` in a config or a client."""
        return [f"127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """``redis://`` URL of the first node that is running (a cluster client finds the rest)."""
        return f"redis://127.0.0.1:{self._live_ports()[0]}/0"

    def primaries(self) -> list[int]:
        """The ports of the primaries that serve slots now, sorted."""
        return sorted(n.port for n in self._nodes() if n.is_primary and n.slots and not n.failed)

    def replicas_of(self, port: int) -> list[int]:
        """The ports of the live replicas of the primary on ``port``."""
        nodes = self._nodes()
        primary = next(n for n in nodes if n.port == port)
        return sorted(n.port for n in nodes if n.primary_id == primary.node_id and not n.failed)

    @staticmethod
    def slot_of(key: str) -> int:
        """``key``'s hash slot (the part in its first ``{...}`` if there is one)."""
        from redis.crc import key_slot

        return int(key_slot(key.encode()))

    def owner_of(self, key: str) -> int:
        """The port of the primary that serves ``key``'s hash slot (hash tags honoured)."""
        slot = self.slot_of(key)
        for node in self._nodes():
            serves = any(first <= slot <= last for first, last in node.slots)
            if node.is_primary and not node.failed and serves:
                return node.port
        raise RedisServerUnavailable(f"no live primary serves slot {slot} (key {key!r})")

    def client(self, port: int) -> redis.Redis:
        """A plain synchronous client to one node (the caller closes it)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start every node, create the cluster and wait until it is fully up."""
        deadline = time.monotonic() + timeout
        try:
            for port, bus in self._pairs:
                server = RedisServer(port=port)
                server.extra_args = (
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(server.directory / "nodes.conf"),
                    "--cluster-port", str(bus),
                    "--cluster-node-timeout", str(self._node_timeout_ms),
                    "--cluster-replica-validity-factor", "0",
                )  # fmt: skip
                self._servers[port] = server
                server.start()
            create = subprocess.run(
                [self._cli, "--cluster", "create", *self.startup_nodes,
                 "--cluster-replicas", str(self._replicas), "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )  # fmt: skip
            if create.returncode != 0:
                raise RedisServerUnavailable(
                    f"redis-cli --cluster create failed: {create.stdout[-1500:]}{create.stderr}"
                )
            self._wait(self._healthy, deadline, "the new cluster to be healthy")
        except BaseException:
            self.close()
            raise

    def kill_primary(self, port: int | None = None, timeout: float = 30.0) -> ClusterFailover:
        """``kill -9`` a primary (the first one if ``port`` is None) and wait for the takeover.

        Returns once one of its replicas is a primary serving its slots and every live node
        reports ``cluster_state:ok``.
        """
        primaries = self.primaries()
        target = primaries[0] if port is None else port
        if target not in primaries:
            raise ValueError(f"port={target!r} is not a live primary (primaries: {primaries})")
        replicas = self.replicas_of(target)
        if not replicas:
            raise ValueError(f"port={target!r} has no live replica to promote")
        self._servers[target].kill()
        killed_at_ns = time.monotonic_ns()
        started = time.monotonic()
        promoted: list[int] = []

        def taken_over() -> bool:
            now = self.primaries()
            promoted[:] = [p for p in replicas if p in now]
            return bool(promoted) and self._all_ok()

        self._wait(taken_over, started + timeout, f"a replica of {target} to be promoted")
        return ClusterFailover(
            killed=target,
            promoted=promoted[0],
            seconds=time.monotonic() - started,
            killed_at_ns=killed_at_ns,
        )

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again; it rejoins (a former primary as a replica) and syncs."""
        deadline = time.monotonic() + timeout
        self._servers[port].start()
        self._wait(self._healthy, deadline, f"node {port} to rejoin")

    def wait_replicated(self, port: int, timeout: float = 10.0) -> None:
        """Block until every replica of the primary on ``port`` holds all it has written."""
        replicas = len(self.replicas_of(port))
        marker = self._key_served_by(port)
        with contextlib.closing(self.client(port)) as node:
            # WAIT counts this connection's writes; one write of its own makes the count
            # cover everything the primary had written before it.
            node.set(marker, "1")
            acked = node.execute_command("WAIT", replicas, int(timeout * 1000))  # type: ignore[no-untyped-call]
        if int(acked) < replicas:
            raise RedisServerUnavailable(f"only {acked} of {replicas} replicas of {port} caught up")

    def stop(self) -> None:
        """Stop every node this launcher started (and nothing else)."""
        for server in self._servers.values():
            server.stop()

    def close(self) -> None:
        """Stop every node and remove their directories."""
        for server in self._servers.values():
            server.close()
        self._servers.clear()

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _live_ports(self) -> list[int]:
        live = [port for port, server in self._servers.items() if server.running]
        if not live:
            raise RedisServerUnavailable("no node of the cluster is running")
        return live

    def _command(self, port: int, *args: Any) -> Any:
        with contextlib.closing(self.client(port)) as node:
            return node.execute_command(*args)  # type: ignore[no-untyped-call]

    def _key_served_by(self, port: int) -> str:
        from redis.crc import key_slot

        node = next(n for n in self._nodes() if n.port == port)
        for i in range(100_000):
            key = f"meetq-test-marker:{{{i}}}"
            slot = key_slot(key.encode())
            if any(first <= slot <= last for first, last in node.slots):
                return key
        raise RedisServerUnavailable(f"node {port} serves no slot")

    def _nodes(self) -> list[_NodeLine]:
        last: Exception | None = None
        for port in self._live_ports():
            try:
                raw = self._command(port, "CLUSTER", "NODES")
            except Exception as exc:  # a node just killed, or still loading
                last = exc
                continue
            return _parse_nodes(raw.decode() if isinstance(raw, bytes) else str(raw))
        raise RedisServerUnavailable(f"no node answered CLUSTER NODES: {last!r}")

    def _all_ok(self) -> bool:
        for port in self._live_ports():
            try:
                info = self._command(port, "CLUSTER", "INFO")
            except Exception:
                return False
            if b"cluster_state:ok" not in info:
                return False
        return True

    def _healthy(self) -> bool:
        """Every live node is ok, knows every live node, and every replica is in sync."""
        if not self._all_ok():
            return False
        live = set(self._live_ports())
        for port in live:
            try:
                nodes = _parse_nodes(self._command(port, "CLUSTER", "NODES").decode())
                replication = self._command(port, "INFO", "replication")
            except Exception:
                return False
            if {n.port for n in nodes if not n.failed} != live:
                return False
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    @staticmethod
    def _wait(condition: Any, deadline: float, what: str) -> None:
        while True:
            if condition():
                return
            if time.monotonic() > deadline:
                raise RedisServerUnavailable(f"timed out waiting for {what}")
            time.sleep(0.05)
