"""What a migration created, so a failed or cancelled one can take it back.

Every step that creates something (a volume, a file, a directory, the
domain) records an undo action the moment it succeeds, from inside the worker
thread that did it: a cancellation arriving while that thread runs cannot
lose the record.  Undo runs newest first and never raises; what could not be
undone is reported as log lines.

Also here: the two asyncio helpers the pipeline needs so that blocking work
and cleanup finish even when the job is cancelled half-way.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.errors import Vm2kvmError

_T = TypeVar("_T")
_P = ParamSpec("_P")


async def settle(aw: Awaitable[_T]) -> _T:
    """Await ``aw`` to its end even if we are cancelled meanwhile, then re-deliver the cancel.

    A thread cannot be interrupted: when the job is cancelled while
    ``create_volume`` runs, we wait for it so the rollback sees the volume.
    """
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def in_thread(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``asyncio.to_thread`` that, when cancelled, first lets the thread finish."""
    return await settle(asyncio.to_thread(fn, *args, **kwargs))


class Rollback:
    """A ledger of undo actions; thread-safe to record into."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._undo)

    def add(self, description: str, undo: Callable[[], None]) -> None:
        """Record ``undo`` (blocking, may raise) described as ``description`` ("volume x in pool y")."""
        with self._lock:
            self._undo.append((description, undo))

    def volume(self, host: LibvirtHost, pool: str, name: str, path: str) -> None:
        def undo() -> None:
            try:
                host.delete_volume(pool, name)
            except Vm2kvmError:
                # libvirt lost track of it (a pool refresh raced us): the file is still ours.
                if not os.path.lexists(path):
                    raise
                os.unlink(path)

        self.add(f"volume {name} in pool {pool}", undo)

    def file(self, path: str) -> None:
        self.add(f"file {path}", lambda: os.unlink(path))

    def directory(self, path: str) -> None:
        # rmdir, not rmtree: only ever remove what is empty once our files are gone.
        self.add(f"directory {path}", lambda: os.rmdir(path))

    def domain(self, host: LibvirtHost, name: str) -> None:
        self.add(f"domain {name}", lambda: host.undefine_domain(name))

    def run(self) -> list[str]:
        """Undo everything, newest first (blocking).  Returns one log line per action."""
        with self._lock:
            actions, self._undo = self._undo[::-1], []
        lines = []
        for description, undo in actions:
            try:
                undo()
            except FileNotFoundError:
                lines.append(f"{description} was already gone")
            except (OSError, Vm2kvmError) as err:
                lines.append(f"could not remove {description}: {err}")
            else:
                lines.append(f"removed {description}")
        return lines
