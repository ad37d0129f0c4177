"""A loopback HTTP server that answers byte by byte as a test scripts it: for what the emulator does not
model (trickled, oversized and truncated answers, redirects, silence, TLS that fails verification)."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


Answer = Callable[["HostileServer", Received, socket.socket], None]
"""Writes the answer (with ``server.send``); the server closes the connection after it (one request each)."""


class HostileServer:
    """Serves ``answer`` on ``http(s)://127.0.0.1:{port}``; records what arrived and how answers ended.

    ``completed`` counts answers written in full; ``cut_off`` counts those the client hung up on; ``sent``
    is the number of bytes written in all.
    """

    def __init__(self, answer: Answer, *, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.received: list[Received] = []
        self.connections = 0
        self.completed = 0
        self.cut_off = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hostile-server", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self._listener.close()

    def send(self, conn: socket.socket, data: bytes) -> None:
        """Write ``data``, counting it (answers use this, so ``sent`` is exact)."""
        conn.sendall(data)
        with self._lock:
            self.sent += len(data)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        try:
            conn = self.tls.wrap_socket(raw, server_side=True) if self.tls else raw
            with conn:
                request = _read_request(conn)
                if request is None:
                    return
                with self._lock:
                    self.received.append(request)
                self.answer(self, request, conn)
                with self._lock:
                    self.completed += 1
        except (OSError, ssl.SSLError):
            with self._lock:
                self.cut_off += 1
        finally:
            raw.close()


def _read_request(conn: socket.socket) -> Received | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length") or 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Received(method, path, headers, body)


def head(status: int, headers: Mapping[str, str] = {}) -> bytes:
    lines = [f"HTTP/1.1 {status} Status", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reply(status: int, body: bytes = b"", headers: Mapping[str, str] = {}) -> Answer:
    """An answer in one piece (``Content-Type: application/json`` unless given)."""

    def answer(server: HostileServer, request: Received, conn: socket.socket) -> None:
        fields = {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
        server.send(conn, head(status, fields) + body)

    return answer


def pieces(parts: Callable[[], Iterable[bytes]], every: float = 0.0) -> Answer:
    """Write what ``parts()`` yields, piece after piece, ``every`` seconds apart."""

    def answer(server: HostileServer, request: Received, conn: socket.socket) -> None:
        for part in parts():
            server.send(conn, part)
            if every:
                time.sleep(every)

    return answer


def one_byte_at_a_time(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def self_signed_tls(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1, which no client trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "untrusted test server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context
