"""sd_notify(3) for vm2kvmd: READY, STATUS, WATCHDOG and STOPPING over ``$NOTIFY_SOCKET``.

Our own ~40 lines rather than systemd-python's ``systemd.daemon.notify``: the
protocol is one datagram on an ``AF_UNIX`` socket, python3-systemd is optional
(logging falls back to stderr without it), and its ``notify`` is a blocking C
call the event loop could not see.  Ours sends on a non-blocking socket, so a
stalled systemd can never stall the daemon; a datagram that does not fit is
dropped with one debug line (systemd gives the socket a large buffer, so that
does not happen in practice).

Without ``$NOTIFY_SOCKET`` (not started by systemd with ``Type=notify``) every
call is a no-op.  The variables are removed from ``os.environ`` when read, so
qemu-img and the libguestfs appliance never inherit them (they would be
ignored anyway with ``NotifyAccess=main``, but a child has no business there).

The watchdog pings come from a task on the daemon's event loop: when the loop is
blocked the pings stop and systemd restarts the daemon, which is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger("vm2kvmd.sdnotify")

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def status_text(running: int, queued: int, *, stopping: bool = False) -> str:
    """The STATUS= line of ``systemctl status vm2kvmd``."""
    counts = f"{running} running, {queued} queued" if running or queued else "idle"
    if stopping:
        return "stopping" if counts == "idle" else f"stopping: {counts}"
    return counts


def _address(value: str) -> str | None:
    """A ``$NOTIFY_SOCKET`` value as a ``socket.connect`` address (``@`` = abstract)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock:CID:PORT (systemd >= 253, inside VMs): not for a host daemon


def watchdog_interval(environ: MutableMapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when the watchdog is off
    or meant for another process (``$WATCHDOG_PID``)."""
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """The daemon's side of sd_notify; inert when ``address`` is None."""

    def __init__(self, address: str | None = None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog if address is not None else None
        self._sock: socket.socket | None = None
        self._status = ""
        self._stopping = False
        self._pinger: asyncio.Task[None] | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """From ``$NOTIFY_SOCKET``/``$WATCHDOG_USEC``/``$WATCHDOG_PID``, which are then removed."""
        env = os.environ if environ is None else environ
        address = _address(env.get("NOTIFY_SOCKET", ""))
        watchdog = watchdog_interval(env, os.getpid())
        for name in _VARIABLES:
            env.pop(name, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """One datagram of ``KEY=value`` lines; False when it could not be sent (logged)."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # close-on-exec by default
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message, self.address)
        except OSError as exc:
            log.debug("sd_notify %r to %r failed: %s", assignments, self.address, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self._status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """STATUS=, only when it changed."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def counts(self, running: int, queued: int) -> None:
        """STATUS= from the manager's job counts (``stopping: ...`` once stopping)."""
        self.status(status_text(running, queued, stopping=self._stopping))

    def stopping(self, running: int = 0, queued: int = 0) -> None:
        self._stopping = True
        self._status = status_text(running, queued, stopping=True)
        self.send("STOPPING=1", f"STATUS={self._status}")

    def start_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` from a task of the running loop, if systemd asked for it."""
        if self.watchdog is None or self._pinger is not None:
            return
        self._pinger = asyncio.create_task(self._ping(self.watchdog), name="vm2kvmd watchdog")

    async def _ping(self, interval: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Stop the pings and close the socket (send nothing afterwards)."""
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.address = None
