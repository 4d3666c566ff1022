"""Start and stop a private ``redis-server`` for tests.

The server listens on a free loopback port, keeps its files in a temporary directory,
and persists nothing unless asked. Tests that need to cut the connection (reconnect
tests) can ``stop()`` it and ``start()`` it again on the same port; tests of a crash
``kill()`` it (SIGKILL); tests of an unresponsive server ``freeze()`` it (SIGSTOP: it
keeps its sockets and answers nothing, like a hung host) and ``thaw()`` it. ``stop()``
thaws a frozen server first, so a test that fails while it is frozen still leaves no
process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "RedisServerUnavailable", "env_redis_url", "free_port"]


class RedisServerUnavailable(RuntimeError):
    """No ``redis-server`` binary could be found or it would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` child process on ``127.0.0.1:port``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        persistence: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerUnavailable(
                "redis-server not found on PATH; install it (Debian: apt-get install redis-server)"
            )
        self.binary = binary
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_args = extra_args
        self.directory = Path(tempfile.mkdtemp(prefix="meetq-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _arguments(self) -> list[str]:
        """The command line (a subclass may run another kind of redis-server)."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if not self.persistence:
            args += ["--save", "", "--appendonly", "no"]
        args += list(self.extra_args)
        return args

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        if self._process is not None and self._process.poll() is None:
            return
        args = self._arguments()
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RedisServerUnavailable(f"redis-server exited at start: {log}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RedisServerUnavailable(f"redis-server did not answer on port {self.port}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def freeze(self) -> None:
        """Suspend the server (SIGSTOP): connections stay open, nothing is answered."""
        if self._process is None or self._process.poll() is not None:
            raise RedisServerUnavailable("freeze(): the server is not running")
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen server (SIGCONT); harmless on one that is not frozen."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        """Whether the process is alive (frozen counts as alive)."""
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: no shutdown, connections reset at once.
        ``start()`` brings it back on the same port."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the server (its data is gone unless ``persistence`` was asked for)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            # A frozen server would hold SIGTERM until it is resumed.
            process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def env_redis_url() -> str | None:
    """``MEETQ_TEST_REDIS_URL`` if set: use that server instead of starting one."""
    return os.environ.get("MEETQ_TEST_REDIS_URL") or None
