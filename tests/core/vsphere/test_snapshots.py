"""The API's snapshot tree as the planner's ``SnapshotTree``, remote layers as ``DiskChain``s, and
``plan_keep`` over both (``core.vsphere.snapshots``)."""

from __future__ import annotations

from dataclasses import replace

from tests.core.planning.test_mapping import plan
from tests.core.vsphere.test_hardware import build, disk, flat, vsvm
from vm2kvmd.core.hardware.model import DiskChain
from vm2kvmd.core.planning.snapshots import plan_keep
from vm2kvmd.core.vsphere.config import DiskBacking, VsSnapshot, VsSnapshotDisk, VsSnapshots, VsVm
from vm2kvmd.core.vsphere.disk_chain import RemoteChain, RemoteLayer
from vm2kvmd.core.vsphere.snapshots import (
    TREE_PATH,
    disk_chain,
    remote_chain_of,
    snapshot_states,
    snapshot_tree,
)

BASE = "[LocalDS_0] web/web.vmdk"
D1 = "[LocalDS_0] web/web-000001.vmdk"
D2 = "[LocalDS_0] web/web-000002.vmdk"
SIZE = 16 << 30


def chain(*paths: str) -> DiskBacking:
    """Backings newest first, as the API gives them."""
    backing = None
    for path in reversed(paths):
        backing = flat(path, parent=backing)
    assert backing is not None
    return backing


def snap(id: int, parent: int | None, *layers: str, **changes: object) -> VsSnapshot:
    backing = chain(*layers)
    disks = (VsSnapshotDisk(2000, backing),)
    taken = VsSnapshot(id, f"snap {id}", f"about {id}", 1_700_000_000_000_000, parent, "poweredOff", disks)
    return replace(taken, **changes)  # type: ignore[arg-type]


def remote(path: str, data: str, kind: str, cid: int, parent_cid: int) -> RemoteLayer:
    return RemoteLayer(path, data, kind, SIZE, 0, cid, parent_cid)


LAYERS = {
    BASE: remote(BASE, "[LocalDS_0] web/web-flat.vmdk", "flat", 1, 0xFFFFFFFF),
    D1: remote(D1, "[LocalDS_0] web/web-000001-delta.vmdk", "sparse", 2, 1),
    D2: remote(D2, "[LocalDS_0] web/web-000002-delta.vmdk", "sparse", 3, 2),
}


def two_levels() -> tuple[VsVm, VsSnapshots]:
    config = vsvm(disks=(disk(chain(D2, D1, BASE)),))
    return config, VsSnapshots((snap(1, None, BASE), snap(2, 1, D1, BASE)), 2)


def test_the_api_tree_becomes_the_vmsd_model() -> None:
    config, snapshots = two_levels()
    vm = build(disks=config.disks)
    tree = snapshot_tree(config, vm, snapshots)
    assert tree.path == TREE_PATH and tree.current_uid == 2
    assert [(s.uid, s.parent_uid, s.name, s.description) for s in tree.snapshots] == [
        (1, None, "snap 1", "about 1"),
        (2, 1, "snap 2", "about 2"),
    ]
    assert [s.disks for s in tree.snapshots] == [(("scsi0:0", BASE),), (("scsi0:0", D1),)]
    assert not any(s.has_memory for s in tree.snapshots)
    assert snapshot_states(snapshots) == {BASE: (BASE,), D1: (D1, BASE)}


def test_independent_and_removed_disks_are_left_out_with_a_note_and_memory_is_said() -> None:
    config, snapshots = two_levels()
    vm = build(disks=config.disks)
    independent = VsSnapshotDisk(2000, flat(BASE, disk_mode="independent_persistent"))
    removed = VsSnapshotDisk(2001, flat("[LocalDS_0] web/old.vmdk"))
    running = replace(snapshots.snapshots[0], disks=(independent, removed), power_state="poweredOn")
    tree = snapshot_tree(config, vm, VsSnapshots((running,), 1))
    (only,) = tree.snapshots
    assert only.disks == () and only.has_memory
    assert [n.message for n in tree.notes] == [
        "snapshot 'snap 1': disk [LocalDS_0] web/old.vmdk is no longer part of the VM; "
        "its state at that snapshot is not migrated"
    ]
    assert snapshot_states(VsSnapshots((running,), 1)) == {
        "[LocalDS_0] web/old.vmdk": ("[LocalDS_0] web/old.vmdk",)
    }


def test_disk_chains_name_datastore_paths_and_map_back() -> None:
    remote_chain = RemoteChain((LAYERS[D2], LAYERS[D1], LAYERS[BASE]))
    local = disk_chain(remote_chain)
    assert [layer.path for layer in local.layers] == [D2, D1, BASE]
    assert [layer.create_type for layer in local.layers] == ["vmfsSparse", "vmfsSparse", "vmfs"]
    assert local.top.extents[0].path == "[LocalDS_0] web/web-000002-delta.vmdk"
    assert local.virtual_size == SIZE
    below = DiskChain(local.layers[1:])
    assert remote_chain_of(below, LAYERS) == RemoteChain((LAYERS[D1], LAYERS[BASE]))


def test_plan_keep_over_the_api_tree() -> None:
    config, snapshots = two_levels()
    vm = build(disks=config.disks)
    tree = snapshot_tree(config, vm, snapshots)
    domain = plan(vm)
    current = disk_chain(RemoteChain((LAYERS[D2], LAYERS[D1], LAYERS[BASE])))
    domain = replace(
        domain, disks=tuple(replace(d, source=replace(d.source, chain=current)) for d in domain.disks)
    )
    states = {BASE: RemoteChain((LAYERS[BASE],)), D1: RemoteChain((LAYERS[D1], LAYERS[BASE]))}
    keep = plan_keep(vm, domain, tree, lambda name, key: disk_chain(states[name]))
    (top,) = domain.disks
    names = [v.volume_name for v in keep.volumes]
    stem = top.volume_name.removesuffix(".qcow2")
    assert names == [f"{stem}-web.qcow2", f"{stem}-web-000001.qcow2", top.volume_name]
    first, second = keep.snapshots
    assert (first.name, first.parent_name, second.parent_name, second.current) == (
        "snap 1", None, "snap 1", True,
    )  # fmt: skip
    assert first.disks[0].state.endswith(f"{stem}-web.qcow2")
    assert first.disks[0].overlay.endswith(f"{stem}-web-000001.qcow2")
    assert second.disks[0].overlay == top.target_path
