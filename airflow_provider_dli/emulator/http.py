"""The HTTP side of the emulator: reading a request as the API gateway frames it, playing a scripted fault, and
writing the answer (a JSON body with a request id). What the answer is, the :class:`Service` decides."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_provider_dli.emulator.api import Answer, Reject, Request
from airflow_provider_dli.emulator.faults import Fault

_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{1,5})?")
"""A ``Host`` header (RFC 9110): a name or an IPv4 address, or an IPv6 address in brackets; then the port."""
MAX_REQUEST_BODY = 12 * 1024 * 1024
"""The API gateway's limit on a request body; a larger one gets 413 ``APIGW.0201``."""
CONTROL_PREFIX = "/_emulator/"


@dataclass
class RequestRecord:
    at: float  # epoch seconds, when the request arrived
    method: str
    path: str
    status: int = -1  # -1: still being answered; 0: the connection was dropped


class Service(Protocol):
    """What the handler asks of the emulator."""

    latency: float

    def record(self, record: RequestRecord) -> None: ...

    def take_fault(self, method: str, path: str) -> Fault | None: ...

    def answer(self, request: Request) -> Answer:
        """The answer to ``request``, or a :class:`Reject`."""
        ...


class ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        self.service = service
        super().__init__(address, Handler)


class IPv6Server(ThreadingServer):
    address_family = socket.AF_INET6


def serve(host: str, port: int, service: Service) -> ThreadingServer:
    """A server bound to ``host``:``port`` (``"::1"`` is an IPv6 address), not yet serving."""
    server_class = IPv6Server if ":" in host else ThreadingServer
    return server_class((host, port), service)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service
    server_version = "DLIEmulator"
    server: ThreadingServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the client's
        # delayed ACK hold the body back ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo read the emulator's state, not its access log."""

    def _handle(self) -> None:
        service = self.server.service
        self.record = RequestRecord(time.time(), self.command, urlsplit(self.path).path.rstrip("/"))
        if not self.record.path.startswith(CONTROL_PREFIX):
            service.record(self.record)  # at arrival, so that a slow answer is counted at once
        try:
            body = self._read_body()
        except Reject as reject:
            self.close_connection = True  # the rest of the stream cannot be framed: answer, then hang up
            self._reply(reject.status, {"error_code": reject.code, "error_msg": reject.message}, {})
            return
        self._answer(service, Request(self.command, self.path, self.headers, body))

    def _read_body(self) -> bytes:
        """The body that ``Content-Length`` announces; a 4xx, as the gateway answers, for a malformed one (or
        for a malformed ``Host``: an IPv6 address must be in brackets, ``[::1]:8080``)."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not _HOST.fullmatch(hosts[0]):
            raise Reject(400, "APIGW.0201", "API request error: the Host header is missing or malformed")
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if not lengths:
            return b""
        length = lengths.pop()
        if lengths or not re.fullmatch(r"[0-9]{1,20}", length):
            raise Reject(400, "APIGW.0201", "API request error: Content-Length is not a number of bytes")
        if int(length) > MAX_REQUEST_BODY:
            raise Reject(413, "APIGW.0201", "Request entity too large")
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            raise Reject(400, "APIGW.0201", "API request error: the body is shorter than Content-Length")
        return body

    def _answer(self, service: Service, request: Request) -> None:
        path = self.record.path
        if service.latency and not path.startswith(CONTROL_PREFIX):
            time.sleep(service.latency)
        fault = service.take_fault(self.command, path)
        if fault is not None:
            time.sleep(fault.delay)
            if fault.drop or fault.lose_answer:
                if fault.lose_answer:
                    with contextlib.suppress(Reject):
                        service.answer(request)
                self.record.status = 0
                self.close_connection = True
                return
            if fault.status is not None:
                if fault.acted:
                    with contextlib.suppress(Reject):
                        service.answer(request)
                fault_headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                if fault.body is not None:
                    content_type = "text/html" if fault.body.startswith("<") else "text/plain"
                    self._send(fault.status, fault.body.encode(), content_type, fault_headers)
                else:
                    error = {"error_code": fault.error_code_for(fault.status), "error_msg": "injected fault"}
                    self._reply(fault.status, error, fault_headers)
                return
        headers: dict[str, str] = {}
        try:
            status, payload, headers = service.answer(request)
        except Reject as reject:
            status, payload = reject.status, {"error_code": reject.code, "error_msg": reject.message}
            headers = reject.headers
        except Exception as error:  # a bug in the emulator: answer like the service's internal error
            status, payload = 500, {"error_code": "DLI.0999", "error_msg": f"emulator error: {error!r}"}
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: Any, headers: Mapping[str, str]) -> None:
        request_id = uuid.uuid4().hex
        if status >= 400 and isinstance(payload, dict) and "error_code" in payload:
            payload = {**payload, "request_id": request_id}
        self._send(status, json.dumps(payload).encode(), "application/json", {**headers, "X-Request-Id": request_id})

    def _send(self, status: int, data: bytes, content_type: str, headers: Mapping[str, str]) -> None:
        self.record.status = status  # before the client can see the answer
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        self.send_response(status, phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _handle
