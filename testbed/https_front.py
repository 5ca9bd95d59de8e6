"""An HTTPS server in front of the simulator's datastore, doing what a real ESXi does and govmomi's
simulator (0.24) does not: answer 503 when busy, and refuse a request whose session cookie is no
longer a live session.

``HttpsFront(upstream_host, upstream_port, upstream_ca, busy_first=N, check_cookie=f)`` listens on
127.0.0.1 with a certificate of its own (``front.ca_file``; made with the openssl command) and
forwards ``GET``/``HEAD`` to the simulator, Range and Cookie headers included, streaming the body.
The first ``busy_first`` data requests (those with a Range header: ESXi throttles transfers, not
the size probe) get ``503 Service Unavailable`` (with ``Retry-After: retry_after`` when
given).  ``check_cookie(cookie)`` returning False gives
``401``, as ESXi answers a ``/folder`` request whose session ended.  ``on_data_request(n)`` runs
before the n-th data request is answered (a test ends the session there, mid-copy).  Every
request is recorded (time, method, status, the session id of its cookie) in ``front.requests``.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic()
    method: str
    ranged: bool
    session: str  # the cookie's session id, "" without one
    status: int


def session_id(cookie: str) -> str:
    """``vmware_soap_session="abc"; Path=/`` -> ``abc``."""
    first = cookie.split(";")[0]
    return first.split("=", 1)[1].strip('"') if "=" in first else ""


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "front.pem", directory / "front.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class HttpsFront:
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        upstream_ca: str,
        *,
        busy_first: int = 0,
        check_cookie: Callable[[str], bool] | None = None,
        on_data_request: Callable[[int], None] | None = None,
        retry_after: str | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.retry_after = retry_after  # the Retry-After header of each 503
        self.busy_left = busy_first
        self.check_cookie = check_cookie
        self.on_data_request = on_data_request
        self.data_requests = 0
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="https-front-"))
        cert, key = _self_signed(self._dir)
        self.ca_file = str(cert)
        self._upstream_context = ssl.create_default_context(cafile=upstream_ca)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as curl expects of ESXi

            def do_GET(self) -> None:
                front._handle(self, "GET")

            def do_HEAD(self) -> None:
                front._handle(self, "HEAD")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.host = "127.0.0.1"
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="https-front", daemon=True)

    def _record(self, method: str, ranged: bool, cookie: str, status: int) -> None:
        with self._lock:
            self.requests.append(Request(time.monotonic(), method, ranged, session_id(cookie), status))

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        ranged = "Range" in handler.headers
        cookie = handler.headers.get("Cookie", "")
        with self._lock:
            busy = ranged and self.busy_left > 0
            if busy:
                self.busy_left -= 1
            self.data_requests += ranged
            n = self.data_requests
        if ranged and self.on_data_request is not None:
            self.on_data_request(n)
        if busy:
            self._answer(handler, method, ranged, cookie, 503, "Service Unavailable")
            return
        if self.check_cookie is not None and not self.check_cookie(cookie):
            self._answer(handler, method, ranged, cookie, 401, "Unauthorized")
            return
        conn = http.client.HTTPSConnection(*self.upstream, context=self._upstream_context, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k in ("Range", "Cookie")}
            conn.request(method, handler.path, headers=headers)
            response = conn.getresponse()
            self._record(method, ranged, cookie, response.status)
            handler.send_response(response.status)
            for name in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Last-Modified"):
                if value := response.getheader(name):
                    handler.send_header(name, value)
            handler.end_headers()
            while method == "GET" and (chunk := response.read(_CHUNK)):
                handler.wfile.write(chunk)
        finally:
            conn.close()

    def _answer(
        self, handler: BaseHTTPRequestHandler, method: str, ranged: bool, cookie: str, status: int, text: str
    ) -> None:
        self._record(method, ranged, cookie, status)
        body = f"{text}\n".encode()
        handler.send_response(status, text)
        if status == 503 and self.retry_after is not None:
            handler.send_header("Retry-After", self.retry_after)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method == "GET":
            handler.wfile.write(body)

    def start(self) -> HttpsFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> HttpsFront:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
