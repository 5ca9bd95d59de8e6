"""VMware's snapshot database (``.vmsd``) to a ``SnapshotTree``.

The ``.vmsd`` sits next to the ``.vmx`` and has the same syntax (``key =
"value"``, ``.encoding``, ``|XX`` escapes), so ``parse_vmx`` reads it.  Written
by Workstation, Fusion, Player and ESXi alike::

    snapshot.lastUID = "3"            # highest uid handed out (ignored)
    snapshot.current = "3"            # the snapshot the running state descends from
    snapshot.numSnapshots = "2"
    snapshot0.uid = "1"
    snapshot0.filename = "web-Snapshot1.vmsn"   # saved config (and memory) state
    snapshot0.displayName = "before update"
    snapshot0.description = "line 1|0Aline 2"
    snapshot0.createTimeHigh = "388745"          # microseconds since 1970:
    snapshot0.createTimeLow = "1991180826"       #   high * 2**32 + (low mod 2**32)
    snapshot0.numDisks = "1"
    snapshot0.disk0.fileName = "web.vmdk"        # the disk's state at this snapshot
    snapshot0.disk0.node = "scsi0:0"
    snapshot1.uid = "3"
    snapshot1.parent = "1"
    ...
    snapshot.mru0.uid = "3"           # most-recently-used list of the UI (ignored)

A snapshot's ``diskM.fileName`` is the VMDK that became read-only when the
snapshot was taken; the VM then wrote into a new delta on top of it.  So the
state of a snapshot is that file with its parents, and the VMX names a delta
below the current snapshot's file.

``parse_vmsd`` is pure.  ``vm2kvmd.sources.vmware.vmsd.load_snapshot_tree``
finds the file next to a VMX and adds (``with_memory``) what only the file
system knows: whether a snapshot saved the VM's
memory (a ``.vmem`` next to its ``.vmsn``, or a ``.vmsn`` large enough to hold
memory itself, as older products wrote it).

Entries past ``snapshot.numSnapshots`` are leftovers VMware itself ignores
(noted).  A damaged tree (a uid twice, a parent or current uid that names no
snapshot, a parent loop, a disk node that is not a disk) is an error naming the
key: a tree we guessed at would attach disk states to the wrong snapshots.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.vmware.vmx import VmxFile, parse_vmx
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = [
    "MAX_VMSD_BYTES",
    "MEMORY_VMSN_BYTES",
    "Snapshot",
    "SnapshotTree",
    "memory_saved",
    "parse_vmsd",
    "vmsd_path_for",
    "with_memory",
]

MAX_VMSD_BYTES = 4 * 1024 * 1024
# A .vmsn of a powered-off snapshot holds the VMX and NVRAM: tens of KiB.  One
# that also holds the device checkpoint or the memory (products before the
# separate .vmem) is megabytes.
MEMORY_VMSN_BYTES = 1024 * 1024
# VMware allows 496 snapshots per VM (ESXi: 32 recommended); more is damage.
MAX_SNAPSHOTS = 1024
MAX_DISKS_PER_SNAPSHOT = 256

_NODE_RE = re.compile(r"^(scsi|sata|ide|nvme)(\d{1,3}):(\d{1,3})$")
_HINT = (
    "the snapshot database is damaged; fix it, delete the snapshots in VMware, or migrate the current state"
)


@dataclass(frozen=True)
class Snapshot:
    """One VMware snapshot: its place in the tree and each disk's state file."""

    uid: int
    name: str  # displayName, escapes decoded
    description: str
    created_us: int | None  # microseconds since the epoch (UTC); None when the .vmsd has no time
    parent_uid: int | None
    disks: tuple[tuple[str, str], ...]  # (node key "scsi0:0", VMDK file name as written)
    key: str = ""  # "snapshot0": where it is in the .vmsd, for messages
    state_file: str | None = None  # snapshotN.filename (the .vmsn)
    has_memory: bool = False  # the VM was running: its memory (.vmem) cannot be migrated

    def disk_file(self, node: str) -> str | None:
        for key, file_name in self.disks:
            if key == node:
                return file_name
        return None


@dataclass(frozen=True)
class SnapshotTree:
    """Every snapshot of a VM, parents before children, and which one is current."""

    path: str  # the .vmsd, for messages
    snapshots: tuple[Snapshot, ...]
    current_uid: int | None
    notes: tuple[Note, ...] = ()

    def __len__(self) -> int:
        return len(self.snapshots)

    def get(self, uid: int) -> Snapshot:
        for snap in self.snapshots:
            if snap.uid == uid:
                return snap
        raise KeyError(uid)

    @property
    def current(self) -> Snapshot | None:
        return None if self.current_uid is None else self.get(self.current_uid)

    def children(self, uid: int | None) -> tuple[Snapshot, ...]:
        """The snapshots whose parent is ``uid`` (None: the roots), oldest first."""
        return tuple(s for s in self.snapshots if s.parent_uid == uid)

    def ancestors(self, uid: int) -> Iterator[Snapshot]:
        """``uid``'s snapshot, then its parent, up to its root."""
        next_uid: int | None = uid
        while next_uid is not None:
            snap = self.get(next_uid)
            yield snap
            next_uid = snap.parent_uid


# --- parsing ---------------------------------------------------------------------


def _invalid(vmsd: VmxFile, key: str, value: str, why: str) -> Vm2kvmError:
    return vmsd.invalid(key, value, why, hint=_HINT)


def broken_vmsd(path: str, key: str | None, value: str | None, message: str) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.INVALID_SOURCE, message, file=path, key=key, value=value, hint=_HINT)


def _created_us(vmsd: VmxFile, key: str) -> int | None:
    high = vmsd.get_int(f"{key}.createTimeHigh", None, minimum=0, maximum=2**31 - 1)
    # VMware writes the low half as a signed 32-bit number.
    low = vmsd.get_int(f"{key}.createTimeLow", None, minimum=-(2**31), maximum=2**32 - 1)
    if high is None or low is None:
        return None
    return (high << 32) + (low % 2**32)


def _disks(vmsd: VmxFile, key: str, notes: list[Note]) -> tuple[tuple[str, str], ...]:
    found = vmsd.indices(f"{key}.disk")
    count = vmsd.get_int(f"{key}.numDisks", None, minimum=0, maximum=MAX_DISKS_PER_SNAPSHOT)
    if count is None:
        count = len(found)
    elif any(index >= count for index in found):
        notes.append(Note(f"disk entries past numDisks = {count} ignored", vmsd.key_name(f"{key}.numDisks")))
    disks: list[tuple[str, str]] = []
    for index in range(count):
        prefix = f"{key}.disk{index}"
        file_name = (vmsd.get_str(f"{prefix}.fileName") or "").strip()
        raw_node = vmsd.get_str(f"{prefix}.node") or ""
        if not file_name or not raw_node.strip():
            missing = f"{prefix}.fileName" if not file_name else f"{prefix}.node"
            raise broken_vmsd(vmsd.path, missing, None, f"{missing} is missing (numDisks = {count})")
        node = raw_node.strip().lower()
        if not _NODE_RE.match(node):
            raise _invalid(vmsd, f"{prefix}.node", raw_node, "is not a disk slot like scsi0:0")
        if any(node == other for other, _ in disks):
            raise _invalid(vmsd, f"{prefix}.node", raw_node, "is listed twice for this snapshot")
        disks.append((node, file_name))
    return tuple(disks)


def _snapshot(vmsd: VmxFile, index: int, notes: list[Note]) -> Snapshot:
    key = f"snapshot{index}"
    uid = vmsd.get_int(f"{key}.uid", None, minimum=1, maximum=2**31 - 1)
    if uid is None:
        raise broken_vmsd(vmsd.path, f"{key}.uid", None, f"{key}.uid is missing")
    parent_uid = vmsd.get_int(f"{key}.parent", None, minimum=1, maximum=2**31 - 1)
    state_file = (vmsd.get_str(f"{key}.filename") or "").strip() or None
    return Snapshot(
        uid=uid,
        name=(vmsd.get_str(f"{key}.displayName") or "").strip(),
        description=vmsd.get_str(f"{key}.description") or "",
        created_us=_created_us(vmsd, key),
        parent_uid=parent_uid,
        disks=_disks(vmsd, key, notes),
        key=key,
        state_file=state_file,
    )


def _parents_first(snapshots: list[Snapshot], vmsd: VmxFile) -> tuple[Snapshot, ...]:
    """Check the tree (no unknown parent, no loop) and order it parents first, stable otherwise."""
    by_uid = {s.uid: s for s in snapshots}
    for snap in snapshots:
        if snap.parent_uid is not None and snap.parent_uid not in by_uid:
            key = f"{snap.key}.parent"
            raise broken_vmsd(
                vmsd.path, vmsd.key_name(key), str(snap.parent_uid),
                f"snapshot {snap.name!r} names parent uid {snap.parent_uid}, which is no snapshot",
            )  # fmt: skip
    ordered: list[Snapshot] = []
    placed: set[int] = set()
    remaining = list(snapshots)
    while remaining:
        ready = [s for s in remaining if s.parent_uid is None or s.parent_uid in placed]
        if not ready:
            snap = remaining[0]
            raise broken_vmsd(
                vmsd.path, vmsd.key_name(f"{snap.key}.parent"), str(snap.parent_uid),
                f"snapshot {snap.name!r} is its own ancestor (the parent uids loop)",
            )  # fmt: skip
        ordered += ready
        placed.update(s.uid for s in ready)
        remaining = [s for s in remaining if s.uid not in placed]
    return tuple(ordered)


def parse_vmsd(data: bytes, path: str) -> SnapshotTree:
    """Parse the bytes of a ``.vmsd``; ``path`` only names the file in messages.

    An empty file (ESXi leaves one after the last snapshot is deleted) is an
    empty tree.  Raises ``Vm2kvmError``: INVALID_SOURCE for a file that is not
    a snapshot database or a damaged tree, INVALID_VALUE for a bad value.
    """
    if not data.strip(b"\xef\xbb\xbf \t\r\n"):
        return SnapshotTree(path, (), None)
    try:
        vmsd = parse_vmx(data, path)
    except Vm2kvmError as err:
        # parse_vmx speaks of VMX files; say what this file is.
        raise Vm2kvmError(
            err.code,
            f"snapshot database (.vmsd, read like a VMX file): {err.message}",
            file=path,
            key=err.key,
            value=err.value,
            hint=_HINT,
        ) from None
    notes = list(vmsd.notes)
    found = vmsd.indices("snapshot")
    declared = vmsd.get_int("snapshot.numSnapshots", None, minimum=0, maximum=MAX_SNAPSHOTS)
    if declared is None:
        if found:
            notes.append(
                Note("snapshot.numSnapshots missing; every snapshotN entry read", "snapshot.numSnapshots")
            )
        count = max(found, default=-1) + 1
    else:
        count = declared
        if any(index >= count for index in found):
            notes.append(
                Note(
                    f"entries past snapshot.numSnapshots = {count} are leftovers VMware ignores; ignored",
                    vmsd.key_name("snapshot.numSnapshots"),
                )
            )
    if count > MAX_SNAPSHOTS:
        raise broken_vmsd(
            path, "snapshot.numSnapshots", str(count), f"{count} snapshots are more than any VM has"
        )
    snapshots: list[Snapshot] = []
    for index in range(count):
        if index not in found:
            raise broken_vmsd(
                path, f"snapshot{index}.uid", None,
                f"snapshot{index} is missing although snapshot.numSnapshots is {count}",
            )  # fmt: skip
        snap = _snapshot(vmsd, index, notes)
        if any(other.uid == snap.uid for other in snapshots):
            raise _invalid(vmsd, f"{snap.key}.uid", str(snap.uid), "is the uid of another snapshot too")
        snapshots.append(snap)
    current_uid = vmsd.get_int("snapshot.current", None, minimum=0, maximum=2**31 - 1) if snapshots else None
    if current_uid == 0:
        current_uid = None
    if current_uid is not None and all(s.uid != current_uid for s in snapshots):
        raise broken_vmsd(
            path, vmsd.key_name("snapshot.current"), str(current_uid),
            f"snapshot.current names uid {current_uid}, which is no snapshot",
        )  # fmt: skip
    if snapshots and current_uid is None:
        notes.append(
            Note("snapshot.current missing: the VM runs on none of its snapshots", "snapshot.current")
        )
    return SnapshotTree(path, _parents_first(snapshots, vmsd), current_uid, tuple(notes))


# --- files ---------------------------------------------------------------------------


def vmsd_path_for(vmx_path: str) -> str:
    """Where VMware keeps the snapshot database of the VM at ``vmx_path``: same name, ``.vmsd``."""
    return os.path.splitext(vmx_path)[0] + ".vmsd"


def memory_saved(directory: str, state_file: str | None, size_of: Callable[[str], int | None]) -> bool:
    if not state_file:
        return False
    # Only names next to the VMX are looked at: the .vmsd is data, not a list of paths to stat.
    vmsn = os.path.join(directory, os.path.basename(state_file.replace("\\", "/")))
    if size_of(os.path.splitext(vmsn)[0] + ".vmem") is not None:
        return True
    size = size_of(vmsn)
    return size is not None and size >= MEMORY_VMSN_BYTES


def with_memory(tree: SnapshotTree, size_of: Callable[[str], int | None]) -> SnapshotTree:
    """``tree`` with ``has_memory`` set; ``size_of`` is the size of a regular file, None if there is none."""
    directory = os.path.dirname(tree.path)
    snapshots = tuple(
        dataclasses.replace(s, has_memory=memory_saved(directory, s.state_file, size_of))
        for s in tree.snapshots
    )
    return dataclasses.replace(tree, snapshots=snapshots)
