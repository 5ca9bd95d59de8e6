"""Keeping a vSphere session alive while its disks are read, and renewing it when it ends.

A copy of large disks outlasts an idle session (ESXi ends idle sessions after 30 minutes by
default; the disk reads over ``/folder`` do not count as activity for the SOAP session), and an
administrator or a host restart may end it at any time.  ``SessionKeeper`` calls
``Session.keep_alive`` every ``interval`` seconds in a worker thread; when that had to log in
again, every disk reader it watches gets the new cookie (``RemoteDisk.renew_cookie``), so nbdkit's
next requests carry it and the copy goes on where it was.  A keep-alive that fails (host
unreachable, login refused) is logged and tried again: whether the copy fails is decided by the
reader's own retries and time bound, not here.  A watched reader whose requests are refused
(401/403: the session ended) asks for a check at once instead of waiting for the interval.

    async with SessionKeeper(session, on_log=job_log) as keeper:
        async with RemoteDisk(url, session.cookie, work_dir=work) as disk:
            keeper.watch(disk)
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType

from vm2kvmd.adapters.remote_disk import RemoteDisk
from vm2kvmd.adapters.vsphere import Session
from vm2kvmd.aio import in_thread
from vm2kvmd.errors import Vm2kvmError

log = logging.getLogger(__name__)

# Far below ESXi's 30-minute idle timeout; short enough that a session ended by someone else is
# renewed within the reader's retry budget (2+4+8+16+32 s) plus its cookie re-read.
KEEPALIVE_INTERVAL = 30.0


def _ignore(_line: str) -> None:
    pass


class SessionKeeper:
    def __init__(
        self,
        session: Session,
        *,
        interval: float = KEEPALIVE_INTERVAL,
        on_log: Callable[[str], None] = _ignore,
    ) -> None:
        self.session = session
        self.interval = interval
        self.on_log = on_log
        self.renewals = 0
        self._disks: list[RemoteDisk] = []
        self._task: asyncio.Task[None] | None = None

    def watch(self, disk: RemoteDisk) -> None:
        """Give ``disk`` the new cookie whenever the session is renewed (until it is closed)."""
        self._disks.append(disk)
        disk.on_refused = self._refused

    def forget(self, disk: RemoteDisk) -> None:
        with contextlib.suppress(ValueError):
            self._disks.remove(disk)
        disk.on_refused = None

    async def _refused(self) -> None:
        try:
            await self.check()
        except Vm2kvmError as exc:
            self.on_log(f"renewing the vSphere session failed: {exc.message}")

    async def check(self) -> bool:
        """Keep the session alive now; True when it was renewed (and the disks got the cookie)."""
        if not await in_thread(self.session.keep_alive):
            return False
        self.renewals += 1
        self.on_log(f"the vSphere session on {self.session.uri.address} had ended; logged in again")
        cookie = self.session.cookie
        for disk in list(self._disks):
            await disk.renew_cookie(cookie)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Vm2kvmError as exc:
                # The readers' retries and time bound decide the copy's fate; keep trying.
                self.on_log(f"keeping the vSphere session alive failed: {exc.message}")
                log.warning("keep-alive on %s failed: %s", self.session.uri.address, exc.message)

    async def __aenter__(self) -> SessionKeeper:
        self._task = asyncio.create_task(self._run(), name="vsphere-keepalive")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
