"""OVA and OVF packages through the whole product: vm2kvmctl → D-Bus → vm2kvmd → qemu-img + libvirtd.

The package directory is checksummed before and after every test, also the
failing ones: the daemon reads the archive in place and never writes it.
"""

from __future__ import annotations

import asyncio
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant
from lxml import etree

from testbed.services import DirPool
from tests.e2e.support import DaemonProcess, ctl
from tests.helpers.ova_factory import OvfDisk, OvfNic, build_ova, manifest_text, ovf_text, write_tar
from tests.helpers.vmdk_factory import images_equal, make_vmdk, qemu_info, sha256_tree
from vm2kvmd.constants import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, error_name
from vm2kvmd.errors import ErrorCode

pytestmark = pytest.mark.libvirt

MiB = 1 << 20
MACS = ("00:50:56:9a:77:01", "00:50:56:9a:77:02")


def make_package(tmp_path: Path) -> tuple[Path, list[OvfDisk], str]:
    """``pkg/web.ova``: two streamOptimized disks, two NICs with MACs, EFI; the disks' originals."""
    staging = tmp_path / "staging"
    disks = [
        OvfDisk(make_vmdk(staging, "web-disk1", "streamOptimized", 48 * MiB)),
        OvfDisk(make_vmdk(staging, "web-disk2", "streamOptimized", 16 * MiB), bus="sata"),
    ]
    ovf = ovf_text(
        "Web Appliance",
        disks,
        [OvfNic(MACS[0]), OvfNic(MACS[1], "Backup", model="E1000")],
        vcpus=2,
        cores_per_socket=2,
        memory_mib=768,
        firmware="efi",
        bios_uuid="42 1a 00 00 9b 1f 2d 4c-8a 11 22 33 44 55 77 01",
    )
    (tmp_path / "pkg").mkdir()
    return build_ova(tmp_path / "pkg" / "web.ova", "web", ovf, disks), disks, ovf


def test_migrate_an_ova(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    ova, disks, _ = make_package(tmp_path)
    before = sha256_tree(ova.parent)
    inspect = ctl(daemon.address, "inspect", str(ova), "--json")
    assert inspect.status == 0, inspect.err
    data = inspect.json()
    assert data["display_name"] == "Web Appliance" and data["firmware"] == "efi"
    assert [d["key"] for d in data["disks"]] == ["scsi0:0", "sata0:0"]

    run = ctl(daemon.address, "migrate", str(ova), "--pool", dir_pool.name, "--name", domain_name)
    assert run.status == 0, run.err
    try:
        # The job's log (in the daemon's): the manifest was checked before converting.
        log = daemon.log.read_text()
        assert "checking 3 files" in log and "manifest: web-disk2.vmdk" in log
        root = etree.fromstring(libvirt_conn.lookupByName(domain_name).XMLDesc(0).encode())
        assert root.xpath("/domain/uuid/text()") == ["421a0000-9b1f-2d4c-8a11-223344557701"]
        assert root.xpath("/domain/vcpu/text()") == ["2"]
        assert root.xpath("/domain/cpu/topology/@cores") == ["2"]
        assert root.xpath("/domain/memory/text()") == [str(768 * 1024)]
        assert root.xpath("/domain/os/@firmware") == ["efi"]
        assert root.xpath("/domain/devices/interface/mac/@address") == list(MACS)
        targets = root.xpath("/domain/devices/disk[@device='disk']/source/@file")
        assert len(targets) == 2
        for disk, target in zip(disks, targets, strict=True):
            assert Path(target).parent == Path(dir_pool.path)
            assert qemu_info(Path(target))["format"] == "qcow2"
            assert images_equal(disk.path, Path(target))
    finally:
        libvirt_conn.lookupByName(domain_name).undefineFlags(0x4)  # VIR_DOMAIN_UNDEFINE_NVRAM
    assert sha256_tree(ova.parent) == before


async def _migrate_call(address: str, source: str, pool: str, name: str) -> Message:
    bus = await MessageBus(bus_address=address).connect()
    try:
        return await bus.call(
            Message(
                destination=BUS_NAME,
                path=MANAGER_PATH,
                interface=MANAGER_IFACE,
                member="Migrate",
                signature="sa{sv}",
                body=[source, {"pool": _s(pool), "name": _s(name)}],
            )
        )
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


def _s(value: str) -> Variant:
    return Variant("s", value)


def _xz(ova: Path) -> None:
    # gzip'd OVAs are extracted by the job (tests/test_ova_compressed.py); xz is refused.
    ova.write_bytes(lzma.compress(ova.read_bytes()))


def _truncate(ova: Path) -> None:
    with tarfile.open(ova) as tar:
        disk = tar.getmember("web-disk1.vmdk")
    with ova.open("r+b") as f:
        f.truncate(disk.offset_data + disk.size // 2)


def _drop_member(ova: Path) -> None:
    kept: list[tuple[str, bytes | Path]] = []
    with tarfile.open(ova) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member)
            if data is not None and member.name != "web-disk2.vmdk":
                kept.append((member.name, data.read()))
    write_tar(ova, kept)


def _garbage_ovf(ova: Path) -> Path:
    ovf = ova.with_suffix(".ovf")
    ovf.write_text("<?xml version='1.0'?>\n<Envelope><unclosed>")
    return ovf


REFUSED: dict[str, tuple[Callable[[Path], Path | None], ErrorCode, tuple[str, ...]]] = {
    "xz-compressed OVA": (_xz, ErrorCode.INVALID_SOURCE, ("compressed with xz",)),
    "truncated OVA": (_truncate, ErrorCode.INVALID_SOURCE, ("truncated", "web-disk1.vmdk")),
    "missing member": (_drop_member, ErrorCode.DISK_MISSING, ("sata0:0", "no member 'web-disk2.vmdk'")),
    "garbage .ovf": (_garbage_ovf, ErrorCode.INVALID_SOURCE, ("not an XML document",)),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_packages_are_refused_with_a_named_error(
    case: str, daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    damage, code, mentions = REFUSED[case]
    ova, _, _ = make_package(tmp_path)
    source = damage(ova) or ova
    before = sha256_tree(ova.parent)
    try:
        reply = asyncio.run(_migrate_call(daemon.address, str(source), dir_pool.name, domain_name))
        assert reply.message_type == MessageType.ERROR, reply.body
        assert reply.error_name == error_name(code), reply.body
        for word in (str(source), *mentions):
            assert word in reply.body[0], reply.body[0]
        run = ctl(daemon.address, "migrate", str(source), "--pool", dir_pool.name, "--name", domain_name)
        assert run.status == 1
        assert [line for line in run.err.splitlines() if line.startswith("vm2kvmctl: error:")], run.err
        assert "Traceback" not in run.err
        assert domain_name not in libvirt_conn.listDefinedDomains()
        assert dir_pool.volume_names() == [] and list(Path(dir_pool.path).iterdir()) == []
        assert daemon.alive
    finally:
        assert sha256_tree(ova.parent) == before


def test_a_bad_manifest_fails_the_job_and_leaves_nothing(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    ova, disks, ovf = make_package(tmp_path)
    members: list[tuple[str, bytes | Path]] = [("web.ovf", ovf.encode()), *((d.name, d.path) for d in disks)]
    text = manifest_text(members)
    line = next(ln for ln in text.splitlines() if "web-disk2" in ln)
    members.append(("web.mf", text.replace(line, line.split("= ")[0] + "= " + "0" * 64).encode()))
    write_tar(ova, members)
    before = sha256_tree(ova.parent)
    try:
        run = ctl(
            daemon.address, "migrate", str(ova), "--pool", dir_pool.name, "--name", domain_name, "--json"
        )
        assert run.status == 1, run.out
        assert "web-disk2.vmdk" in run.err and "web.mf" in run.err, run.err
        jobs = ctl(daemon.address, "jobs", "--json").json()
        failed = [j for j in jobs if j.get("source") == str(ova)]
        assert failed and failed[-1]["error"]["name"] == error_name(ErrorCode.MANIFEST_MISMATCH)
        assert domain_name not in libvirt_conn.listDefinedDomains()
        assert dir_pool.volume_names() == [] and list(Path(dir_pool.path).iterdir()) == []
    finally:
        assert sha256_tree(ova.parent) == before
