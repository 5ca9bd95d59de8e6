"""The migration pipeline end to end: real VMDKs, real qemu-img, a real libvirtd."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from testbed.disks import make_unreadable_vmdk
from testbed.disks import make_vmdk as make_filled_vmdk
from testbed.services import DirPool, child_pids, domain_macs, remove_domain
from tests.helpers.vmdk_factory import MiB, images_equal, make_delta, make_vmdk, sha256_tree
from tests.pipeline.support import RecordingEvents
from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.aio import in_thread
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.blockdev import source_blockdev
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import DiskProgress, inspect_source, run_migration
from vm2kvmd.pipeline.rollback import Rollback
from vm2kvmd.sources.vmware.paths import local_resolver
from vm2kvmd.sources.vmware.vmdk import load_chain

STATIC_MAC = "00:50:56:3a:7e:10"
GENERATED_MAC = "00:0c:29:9a:4b:31"


@dataclass
class SourceVm:
    vmx: Path
    dir: Path
    disks: list[Path]  # the VMDK each scsi0:N names (a delta for the first disk)
    bios_uuid: str


def _vmware_uuid(value: str) -> str:
    h = value.replace("-", "")
    pairs = [h[i : i + 2] for i in range(0, 32, 2)]
    return " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])


def write_source_vm(directory: Path, disks: Sequence[Path], *, bios_uuid: str | None = None) -> SourceVm:
    """A Workstation-style VMX naming ``disks`` on scsi0 and two NICs (nat + a named network)."""
    bios_uuid = bios_uuid or str(uuid.uuid4())
    lines = [
        '.encoding = "UTF-8"',
        'config.version = "8"',
        'virtualHW.version = "19"',
        'displayName = "Pipeline Test"',
        'guestOS = "debian12-64"',
        'numvcpus = "1"',
        'memsize = "256"',
        f'uuid.bios = "{_vmware_uuid(bios_uuid)}"',
        'scsi0.present = "TRUE"',
        'scsi0.virtualDev = "lsilogic"',
    ]
    for unit, disk in enumerate(disks):
        lines += [f'scsi0:{unit}.present = "TRUE"', f'scsi0:{unit}.fileName = "{disk.name}"']
    lines += [
        'ethernet0.present = "TRUE"',
        'ethernet0.connectionType = "nat"',
        'ethernet0.virtualDev = "e1000"',
        'ethernet0.addressType = "generated"',
        f'ethernet0.generatedAddress = "{GENERATED_MAC}"',
        'ethernet1.present = "TRUE"',
        'ethernet1.connectionType = "bridged"',
        'ethernet1.networkName = "VM Network"',
        'ethernet1.virtualDev = "vmxnet3"',
        'ethernet1.addressType = "static"',
        f'ethernet1.address = "{STATIC_MAC}"',
    ]
    vmx = directory / "Pipeline Test.vmx"
    vmx.write_text("\n".join(lines) + "\n")
    return SourceVm(vmx, directory, list(disks), bios_uuid)


@pytest.fixture
def source_vm(tmp_path: Path) -> SourceVm:
    """Two disks: a snapshot chain (base + delta) and a monolithicFlat data disk."""
    directory = tmp_path / "Pipeline Test"
    directory.mkdir()
    base = make_vmdk(directory, "system", "monolithicSparse", 64 * MiB)
    top = make_delta(directory, "system-000001", base)
    data = make_vmdk(directory, "data", "monolithicFlat", 32 * MiB)
    return write_source_vm(directory, [top, data])


def _options(pool: DirPool | None, name: str, network: str, **kw: Any) -> MigrateOptions:
    return MigrateOptions(
        name=name,
        pool=pool.name if pool else None,
        networks=(("nat", network), ("VM Network", network)),
        domain_type="qemu",
        **kw,
    )


@pytest.fixture
def cleanup_domain(libvirt_conn: Any, domain_name: str) -> Iterator[str]:
    yield domain_name
    with contextlib.suppress(libvirt.libvirtError):
        remove_domain(libvirt_conn, domain_name)


def _pool_volumes(pool: DirPool) -> list[str]:
    return pool.volume_names()


def _domain_names(conn: Any) -> set[str]:
    return {d.name() for d in conn.listAllDomains(0)}


def _qemu_img_children() -> set[int]:
    found = set()
    for pid in child_pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "qemu-img":
                found.add(pid)
        except OSError:
            pass
    return found


# --- success ---------------------------------------------------------------------


async def test_migrate_into_pool(
    source_vm: SourceVm, dir_pool: DirPool, test_network: str, cleanup_domain: str, libvirt_conn: Any
) -> None:
    before = sha256_tree(source_vm.dir)
    events = RecordingEvents()
    result = await run_migration(str(source_vm.vmx), _options(dir_pool, cleanup_domain, test_network), events)

    assert result.domain_name == cleanup_domain
    assert result.domain_uuid == source_vm.bios_uuid
    dom = libvirt_conn.lookupByName(cleanup_domain)
    assert dom.UUIDString() == source_vm.bios_uuid
    assert sorted(domain_macs(libvirt_conn, cleanup_domain)) == sorted([GENERATED_MAC, STATIC_MAC])
    root = ET.fromstring(dom.XMLDesc(0))
    assert [s.get("network") for s in root.iterfind("devices/interface/source")] == [test_network] * 2
    disk_files = [s.get("file") for s in root.iterfind("devices/disk[@device='disk']/source")]
    assert disk_files == list(result.outputs)

    assert _pool_volumes(dir_pool) == sorted(Path(p).name for p in result.outputs)
    for src, out, size in zip(source_vm.disks, result.outputs, (64 * MiB, 32 * MiB), strict=True):
        info = await qemu_img.info(out)
        assert info["format"] == "qcow2"
        assert info["virtual-size"] == size
        assert images_equal(src, Path(out), fmt_a="vmdk", fmt_b="qcow2")
    assert sha256_tree(source_vm.dir) == before

    assert events.phases == ["inspect", "prepare", "copy", "define"]
    assert [d.key for d in events.announced] == ["scsi0:0", "scsi0:1"]
    assert [d.target for d in events.announced] == list(result.outputs)
    for index, disk in enumerate(events.announced):
        seen = events.progress[index]
        assert all(total == disk.total for _, total in seen)
        done = [d for d, _ in seen]
        assert done == sorted(done) and done[0] == 0 and done[-1] == disk.total
    # The total is what qemu-img measure says the copy needs.
    chain = await in_thread(lambda: load_chain(str(source_vm.disks[0]), local_resolver(str(source_vm.dir))))
    assert events.announced[0].total == await qemu_img.measure(source_blockdev(chain), "qcow2")


async def test_migrate_to_output_dir(source_vm: SourceVm, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = sha256_tree(source_vm.dir)
    events = RecordingEvents()
    options = MigrateOptions(name="exported", output_dir=str(out), format="raw", domain_type="qemu")
    result = await run_migration(str(source_vm.vmx), options, events)

    assert result.domain_name is None
    xml_path = out / "exported.xml"
    assert result.outputs == (str(out / "exported-disk1.img"), str(out / "exported-disk2.img"), str(xml_path))
    assert xml_path.read_text() == result.domain_xml
    root = ET.fromstring(result.domain_xml)
    assert root.findtext("name") == "exported"
    assert [s.get("file") for s in root.iterfind("devices/disk[@device='disk']/source")] == list(
        result.outputs[:2]
    )
    for src, img in zip(source_vm.disks, result.outputs[:2], strict=True):
        assert images_equal(src, Path(img), fmt_a="vmdk", fmt_b="raw")
    assert sha256_tree(source_vm.dir) == before
    assert events.phases == ["inspect", "prepare", "copy", "define"]

    # A second run into the same directory refuses before writing anything.
    again = RecordingEvents()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(source_vm.vmx), options, again)
    assert exc.value.code is ErrorCode.VOLUME_EXISTS
    assert "copy" not in again.phases
    assert sorted(p.name for p in out.iterdir()) == [
        "exported-disk1.img",
        "exported-disk2.img",
        "exported.xml",
    ]


async def test_taken_uuid_gets_a_new_one(
    source_vm: SourceVm,
    dir_pool: DirPool,
    test_network: str,
    cleanup_domain: str,
    libvirt_conn: Any,
) -> None:
    holder = cleanup_domain + "-holder"
    libvirt_conn.defineXML(
        f"<domain type='qemu'><name>{holder}</name><uuid>{source_vm.bios_uuid}</uuid>"
        "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
    )
    try:
        result = await run_migration(
            str(source_vm.vmx), _options(dir_pool, cleanup_domain, test_network), RecordingEvents()
        )
        assert result.domain_uuid != source_vm.bios_uuid
        assert libvirt_conn.lookupByName(cleanup_domain).UUIDString() == result.domain_uuid
        assert any("is taken" in str(n) for n in result.notes)
    finally:
        remove_domain(libvirt_conn, holder)


# --- refusals before anything is written -------------------------------------------------


async def test_existing_domain_name_is_refused_before_any_volume(
    source_vm: SourceVm, dir_pool: DirPool, test_network: str, cleanup_domain: str, libvirt_conn: Any
) -> None:
    other_uuid = str(uuid.uuid4())
    libvirt_conn.defineXML(
        f"<domain type='qemu'><name>{cleanup_domain}</name><uuid>{other_uuid}</uuid>"
        "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
    )
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(source_vm.vmx), _options(dir_pool, cleanup_domain, test_network), events)
    assert exc.value.code is ErrorCode.DOMAIN_EXISTS
    assert cleanup_domain in exc.value.message
    assert "--name" in str(exc.value)
    assert _pool_volumes(dir_pool) == []
    assert "copy" not in events.phases and "cleanup" not in events.phases
    assert libvirt_conn.lookupByName(cleanup_domain).UUIDString() == other_uuid  # untouched


async def test_missing_pool(
    source_vm: SourceVm, test_network: str, domain_name: str, libvirt_conn: Any
) -> None:
    options = MigrateOptions(
        name=domain_name, pool="vm2kvm-no-such-pool", networks=(("nat", test_network),), domain_type="qemu"
    )
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(source_vm.vmx), options, RecordingEvents())
    assert exc.value.code is ErrorCode.POOL_NOT_FOUND
    assert "vm2kvm-no-such-pool" in exc.value.message
    assert domain_name not in _domain_names(libvirt_conn)


async def test_missing_network(
    source_vm: SourceVm, dir_pool: DirPool, test_network: str, domain_name: str
) -> None:
    options = MigrateOptions(
        name=domain_name,
        pool=dir_pool.name,
        networks=(("nat", test_network), ("VM Network", "vm2kvm-no-such-net")),
        domain_type="qemu",
    )
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(source_vm.vmx), options, RecordingEvents())
    assert exc.value.code is ErrorCode.NETWORK_NOT_FOUND
    assert exc.value.key == "ethernet1"
    assert "vm2kvm-no-such-net" in exc.value.message
    assert _pool_volumes(dir_pool) == []


async def test_existing_volume(
    source_vm: SourceVm, dir_pool: DirPool, test_network: str, domain_name: str
) -> None:
    # A file libvirt has not seen yet (no refresh): still refused, still not touched.
    squatter = dir_pool.path / f"{domain_name}-disk2.qcow2"
    squatter.write_bytes(b"mine")
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(
            str(source_vm.vmx), _options(dir_pool, domain_name, test_network), RecordingEvents()
        )
    assert exc.value.code is ErrorCode.VOLUME_EXISTS
    assert squatter.read_bytes() == b"mine"
    assert _pool_volumes(dir_pool) == [squatter.name]


async def test_missing_disk_fails_with_its_problem(
    source_vm: SourceVm, dir_pool: DirPool, test_network: str, domain_name: str
) -> None:
    for part in source_vm.dir.glob("data*"):
        part.unlink()
    # Inspection still works and shows the hole.
    with LibvirtHost("qemu:///system") as host:
        inspected = await asyncio.to_thread(
            inspect_source, str(source_vm.vmx), _options(dir_pool, domain_name, test_network), host
        )
    disk = inspected.to_json()["disks"][1]
    assert disk["missing"] is True and disk["problem"]
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(
            str(source_vm.vmx), _options(dir_pool, domain_name, test_network), RecordingEvents()
        )
    assert exc.value.code is ErrorCode(disk["problem_code"])
    assert str(exc.value).startswith("disk scsi0:1: ")
    assert disk["problem"] in str(exc.value)
    assert _pool_volumes(dir_pool) == []


@pytest.fixture
def small_pool(libvirt_conn: Any, tmp_path: Path) -> Iterator[DirPool]:
    """A pool on an 8 MiB tmpfs."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with DirPool(libvirt_conn, parent_dir=mnt) as pool:
            yield pool
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


async def test_not_enough_space(
    source_vm: SourceVm, small_pool: DirPool, test_network: str, domain_name: str
) -> None:
    # Preallocated raw files take their whole capacity: 64 + 32 MiB.
    options = _options(small_pool, domain_name, test_network, format="raw", allocation="preallocated")
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(source_vm.vmx), options, events)
    assert exc.value.code is ErrorCode.NO_SPACE
    assert small_pool.name in exc.value.message and "96.0 MiB (100663296 bytes)" in exc.value.message
    assert "--allocation sparse" in str(exc.value)
    assert _pool_volumes(small_pool) == []
    assert "copy" not in events.phases


# --- failures half-way are rolled back ----------------------------------------------


async def test_read_error_while_copying_leaves_nothing(
    tmp_path: Path, dir_pool: DirPool, test_network: str, cleanup_domain: str, libvirt_conn: Any
) -> None:
    directory = tmp_path / "vm"
    directory.mkdir()
    good = make_vmdk(directory, "good", "monolithicSparse", 16 * MiB)
    bad = make_unreadable_vmdk(directory, "bad.vmdk", 32 * MiB)
    vm = write_source_vm(directory, [good, bad])
    before = sha256_tree(directory)
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(vm.vmx), _options(dir_pool, cleanup_domain, test_network), events)
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert exc.value.file == str(bad)
    # Both disks were being copied (in parallel); both volumes are gone.
    assert 0 in events.progress and 1 in events.progress
    assert events.phases[-1] == "cleanup"
    assert sum("removed volume" in line for line in events.logs) == 2
    assert _pool_volumes(dir_pool) == []
    assert list(dir_pool.path.iterdir()) == []
    assert cleanup_domain not in _domain_names(libvirt_conn)
    assert sha256_tree(directory) == before


async def test_cancel_while_copying_leaves_nothing(
    tmp_path: Path, dir_pool: DirPool, test_network: str, cleanup_domain: str, libvirt_conn: Any
) -> None:
    directory = tmp_path / "vm"
    directory.mkdir()
    small = make_vmdk(directory, "small", "monolithicSparse", 16 * MiB)
    # The factory's disks hold a few 4 KiB regions; this one is mostly data, so copying takes a while.
    big = make_filled_vmdk(directory, "big.vmdk", 512 * MiB, writes=[(0, 384 * MiB, 0xAB)])
    vm = write_source_vm(directory, [small, big])
    before = sha256_tree(directory)

    started = asyncio.Event()

    class CancelOnSecondDisk(RecordingEvents):
        def disk_progress(self, index: int, done: int, total: int) -> None:
            super().disk_progress(index, done, total)
            if index == 1 and done > 0:
                started.set()

    events = CancelOnSecondDisk()
    task = asyncio.create_task(
        run_migration(str(vm.vmx), _options(dir_pool, cleanup_domain, test_network), events)
    )
    await started.wait()
    assert _qemu_img_children()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _qemu_img_children()
    assert events.phases[-1] == "cleanup"
    assert _pool_volumes(dir_pool) == []
    assert list(dir_pool.path.iterdir()) == []
    assert cleanup_domain not in _domain_names(libvirt_conn)
    assert sha256_tree(directory) == before


async def test_cancel_before_copy_leaves_nothing(
    source_vm: SourceVm, dir_pool: DirPool, test_network: str, cleanup_domain: str, libvirt_conn: Any
) -> None:
    """Cancelled right after the volumes were created, before qemu-img starts: they are removed."""

    class CancelOnCopy(RecordingEvents):
        def phase(self, name: str) -> None:
            super().phase(name)
            if name == "copy":
                task.cancel()

    events = CancelOnCopy()
    task = asyncio.create_task(
        run_migration(str(source_vm.vmx), _options(dir_pool, cleanup_domain, test_network), events)
    )
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events.phases == ["inspect", "prepare", "copy", "cleanup"]
    assert _pool_volumes(dir_pool) == []
    assert cleanup_domain not in _domain_names(libvirt_conn)


# --- inspection -------------------------------------------------------------------------


def test_inspect_to_json(source_vm: SourceVm, dir_pool: DirPool, test_network: str, domain_name: str) -> None:
    with LibvirtHost("qemu:///system") as host:
        result = inspect_source(str(source_vm.vmx), _options(dir_pool, domain_name, test_network), host)
    data = result.to_json()
    json.dumps(data)  # JSON-ready
    assert data["name"] == domain_name
    assert data["uuid"] == source_vm.bios_uuid
    assert data["firmware"] == "bios"
    assert data["osinfo"] == "http://debian.org/debian/12"  # from guestOS debian12-64
    assert "Migrated by vm2kvm from VMware VMX " in data["domain_xml"]
    assert data["memory"]["size_mib"] == 256
    assert [d["key"] for d in data["disks"]] == ["scsi0:0", "scsi0:1"]
    first, second = data["disks"]
    assert first["virtual_size"] == 64 * MiB and second["virtual_size"] == 32 * MiB
    assert first["chain"] == [str(source_vm.disks[0]), str(source_vm.dir / "system.vmdk")]
    assert second["create_type"] == "monolithicFlat"
    assert first["target"]["path"] == str(dir_pool.path / f"{domain_name}-disk1.qcow2")
    assert [n["mac"] for n in data["nics"]] == [GENERATED_MAC, STATIC_MAC]
    assert [n["network"] for n in data["nics"]] == ["nat", "VM Network"]
    assert [n["target"]["name"] for n in data["nics"]] == [test_network, test_network]
    assert data["domain_xml"] == result.domain_xml
    assert all(isinstance(n, str) for n in data["notes"])


def test_inspect_with_missing_pool_uses_a_placeholder(source_vm: SourceVm, libvirt_conn: Any) -> None:
    libvirt_conn.current()  # a libvirtd answers
    with LibvirtHost("qemu:///system") as host:
        result = inspect_source(str(source_vm.vmx), MigrateOptions(pool="vm2kvm-no-such-pool"), host)
    assert result.plan.disks[0].target_path.startswith("/var/lib/libvirt/images/")
    assert any("vm2kvm-no-such-pool" in str(n) for n in result.notes)


def test_inspect_without_libvirt(source_vm: SourceVm, tmp_path: Path) -> None:
    with LibvirtHost(f"qemu:///system?socket={tmp_path}/none") as host:
        result = inspect_source(str(source_vm.vmx), MigrateOptions(), host)
    assert any("cannot connect to libvirt" in str(n) for n in result.notes)
    assert len(result.plan.disks) == 2


async def test_cancel_waits_for_the_worker_thread_so_rollback_sees_its_work() -> None:
    """A thread cannot be stopped: ``in_thread`` lets it finish before the cancel propagates."""
    rollback = Rollback()
    undone: list[str] = []
    entered = threading.Event()

    def create() -> None:
        entered.set()
        time.sleep(0.3)  # libvirt creating a volume
        rollback.add("volume x", lambda: undone.append("x"))

    task = asyncio.create_task(in_thread(create))
    await asyncio.to_thread(entered.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rollback.pending  # recorded before the cancel reached us
    assert await asyncio.to_thread(rollback.run) == ["removed volume x"]
    assert undone == ["x"]


async def test_output_dir_failure_removes_what_it_created(tmp_path: Path) -> None:
    directory = tmp_path / "vm"
    directory.mkdir()
    good = make_vmdk(directory, "good", "monolithicSparse", 16 * MiB)
    bad = make_unreadable_vmdk(directory, "bad.vmdk", 32 * MiB)
    vm = write_source_vm(directory, [good, bad])
    out = tmp_path / "new-dir"  # created by the run, so removed by the rollback
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(vm.vmx), MigrateOptions(output_dir=str(out)), events)
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert not out.exists()
    assert events.logs[-1] == f"removed directory {out}"


@pytest.mark.parametrize("kind", ["file", "no-parent"])
async def test_unusable_output_dir(source_vm: SourceVm, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("not a directory")
    else:
        out = tmp_path / "missing" / "out"
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(source_vm.vmx), MigrateOptions(output_dir=str(out)), RecordingEvents())
    assert exc.value.code is ErrorCode.INVALID_OPTION
    assert exc.value.key == "output-dir"


@dataclass
class AllocationCheckingEvents(RecordingEvents):
    """Also reads the target's allocation at every progress report."""

    targets: list[str] = field(default_factory=list)
    on_disk: list[tuple[int, int]] = field(default_factory=list)  # (reported done, allocated now)

    def disks(self, items: Sequence[DiskProgress]) -> None:
        super().disks(items)
        self.targets = [item.target for item in items]

    def disk_progress(self, index: int, done: int, total: int) -> None:
        super().disk_progress(index, done, total)
        if done < total:  # the final report is the total by definition
            self.on_disk.append((done, Path(self.targets[index]).stat().st_blocks * 512))


@pytest.mark.allow_blocking  # the event sink stats the target at each report
async def test_progress_counts_bytes_written_not_disk_walked(
    tmp_path: Path, dir_pool: DirPool, test_network: str, cleanup_domain: str
) -> None:
    # 512 MiB whose only data are the last 96 MiB: qemu-img's percentage reaches
    # ~80% before it writes anything; the bytes reported must not.
    directory = tmp_path / "Tail Data"
    directory.mkdir()
    disk = make_filled_vmdk(directory, "tail.vmdk", 512 * MiB, writes=[(416 * MiB, 96 * MiB, 0x5C)])
    source = write_source_vm(directory, [disk])
    events = AllocationCheckingEvents()
    await run_migration(str(source.vmx), _options(dir_pool, cleanup_domain, test_network), events)
    assert events.on_disk, "no intermediate progress was reported"
    for done, allocated in events.on_disk:
        assert done <= allocated, events.on_disk
    reports = events.progress[0]
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    assert reports[-1][0] == reports[-1][1]
