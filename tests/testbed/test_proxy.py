"""testbed/proxy.py: forwards both ways, and resets every connection once N bytes went down."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from testbed.proxy import CuttingProxy

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    """Answers each connection's first line with PAYLOAD."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(100)
                with contextlib.suppress(OSError):  # the proxy may reset us
                    conn.sendall(PAYLOAD)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()
    stop.set()
    thread.join()
    listener.close()


def _fetch(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"get\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_forwards_unchanged_without_a_limit(server: tuple[str, int]) -> None:
    with CuttingProxy(*server) as proxy:
        assert _fetch(proxy.port) == PAYLOAD
    assert proxy.bytes_down == len(PAYLOAD)
    assert proxy.cuts_done == 0


def test_resets_after_the_limit_then_lets_new_connections_through(server: tuple[str, int]) -> None:
    with CuttingProxy(*server, cut_after=len(PAYLOAD) // 4, cuts=1) as proxy:
        with pytest.raises(ConnectionResetError):
            _fetch(proxy.port)
        assert _fetch(proxy.port) == PAYLOAD  # cut once only
    assert proxy.cuts_done == 1
    assert proxy.connections == 2
