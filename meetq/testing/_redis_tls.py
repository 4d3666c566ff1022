"""A private ``redis-server`` speaking only TLS, with ACL users, for tests.

``make_certificates`` writes a throwaway certificate authority, a server certificate it
signed (for ``127.0.0.1`` and ``localhost``, so host-name checks pass) and a client
certificate, with the ``openssl`` command line (no Python dependency). ``TlsRedisServer``
is a ``RedisServer`` whose plain port is off (``--port 0``): it listens for TLS on its
port, asks for a client certificate but does not insist on one
(``tls-auth-clients optional``: one that is presented must be signed by the CA), and has
no anonymous access: the ``default`` user is off and ``ADMIN`` (every right) is the
user tests set up others with (``ACL SETUSER``). ``other_ca`` is a second authority
that signed nothing this server shows: a client trusting it must fail the handshake.

Everything stays in the server's temporary directory and goes with ``close()``.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import attrs

from meetq.testing._redis_server import RedisServer, RedisServerUnavailable

__all__ = ["ADMIN", "TlsFiles", "TlsRedisServer", "make_certificates"]

# The all-rights user every TlsRedisServer has: (name, password).
ADMIN = ("meetq-admin", "admin-secret")


@attrs.frozen(kw_only=True)
class TlsFiles:
    """The PEM files ``make_certificates`` wrote."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(directory: Path, *args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RedisServerUnavailable("openssl not found on PATH; it makes the test certificates")
    done = subprocess.run(
        [binary, *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RedisServerUnavailable(f"openssl {args[0]} failed: {done.stderr[-1000:]}")


def _authority(directory: Path, name: str) -> None:
    # EC keys: generated in milliseconds, where RSA would take a noticeable fraction of
    # a second on a loaded machine.
    _openssl(
        directory,
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN=meetq test {name}",
    )  # fmt: skip


def _signed(directory: Path, name: str, extensions: str) -> None:
    _openssl(
        directory,
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=meetq test {name}",
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        directory,
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
    )  # fmt: skip


def make_certificates(directory: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate it
    signed, and an unrelated CA, as PEM files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _authority(directory, "ca")
    _authority(directory, "other-ca")
    _signed(
        directory,
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _signed(directory, "client", "extendedKeyUsage=clientAuth\n")
    return TlsFiles(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
    )


class TlsRedisServer(RedisServer):
    """A ``redis-server`` on ``127.0.0.1:port`` that speaks TLS only and has ACL users."""

    def __init__(self, *, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(port=port, extra_args=extra_args)
        self.tls = make_certificates(self.directory / "tls")
        name, password = ADMIN
        self.extra_args = (
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.server_cert),
            "--tls-key-file", str(self.tls.server_key),
            "--tls-ca-cert-file", str(self.tls.ca_cert),
            "--tls-auth-clients", "optional",
            "--user", "default", "off",
            "--user", name, "on", f">{password}", "~*", "&*", "+@all",
            *extra_args,
        )  # fmt: skip

    @property
    def url(self) -> str:
        """The server's address, without credentials (a user brings their own)."""
        return f"rediss://127.0.0.1:{self.port}/0"

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl`` context trusting the test CA, with the client certificate."""
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context

    def _ping(self) -> bool:
        name, password = ADMIN
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                self.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock,
            ):
                sock.sendall(f"AUTH {name} {password}\r\nPING\r\n".encode())
                seen = b""
                while b"\r\n" not in seen.partition(b"\r\n")[2]:
                    chunk = sock.recv(64)
                    if not chunk:
                        return False
                    seen += chunk
                return seen.endswith(b"+PONG\r\n")
        except (OSError, ssl.SSLError):
            return False
