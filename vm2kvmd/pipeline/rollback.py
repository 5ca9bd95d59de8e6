"""What a migration created, so a failed or cancelled one can take it back.

Every step that creates something (a volume, a file, a directory, the
domain) records an undo action the moment it succeeds, from inside the worker
thread that did it: a cancellation arriving while that thread runs cannot
lose the record.  Undo runs newest first and never raises; what could not be
undone is reported as log lines.

A daemon that is killed (SIGKILL, power loss) runs no undo action at all.
So, given a ``ResidueRecorder`` (the job store's), the same ledger is also
written down as ``Residue`` rows: *before* the thing is created (a crash
between the create and the record would otherwise leave it unknown), and
forgotten again when the create fails (the name may have been someone
else's: never delete what existed before), when the undo removed it, and
when the migration ends (its outputs are then the result, not residue).  At
the next start ``service.recovery`` undoes whatever rows a running job left,
with ``undo_residue``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.adapters.nbd_file import unmount_below
from vm2kvmd.constants import DEFAULT_LIBVIRT_URI
from vm2kvmd.core.residue import Residue, ResidueRecorder
from vm2kvmd.errors import Vm2kvmError

# --- undo from a residue (recovery) ---------------------------------------------------


class _LeftAlone(Exception):
    """The residue's name now belongs to something that is not ours."""


def undo_residue(residue: Residue) -> str:
    """Remove what ``residue`` describes (blocking; missing is fine, never raises); returns a log line."""
    return remove_residue(residue)[1]


def remove_residue(residue: Residue) -> tuple[bool, str]:
    """``undo_residue`` that also says whether it is gone now (False: it could not be removed).

    A name that now belongs to something else counts as gone: nothing of ours is left.
    """
    description = residue.describe()
    try:
        if residue.kind == "volume":
            with LibvirtHost(residue.uri or DEFAULT_LIBVIRT_URI) as host:
                remove_volume(host, residue.pool, residue.name, residue.path)
        elif residue.kind == "domain":
            with LibvirtHost(residue.uri or DEFAULT_LIBVIRT_URI) as host:
                _undefine_ours(host, residue.name, residue.uuid)
        elif residue.kind == "tree":
            _rmtree(residue.path)
        elif residue.kind == "directory":
            os.rmdir(residue.path)
        elif residue.kind == "file":
            os.unlink(residue.path)
        else:
            return False, f"could not remove {description}: unknown kind of residue {residue.kind!r}"
    except FileNotFoundError:
        return True, f"{description} was already gone"
    except _LeftAlone as err:
        return True, f"left {description} alone: {err}"
    except (OSError, Vm2kvmError) as err:
        return False, f"could not remove {description}: {err}"
    return True, f"removed {description}"


def remove_volume(host: LibvirtHost, pool: str, name: str, path: str) -> None:
    """Delete volume ``name`` through libvirt; a regular file at ``path`` libvirt lost track of, directly.

    Raises ``FileNotFoundError`` when neither libvirt nor the file system has it.
    """
    try:
        host.delete_volume(pool, name)
    except Vm2kvmError:
        # libvirt lost track of it (a pool refresh raced us, the pool is gone or
        # inactive, libvirtd is down): the file is still ours.  A block device node is
        # not: only libvirt (lvremove) can remove a logical volume.
        if not path or not stat.S_ISREG(os.lstat(path).st_mode):
            raise
        os.unlink(path)


def _undefine_ours(host: LibvirtHost, name: str, uuid: str) -> None:
    current = host.domain_uuid(name)
    if current is None:
        raise FileNotFoundError(name)
    if uuid and current.lower() != uuid.lower():
        raise _LeftAlone(f"its UUID is {current}, not {uuid} which vm2kvm defined it with")
    # Snapshot metadata too (--snapshots keep): only the metadata, never a volume.
    host.undefine_domain(name, snapshots=True)


def _rmtree(path: str) -> None:
    if not os.path.lexists(path):
        raise FileNotFoundError(path)
    unmount_below(path)  # a vSphere job's FUSE files, left behind by a killed daemon
    shutil.rmtree(path)


# --- the ledger of one migration ------------------------------------------------------


class Rollback:
    """A ledger of undo actions; thread-safe to record into.

    ``recorder``: where the ledger is also written down as residues
    (``None``: kept in memory only).
    """

    def __init__(self, recorder: ResidueRecorder | None = None) -> None:
        self._undo: list[tuple[str, Callable[[], None], int]] = []  # (description, undo, residue id)
        self._lock = threading.Lock()
        self._recorder = recorder
        self._left = False  # an undo failed: its record must outlive the job

    @property
    def recorder(self) -> ResidueRecorder | None:
        return self._recorder

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._undo)

    @contextmanager
    def creating(self, residue: Residue) -> Iterator[int]:
        """Write ``residue`` down before the body creates it; yields its id (0 without a recorder).

        Blocking.  When the body raises, the create failed: nothing was made
        that is ours to remove (an "already exists" is someone else's), so the
        record is forgotten.  Pass the id to the ledger method afterwards.
        """
        rid = self._record(residue)
        try:
            yield rid
        except BaseException:
            self._forget(rid)
            raise

    def add(
        self,
        description: str,
        undo: Callable[[], None],
        *,
        residue: Residue | None = None,
        rid: int | None = None,
    ) -> None:
        """Record ``undo`` (blocking, may raise) described as ``description`` ("volume x in pool y").

        ``rid``: the id ``creating`` recorded it under; else ``residue`` (if
        any) is written down now.  Without either, it is only undone by this
        ledger, not after a crash (snapshot metadata: undefining the domain
        removes it too).
        """
        if rid is None:
            rid = self._record(residue) if residue is not None else 0
        with self._lock:
            self._undo.append((description, undo, rid))

    def volume(self, host: LibvirtHost, pool: str, name: str, path: str, *, rid: int | None = None) -> None:
        residue = Residue("volume", path=path, pool=pool, name=name, uri=getattr(host, "uri", ""))
        self.add(residue.describe(), lambda: remove_volume(host, pool, name, path), residue=residue, rid=rid)

    def file(self, path: str, *, rid: int | None = None) -> None:
        residue = Residue("file", path=path)
        self.add(residue.describe(), lambda: os.unlink(path), residue=residue, rid=rid)

    def directory(self, path: str, *, rid: int | None = None) -> None:
        # rmdir, not rmtree: only ever remove what is empty once our files are gone.
        residue = Residue("directory", path=path)
        self.add(residue.describe(), lambda: os.rmdir(path), residue=residue, rid=rid)

    def tree(self, path: str, description: str | None = None, *, rid: int | None = None) -> None:
        """A directory we made under a private name, with everything in it."""
        residue = Residue("tree", path=path)
        self.add(description or residue.describe(), lambda: shutil.rmtree(path), residue=residue, rid=rid)

    def domain(self, host: LibvirtHost, name: str, *, uuid: str = "", rid: int | None = None) -> None:
        residue = Residue("domain", name=name, uri=getattr(host, "uri", ""), uuid=uuid)
        self.add(residue.describe(), lambda: host.undefine_domain(name), residue=residue, rid=rid)

    def run(self) -> list[str]:
        """Undo everything, newest first (blocking).  Returns one log line per action."""
        with self._lock:
            actions, self._undo = self._undo[::-1], []
        lines = []
        for description, undo, rid in actions:
            try:
                undo()
            except FileNotFoundError:
                lines.append(f"{description} was already gone")
            except (OSError, Vm2kvmError) as err:
                lines.append(f"could not remove {description}: {err}")
                self._left = True
                continue  # its record stays: it is still there
            else:
                lines.append(f"removed {description}")
            self._forget(rid)
        return lines

    def forget_all(self) -> list[str]:
        """The migration ended (blocking): drop every record; returns a log line if that failed.

        Not when an undo failed (libvirtd away, a file that would not go): then
        the records stay with the finished job, and ``service.recovery`` removes
        what they describe when the next job finds libvirtd reachable, or at
        vm2kvmd's next start.  The other records are stale then, and harmless:
        undoing something already gone is fine.
        """
        if self._recorder is None:
            return []
        if self._left:
            return [
                "what could not be removed stays recorded: vm2kvmd removes it when libvirtd is "
                "reachable again (at the next migration or the next start of vm2kvmd)"
            ]
        try:
            self._recorder.forget_all()
        except Exception as err:  # the store's own error types; the job's outcome stands
            return [f"could not clear the job's records of what it created: {err}"]
        return []

    def _record(self, residue: Residue) -> int:
        return self._recorder.record(residue) if self._recorder is not None else 0

    def _forget(self, rid: int) -> None:
        if self._recorder is not None and rid:
            # A stale record is harmless (undoing something already gone is fine), and
            # forget_all clears it when the job ends: never fail a cleanup over it.
            with contextlib.suppress(Exception):
                self._recorder.forget(rid)
