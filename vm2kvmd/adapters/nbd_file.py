"""An NBD export shown as a local, read-only file (libnbd's ``nbdfuse``).

QEMU's vmdk driver opens the extents of a descriptor only by local file name (an NBD URI
there is taken as a relative path), and a vmdk layer's parent must be a vmdk node (it checks
the parent's CID).  A vSphere snapshot chain is therefore read through descriptor views whose
extents are such files, each showing a remote data file's NBD export (``adapters.remote_disk``).
Flat disks without snapshots do not need this: QEMU reads their export directly.

``async with NbdFile(socket, directory) as path:`` mounts ``directory/data`` (FUSE, read-only)
and unmounts it on exit, also on cancellation; ``nbdfuse`` dies with the daemon (pdeathsig).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from types import TracebackType

from vm2kvmd.aio import in_thread, settle
from vm2kvmd.errors import ErrorCode, Vm2kvmError

NBDFUSE = "nbdfuse"
FUSERMOUNT = shutil.which("fusermount3") or "fusermount"
_WATCHED = ("setpriv", "--pdeathsig", "KILL", "--") if shutil.which("setpriv") else ()
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class NbdFile:
    """``directory/data``: the NBD export at unix socket ``socket``, as a read-only file."""

    def __init__(self, socket: str, directory: str, *, label: str) -> None:
        self.socket = socket
        self.directory = directory
        self.path = os.path.join(directory, "data")
        self.label = label
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> str:
        await in_thread(os.makedirs, self.directory, 0o700, True)
        try:
            await self._start()
        except BaseException:
            await settle(self._stop())
            raise
        return self.path

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await settle(self._stop())

    async def _start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *_WATCHED,
            NBDFUSE,
            "-r",
            self.path,
            "--unix",
            self.socket,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not await in_thread(os.path.ismount, self.directory):
            if self._proc.returncode is not None or loop.time() > deadline:
                err = b""
                if self._proc.returncode is not None and self._proc.stderr is not None:
                    err = await self._proc.stderr.read()
                raise Vm2kvmError(
                    ErrorCode.COPY_FAILED,
                    f"could not show {self.label} as a file for QEMU's vmdk driver: "
                    f"{err.decode(errors='replace').strip() or 'nbdfuse did not mount'}",
                    hint="the snapshot chains of vSphere disks need FUSE (/dev/fuse) on the KVM host",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), 0.05)

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            # Unmounting makes nbdfuse exit; SIGTERM only when it does not.
            umount = await asyncio.create_subprocess_exec(
                FUSERMOUNT,
                "-u",
                "-z",
                self.directory,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await umount.wait()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if proc.stderr is not None:
            with contextlib.suppress(Exception):
                await proc.stderr.read()
        await proc.wait()
        with contextlib.suppress(OSError):
            await in_thread(os.rmdir, self.directory)


def unmount_below(path: str) -> list[str]:
    """Unmount (lazily) every mount under ``path``; the mount points (blocking).

    A daemon killed mid-job leaves its ``nbdfuse`` mounts behind, dead ("Transport endpoint is not
    connected"): the job's directory cannot be removed until they are gone.
    """
    prefix = os.path.realpath(path).rstrip("/") + "/"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            # Mount points escape blanks as octal (\040); decode them back.
            points = [line.split()[1].encode().decode("unicode_escape") for line in mounts if line.strip()]
    except OSError:
        return []
    below = sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)
    for point in below:
        subprocess.run(
            [FUSERMOUNT, "-u", "-z", point],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=STOP_TIMEOUT,
        )
    return below
