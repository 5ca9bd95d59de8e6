"""Keeping VMware snapshots: which qcow2 volume each VMDK layer becomes, and the libvirt snapshots.

Pure: the injected ``ChainLoader`` reads the VMDK descriptors a snapshot
names, the injected ``TreeReader`` the ``.vmsd`` (``snapshot_notes``).

With ``--snapshots keep`` every VMDK layer of every disk becomes one qcow2
volume whose backing file is its parent layer's volume, so the chain keeps
its shape: base, then each delta.  The layers are those of the disk's
current chain (what the VMX names) and of every chain a snapshot names; a
branch (the VM was reverted to an older snapshot and went on from there)
keeps its own deltas as more volumes on the same parents.

Every VMware snapshot becomes a libvirt disk-only external snapshot, as
libvirt itself would have recorded it: the snapshot's ``<domain>`` points at
the volume holding the disk's state at that snapshot, and its ``<disks>``
name the *overlay*, the volume written after the snapshot was taken.  The
overlay is the next layer towards the current state, or towards the
snapshot's first child; a snapshot with neither (a leaf of a branch the VM
left, whose later delta VMware discarded when it reverted) gets an empty
overlay volume, so no snapshot names a file that does not exist.

The snapshot tree must agree with the disks: a snapshot's state is a strict
ancestor of each child snapshot's state and of the current state, and no
snapshot's state is the file the VM writes into.  Anything else is
DISK_CHAIN_BROKEN naming the snapshot and files: a guess would attach a
disk state to the wrong snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from vm2kvmd.core.hardware.model import DiskChain, DiskLayer, Note, SourceVM
from vm2kvmd.core.planning.plan import DomainPlan, PlannedDisk
from vm2kvmd.core.planning.storage import file_safe
from vm2kvmd.core.vmware.vmsd import Snapshot, SnapshotTree, vmsd_path_for
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = [
    "ChainLoader",
    "KeepPlan",
    "LayerVolume",
    "SnapshotDisk",
    "SnapshotPoint",
    "TreeReader",
    "libvirt_names",
    "plan_keep",
    "snapshot_notes",
    "tree_notes",
]

# (file name as written in the .vmsd, the .vmsd key naming it) -> the chain it heads.
ChainLoader = Callable[[str, str], DiskChain]
# The VMX's path -> the snapshot tree next to it; None when the VM has no .vmsd.
TreeReader = Callable[[str], SnapshotTree | None]

_NAME_MAX = 250  # a volume name is a file name (NAME_MAX 255)
_FLATTEN_HINT = "or migrate the current state only with --snapshots flatten"


@dataclass(frozen=True)
class LayerVolume:
    """One qcow2 volume of a kept chain."""

    disk: PlannedDisk
    layer: DiskLayer | None  # the VMware layer; None: an empty overlay (see the module docstring)
    source: DiskChain | None  # the layer with its parents, as qemu-img reads it; None for an overlay
    volume_name: str
    target_path: str
    backing: str | None  # the parent layer's volume path; None for a base

    @property
    def capacity(self) -> int:
        return self.disk.capacity


@dataclass(frozen=True)
class SnapshotDisk:
    disk: PlannedDisk
    state: str  # the volume holding the disk as it was at the snapshot
    overlay: str  # the volume written after the snapshot


@dataclass(frozen=True)
class SnapshotPoint:
    """A VMware snapshot as a libvirt snapshot."""

    snapshot: Snapshot
    name: str  # the libvirt snapshot name (unique; VMware's need not be)
    parent_name: str | None
    disks: tuple[SnapshotDisk, ...]  # the disks it covers; the domain's others get snapshot='no'
    current: bool


@dataclass(frozen=True)
class KeepPlan:
    volumes: tuple[LayerVolume, ...]  # parents before children
    snapshots: tuple[SnapshotPoint, ...]  # parents before children
    notes: tuple[Note, ...]


# --- names -----------------------------------------------------------------------


def libvirt_names(tree: SnapshotTree) -> tuple[dict[int, str], list[Note]]:
    """A unique libvirt snapshot name per uid.

    VMware allows empty and repeated display names; libvirt needs a unique
    name per domain and stores it as a file name, so ``/`` cannot be part of it.
    """
    names: dict[int, str] = {}
    notes: list[Note] = []
    taken: set[str] = set()
    for snap in tree.snapshots:
        wanted = " ".join(snap.name.replace("/", "-").split()) or f"snapshot {snap.uid}"
        name = wanted
        if name in taken or name.startswith("."):
            name = f"{wanted} (uid {snap.uid})"
        if name != snap.name:
            notes.append(
                Note(f"snapshot {snap.name!r} is named {name!r} in libvirt", f"{snap.key}.displayName")
            )
        taken.add(name)
        names[snap.uid] = name
    return names, notes


def _volume_stem(disk: PlannedDisk) -> str:
    return os.path.splitext(disk.volume_name)[0]


class _Namer:
    """Volume names for the layers of one disk: ``web-disk1-web-000001.qcow2``."""

    def __init__(self, disk: PlannedDisk, taken: set[str]) -> None:
        self.stem = _volume_stem(disk)
        self.ext = os.path.splitext(disk.volume_name)[1]
        self.taken = taken

    def name(self, what: str) -> str:
        room = _NAME_MAX - len(self.stem) - len(self.ext) - 8
        part = file_safe(what).encode()[: max(room, 8)].decode(errors="ignore")
        name = f"{self.stem}-{part}{self.ext}"
        number = 2
        while name in self.taken:
            name = f"{self.stem}-{part}-{number}{self.ext}"
            number += 1
        self.taken.add(name)
        return name


# --- the plan --------------------------------------------------------------------


@dataclass
class _Layer:
    layer: DiskLayer
    source: DiskChain
    parent: str | None  # path of the parent layer


def _add_chain(layers: dict[str, _Layer], chain: DiskChain) -> None:
    for i, layer in enumerate(chain.layers):
        if layer.path in layers:
            break  # its parents are there too
        parent = chain.layers[i + 1].path if i + 1 < len(chain.layers) else None
        layers[layer.path] = _Layer(layer, DiskChain(chain.layers[i:]), parent)


def _lineage(layers: dict[str, _Layer], path: str) -> list[str]:
    """``path`` and its parents, nearest first."""
    out = []
    next_path: str | None = path
    while next_path is not None:
        out.append(next_path)
        next_path = layers[next_path].parent
    return out


def _broken(tree: SnapshotTree, key: str, value: str, message: str, hint: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.DISK_CHAIN_BROKEN,
        message,
        file=tree.path,
        key=key,
        value=value,
        hint=f"{hint}; {_FLATTEN_HINT}",
    )


@dataclass(frozen=True)
class _DiskStates:
    """Where each snapshot left one disk."""

    disk: PlannedDisk
    top: str  # the layer the VM writes into
    layers: dict[str, _Layer]
    states: dict[int, str]  # uid -> state layer path


def _disk_states(disk: PlannedDisk, tree: SnapshotTree, load: ChainLoader, notes: list[Note]) -> _DiskStates:
    chain = disk.source.chain
    assert chain is not None, "broken disks are refused before planning"
    key = disk.source.address.key
    layers: dict[str, _Layer] = {}
    _add_chain(layers, chain)
    states: dict[int, str] = {}
    keys: dict[int, str] = {}  # uid -> the .vmsd key naming the state
    current_lineage = _lineage(layers, chain.top.path)
    for snap in tree.snapshots:
        for index, (node, file_name) in enumerate(snap.disks):
            if node != key:
                continue
            vmsd_key = f"{snap.key}.disk{index}.fileName"
            state = load(file_name, vmsd_key)
            _add_chain(layers, state)
            path = state.top.path
            if chain.top.path in _lineage(layers, path):
                what = "is" if path == chain.top.path else f"has as a parent {chain.top.path},"
                raise _broken(
                    tree, vmsd_key, file_name,
                    f"snapshot {snap.name!r} names {path} as the state of disk {key}, which {what} the file "
                    "the VM writes into: the snapshot would not be a fixed state",
                    "the .vmsd does not belong to these disks",
                )  # fmt: skip
            states[snap.uid] = path
            keys[snap.uid] = vmsd_key
    for snap in tree.snapshots:
        if snap.uid not in states or snap.parent_uid not in states:
            continue
        parent = tree.get(snap.parent_uid)
        lineage = _lineage(layers, states[snap.uid])
        if states[parent.uid] not in lineage[1:]:
            raise _broken(
                tree, keys[snap.uid], states[snap.uid],
                f"disk {key}: snapshot {snap.name!r} ({states[snap.uid]}) does not descend from the state "
                f"of its parent snapshot {parent.name!r} ({states[parent.uid]})",
                "the snapshot files were renamed, replaced or copied from different points in time",
            )  # fmt: skip
    current = tree.current
    if current is not None and current.uid in states and states[current.uid] not in current_lineage[1:]:
        raise _broken(
            tree, keys[current.uid], states[current.uid],
            f"disk {key}: the VM runs on {chain.top.path}, which does not descend from "
            f"{states[current.uid]}, the state of its current snapshot {current.name!r}",
            "the VMX and the .vmsd are from different points in time",
        )  # fmt: skip
    return _DiskStates(disk, chain.top.path, layers, states)


def _order(layers: dict[str, _Layer]) -> list[str]:
    """Layer paths, parents before children, siblings in the order they were found."""
    ordered: list[str] = []
    placed: set[str] = set()
    remaining = list(layers)
    while remaining:
        ready = [p for p in remaining if layers[p].parent is None or layers[p].parent in placed]
        ordered += ready
        placed.update(ready)
        remaining = [p for p in remaining if p not in placed]
    return ordered


def _on_current_branch(tree: SnapshotTree) -> set[int]:
    current = tree.current
    return set() if current is None else {s.uid for s in tree.ancestors(current.uid)}


def plan_keep(vm: SourceVM, plan: DomainPlan, tree: SnapshotTree | None, load: ChainLoader) -> KeepPlan:
    """Volumes and libvirt snapshots that keep ``vm``'s disk chains and snapshot tree.

    ``plan`` is the domain as mapped (its disks' volume names and paths are
    the current state's volumes); ``tree`` the VM's ``.vmsd`` (None: none);
    ``load`` reads the chain a snapshot names.  Raises ``Vm2kvmError``: what
    ``load`` raises and DISK_CHAIN_BROKEN when the tree and the disks disagree.
    """
    tree = tree or SnapshotTree("", (), None)
    notes: list[Note] = []
    names, name_notes = libvirt_names(tree)
    notes += name_notes
    keys = {d.source.address.key for d in plan.disks}
    for snap in tree.snapshots:
        for node, file_name in snap.disks:
            if node not in keys:
                notes.append(
                    Note(f"snapshot {snap.name!r}: disk {node} ({file_name}) is no longer part of the VM; "
                         "its state at that snapshot is not migrated", snap.key)
                )  # fmt: skip
    taken = {d.volume_name for d in plan.disks}
    volumes: list[LayerVolume] = []
    overlays: dict[tuple[int, str], str] = {}  # (uid, disk key) -> overlay path
    states: dict[tuple[int, str], str] = {}  # (uid, disk key) -> state volume path
    current_branch = _on_current_branch(tree)
    for disk in plan.disks:
        found = _disk_states(disk, tree, load, notes)
        namer = _Namer(disk, taken)
        volume_of: dict[str, str] = {}
        for path in _order(found.layers):
            item = found.layers[path]
            is_top = path == found.top
            name = disk.volume_name if is_top else namer.name(os.path.splitext(os.path.basename(path))[0])
            target = disk.target_path if is_top else os.path.join(os.path.dirname(disk.target_path), name)
            volume_of[path] = target
            backing = volume_of[item.parent] if item.parent is not None else None
            volumes.append(LayerVolume(disk, item.layer, item.source, name, target, backing))
        key = disk.source.address.key
        for snap in tree.snapshots:
            state = found.states.get(snap.uid)
            if state is None:
                continue
            states[snap.uid, key] = volume_of[state]
            towards = _towards(tree, snap, found, current_branch)
            if towards is not None:
                overlays[snap.uid, key] = volume_of[towards]
                continue
            name = namer.name(f"after-snapshot{snap.uid}")
            target = os.path.join(os.path.dirname(disk.target_path), name)
            volumes.append(LayerVolume(disk, None, None, name, target, volume_of[state]))
            overlays[snap.uid, key] = target
    points = []
    for snap in tree.snapshots:
        disks = tuple(
            SnapshotDisk(d, states[snap.uid, d.source.address.key], overlays[snap.uid, d.source.address.key])
            for d in plan.disks
            if (snap.uid, d.source.address.key) in states
        )
        parent = names[snap.parent_uid] if snap.parent_uid is not None else None
        points.append(SnapshotPoint(snap, names[snap.uid], parent, disks, snap.uid == tree.current_uid))
    return KeepPlan(tuple(volumes), tuple(points), tuple(notes))


def _towards(tree: SnapshotTree, snap: Snapshot, found: _DiskStates, current_branch: set[int]) -> str | None:
    """The layer the VM wrote into after ``snap``: the next one towards the current state or a child."""
    state = found.states[snap.uid]
    candidates = [found.top] if snap.uid in current_branch else []
    candidates += [found.states[c.uid] for c in tree.children(snap.uid) if c.uid in found.states]
    for descendant in candidates:
        lineage = _lineage(found.layers, descendant)
        if state in lineage[1:]:
            return lineage[lineage.index(state) - 1]
    return None


# --- notes -----------------------------------------------------------------------


def _count(n: int) -> str:
    return f"{n} VMware snapshot" + ("" if n == 1 else "s")


def tree_notes(tree: SnapshotTree, mode: str) -> tuple[Note, ...]:
    """What migrating with ``mode`` (flatten or keep) does to the snapshots of ``tree``."""
    if not tree.snapshots:
        return ()
    name = os.path.basename(tree.path)
    if mode != "keep":
        return (
            Note(
                f"{_count(len(tree))} ({name}) flattened: the disks are copied as they are now; "
                "--snapshots keep keeps them as libvirt snapshots"
            ),
        )
    notes = [
        *tree.notes,
        Note(
            f"{_count(len(tree))} ({name}) kept as libvirt disk-only snapshots of the shut-off VM; "
            "libvirt 9.0 cannot revert to them by itself (docs/snapshots.md)"
        ),
    ]
    for snap in tree.snapshots:
        if snap.has_memory:
            notes.append(
                Note(
                    f"snapshot {snap.name!r} saved the running VM's memory ({snap.state_file}); "
                    "only its disks are migrated: it reverts to a shut-off VM",
                    snap.key,
                )
            )
    return tuple(notes)


def snapshot_notes(vm: SourceVM, mode: str, *, strict: bool, read_tree: TreeReader) -> tuple[Note, ...]:
    """The notes about the ``.vmsd`` next to ``vm``'s VMX (``read_tree`` reads it).

    A ``.vmsd`` that cannot be read only matters when keeping snapshots: it
    raises with ``strict`` and ``mode`` keep, and is a note otherwise.
    """
    try:
        tree = read_tree(vm.source_path)
    except Vm2kvmError as err:
        if strict and mode == "keep":
            raise
        return (Note(f"snapshot database not read: {err}"),)
    if tree is None:
        return _no_database(vm, mode)
    return tree_notes(tree, mode)


def _no_database(vm: SourceVM, mode: str) -> tuple[Note, ...]:
    deltas = sum(1 for d in vm.disks if d.chain is not None and len(d.chain.layers) > 1)
    if not deltas or mode != "keep":
        return ()
    name = os.path.basename(vmsd_path_for(vm.source_path))
    return (Note(f"no {name}: the disks' VMDK layers are kept as qcow2 chains, without libvirt snapshots"),)
