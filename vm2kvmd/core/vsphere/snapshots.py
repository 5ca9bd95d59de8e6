"""A vSphere VM's snapshot tree as the ``SnapshotTree`` of a ``.vmsd``, and its layers as ``DiskChain``s.

Pure.  ``--snapshots keep`` plans vSphere VMs with the same planner as VMX files
(``core.planning.snapshots``): the tree comes from the API (``snapshot.rootSnapshotList``, names,
descriptions, times, the current one) and each snapshot's disk states from its ``config`` (whose
disk backings are "the head of the disk chain that represents the disk at this given snapshot");
the layers are the descriptors read from the datastore (``core.vsphere.disk_chain``), shown to the
planner as ``DiskChain``s whose paths are datastore paths.
"""

from __future__ import annotations

from collections.abc import Mapping

from vm2kvmd.core.hardware.model import DiskChain, DiskLayer, Extent, Note, SourceVM
from vm2kvmd.core.vmware.vmsd import Snapshot, SnapshotTree
from vm2kvmd.core.vsphere.config import VsSnapshots, VsVm
from vm2kvmd.core.vsphere.disk_chain import RemoteChain, RemoteLayer

__all__ = ["TREE_PATH", "disk_chain", "remote_chain_of", "snapshot_states", "snapshot_tree"]

# What messages name as the snapshot tree's "file".
TREE_PATH = "snapshot.rootSnapshotList"
_INDEPENDENT = ("independent_persistent", "independent_nonpersistent")


def _nodes(config: VsVm, vm: SourceVM) -> dict[int, str]:
    """Device key -> disk node ("scsi0:0") of the VM's current disks, matched by their file."""
    by_file = {d.file_name: d.address.key for d in vm.disks}
    return {d.key: by_file[d.backing.file_name] for d in config.disks if d.backing.file_name in by_file}


def snapshot_tree(config: VsVm, vm: SourceVM, snapshots: VsSnapshots) -> SnapshotTree:
    """The API's snapshot tree in the ``.vmsd``'s model (uid: the snapshot's id).

    A disk is left out of a snapshot when it is independent (VMware does not snapshot it) or no
    longer part of the VM (a note, as for a ``.vmsd``, comes from the planner only for disks it
    sees: here it is said directly).
    """
    nodes = _nodes(config, vm)
    converted = []
    notes: list[Note] = []
    for snap in snapshots.snapshots:
        disks = []
        for disk in snap.disks:
            if disk.backing.disk_mode in _INDEPENDENT:
                continue
            node = nodes.get(disk.key)
            if node is None:
                message = (
                    f"snapshot {snap.name!r}: disk {disk.backing.file_name} is no longer part of the VM; "
                    "its state at that snapshot is not migrated"
                )
                notes.append(Note(message, f"snapshot {snap.id}"))
                continue
            disks.append((node, disk.backing.file_name))
        converted.append(
            Snapshot(
                uid=snap.id,
                name=snap.name,
                description=snap.description,
                created_us=snap.created_us,
                parent_uid=snap.parent_id,
                disks=tuple(disks),
                key=f"snapshot {snap.id}",
                state_file="its .vmsn and .vmem on the datastore",
                has_memory=snap.power_state == "poweredOn",
            )
        )
    return SnapshotTree(TREE_PATH, tuple(converted), snapshots.current_id, tuple(notes))


def snapshot_states(snapshots: VsSnapshots) -> dict[str, tuple[str, ...]]:
    """Each snapshot disk state's head -> its layers (datastore paths, newest first)."""
    return {
        disk.backing.file_name: tuple(layer.file_name for layer in disk.backing.layers)
        for snap in snapshots.snapshots
        for disk in snap.disks
        if disk.backing.disk_mode not in _INDEPENDENT
    }


def _layer(layer: RemoteLayer) -> DiskLayer:
    if layer.kind == "flat":
        create_type, kind = "vmfs", "VMFS"
    elif layer.embedded:
        create_type, kind = "monolithicSparse", "SPARSE"
    else:
        create_type, kind = "vmfsSparse", "VMFSSPARSE"
    extent = Extent("RW", layer.size // 512, kind, layer.data, layer.data, layer.offset // 512)
    return DiskLayer(
        path=layer.descriptor,
        create_type=create_type,
        cid=layer.cid,
        parent_cid=layer.parent_cid,
        parent_hint=None,
        extents=(extent,),
        embedded=layer.embedded,
        virtual_size=layer.size,
    )


def disk_chain(chain: RemoteChain) -> DiskChain:
    """A remote chain as the planner sees chains: layers named by their descriptors' datastore paths."""
    return DiskChain(tuple(_layer(layer) for layer in chain.layers))


def remote_chain_of(chain: DiskChain, layers: Mapping[str, RemoteLayer]) -> RemoteChain:
    """The remote layers behind a ``disk_chain`` (or a part of one, from some layer down)."""
    return RemoteChain(tuple(layers[layer.path] for layer in chain.layers))
