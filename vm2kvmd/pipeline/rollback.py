"""What a migration created, so a failed or cancelled one can take it back.

Every step that creates something (a volume, a file, a directory, the
domain) records an undo action the moment it succeeds, from inside the worker
thread that did it: a cancellation arriving while that thread runs cannot
lose the record.  Undo runs newest first and never raises; what could not be
undone is reported as log lines.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable

from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.errors import Vm2kvmError


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
                # A block device node is not: only libvirt (lvremove) can remove a logical volume.
                if not stat.S_ISREG(os.lstat(path).st_mode):
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
