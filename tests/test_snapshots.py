"""VMware snapshots end to end: flattened by default, kept as qcow2 chains and libvirt snapshots on request.

Real VMDK chains (``make_delta`` writes data into every delta), a ``.vmsd``
written by the test, real qemu-img and a real libvirtd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from dbus_fast import Variant

from testbed.services import DirPool
from tests.helpers.vmdk_factory import (
    MiB,
    images_equal,
    make_delta,
    make_vmdk,
    read_virtual,
    rewrite_descriptor,
    sha256_tree,
)
from tests.pipeline.support import RecordingEvents as Events
from vm2kvmctl.main import build_parser, mapping_options
from vm2kvmd.adapters import libvirt_snapshots, qemu_img_layers
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import inspect_source, preflight, run_migration
from vm2kvmd.pipeline.overlay import Overlay

SIZE = 64 * MiB


@dataclass(frozen=True)
class Snap:
    uid: int
    name: str
    disks: tuple[str, ...]  # VMDK file per scsi0:N
    parent: int | None = None
    description: str = ""
    time_us: int = 1_700_000_000_000_000


def write_vmx(directory: Path, disks: Sequence[Path], name: str = "Snapshot Test") -> Path:
    lines = [
        '.encoding = "UTF-8"',
        'config.version = "8"',
        'virtualHW.version = "19"',
        f'displayName = "{name}"',
        'guestOS = "debian12-64"',
        'memsize = "256"',
        'scsi0.present = "TRUE"',
        'scsi0.virtualDev = "lsilogic"',
    ]
    for unit, disk in enumerate(disks):
        lines += [f'scsi0:{unit}.present = "TRUE"', f'scsi0:{unit}.fileName = "{disk.name}"']
    vmx = directory / f"{name}.vmx"
    vmx.write_text("\n".join(lines) + "\n")
    return vmx


def write_vmsd(vmx: Path, snaps: Sequence[Snap], current: int | None) -> Path:
    """A .vmsd as Workstation writes it (``|0A`` for newlines, the low time half signed)."""
    lines = ['.encoding = "UTF-8"', f'snapshot.lastUID = "{max((s.uid for s in snaps), default=0)}"']
    if current is not None:
        lines.append(f'snapshot.current = "{current}"')
    for i, snap in enumerate(snaps):
        low = snap.time_us % 2**32
        low = low - 2**32 if low >= 2**31 else low
        lines += [
            f'snapshot{i}.uid = "{snap.uid}"',
            f'snapshot{i}.filename = "{vmx.stem}-Snapshot{snap.uid}.vmsn"',
        ]
        if snap.parent is not None:
            lines.append(f'snapshot{i}.parent = "{snap.parent}"')
        lines += [
            f'snapshot{i}.displayName = "{snap.name}"',
            f'snapshot{i}.description = "{snap.description.replace(chr(10), "|0A")}"',
            f'snapshot{i}.createTimeHigh = "{snap.time_us >> 32}"',
            f'snapshot{i}.createTimeLow = "{low}"',
            f'snapshot{i}.numDisks = "{len(snap.disks)}"',
        ]
        for unit, disk in enumerate(snap.disks):
            lines += [
                f'snapshot{i}.disk{unit}.fileName = "{disk}"',
                f'snapshot{i}.disk{unit}.node = "scsi0:{unit}"',
            ]
        (vmx.parent / f"{vmx.stem}-Snapshot{snap.uid}.vmsn").write_bytes(b"\0" * 4096)
    lines.append(f'snapshot.numSnapshots = "{len(snaps)}"')
    path = vmx.with_suffix(".vmsd")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class LinearVm:
    """base <- -000001 <- -000002 (current); snapshots "Installed" (base) and "Updated" (-000001)."""

    dir: Path
    vmx: Path
    layers: list[Path]  # base first


@pytest.fixture
def linear_vm(tmp_path: Path) -> LinearVm:
    directory = tmp_path / "Snapshot Test"
    directory.mkdir()
    base = make_vmdk(directory, "sys", "monolithicSparse", SIZE)
    d1 = make_delta(directory, "sys-000001", base)
    d2 = make_delta(directory, "sys-000002", d1)
    vmx = write_vmx(directory, [d2])
    write_vmsd(
        vmx,
        [
            Snap(
                1,
                "Installed",
                ("sys.vmdk",),
                description="fresh|22 install\nno updates",
                time_us=1711684617758198,
            ),
            Snap(2, "Updated", ("sys-000001.vmdk",), parent=1, time_us=1711687406127060),
        ],
        current=2,
    )
    return LinearVm(directory, vmx, [base, d1, d2])


def keep_options(pool: DirPool, name: str, **kw: Any) -> MigrateOptions:
    return MigrateOptions(
        name=name, pool=pool.name, domain_type="qemu", snapshots="keep", guest_conversion=False, **kw
    )


def remove_with_snapshots(conn: Any, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


@pytest.fixture
def cleanup_domain(libvirt_conn: Any, domain_name: str) -> Iterator[str]:
    yield domain_name
    remove_with_snapshots(libvirt_conn, domain_name)


def backing_chain(path: str) -> list[tuple[str, str | None, str]]:
    """(file, backing file, format) of every image of ``path``'s chain, top first."""
    out = subprocess.run(
        ["qemu-img", "info", "--backing-chain", "--output=json", "-U", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [(i["filename"], i.get("full-backing-filename"), i["format"]) for i in json.loads(out)]


@dataclass(frozen=True)
class LibvirtSnapshot:
    name: str
    parent: str | None
    description: str | None
    creation_time: int
    state: str
    memory: str | None
    disks: dict[str, tuple[str, str | None]]  # target -> (snapshot kind, overlay file)
    domain_sources: dict[str, str]  # target -> the disk's source in the snapshot's domain
    current: bool


def _attribute(element: ET.Element, path: str, name: str) -> str | None:
    """Attribute ``name`` of the child at ``path``; None if either is missing."""
    child = element.find(path)
    return None if child is None else child.get(name)


def snapshots_of(conn: Any, domain: str) -> dict[str, LibvirtSnapshot]:
    dom = conn.lookupByName(domain)
    current = dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None
    found = {}
    for snap in dom.listAllSnapshots(0):
        root = ET.fromstring(snap.getXMLDesc(0))
        # libvirt writes name and snapshot on every disk of a snapshot
        disks = {
            d.attrib["name"]: (d.attrib["snapshot"], _attribute(d, "source", "file"))
            for d in root.iterfind("disks/disk")
        }
        sources = {}
        for d in root.iterfind("domain/devices/disk"):
            target, source = _attribute(d, "target", "dev"), _attribute(d, "source", "file")
            assert target is not None and source is not None, ET.tostring(d)
            sources[target] = source
        memory = root.find("memory")
        found[snap.getName()] = LibvirtSnapshot(
            name=snap.getName(),
            parent=root.findtext("parent/name"),
            description=root.findtext("description"),
            creation_time=int(root.findtext("creationTime") or 0),
            state=root.findtext("state") or "",
            memory=memory.get("snapshot") if memory is not None else None,
            disks=disks,
            domain_sources=sources,
            current=snap.getName() == current,
        )
    return found


# --- default: flattened -------------------------------------------------------------------


async def test_default_migrates_the_current_state_and_notes_the_snapshots(
    linear_vm: LinearVm, dir_pool: DirPool, cleanup_domain: str, libvirt_conn: Any
) -> None:
    before = sha256_tree(linear_vm.dir)
    options = MigrateOptions(name=cleanup_domain, pool=dir_pool.name, domain_type="qemu")
    result = await run_migration(str(linear_vm.vmx), options, Events())

    assert len(result.outputs) == 1
    out = Path(result.outputs[0])
    assert [i[1] for i in backing_chain(str(out))] == [None]  # one flat image
    assert images_equal(linear_vm.layers[-1], out, fmt_a="vmdk", fmt_b="qcow2")
    assert not images_equal(linear_vm.layers[-2], out, fmt_a="vmdk", fmt_b="qcow2")
    flattened = [n for n in result.notes if "flattened" in n.message]
    assert len(flattened) == 1 and "2 VMware snapshots (Snapshot Test.vmsd)" in flattened[0].message
    assert dir_pool.volume_names() == [out.name]
    assert libvirt_conn.lookupByName(cleanup_domain).snapshotNum(0) == 0
    assert sha256_tree(linear_vm.dir) == before


async def test_flatten_and_keep_run_the_same_phases(
    linear_vm: LinearVm, dir_pool: DirPool, cleanup_domain: str, libvirt_conn: Any
) -> None:
    """One engine runs both strategies: the same phases in the same order, every disk copied to its total."""
    flat, kept = Events(), Events()
    options = MigrateOptions(
        name=cleanup_domain, pool=dir_pool.name, domain_type="qemu", guest_conversion=False, verify=True
    )
    await run_migration(str(linear_vm.vmx), options, flat)
    keep_name = f"{cleanup_domain}-keep"
    try:
        await run_migration(str(linear_vm.vmx), keep_options(dir_pool, keep_name, verify=True), kept)
    finally:
        remove_with_snapshots(libvirt_conn, keep_name)
    assert flat.phases == kept.phases == ["inspect", "prepare", "copy", "verify", "define"]
    for events in (flat, kept):
        assert len(events.announced) == len(events.progress) > 0
        for index, item in enumerate(events.announced):
            assert events.progress[index][-1] == (item.total, item.total)
    assert len(kept.announced) == 3 and len(flat.announced) == 1  # three layers, one flattened disk


def test_inspect_notes_the_snapshots(linear_vm: LinearVm) -> None:
    notes = [str(n) for n in inspect_source(str(linear_vm.vmx), MigrateOptions(), None).notes]
    assert any("2 VMware snapshots" in n and "flattened" in n for n in notes)
    kept = [
        str(n)
        for n in inspect_source(
            str(linear_vm.vmx), MigrateOptions(snapshots="keep", guest_conversion=False), None
        ).notes
    ]
    assert any("2 VMware snapshots" in n and "kept as libvirt disk-only snapshots" in n for n in kept)


def test_a_damaged_vmsd_does_not_stop_a_flattening_inspection(linear_vm: LinearVm) -> None:
    linear_vm.vmx.with_suffix(".vmsd").write_text('snapshot.numSnapshots = "1"\nsnapshot0.parent = "3"\n')
    notes = [str(n) for n in inspect_source(str(linear_vm.vmx), MigrateOptions(), None).notes]
    assert any("snapshot database not read" in n and "snapshot0.uid" in n for n in notes)


# --- keep ------------------------------------------------------------------------------------


async def test_keep_makes_a_qcow2_chain_and_libvirt_snapshots(
    linear_vm: LinearVm, dir_pool: DirPool, cleanup_domain: str, libvirt_conn: Any
) -> None:
    before = sha256_tree(linear_vm.dir)
    events = Events()
    result = await run_migration(str(linear_vm.vmx), keep_options(dir_pool, cleanup_domain), events)

    pool = Path(dir_pool.path)
    top = pool / f"{cleanup_domain}-disk1.qcow2"
    base = pool / f"{cleanup_domain}-disk1-sys.qcow2"
    middle = pool / f"{cleanup_domain}-disk1-sys-000001.qcow2"
    assert result.outputs == (str(top), str(base), str(middle))
    assert dir_pool.volume_names() == sorted(p.name for p in (top, base, middle))
    assert backing_chain(str(top)) == [
        (str(top), str(middle), "qcow2"),
        (str(middle), str(base), "qcow2"),
        (str(base), None, "qcow2"),
    ]
    # Each qcow2, read through its backing chain, is the VMware state at that layer.
    for vmdk, qcow2 in zip(linear_vm.layers, (base, middle, top), strict=True):
        assert images_equal(vmdk, qcow2, fmt_a="vmdk", fmt_b="qcow2"), (vmdk, qcow2)
    assert not images_equal(linear_vm.layers[0], middle, fmt_a="vmdk", fmt_b="qcow2")
    # ... and holds only its own layer's data.
    assert _allocated(middle) < 1 * MiB

    dom = libvirt_conn.lookupByName(cleanup_domain)
    root = ET.fromstring(dom.XMLDesc(0))
    assert [s.get("file") for s in root.iterfind("devices/disk[@device='disk']/source")] == [str(top)]
    snaps = snapshots_of(libvirt_conn, cleanup_domain)
    assert sorted(snaps) == ["Installed", "Updated"]
    installed, updated = snaps["Installed"], snaps["Updated"]
    assert installed.parent is None and updated.parent == "Installed"
    assert installed.description == 'fresh" install\nno updates'
    assert updated.description is None
    assert installed.creation_time == 1711684617 and updated.creation_time == 1711687406
    assert installed.state == updated.state == "shutoff"
    assert installed.memory == updated.memory == "no"
    assert installed.domain_sources == {"sda": str(base)} and installed.disks == {
        "sda": ("external", str(middle))
    }
    assert updated.domain_sources == {"sda": str(middle)} and updated.disks == {"sda": ("external", str(top))}
    assert updated.current and not installed.current
    assert _virsh_tree(cleanup_domain) == ["Installed", "  |", "  +- Updated"]

    assert events.phases == ["inspect", "prepare", "copy", "define"]
    assert [(d.key, Path(d.target).name) for d in events.announced] == [
        ("scsi0:0", base.name),
        ("scsi0:0", middle.name),
        ("scsi0:0", top.name),
    ]
    for index, disk in enumerate(events.announced):
        done = [d for d, _ in events.progress[index]]
        assert done == sorted(done) and done[-1] == disk.total
    assert any("kept as libvirt disk-only snapshots" in n.message for n in result.notes)
    assert not any("flattened" in n.message for n in result.notes)
    assert sha256_tree(linear_vm.dir) == before


def _allocated(path: Path) -> int:
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "-U", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return sum(int(e["length"]) for e in json.loads(out) if e["data"] and e["depth"] == 0)


def _virsh_tree(domain: str) -> list[str]:
    out = subprocess.run(
        ["virsh", "-c", "qemu:///system", "snapshot-list", domain, "--tree"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.rstrip() for line in out.splitlines() if line.strip()]


@dataclass
class BranchVm:
    """The VM went back to "Installed" after "Experiment" and went on from there.

    disk 1: sys.vmdk ("Installed") <- sys-000001 ("Experiment")
                                   <- sys-000003 ("Patched", current) <- sys-000004 (the VMX's)
    disk 2: independent-persistent, in no snapshot.
    """

    dir: Path
    vmx: Path
    base: Path
    experiment: Path
    patched: Path
    top: Path
    data: Path


@pytest.fixture
def branch_vm(tmp_path: Path) -> BranchVm:
    directory = tmp_path / "Branchy"
    directory.mkdir()
    base = make_vmdk(directory, "sys", "monolithicSparse", SIZE)
    experiment = make_delta(directory, "sys-000001", base)
    patched = make_delta(directory, "sys-000003", base)
    top = make_delta(directory, "sys-000004", patched)
    data = make_vmdk(directory, "data", "monolithicFlat", 32 * MiB)
    vmx = write_vmx(directory, [top, data], name="Branchy")
    with vmx.open("a") as f:
        f.write('scsi0:1.mode = "independent-persistent"\n')
    write_vmsd(
        vmx,
        [
            Snap(1, "Installed", ("sys.vmdk",), time_us=1_700_000_000_000_000),
            Snap(2, "Experiment", ("sys-000001.vmdk",), parent=1, time_us=1_700_000_100_000_000),
            Snap(3, "Patched", ("sys-000003.vmdk",), parent=1, time_us=1_700_000_200_000_000),
        ],
        current=3,
    )
    # "Experiment" was taken with the VM running: its memory is beside it.
    (directory / "Branchy-Snapshot2.vmem").write_bytes(b"\0" * 4096)
    return BranchVm(directory, vmx, base, experiment, patched, top, data)


async def test_keep_a_branch_keeps_its_deltas_and_gives_its_leaf_an_overlay(
    branch_vm: BranchVm, dir_pool: DirPool, cleanup_domain: str, libvirt_conn: Any
) -> None:
    before = sha256_tree(branch_vm.dir)
    result = await run_migration(str(branch_vm.vmx), keep_options(dir_pool, cleanup_domain), Events())

    pool = Path(dir_pool.path)
    name = cleanup_domain
    vol = {
        "top": pool / f"{name}-disk1.qcow2",
        "base": pool / f"{name}-disk1-sys.qcow2",
        "experiment": pool / f"{name}-disk1-sys-000001.qcow2",
        "patched": pool / f"{name}-disk1-sys-000003.qcow2",
        "after-experiment": pool / f"{name}-disk1-after-snapshot2.qcow2",
        "data": pool / f"{name}-disk2.qcow2",
    }
    assert dir_pool.volume_names() == sorted(p.name for p in vol.values())
    assert set(result.outputs) == {str(p) for p in vol.values()}
    assert result.outputs[:2] == (str(vol["top"]), str(vol["data"]))
    assert [c[0] for c in backing_chain(str(vol["top"]))] == [str(vol[k]) for k in ("top", "patched", "base")]
    assert [c[0] for c in backing_chain(str(vol["after-experiment"]))] == [
        str(vol[k]) for k in ("after-experiment", "experiment", "base")
    ]
    for vmdk, key in (
        (branch_vm.base, "base"),
        (branch_vm.experiment, "experiment"),
        (branch_vm.experiment, "after-experiment"),
        (branch_vm.patched, "patched"),
        (branch_vm.top, "top"),
        (branch_vm.data, "data"),
    ):
        assert images_equal(vmdk, vol[key], fmt_a="vmdk", fmt_b="qcow2"), key
    assert _allocated(vol["after-experiment"]) == 0

    snaps = snapshots_of(libvirt_conn, name)
    assert {s.name: s.parent for s in snaps.values()} == {
        "Installed": None,
        "Experiment": "Installed",
        "Patched": "Installed",
    }
    assert [s.name for s in snaps.values() if s.current] == ["Patched"]
    # The disk in no snapshot (independent in VMware) keeps its current source.
    for snap in snaps.values():
        assert snap.disks["sdb"] == ("no", None)
        assert snap.domain_sources["sdb"] == str(vol["data"])
    assert snaps["Installed"].disks["sda"] == ("external", str(vol["patched"]))  # towards the current state
    assert snaps["Experiment"].disks["sda"] == ("external", str(vol["after-experiment"]))
    assert snaps["Patched"].disks["sda"] == ("external", str(vol["top"]))
    assert snaps["Experiment"].domain_sources["sda"] == str(vol["experiment"])
    assert _virsh_tree(name) == ["Installed", "  |", "  +- Experiment", "  +- Patched"]
    memory = [n for n in result.notes if n.key == "snapshot1"]
    assert len(memory) == 1 and "memory" in memory[0].message and "shut-off" in memory[0].message
    assert sha256_tree(branch_vm.dir) == before


@pytest.mark.parametrize("base_type", ["vmfs", "vmfsThin"])
async def test_keep_esxi_chain_with_verify(
    base_type: str, tmp_path: Path, dir_pool: DirPool, cleanup_domain: str
) -> None:
    """ESXi: a vmfs base, a vmfsSparse (-delta) and a seSparse (-sesparse) snapshot.

    QEMU reads a vmfsThin base only through a descriptor view (see core.planning.blockdev).
    """
    directory = tmp_path / "db01"
    directory.mkdir()
    base = make_vmdk(directory, "db01", "vmfs", SIZE)
    d1 = make_delta(directory, "db01-000001", base, subformat="vmfsSparse")
    d2 = make_delta(directory, "db01-000002", d1, subformat="seSparse")
    # Each layer's state as plain qemu reads it while the base is still a plain vmfs.
    references = [_raw_copy(layer, tmp_path / f"{layer.stem}.raw") for layer in (base, d1, d2)]
    rewrite_descriptor(base, lambda t: t.replace('createType="vmfs"', f'createType="{base_type}"'))
    vmx = write_vmx(directory, [d2], name="db01")
    write_vmsd(vmx, [Snap(1, "pre-patch", ("db01.vmdk",)), Snap(2, "patched", ("db01-000001.vmdk",), 1)], 2)
    before = sha256_tree(directory)
    events = Events()
    result = await run_migration(str(vmx), keep_options(dir_pool, cleanup_domain, verify=True), events)

    assert events.phases == ["inspect", "prepare", "copy", "verify", "define"]
    verified = [n for n in result.notes if n.message.startswith("verified")]
    assert [n.message.rsplit("(", 1)[1] for n in verified] == [
        "db01.vmdk)",
        "db01-000001.vmdk)",
        "db01-000002.vmdk)",
    ]
    pool = Path(dir_pool.path)
    for reference, qcow2 in zip(
        references,
        (
            f"{cleanup_domain}-disk1-db01.qcow2",
            f"{cleanup_domain}-disk1-db01-000001.qcow2",
            f"{cleanup_domain}-disk1.qcow2",
        ),
        strict=True,
    ):
        assert images_equal(reference, pool / qcow2, fmt_a="raw", fmt_b="qcow2")
    assert sha256_tree(directory) == before


def _raw_copy(image: Path, raw: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw)], check=True)
    return raw


# --- refusals: before anything is written ------------------------------------------------------


async def _refused(vmx: Path, options: MigrateOptions) -> Vm2kvmError:
    """What ``Migrate`` answers (the preflight runs in a thread, as the service runs it)."""
    with pytest.raises(Vm2kvmError) as info:
        await asyncio.to_thread(preflight, str(vmx), options)
    return info.value


async def _refused_by_job(vmx: Path, options: MigrateOptions, pool: DirPool) -> Vm2kvmError:
    events = Events()
    with pytest.raises(Vm2kvmError) as info:
        await run_migration(str(vmx), options, events)
    assert "copy" not in events.phases and "cleanup" not in events.phases
    assert pool.volume_names() == []
    return info.value


async def test_broken_branch_chain_is_refused(
    branch_vm: BranchVm, dir_pool: DirPool, domain_name: str, libvirt_conn: Any
) -> None:
    # The branch's delta is not on the current chain: only --snapshots keep reads it.
    rewrite_descriptor(branch_vm.experiment, lambda t: re.sub(r"parentCID=\w+", "parentCID=0badc1d0", t))
    options = keep_options(dir_pool, domain_name)
    for err in (
        await _refused(branch_vm.vmx, options),
        await _refused_by_job(branch_vm.vmx, options, dir_pool),
    ):
        assert err.code is ErrorCode.DISK_CHAIN_BROKEN
        assert err.file == str(branch_vm.experiment)
        assert "parent CID" in err.message
        assert err.key == "snapshot1.disk0.fileName"
    assert domain_name not in [d.name() for d in libvirt_conn.listAllDomains(0)]
    # The default migration does not need the branch and still works.
    preflight_ok = await asyncio.to_thread(inspect_source, str(branch_vm.vmx), MigrateOptions(), None)
    assert preflight_ok.plan.disks


@pytest.mark.parametrize(
    ("change", "code", "key", "words"),
    [
        (
            lambda vm: (vm.dir / "sys-000001.vmdk").unlink(),
            ErrorCode.DISK_MISSING,
            "snapshot1.disk0.fileName",
            "does not exist",
        ),
        (
            lambda vm: _edit_vmsd(vm, '"sys-000001.vmdk"', '"sys-000004.vmdk"'),
            ErrorCode.DISK_CHAIN_BROKEN,
            "snapshot1.disk0.fileName",
            "the file the VM writes into",
        ),
        (
            lambda vm: _edit_vmsd(
                vm, 'snapshot0.disk0.fileName = "sys.vmdk"', 'snapshot0.disk0.fileName = "sys-000003.vmdk"'
            ),
            ErrorCode.DISK_CHAIN_BROKEN,
            "snapshot1.disk0.fileName",
            "does not descend from the state of its parent snapshot 'Installed'",
        ),
        (
            lambda vm: _edit_vmsd(vm, 'snapshot.current = "3"', 'snapshot.current = "2"'),
            ErrorCode.DISK_CHAIN_BROKEN,
            "snapshot1.disk0.fileName",
            "its current snapshot 'Experiment'",
        ),
        (
            lambda vm: _edit_vmsd(vm, 'snapshot2.parent = "1"', 'snapshot2.parent = "7"'),
            ErrorCode.INVALID_SOURCE,
            "snapshot2.parent",
            "no snapshot",
        ),
        (
            lambda vm: _edit_vmsd(vm, '"sys-000001.vmdk"', '"../elsewhere/sys-000001.vmdk"'),
            ErrorCode.PATH_OUTSIDE_SOURCE,
            "snapshot1.disk0.fileName",
            "outside the VM directory",
        ),
    ],
)
async def test_inconsistent_snapshots_are_refused(
    branch_vm: BranchVm,
    dir_pool: DirPool,
    domain_name: str,
    change: Any,
    code: ErrorCode,
    key: str,
    words: str,
) -> None:
    change(branch_vm)
    options = keep_options(dir_pool, domain_name)
    for err in (
        await _refused(branch_vm.vmx, options),
        await _refused_by_job(branch_vm.vmx, options, dir_pool),
    ):
        assert err.code is code, err
        assert err.key == key
        assert words in err.message
        assert err.hint


def _edit_vmsd(vm: BranchVm, old: str, new: str) -> None:
    path = vm.vmx.with_suffix(".vmsd")
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


async def test_a_layer_volume_already_in_the_pool_is_refused(
    linear_vm: LinearVm, dir_pool: DirPool, domain_name: str
) -> None:
    taken = Path(dir_pool.path) / f"{domain_name}-disk1-sys-000001.qcow2"
    taken.write_bytes(b"")
    options = keep_options(dir_pool, domain_name)
    err = await _refused(linear_vm.vmx, options)
    assert err.code is ErrorCode.VOLUME_EXISTS and err.file == str(taken)
    with pytest.raises(Vm2kvmError) as info:
        await run_migration(str(linear_vm.vmx), options, Events())
    assert info.value.code is ErrorCode.VOLUME_EXISTS
    assert dir_pool.volume_names() == [taken.name]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (MigrateOptions(snapshots="keep", format="raw"), "needs --format qcow2"),
        (MigrateOptions(snapshots="keep", output_dir="/tmp/x"), "needs a libvirt storage pool"),
        (MigrateOptions(snapshots="all"), "must be one of flatten, keep"),
        (MigrateOptions(snapshots="keep"), "does not convert the guest yet"),
    ],
)
def test_option_conflicts(options: MigrateOptions, words: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        options.validate()
    assert info.value.code is ErrorCode.INVALID_OPTION
    assert info.value.key == "snapshots"
    assert words in info.value.message


def test_option_over_dbus_and_back() -> None:
    opts = MigrateOptions.from_mapping({"snapshots": "keep", "guest-conversion": False})
    assert opts.snapshots == "keep"
    assert opts.to_mapping() == {"snapshots": "keep", "guest-conversion": False}
    assert MigrateOptions().to_mapping() == {}
    with pytest.raises(Vm2kvmError) as info:
        MigrateOptions.from_mapping({"snapshots": True})
    assert info.value.key == "snapshots"


# --- rollback ------------------------------------------------------------------------------------


def _domains(conn: Any) -> set[str]:
    return {d.name() for d in conn.listAllDomains(0)}


async def test_a_failed_copy_removes_every_volume(
    linear_vm: LinearVm,
    dir_pool: DirPool,
    domain_name: str,
    libvirt_conn: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = qemu_img_layers.convert_layer
    calls: list[str] = []

    async def failing(source: Any, dst: str, **kw: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise Vm2kvmError(ErrorCode.COPY_FAILED, "disk on fire", file=dst)
        await real(source, dst, **kw)

    monkeypatch.setattr(qemu_img_layers, "convert_layer", failing)
    events = Events()
    with pytest.raises(Vm2kvmError) as info:
        await run_migration(str(linear_vm.vmx), keep_options(dir_pool, domain_name), events)
    assert info.value.code is ErrorCode.COPY_FAILED
    assert events.phases == ["inspect", "prepare", "copy", "cleanup"]
    assert len([line for line in events.logs if line.startswith("removed volume")]) == 3
    assert dir_pool.volume_names() == []
    assert domain_name not in _domains(libvirt_conn)


async def test_a_refused_snapshot_removes_the_others_the_domain_and_the_volumes(
    branch_vm: BranchVm,
    dir_pool: DirPool,
    domain_name: str,
    libvirt_conn: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = libvirt_snapshots.redefine_snapshot
    made: list[str] = []

    def refusing(host: Any, domain: str, xml: str, *, current: bool) -> str:
        if len(made) == 2:
            raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, "libvirt refused a snapshot")
        made.append(real(host, domain, xml, current=current))
        return made[-1]

    monkeypatch.setattr(libvirt_snapshots, "redefine_snapshot", refusing)
    events = Events()
    with pytest.raises(Vm2kvmError) as info:
        await run_migration(str(branch_vm.vmx), keep_options(dir_pool, domain_name), events)
    assert info.value.code is ErrorCode.LIBVIRT_ERROR
    assert made == ["Installed", "Experiment"]
    removed = [line for line in events.logs if line.startswith("removed")]
    assert removed[:3] == [
        f"removed snapshot 'Experiment' of domain {domain_name}",
        f"removed snapshot 'Installed' of domain {domain_name}",
        f"removed domain {domain_name}",
    ]
    assert len(removed) == 3 + 6  # and the six volumes
    assert dir_pool.volume_names() == []
    assert domain_name not in _domains(libvirt_conn)


async def test_cancel_during_the_copy_rolls_back(
    linear_vm: LinearVm,
    dir_pool: DirPool,
    domain_name: str,
    libvirt_conn: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = qemu_img_layers.convert_layer
    second = asyncio.Event()

    async def slow(source: Any, dst: str, **kw: Any) -> None:
        await real(source, dst, **kw)
        if not second.is_set():
            second.set()
            await asyncio.sleep(3600)

    monkeypatch.setattr(qemu_img_layers, "convert_layer", slow)
    events = Events()
    job = asyncio.create_task(run_migration(str(linear_vm.vmx), keep_options(dir_pool, domain_name), events))
    await asyncio.wait_for(second.wait(), 60)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert events.phases[-1] == "cleanup"
    assert dir_pool.volume_names() == []
    assert domain_name not in _domains(libvirt_conn)


def test_cli_flag() -> None:
    args = build_parser().parse_args(["migrate", "/vms/a.vmx", "--snapshots", "keep"])
    assert mapping_options(args)["snapshots"] == Variant("s", "keep")
    args = build_parser().parse_args(["inspect", "/vms/a.vmx"])
    assert "snapshots" not in mapping_options(args)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["migrate", "/vms/a.vmx", "--snapshots", "all"])


async def test_before_copy_hooks_change_the_current_state_only(
    linear_vm: LinearVm, dir_pool: DirPool, cleanup_domain: str
) -> None:
    """A guest conversion writes into the current state's volume; the snapshots keep their states."""
    seen: list[tuple[str, str]] = []

    async def convert_guest(overlays: Sequence[Overlay]) -> None:
        for overlay in overlays:
            seen.append((overlay.key, overlay.path))
            proc = await asyncio.create_subprocess_exec(
                "qemu-io", "-f", "qcow2", "-c", "write -q -P 0x5a 0 64k", overlay.path,
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            assert await proc.wait() == 0

    result = await run_migration(
        str(linear_vm.vmx), keep_options(dir_pool, cleanup_domain), Events(), before_copy=[convert_guest]
    )
    pool = Path(dir_pool.path)
    top = pool / f"{cleanup_domain}-disk1.qcow2"
    assert seen == [("scsi0:0", str(top))]
    assert result.outputs[0] == str(top)
    assert not images_equal(linear_vm.layers[2], top, fmt_a="vmdk", fmt_b="qcow2")
    assert await asyncio.to_thread(read_virtual, top, 0, 4) == b"\x5a" * 4
    for vmdk, name in ((linear_vm.layers[0], "sys"), (linear_vm.layers[1], "sys-000001")):
        assert images_equal(vmdk, pool / f"{cleanup_domain}-disk1-{name}.qcow2", fmt_a="vmdk", fmt_b="qcow2")


def test_keep_refuses_an_ova(tmp_path: Path, dir_pool: DirPool, domain_name: str) -> None:
    ova = tmp_path / "appliance.ova"
    ova.write_bytes(b"not read: the option is refused first")
    options = MigrateOptions(name=domain_name, pool=dir_pool.name, snapshots="keep", guest_conversion=False)
    with pytest.raises(Vm2kvmError) as err:
        preflight(str(ova), options)
    assert err.value.code is ErrorCode.INVALID_OPTION
    assert "--snapshots keep needs a .vmx source" in str(err.value)
    assert ova.read_bytes() == b"not read: the option is refused first"
