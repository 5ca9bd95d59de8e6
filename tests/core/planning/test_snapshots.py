"""Keeping snapshots, pure: volumes per layer, overlays, libvirt names, snapshot XML and notes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from lxml import etree

from vm2kvmd.core.domainxml import render_domain_xml
from vm2kvmd.core.domainxml.snapshots import render_snapshot_xml
from vm2kvmd.core.hardware.model import (
    Bus,
    Cpu,
    DeviceAddress,
    DiskChain,
    DiskLayer,
    Firmware,
    Memory,
    SourceDisk,
    SourceVM,
)
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions
from vm2kvmd.core.planning.snapshots import KeepPlan, libvirt_names, plan_keep, tree_notes
from vm2kvmd.core.vmware.vmsd import Snapshot, SnapshotTree
from vm2kvmd.errors import ErrorCode, Vm2kvmError

DIR = "/vms/web01"
POOL = "/pool"
SIZE = 1 << 30
NO_PARENT = 0xFFFFFFFF


def layer(name: str, cid: int = 1, parent_cid: int = NO_PARENT) -> DiskLayer:
    return DiskLayer(
        path=f"{DIR}/{name}.vmdk",
        create_type="monolithicSparse",
        cid=cid,
        parent_cid=parent_cid,
        parent_hint=None,
        extents=(),
        embedded=True,
        virtual_size=SIZE,
    )


class Disks:
    """Layers by name with their parents; ``chain(name)`` is a name and its parents."""

    def __init__(self, parents: dict[str, str | None]) -> None:
        self.parents = parents
        self.layers = {name: layer(name) for name in parents}

    def chain(self, name: str) -> DiskChain:
        out = []
        current: str | None = name
        while current is not None:
            out.append(self.layers[current])
            current = self.parents[current]
        return DiskChain(tuple(out))

    def load(self, file_name: str, key: str) -> DiskChain:
        return self.chain(file_name.removesuffix(".vmdk"))


def disk(unit: int, chain: DiskChain) -> SourceDisk:
    return SourceDisk(DeviceAddress(Bus.SCSI, 0, unit), chain.top.path, chain.top.path, "persistent", chain)


def vm_with(*disks: SourceDisk) -> SourceVM:
    return SourceVM(
        source_path=f"{DIR}/web01.vmx",
        display_name="web01",
        annotation="",
        guest_os="debian12-64",
        hw_version=19,
        firmware=Firmware.BIOS,
        secure_boot=False,
        cpu=Cpu(vcpus=1),
        memory=Memory(size_mib=512),
        uuid_bios=None,
        vc_uuid=None,
        genid=None,
        disks=disks,
    )


def domain_plan(vm: SourceVM) -> DomainPlan:
    opts = PlanOptions(target_dir=POOL, new_uuid="00000000-0000-4000-8000-000000000001")
    return plan_domain(vm, opts, GuestCaps.unconverted())


def snap(uid: int, name: str, *disks: tuple[str, str], parent: int | None = None, key: str = "") -> Snapshot:
    return Snapshot(uid, name, "", 1_700_000_000_123_456, parent, tuple(disks), key or f"snapshot{uid - 1}")


def tree(*snaps: Snapshot, current: int | None) -> SnapshotTree:
    return SnapshotTree(f"{DIR}/web01.vmsd", snaps, current)


def names(keep: KeepPlan) -> list[tuple[str, str | None]]:
    return [(v.volume_name, v.backing.rsplit("/", 1)[1] if v.backing else None) for v in keep.volumes]


# --- volumes and overlays ---------------------------------------------------------------


def test_linear_chain_one_volume_per_layer_top_keeps_the_plan_name() -> None:
    d = Disks({"web01": None, "web01-000001": "web01", "web01-000002": "web01-000001"})
    vm = vm_with(disk(0, d.chain("web01-000002")))
    plan = domain_plan(vm)
    t = tree(
        snap(1, "one", ("scsi0:0", "web01.vmdk")),
        snap(2, "two", ("scsi0:0", "web01-000001.vmdk"), parent=1),
        current=2,
    )
    keep = plan_keep(vm, plan, t, d.load)
    assert names(keep) == [
        ("web01-disk1-web01.qcow2", None),
        ("web01-disk1-web01-000001.qcow2", "web01-disk1-web01.qcow2"),
        ("web01-disk1.qcow2", "web01-disk1-web01-000001.qcow2"),
    ]
    assert keep.volumes[-1].target_path == plan.disks[0].target_path
    assert [v.layer.path if v.layer else None for v in keep.volumes] == [
        f"{DIR}/web01.vmdk",
        f"{DIR}/web01-000001.vmdk",
        f"{DIR}/web01-000002.vmdk",
    ]
    assert [len(v.source.layers) if v.source else 0 for v in keep.volumes] == [1, 2, 3]
    one, two = keep.snapshots
    assert (one.name, one.parent_name, one.current) == ("one", None, False)
    assert (two.name, two.parent_name, two.current) == ("two", "one", True)
    assert [(d.state, d.overlay) for d in one.disks] == [
        (f"{POOL}/web01-disk1-web01.qcow2", f"{POOL}/web01-disk1-web01-000001.qcow2")
    ]
    assert [(d.state, d.overlay) for d in two.disks] == [
        (f"{POOL}/web01-disk1-web01-000001.qcow2", f"{POOL}/web01-disk1.qcow2")
    ]
    assert keep.notes == ()


def test_no_snapshot_database_keeps_the_layers_only() -> None:
    d = Disks({"web01": None, "web01-000001": "web01"})
    vm = vm_with(disk(0, d.chain("web01-000001")))
    keep = plan_keep(vm, domain_plan(vm), None, d.load)
    assert names(keep) == [
        ("web01-disk1-web01.qcow2", None),
        ("web01-disk1.qcow2", "web01-disk1-web01.qcow2"),
    ]
    assert keep.snapshots == ()


def test_branches_leaves_get_empty_overlays_and_without_current_children_decide() -> None:
    # a <- b ("B") <- c ("C", leaf of an old branch)
    #   <- d ("D") <- top
    d = Disks({"a": None, "b": "a", "c": "b", "d": "a", "top": "d", "e": "b"})
    vm = vm_with(disk(0, d.chain("top")))
    t = tree(
        snap(1, "A", ("scsi0:0", "a.vmdk")),
        snap(2, "B", ("scsi0:0", "b.vmdk"), parent=1),
        snap(3, "C", ("scsi0:0", "c.vmdk"), parent=2),
        snap(4, "D", ("scsi0:0", "d.vmdk"), parent=1),
        current=None,
    )
    keep = plan_keep(vm, domain_plan(vm), t, d.load)
    overlays = {p.name: p.disks[0].overlay.rsplit("/", 1)[1] for p in keep.snapshots}
    # Without a current snapshot the way on is towards the first child.
    assert overlays == {
        "A": "web01-disk1-b.qcow2",
        "B": "web01-disk1-c.qcow2",
        "C": "web01-disk1-after-snapshot3.qcow2",
        "D": "web01-disk1-after-snapshot4.qcow2",
    }
    assert ("web01-disk1-after-snapshot3.qcow2", "web01-disk1-c.qcow2") in names(keep)
    assert not any(p.current for p in keep.snapshots)


def test_disks_a_snapshot_does_not_cover_and_disks_gone_since() -> None:
    d = Disks({"sys": None, "sys-000001": "sys", "data": None})
    vm = vm_with(disk(0, d.chain("sys-000001")), disk(1, d.chain("data")))
    t = tree(snap(1, "one", ("scsi0:0", "sys.vmdk"), ("scsi0:5", "old.vmdk")), current=1)
    keep = plan_keep(vm, domain_plan(vm), t, d.load)
    assert [d.disk.target_dev for d in keep.snapshots[0].disks] == ["sda"]
    assert [n.message for n in keep.notes] == [
        "snapshot 'one': disk scsi0:5 (old.vmdk) is no longer part of the VM; its state at that snapshot "
        "is not migrated"
    ]
    assert names(keep)[-1] == ("web01-disk2.qcow2", None)


def test_layer_names_are_file_safe_unique_and_fit_a_file_name() -> None:
    long = "x" * 300
    d = Disks({"a b": None, "a_b": "a b", long: "a_b", "top": long})
    vm = vm_with(disk(0, d.chain("top")))
    keep = plan_keep(vm, domain_plan(vm), None, d.load)
    got = [v.volume_name for v in keep.volumes]
    assert got[:2] == ["web01-disk1-a_b.qcow2", "web01-disk1-a_b-2.qcow2"]
    assert len(got[2]) <= 250 and got[2].startswith("web01-disk1-xxx")
    assert len(set(got)) == len(got)


@pytest.mark.parametrize(
    ("snaps", "current", "key", "words"),
    [
        (
            (snap(1, "one", ("scsi0:0", "top.vmdk")),),
            1,
            "snapshot0.disk0.fileName",
            "which is the file the VM writes into",
        ),
        (
            (snap(1, "one", ("scsi0:0", "after.vmdk")),),
            1,
            "snapshot0.disk0.fileName",
            "which has as a parent /vms/web01/top.vmdk, the file the VM writes into",
        ),
        (
            (snap(1, "one", ("scsi0:0", "b.vmdk")), snap(2, "two", ("scsi0:0", "a.vmdk"), parent=1)),
            2,
            "snapshot1.disk0.fileName",
            "does not descend from the state of its parent snapshot 'one'",
        ),
        (
            (snap(1, "one", ("scsi0:0", "a.vmdk")), snap(2, "two", ("scsi0:0", "b.vmdk"), parent=1)),
            2,
            "snapshot1.disk0.fileName",
            "does not descend from",
        ),
    ],
)
def test_tree_and_disks_that_disagree(
    snaps: tuple[Snapshot, ...], current: int, key: str, words: str
) -> None:
    d = Disks({"a": None, "b": "a", "c": "a", "top": "c", "after": "top"})
    vm = vm_with(disk(0, d.chain("top")))
    with pytest.raises(Vm2kvmError) as info:
        plan_keep(vm, domain_plan(vm), tree(*snaps, current=current), d.load)
    assert info.value.code is ErrorCode.DISK_CHAIN_BROKEN
    assert info.value.key == key
    assert info.value.file == f"{DIR}/web01.vmsd"
    assert words in info.value.message
    assert "--snapshots flatten" in (info.value.hint or "")


def test_libvirt_names_are_unique_and_usable() -> None:
    t = tree(
        snap(1, "Before / after"),
        snap(2, "  two   spaces "),
        snap(3, ""),
        snap(4, "Before - after"),
        snap(5, ".hidden"),
        snap(6, "plain"),
        current=None,
    )
    got, notes = libvirt_names(t)
    assert got == {
        1: "Before - after",
        2: "two spaces",
        3: "snapshot 3",
        4: "Before - after (uid 4)",
        5: ".hidden (uid 5)",
        6: "plain",
    }
    assert [n.key for n in notes] == [f"snapshot{i}.displayName" for i in range(5)]


# --- XML ---------------------------------------------------------------------------------


def attribute(root: etree._Element, path: str, name: str) -> str | None:
    element = root.find(path)
    assert element is not None, path
    return element.get(name)


def test_snapshot_xml() -> None:
    d = Disks({"sys": None, "mid": "sys", "sys-000001": "mid", "data": None})
    vm = vm_with(disk(0, d.chain("sys-000001")), disk(1, d.chain("data")))
    plan = domain_plan(vm)
    first = replace(snap(1, "one & <two>", ("scsi0:0", "sys.vmdk")), description='say "hi"\nbye')
    keep = plan_keep(vm, plan, tree(first, current=1), d.load)
    xml = render_snapshot_xml(keep.snapshots[0], render_domain_xml(plan), plan.disks)
    root = etree.fromstring(xml.encode())
    assert [child.tag for child in root] == [
        "name",
        "description",
        "state",
        "creationTime",
        "memory",
        "disks",
        "domain",
    ]
    assert root.findtext("name") == "one & <two>"
    assert root.findtext("description") == 'say "hi"\nbye'
    assert root.findtext("creationTime") == "1700000000"
    assert attribute(root, "memory", "snapshot") == "no"
    disks = [dict(e.attrib) for e in root.iterfind("disks/disk")]
    assert disks == [
        {"name": "sda", "snapshot": "external", "type": "file"},
        {"name": "sdb", "snapshot": "no"},
    ]
    assert attribute(root, "disks/disk/source", "file") == f"{POOL}/web01-disk1-mid.qcow2"
    assert attribute(root, "disks/disk/driver", "type") == "qcow2"
    sources = [e.get("file") for e in root.iterfind("domain/devices/disk/source")]
    assert sources == [f"{POOL}/web01-disk1-sys.qcow2", f"{POOL}/web01-disk2.qcow2"]
    assert root.findtext("domain/name") == "web01"

    child = replace(snap(2, "two", ("scsi0:0", "mid.vmdk"), parent=1), created_us=None)
    keep = plan_keep(vm, plan, tree(first, child, current=1), d.load)
    root = etree.fromstring(
        render_snapshot_xml(keep.snapshots[1], render_domain_xml(plan), plan.disks).encode()
    )
    assert root.findtext("parent/name") == "one & <two>"
    assert root.find("description") is None and root.find("creationTime") is None


# --- notes ---------------------------------------------------------------------------------


def test_notes_per_mode() -> None:
    t = tree(
        snap(1, "one"),
        replace(snap(2, "two", parent=1), has_memory=True, state_file="web01-Snapshot2.vmsn"),
        current=2,
    )
    (flat,) = tree_notes(t, "flatten")
    assert flat.message.startswith("2 VMware snapshots (web01.vmsd) flattened")
    kept = tree_notes(t, "keep")
    assert "kept as libvirt disk-only snapshots" in kept[0].message
    assert kept[1].key == "snapshot1" and "web01-Snapshot2.vmsn" in kept[1].message
    assert tree_notes(tree(current=None), "flatten") == ()
    assert tree_notes(tree(snap(1, "one"), current=1), "flatten")[0].message.startswith("1 VMware snapshot (")
