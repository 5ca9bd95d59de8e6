"""A logind inhibitor (shutdown and sleep) held while migrations run.

A host that powers off or suspends in the middle of a copy leaves a failed job
to retry; ``systemctl poweroff`` by a user therefore waits for, or is refused
by, an inhibitor (``systemd-inhibit --list``: who ``vm2kvm``, why ``N
migration(s) running``, mode ``block``).  Root can still override it
(``systemctl poweroff --check-inhibitors=no``), and logind's ``delay``
inhibitors would not help: a copy does not finish in the few seconds a delay
buys.

logind hands out the inhibitor as a file descriptor: it holds while the fd is
open and is released by closing it.  ``Inhibit`` is called on the daemon's own
bus connection, which negotiates fd passing for it (``service.bus.connect``).
When the count of running jobs changes, a fresh inhibitor with the new text is
taken before the old one is closed, so there is no gap.

Without logind (containers, the tests' private bus, non-systemd hosts) there is
nothing to inhibit: one debug line, never an error, and jobs run as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

log = logging.getLogger("vm2kvmd.inhibit")

LOGIND_NAME = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_MANAGER = "org.freedesktop.login1.Manager"
WHAT = "shutdown:sleep"
WHO = "vm2kvm"
MODE = "block"

# The bus's answers when there is no logind to ask.
_ABSENT = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.UnknownObject",
        "org.freedesktop.DBus.Error.UnknownInterface",
        "org.freedesktop.DBus.Error.UnknownMethod",
    }
)


def reason(running: int) -> str:
    return f"{running} migration{'' if running == 1 else 's'} running"


class Inhibitor:
    """Holds one logind ``block`` inhibitor while ``update(running)`` says jobs run."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        self._fd: int | None = None
        self._held_for = 0  # the running count in the held inhibitor's text; 0 = none held
        self._wanted = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._complained = False

    def update(self, running: int) -> None:
        """Take, re-word or release the inhibitor for ``running`` jobs (in a task of the loop)."""
        self._wanted = running
        if self._closed or running == self._held_for:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._reconcile(), name="vm2kvmd inhibitor")

    async def _reconcile(self) -> None:
        # One task at a time; it follows ``_wanted`` until they agree or logind fails
        # (the next update tries again).
        while not self._closed and self._wanted != self._held_for:
            wanted = self._wanted
            if wanted == 0:
                self._release()
                continue
            fd = await self._take(reason(wanted))
            if fd is None:
                return
            if self._closed:
                os.close(fd)
                return
            self._release()
            self._fd, self._held_for = fd, wanted
            log.debug("holding a logind %s inhibitor: %s", WHAT, reason(wanted))

    async def _take(self, why: str) -> int | None:
        call = Message(
            destination=LOGIND_NAME,
            path=LOGIND_PATH,
            interface=LOGIND_MANAGER,
            member="Inhibit",
            signature="ssss",
            body=[WHAT, WHO, why, MODE],
        )
        try:
            reply = await self._bus.call(call)
        except Exception as exc:  # the connection went away: nothing to hold on to
            self._complain(f"cannot ask logind for an inhibitor: {exc}", absent=False)
            return None
        fds = list(reply.unix_fds)
        if reply.message_type is MessageType.ERROR:
            _close_all(fds)
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            absent = reply.error_name in _ABSENT
            self._complain(
                "logind is not available; no shutdown/sleep inhibitor while migrations run"
                if absent
                else f"logind refused an inhibitor: {reply.error_name}: {text}",
                absent=absent,
            )
            return None
        index = reply.body[0] if reply.body else -1
        fd = fds.pop(index) if isinstance(index, int) and 0 <= index < len(fds) else None
        _close_all(fds)
        if fd is None:
            self._complain("logind's Inhibit reply carried no file descriptor", absent=False)
            return None
        # A child (qemu-img, the appliance) that inherited it would hold the inhibitor
        # after we let go.
        os.set_inheritable(fd, False)
        return fd

    def _complain(self, message: str, *, absent: bool) -> None:
        """Once per daemon: a missing logind is normal (debug); anything else is worth a warning."""
        if self._complained:
            log.debug("%s", message)
            return
        self._complained = True
        log.log(logging.DEBUG if absent else logging.WARNING, "%s", message)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            log.debug("released the logind %s inhibitor", WHAT)
        self._held_for = 0

    async def close(self) -> None:
        """Release the inhibitor and take no more (daemon stop)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._release()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
