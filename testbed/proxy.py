"""A TCP proxy on loopback that can cut its connections mid-transfer, for tests of resuming.

``CuttingProxy(upstream_host, upstream_port, cut_after=N, cuts=K)`` listens on 127.0.0.1 (a free
port) and forwards every connection to the upstream (TLS passes through untouched: the client still
verifies the simulator's certificate).  Once N bytes have gone from upstream to clients, summed
over all connections, it resets (RST, as a failing network does) every open connection; it does
so ``cuts`` times (``None``: after every further N bytes).  New connections are accepted after a
cut, so a client that retries continues.  It runs in a thread of its own: use it as a context
manager around synchronous or asyncio test code alike.  Every connection is recorded when it
closes (``closed``: opened, closed, bytes down), so a test can count how many were open at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

_CHUNK = 65536


@dataclass(frozen=True)
class Connection:
    opened: float  # time.monotonic()
    closed: float
    bytes_down: int


class CuttingProxy:
    def __init__(
        self, upstream_host: str, upstream_port: int, *, cut_after: int | None = None, cuts: int | None = 1
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cuts_done = 0
        self.bytes_down = 0  # upstream → clients, all connections
        self.connections = 0
        self.closed: list[Connection] = []
        self._since_cut = 0
        self._lock = threading.Lock()
        self._generation = 0  # bumped at each cut; a connection older than it is reset
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.host = "127.0.0.1"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> CuttingProxy:
        thread = threading.Thread(target=self._accept, name="cutting-proxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.1)
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self.connections += 1
                generation = self._generation
            thread = threading.Thread(
                target=self._pump, args=(client, server, generation, time.monotonic()), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _pump(self, client: socket.socket, server: socket.socket, generation: int, opened: float) -> None:
        reset = False
        down = 0
        try:
            while not self._stop.is_set():
                if self._generation != generation:
                    reset = True  # another connection crossed the limit: all are cut
                    return
                ready, _, _ = select.select([client, server], [], [], 0.05)
                for sock in ready:
                    data = sock.recv(_CHUNK)
                    if not data:
                        return
                    if sock is server:
                        client.sendall(data)
                        down += len(data)
                        if self._count(len(data)):
                            reset = True
                            return
                    else:
                        server.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, server):
                if reset:
                    _reset(sock)
                sock.close()
            with self._lock:
                self.closed.append(Connection(opened, time.monotonic(), down))

    def _count(self, n: int) -> bool:
        """Count bytes sent down; True when this crosses the limit (the caller cuts)."""
        with self._lock:
            self.bytes_down += n
            self._since_cut += n
            due = self.cut_after is not None and self._since_cut >= self.cut_after
            if not due or self.cuts_left == 0:
                return False
            self._since_cut = 0
            self.cuts_done += 1
            self._generation += 1
            if self.cuts_left is not None:
                self.cuts_left -= 1
            return True

    def most_at_once(self, min_bytes: int = 0) -> int:
        """The most closed connections open at the same moment, of those that carried at least
        ``min_bytes`` down (a disk reader's, not a login's)."""
        with self._lock:
            kept = [c for c in self.closed if c.bytes_down >= min_bytes]
        # Sweep the openings and closings in time order; a closing sorts before an opening at the
        # same instant (one connection handed over to the next is not two at once).
        events = sorted([(c.opened, 1) for c in kept] + [(c.closed, -1) for c in kept])
        most = now = 0
        for _, step in events:
            now += step
            most = max(most, now)
        return most

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> CuttingProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _reset(sock: socket.socket) -> None:
    """Make the next close send an RST (SO_LINGER 0), not a FIN: the peer sees "connection reset"."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
