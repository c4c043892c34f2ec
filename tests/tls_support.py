"""A certificate authority and a TLS terminator for tests (the embedded broker speaks plaintext only).

    pki = TestPKI(tmp_path)                                  # CA + server cert for localhost/127.0.0.1
    with TlsProxy(pki.server_context(), "127.0.0.1", broker_port) as proxy:
        ...  # clients connect to localhost:proxy.port with security_protocol=SSL, ssl_cafile=pki.ca_file

The proxy runs its own event loop in a thread, so it serves sync tests, async tests and
subprocesses alike. It forwards bytes both ways and nothing else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestPKI:
    """A throwaway CA with helpers to issue server and client certificates into ``directory``."""

    __test__ = False

    def __init__(self, directory: Path, ca_name: str = "tickpipe test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.ca_cert = (x509.CertificateBuilder().subject_name(_name(ca_name)).issuer_name(_name(ca_name))
                        .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                        .sign(self.ca_key, hashes.SHA256()))
        self.ca_file = self._write(f"{ca_name.replace(' ', '-')}.pem", self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self.server_cert, self.server_key = self.issue("server", ["localhost", "127.0.0.1"])

    def issue(self, name: str, hostnames: list[str], client: bool = False) -> tuple[str, str]:
        """Issue a certificate for ``hostnames``; returns (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        sans = [x509.IPAddress(ipaddress.ip_address(h)) if h.replace(".", "").isdigit() else x509.DNSName(h)
                for h in hostnames]
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        cert = (x509.CertificateBuilder().subject_name(_name(hostnames[0])).issuer_name(self.ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        cert_file = self._write(f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
        key_file = self._write(f"{name}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
        return cert_file, key_file

    def server_context(self, cert: tuple[str, str] | None = None, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*(cert or (self.server_cert, self.server_key)))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca_file)
        return ctx

    def _write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)


class TlsProxy:
    """Terminate TLS on ``127.0.0.1:<port>`` and forward to a plaintext ``target_host:target_port``."""

    def __init__(self, context: ssl.SSLContext, target_host: str, target_port: int, port: int = 0) -> None:
        self.context, self.target = context, (target_host, target_port)
        self.port = port or _free_port()
        self.handshake_failures = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> "TlsProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._loop.set_exception_handler(self._on_loop_error)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context)

    def _on_loop_error(self, loop, context) -> None:
        if isinstance(context.get("exception"), ssl.SSLError):
            self.handshake_failures += 1  # a client that did not trust us: expected in negative tests

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "TlsProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
