"""Migrations through the whole product: vm2kvmctl → D-Bus → vm2kvmd → qemu-img + libvirtd.

Every test checks the source VM directory byte for byte before and after.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from testbed.disks import make_unreadable_vmdk
from testbed.services import DirPool
from tests.e2e.support import DaemonProcess, VmxDisk, VmxNic, ctl, vmware_uuid, write_vmx
from tests.helpers.vmdk_factory import QEMU_SUBFORMATS, images_equal, make_vmdk, qemu_info, sha256_tree

pytestmark = pytest.mark.libvirt

MiB = 1 << 20


def domain_xml(conn: Any, name: str) -> etree._Element:
    return etree.fromstring(conn.lookupByName(name).XMLDesc(0).encode())


def undefine(conn: Any, name: str) -> None:
    dom = conn.lookupByName(name)
    dom.undefineFlags(0x4)  # VIR_DOMAIN_UNDEFINE_NVRAM


@pytest.mark.parametrize("subformat", QEMU_SUBFORMATS)
def test_every_qemu_subformat_migrates(
    subformat: str,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    disk = make_vmdk(vmdir, "disk", subformat, 48 * MiB)
    bios_uuid = uuid.uuid4()
    vmx = write_vmx(vmdir, "One Disk", [VmxDisk("scsi0:0", disk.name)], uuid=vmware_uuid(bios_uuid))
    before = sha256_tree(vmdir)

    run = ctl(daemon.address, "migrate", str(vmx), "--pool", dir_pool.name, "--name", domain_name)
    assert run.status == 0, run.err
    try:
        # Without a terminal the CLI prints plain lines, in the order things happened.
        lines = [line.split(": ", 1)[1] for line in run.err.splitlines() if line.startswith("job ")]
        order = ["phase copy", "disk scsi0:0 -> ", "copied 100%", "phase define"]
        found = [next(i for i, line in enumerate(lines) if line.startswith(o)) for o in order]
        assert found == sorted(found), lines
        root = domain_xml(libvirt_conn, domain_name)
        target = root.xpath("/domain/devices/disk[@device='disk']/source/@file")
        assert len(target) == 1
        assert Path(target[0]).parent == Path(dir_pool.path)
        assert qemu_info(Path(target[0]))["format"] == "qcow2"
        assert qemu_info(Path(target[0]))["virtual-size"] == 48 * MiB
        assert images_equal(disk, Path(target[0]))
        assert root.xpath("/domain/devices/interface/mac/@address") == ["00:0c:29:aa:bb:01"]
        assert root.xpath("/domain/uuid/text()") == [str(bios_uuid)]
    finally:
        undefine(libvirt_conn, domain_name)
    assert sha256_tree(vmdir) == before


def test_several_disks_and_nics_keep_identity(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    vmdir = tmp_path / "Multi Disk VM"
    vmdir.mkdir()
    disks = [
        VmxDisk("scsi0:0", make_vmdk(vmdir, "system", "twoGbMaxExtentSparse", 64 * MiB).name),
        VmxDisk("scsi0:1", make_vmdk(vmdir, "data", "monolithicFlat", 16 * MiB).name),
        VmxDisk("sata0:0", make_vmdk(vmdir, "logs", "streamOptimized", 32 * MiB).name),
        VmxDisk("nvme0:0", make_vmdk(vmdir, "fast", "monolithicSparse", 24 * MiB).name),
    ]
    nics = [
        VmxNic(0, "00:0c:29:10:20:30", "e1000", "nat"),
        VmxNic(1, "00:50:56:01:02:03", "vmxnet3", "bridged"),
        VmxNic(2, "00:0c:29:10:20:32", "e1000e", "hostonly"),
    ]
    extra = 'sata0:1.present = "TRUE"\nsata0:1.deviceType = "cdrom-raw"\nsata0:1.fileName = "auto detect"\n'
    vmx = write_vmx(vmdir, "Multi Disk VM", disks, nics, extra=extra, vcpus=4, memsize=1536)
    before = sha256_tree(vmdir)

    run = ctl(daemon.address, "migrate", str(vmx), "--pool", dir_pool.name, "--name", domain_name, "--json")
    assert run.status == 0, run.err
    try:
        root = domain_xml(libvirt_conn, domain_name)
        assert root.xpath("/domain/vcpu/text()") == ["4"]
        assert root.xpath("/domain/memory/text()") == [str(1536 * 1024)]
        assert root.xpath("/domain/title/text()") == ["Multi Disk VM"]
        assert root.xpath("/domain/devices/interface/mac/@address") == [n.mac for n in nics]
        sources = root.xpath("/domain/devices/disk[@device='disk']/source/@file")
        assert len(sources) == 4
        for vmx_disk, target in zip(disks, sources, strict=True):
            assert images_equal(vmdir / vmx_disk.file_name, Path(target)), vmx_disk
        assert len(root.xpath("/domain/devices/disk[@device='cdrom']")) == 1
        # The pool lists exactly our four volumes, refreshed.
        pool = libvirt_conn.storagePoolLookupByName(dir_pool.name)
        assert sorted(pool.listVolumes()) == sorted(Path(s).name for s in sources)
        # The JSON result names the domain and the outputs.
        text = run.out
        assert domain_name in text
        for s in sources:
            assert s in text
    finally:
        undefine(libvirt_conn, domain_name)
    assert sha256_tree(vmdir) == before


def test_output_dir_defines_nothing(
    daemon: DaemonProcess, libvirt_conn: Any, domain_name: str, tmp_path: Path
) -> None:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    disk = make_vmdk(vmdir, "disk", "monolithicSparse", 16 * MiB)
    vmx = write_vmx(vmdir, "Out Dir", [VmxDisk("sata0:0", disk.name)])
    out = tmp_path / "out"
    out.mkdir()
    before = sha256_tree(vmdir)
    run = ctl(
        daemon.address,
        "migrate",
        str(vmx),
        "--output-dir",
        str(out),
        "--name",
        domain_name,
        "--format",
        "raw",
    )
    assert run.status == 0, run.err
    files = sorted(p.name for p in out.iterdir())
    assert f"{domain_name}.xml" in files
    raw = [out / f for f in files if not f.endswith(".xml")]
    assert len(raw) == 1
    assert qemu_info(raw[0])["format"] == "raw"
    assert images_equal(disk, raw[0])
    xml = etree.parse(str(out / f"{domain_name}.xml")).getroot()
    assert xml.xpath("/domain/devices/disk/source/@file") == [str(raw[0])]
    assert domain_name not in libvirt_conn.listDefinedDomains()
    assert sha256_tree(vmdir) == before


def test_failed_copy_leaves_nothing_behind(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    good = make_vmdk(vmdir, "good", "monolithicSparse", 16 * MiB)
    bad = make_unreadable_vmdk(vmdir, "bad.vmdk")
    vmx = write_vmx(vmdir, "Broken", [VmxDisk("scsi0:0", good.name), VmxDisk("scsi0:1", bad.name)])
    before = sha256_tree(vmdir)
    run = ctl(daemon.address, "migrate", str(vmx), "--pool", dir_pool.name, "--name", domain_name)
    assert run.status != 0
    errors = [line for line in run.err.splitlines() if line.startswith("vm2kvmctl: error:")]
    assert len(errors) == 1, run.err
    assert "bad.vmdk" in errors[0]
    assert "Traceback" not in run.err
    assert domain_name not in libvirt_conn.listDefinedDomains()
    libvirt_conn.storagePoolLookupByName(dir_pool.name).refresh(0)
    assert libvirt_conn.storagePoolLookupByName(dir_pool.name).listVolumes() == []
    assert list(Path(dir_pool.path).iterdir()) == []
    assert sha256_tree(vmdir) == before
    assert daemon.alive


def test_existing_domain_name_fails_before_copying(
    daemon: DaemonProcess, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    disk = make_vmdk(vmdir, "disk", "monolithicSparse", 16 * MiB)
    vmx = write_vmx(vmdir, "Twice", [VmxDisk("scsi0:0", disk.name)])
    assert (
        ctl(daemon.address, "migrate", str(vmx), "--pool", dir_pool.name, "--name", domain_name).status == 0
    )
    try:
        volumes = sorted(libvirt_conn.storagePoolLookupByName(dir_pool.name).listVolumes())
        run = ctl(daemon.address, "migrate", str(vmx), "--pool", dir_pool.name, "--name", domain_name)
        assert run.status != 0
        assert "vm2kvmctl: error: " in run.err
        assert domain_name in run.err and "--name" in run.err
        assert sorted(libvirt_conn.storagePoolLookupByName(dir_pool.name).listVolumes()) == volumes
        # A second copy under a new name gets a fresh UUID: the first one is taken.
        other = domain_name + "-clone"
        assert ctl(daemon.address, "migrate", str(vmx), "--pool", dir_pool.name, "--name", other).status == 0
        try:
            first = domain_xml(libvirt_conn, domain_name).xpath("/domain/uuid/text()")
            second = domain_xml(libvirt_conn, other).xpath("/domain/uuid/text()")
            assert first != second
            args = domain_xml(libvirt_conn, other).xpath(
                "//*[local-name()='commandline']/*[local-name()='arg']/@value"
            )
            assert f"type=1,uuid={first[0]}" in args  # the guest still sees its old UUID
        finally:
            undefine(libvirt_conn, other)
    finally:
        undefine(libvirt_conn, domain_name)
