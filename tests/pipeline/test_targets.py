"""Targets: sparse and preallocated files in pools and output directories, LVM (logical) pools."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from testbed.services import DirPool, remove_domain, unique_name
from tests.helpers.vmdk_factory import images_equal, sha256_tree
from tests.pipeline.support import MiB, RecordingEvents, allocated, make_disk, qemu_img_children, vm_with
from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning import blockdev as qemu_source
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import inspect_source, preflight, run_migration

DATA = 24 * MiB


@pytest.fixture
def vm(tmp_path: Path) -> Path:
    """One 256 MiB disk with 24 MiB of data in three places."""
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    runs = [(0, 8 * MiB, 0x41), (100 * MiB, 8 * MiB, 0x42), (248 * MiB, 8 * MiB, 0x43)]
    return vm_with(vmdir, [make_disk(vmdir, "disk.vmdk", 256 * MiB, runs, subformat="twoGbMaxExtentSparse")])


@pytest.fixture
def undefine(libvirt_conn: Any, domain_name: str) -> Iterator[str]:
    yield domain_name
    with contextlib.suppress(libvirt.libvirtError):
        remove_domain(libvirt_conn, domain_name)


def _work(tmp_path: Path) -> str:
    return str(tmp_path / "work")


# --- file targets ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
async def test_sparse_targets_take_only_the_data(
    vm: Path, dir_pool: DirPool, undefine: str, tmp_path: Path, fmt: str
) -> None:
    options = MigrateOptions(
        name=undefine, pool=dir_pool.name, format=fmt, domain_type="qemu", work_dir=_work(tmp_path)
    )
    events = RecordingEvents()
    result = await run_migration(str(vm), options, events)
    target = result.outputs[0]
    assert allocated(target) <= DATA * 1.05
    assert images_equal(vm.parent / "disk.vmdk", Path(target), fmt_b=fmt)
    # What the job announced is what was written.
    assert DATA <= events.announced[0].total <= DATA * 1.05
    assert abs(allocated(target) - events.announced[0].total) < MiB


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
async def test_preallocated_pool_volumes_take_their_capacity(
    vm: Path, dir_pool: DirPool, undefine: str, tmp_path: Path, fmt: str
) -> None:
    options = MigrateOptions(
        name=undefine,
        pool=dir_pool.name,
        format=fmt,
        allocation="preallocated",
        domain_type="qemu",
        work_dir=_work(tmp_path),
    )
    events = RecordingEvents()
    result = await run_migration(str(vm), options, events)
    target = result.outputs[0]
    assert allocated(target) >= 256 * MiB
    assert images_equal(vm.parent / "disk.vmdk", Path(target), fmt_b=fmt)
    # Progress counts the bytes qemu-img wrote (the allocation does not grow): monotonic, to the total.
    done = [d for d, _ in events.progress[0]]
    assert done == sorted(done) and done[-1] == events.announced[0].total
    assert events.announced[0].total < 32 * MiB
    assert options.to_mapping()["allocation"] == "preallocated"


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
async def test_preallocated_output_files(vm: Path, tmp_path: Path, fmt: str) -> None:
    options = MigrateOptions(
        name="pre",
        output_dir=str(tmp_path / "out"),
        format=fmt,
        allocation="preallocated",
        work_dir=_work(tmp_path),
    )
    result = await run_migration(str(vm), options, RecordingEvents())
    assert allocated(result.outputs[0]) >= 256 * MiB
    assert images_equal(vm.parent / "disk.vmdk", Path(result.outputs[0]), fmt_b=fmt)
    if fmt == "qcow2":
        info = await qemu_img.info(result.outputs[0])
        assert info["format"] == "qcow2"


def test_allocation_option() -> None:
    assert MigrateOptions.from_mapping({"allocation": "preallocated"}).allocation == "preallocated"
    assert "allocation" not in MigrateOptions().to_mapping()
    with pytest.raises(Vm2kvmError) as exc:
        MigrateOptions.from_mapping({"allocation": "thick"})
    assert exc.value.key == "allocation"
    from vm2kvmctl.main import build_parser, mapping_options

    args = build_parser().parse_args(["migrate", "/vm.vmx", "--allocation", "preallocated"])
    assert mapping_options(args)["allocation"].value == "preallocated"
    assert "allocation" not in mapping_options(build_parser().parse_args(["migrate", "/vm.vmx"]))


# --- logical (LVM) pools -----------------------------------------------------------------------


def _device_mapper() -> bool:
    """Whether the kernel can activate logical volumes (this container's kernel cannot)."""
    try:
        return "device-mapper" in Path("/proc/misc").read_text()
    except OSError:
        return False


@dataclass
class LogicalPool:
    name: str
    vg: str
    loop: str
    path: str  # /dev/<vg>
    pool: Any


def _losetup(image: Path) -> str:
    proc = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"no loop device here: {proc.stderr.strip()}")
    return proc.stdout.strip()


@pytest.fixture
def logical_pool(libvirt_conn: Any, tmp_path: Path) -> Iterator[LogicalPool]:
    """A libvirt ``logical`` pool on a fresh volume group on a 64 MiB loop device; all removed after."""
    if shutil.which("vgcreate") is None:
        pytest.skip("lvm2 is not installed")
    image = tmp_path / "pv.img"
    with image.open("wb") as f:
        f.truncate(64 * MiB)
    loop = _losetup(image)
    name = unique_name("lvm")
    vg = "vm2kvmtest" + secrets.token_hex(3)
    xml = (
        f"<pool type='logical'><name>{name}</name>"
        f"<source><device path='{loop}'/><name>{vg}</name><format type='lvm2'/></source>"
        f"<target><path>/dev/{vg}</path></target></pool>"
    )
    pool = None
    try:
        pool = libvirt_conn.storagePoolDefineXML(xml, 0)
        pool.build(0)
        pool.create(0)
        yield LogicalPool(name, vg, loop, f"/dev/{vg}", pool)
    finally:
        if pool is not None:
            with contextlib.suppress(libvirt.libvirtError):
                if pool.isActive():
                    for vol in pool.listAllVolumes(0):
                        vol.delete(0)
                    pool.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                pool.delete(0)  # vgremove + pvremove
            with contextlib.suppress(libvirt.libvirtError):
                pool.undefine()
        subprocess.run(["vgremove", "-f", vg], capture_output=True)
        subprocess.run(["pvremove", "-f", loop], capture_output=True)
        subprocess.run(["losetup", "-d", loop], check=True)


def test_logical_pool_plans_raw_block_volumes(vm: Path, logical_pool: LogicalPool, domain_name: str) -> None:
    options = MigrateOptions(name=domain_name, pool=logical_pool.name, format="qcow2")
    with LibvirtHost("qemu:///system") as host:
        result = inspect_source(str(vm), options, host)
    (disk,) = result.plan.disks
    assert disk.format == "raw" and disk.block
    assert disk.target_path == f"{logical_pool.path}/{domain_name}-disk1"
    assert any("block devices" in str(n) and "raw, not qcow2" in str(n) for n in result.notes)
    xml_disk = ET.fromstring(result.domain_xml).find("devices/disk[@device='disk']")
    assert xml_disk is not None and xml_disk.get("type") == "block"
    assert xml_disk.find("source").get("dev") == disk.target_path  # type: ignore[union-attr]
    assert xml_disk.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    preflight(str(vm), options)  # a logical pool is a usable target


async def test_logical_pool_space_counts_the_whole_capacity(
    vm: Path, logical_pool: LogicalPool, domain_name: str, tmp_path: Path
) -> None:
    """24 MiB of data, but a logical volume takes its 256 MiB capacity: the 60 MiB group is too small."""
    options = MigrateOptions(name=domain_name, pool=logical_pool.name, work_dir=_work(tmp_path))
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(vm), options, events)
    assert exc.value.code is ErrorCode.NO_SPACE
    assert logical_pool.name in exc.value.message
    assert "256.0 MiB (268435456 bytes)" in exc.value.message
    assert "copy" not in events.phases
    assert logical_pool.pool.listVolumes() == []


@pytest.fixture
def small_vm(tmp_path: Path) -> Path:
    vmdir = tmp_path / "small-vm"
    vmdir.mkdir()
    runs = [(0, 2 * MiB, 0x51), (20 * MiB, 2 * MiB, 0x52)]
    return vm_with(vmdir, [make_disk(vmdir, "small.vmdk", 32 * MiB, runs)])


@pytest.mark.skipif(_device_mapper(), reason="the kernel has device-mapper: the real test below runs")
async def test_logical_volume_that_cannot_be_created_leaves_nothing(
    small_vm: Path, logical_pool: LogicalPool, domain_name: str, libvirt_conn: Any, tmp_path: Path
) -> None:
    """Without device-mapper lvcreate fails: the error names the pool, nothing is left."""
    options = MigrateOptions(name=domain_name, pool=logical_pool.name, work_dir=_work(tmp_path))
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(small_vm), options, RecordingEvents())
    assert exc.value.code is ErrorCode.LIBVIRT_ERROR
    assert f"in pool {logical_pool.name!r}" in exc.value.message
    assert logical_pool.pool.listVolumes() == []
    assert domain_name not in {d.name() for d in libvirt_conn.listAllDomains(0)}
    assert list((tmp_path / "work").iterdir()) == []


@pytest.fixture
def stand_in_lvs(
    logical_pool: LogicalPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """Logical volumes without device-mapper: libvirt's volume calls for this pool make a loop
    device full of old data (0xEE) at /dev/<vg>/<name>, the way an LV holds whatever was on the
    disk before.  The real thing when the kernel has device-mapper."""
    if _device_mapper():
        yield []
        return
    made: list[str] = []
    links: list[Path] = []
    real_create, real_delete = LibvirtHost.create_volume, LibvirtHost.delete_volume

    def create_volume(
        self: LibvirtHost, pool: str, name: str, capacity: int, fmt: str | None, *, preallocate: bool = False
    ) -> str:
        if pool != logical_pool.name:
            return real_create(self, pool, name, capacity, fmt, preallocate=preallocate)
        assert fmt is None  # a logical volume has no format
        image = tmp_path / f"lv-{name}.img"
        with image.open("wb") as f:
            f.write(b"\xee" * capacity)
        loop = _losetup(image)
        made.append(loop)
        link = Path(logical_pool.path) / name
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(loop)
        links.append(link)
        return str(link)

    def delete_volume(self: LibvirtHost, pool: str, name: str) -> None:
        if pool != logical_pool.name:
            return real_delete(self, pool, name)
        link = Path(logical_pool.path) / name
        loop = os.path.realpath(link)
        link.unlink()
        subprocess.run(["losetup", "-d", loop], check=True)
        made.remove(loop)

    monkeypatch.setattr(LibvirtHost, "create_volume", create_volume)
    monkeypatch.setattr(LibvirtHost, "delete_volume", delete_volume)
    try:
        yield made
    finally:
        for link in links:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        for loop in made:
            subprocess.run(["losetup", "-d", loop], check=False)
        with contextlib.suppress(OSError):
            Path(logical_pool.path).rmdir()


@pytest.mark.allow_blocking  # the stand-in volumes are made by blocking test code
async def test_a_logical_volume_is_written_whole_zeros_included(
    small_vm: Path,
    logical_pool: LogicalPool,
    stand_in_lvs: list[str],
    undefine: str,
    libvirt_conn: Any,
    tmp_path: Path,
) -> None:
    before = sha256_tree(small_vm.parent)
    options = MigrateOptions(
        name=undefine, pool=logical_pool.name, domain_type="qemu", work_dir=_work(tmp_path), verify=True
    )
    events = RecordingEvents()
    result = await run_migration(str(small_vm), options, events)
    (target,) = result.outputs
    assert "verify" in events.phases  # --verify reads a block-device target too
    # The volume held 0xEE everywhere: only a copy that also wrote the zeros equals the source.
    source = qemu_source.target_node(str(small_vm.parent / "small.vmdk"), "vmdk")
    written = {"driver": "raw", "read-only": True, "file": {"driver": "host_device", "filename": target}}
    assert (await qemu_img.compare(source, written)).identical
    root = ET.fromstring(libvirt_conn.lookupByName(undefine).XMLDesc(0))
    disk = root.find("devices/disk[@device='disk']")
    assert disk is not None and disk.get("type") == "block"
    assert disk.find("source").get("dev") == target  # type: ignore[union-attr]
    # Progress from qemu-img's writes (a block device has no allocation to watch): to the data size.
    done = [d for d, _ in events.progress[0]]
    assert done == sorted(done) and done[-1] == events.announced[0].total == 4 * MiB
    assert sha256_tree(small_vm.parent) == before


@pytest.mark.allow_blocking
async def test_a_failed_copy_to_a_logical_volume_removes_it(
    tmp_path: Path, logical_pool: LogicalPool, stand_in_lvs: list[str], domain_name: str
) -> None:
    from testbed.disks import make_unreadable_vmdk

    vmdir = tmp_path / "bad-vm"
    vmdir.mkdir()
    vmx = vm_with(vmdir, [make_unreadable_vmdk(vmdir, "bad.vmdk", 16 * MiB)])
    options = MigrateOptions(name=domain_name, pool=logical_pool.name, work_dir=_work(tmp_path))
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as exc:
        await run_migration(str(vmx), options, events)
    assert exc.value.code is ErrorCode.COPY_FAILED
    assert any(line.startswith("removed volume") for line in events.logs), events.logs
    assert stand_in_lvs == [] or _device_mapper()
    assert not qemu_img_children()
    assert not (Path(logical_pool.path) / f"{domain_name}-disk1").exists()


def test_snapshots_keep_refuses_a_logical_pool(vm: Path, logical_pool: LogicalPool, domain_name: str) -> None:
    options = MigrateOptions(
        name=domain_name, pool=logical_pool.name, snapshots="keep", guest_conversion=False
    )
    with pytest.raises(Vm2kvmError) as exc:
        preflight(str(vm), options)
    assert exc.value.code is ErrorCode.INVALID_OPTION
    assert exc.value.key == "pool"


def test_rollback_unlinks_a_lost_volume_file_but_never_a_device(tmp_path: Path) -> None:
    """libvirt lost track of a volume (a refresh raced us): a file is ours to remove, a device is not."""
    from vm2kvmd.pipeline.rollback import Rollback

    class LostHost:
        def delete_volume(self, pool: str, name: str) -> None:
            raise Vm2kvmError(ErrorCode.LIBVIRT_ERROR, f"no volume {name} in {pool}")

    stray = tmp_path / "disk1.qcow2"
    stray.write_bytes(b"x")
    rollback = Rollback()
    rollback.volume(LostHost(), "p", "disk1.qcow2", str(stray))  # type: ignore[arg-type]
    rollback.volume(LostHost(), "lvm", "disk2", "/dev/null")  # type: ignore[arg-type]
    lines = rollback.run()
    assert lines[0].startswith("could not remove volume disk2 in pool lvm")
    assert lines[1] == "removed volume disk1.qcow2 in pool p"
    assert not stray.exists() and Path("/dev/null").exists()
