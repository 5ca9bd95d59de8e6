"""Guest inspection on the phony guests: every GuestInfo field, root choice, refusals.

One appliance for the module, on overlays of every base phony image at once
(sda = debian11, sdb = data_only, ...): libguestfs sees each root, and
debian11's fstab line for /dev/sdb1 finds the data disk, as on VMware.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.guests import phony
from tests.guests.phony_fixtures import open_overlays
from vm2kvmd.convert.inspect import (
    inspect_guest,
    mount_guest,
    refuse_unconvertible,
)
from vm2kvmd.core.guest.info import Filesystem, GuestInfo
from vm2kvmd.errors import ErrorCode, Vm2kvmError

DISK_ORDER = ("debian11", "data_only", "ubuntu2004", "rhel8", "sles12", "centos6", "dual_boot")
ROOTS = {
    "debian11": "/dev/sda1",
    "ubuntu2004": "/dev/sdc2",
    "rhel8": "/dev/rhel/root",
    "sles12": "/dev/sde2",
    "centos6": "/dev/sdf2",
    "dual-debian": "/dev/sdg1",
    "dual-rhel": "/dev/sdg2",
}
RHEL_K = "4.18.0-513.5.1.el8_9.x86_64"
RHEL_OLD = "4.18.0-477.10.1.el8_8.x86_64"
VIRTIO = {"virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi", "virtio_rng", "virtio_balloon"}


@pytest.fixture(scope="module")
def appliance(phony_images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    images = [phony_images[name] for name in DISK_ORDER]
    with open_overlays(images, tmp_path_factory.mktemp("inspect")) as g:
        yield g


@pytest.fixture(scope="module")
def inspected(appliance: Any) -> dict[str, Any]:
    g = appliance
    roots = g.inspect_os()
    infos: dict[str, GuestInfo] = {}
    for name, root in ROOTS.items():
        g.umount_all()
        notes = mount_guest(g, root)
        assert notes == [], name
        infos[name] = inspect_guest(g, root)
    g.umount_all()
    return {"roots": roots, "infos": infos}


pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def info(inspected: dict[str, Any], name: str) -> GuestInfo:
    result: GuestInfo = inspected["infos"][name]
    return result


def test_libguestfs_finds_every_root(inspected: dict[str, Any]) -> None:
    assert sorted(inspected["roots"]) == sorted(ROOTS.values())
    assert not any(r.startswith("/dev/sdb") for r in inspected["roots"])  # data_only has no OS


def test_debian11(inspected: dict[str, Any]) -> None:
    d = info(inspected, "debian11")
    assert (d.root, d.os_type, d.distro, d.major, d.minor, d.arch) == (
        "/dev/sda1",
        "linux",
        "debian",
        11,
        9,
        "x86_64",
    )
    assert d.product_name == "11.9"  # libguestfs takes /etc/debian_version when VERSION_ID has no minor
    assert d.hostname == "deb11-vmw"
    assert d.mountpoints == (("/", "/dev/sda1"), ("/data", "/dev/sdb1"))
    assert Filesystem("/dev/sda1", "ext4", phony.DEBIAN11_ROOT_UUID, "debroot") in d.filesystems
    assert any(f.device == "/dev/sda5" and f.fstype == "swap" for f in d.filesystems)
    assert (d.bootloader, d.boot_config) == ("grub2", "/boot/grub/grub.cfg")
    assert [k.version for k in d.kernels] == ["5.10.0-28-amd64", "5.10.0-26-amd64"]
    new, old = d.kernels
    assert (new.vmlinuz, new.initrd) == ("/boot/vmlinuz-5.10.0-28-amd64", "/boot/initrd.img-5.10.0-28-amd64")
    assert old.initrd is None
    assert new.modules >= VIRTIO and {"ahci", "vmw_pvscsi", "e1000"} <= new.modules
    assert new.builtins == frozenset()
    assert d.default_kernel == "5.10.0-28-amd64"
    assert (d.init_system, d.package_format, d.package_manager) == ("systemd", "deb", "apt")
    assert (d.selinux, d.firmware, d.initramfs_tool) == ("absent", "bios", "initramfs-tools")
    assert d.vmware_tools == ("open-vm-tools",)


def test_ubuntu2004(inspected: dict[str, Any]) -> None:
    u = info(inspected, "ubuntu2004")
    assert (u.distro, u.major, u.minor, u.product_name) == ("ubuntu", 20, 4, "Ubuntu 20.04.6 LTS")
    assert u.hostname == "focal-vmw"
    assert u.mountpoints == (("/", "/dev/sdc2"), ("/boot/efi", "/dev/sdc1"))
    assert (
        Filesystem(
            "/dev/sdc1",
            "vfat",
            u.filesystems[[f.device for f in u.filesystems].index("/dev/sdc1")].uuid,
            "UEFI",
        )
        in u.filesystems
    )
    assert (u.bootloader, u.boot_config, u.firmware) == ("grub2", "/boot/grub/grub.cfg", "uefi")
    (k,) = u.kernels
    assert k.version == "5.4.0-150-generic" and k.initrd == "/boot/initrd.img-5.4.0-150-generic"
    assert {"virtio_blk", "virtio_pci", "virtio_net", "virtio_scsi"} <= k.builtins
    assert "virtio_blk" not in k.modules and k.has("virtio_blk")
    assert u.default_kernel == "5.4.0-150-generic"
    assert (u.init_system, u.package_format, u.package_manager, u.initramfs_tool) == (
        "systemd", "deb", "apt", "initramfs-tools",
    )  # fmt: skip
    assert u.vmware_tools == ("open-vm-tools", "open-vm-tools-desktop")
    assert u.selinux == "absent"


def test_rhel8(inspected: dict[str, Any]) -> None:
    r = info(inspected, "rhel8")
    assert (r.distro, r.major, r.minor, r.arch) == ("rhel", 8, 9, "x86_64")
    assert r.product_name == "Red Hat Enterprise Linux 8.9 (Ootpa)"
    assert r.hostname == "rhel8-vmw.example.com"
    assert r.mountpoints == (("/", "/dev/rhel/root"), ("/boot", "/dev/sdd1"))
    assert Filesystem("/dev/sdd1", "ext4", phony.RHEL8_BOOT_UUID, None) in r.filesystems
    assert any(f.device == "/dev/rhel/swap" and f.fstype == "swap" for f in r.filesystems)
    assert (r.bootloader, r.boot_config) == ("grub2", "/boot/grub2/grub.cfg")
    assert [k.version for k in r.kernels] == [RHEL_K, RHEL_OLD]
    assert r.kernels[0].initrd == f"/boot/initramfs-{RHEL_K}.img"
    assert r.kernels[0].modules >= VIRTIO  # from .ko.xz names
    assert r.default_kernel == RHEL_K  # grubenv saved_entry -> BLS entry
    assert (r.init_system, r.package_format, r.package_manager) == ("systemd", "rpm", "dnf")
    assert (r.selinux, r.firmware, r.initramfs_tool) == ("enforcing", "bios", "dracut")
    # No real rpmdb in a phony guest: found through the guest's rpm (the stub), the fallback path.
    assert r.vmware_tools == ("open-vm-tools",)


def test_sles12(inspected: dict[str, Any]) -> None:
    s = info(inspected, "sles12")
    assert (s.distro, s.major, s.minor) == ("sles", 12, 5)
    assert s.product_name == "SUSE Linux Enterprise Server 12 SP5"
    assert s.hostname == "sles12-vmw"
    assert s.mountpoints == (("/", "/dev/sde2"),)
    assert Filesystem("/dev/sde1", "swap", phony.SLES12_SWAP_UUID, None) in s.filesystems
    assert (s.bootloader, s.boot_config) == ("grub2", "/boot/grub2/grub.cfg")
    (k,) = s.kernels
    assert (k.version, k.initrd) == ("4.12.14-122.183-default", "/boot/initrd-4.12.14-122.183-default")
    assert s.default_kernel == k.version
    assert (s.init_system, s.package_format, s.package_manager) == ("systemd", "rpm", "zypper")
    assert (s.selinux, s.firmware, s.initramfs_tool) == ("absent", "bios", "dracut")
    assert s.vmware_tools == ("open-vm-tools",)


def test_centos6(inspected: dict[str, Any]) -> None:
    c = info(inspected, "centos6")
    assert (c.distro, c.major, c.minor, c.product_name) == ("centos", 6, 10, "CentOS release 6.10 (Final)")
    assert c.hostname == "centos6-vmw.example.com"
    assert c.mountpoints == (("/", "/dev/sdf2"), ("/boot", "/dev/sdf1"))
    assert (c.bootloader, c.boot_config) == ("grub-legacy", "/boot/grub/menu.lst")
    (k,) = c.kernels
    assert (k.version, k.initrd) == (
        "2.6.32-754.35.1.el6.x86_64",
        "/boot/initramfs-2.6.32-754.35.1.el6.x86_64.img",
    )
    assert c.default_kernel == k.version
    assert (c.init_system, c.package_format, c.package_manager) == ("upstart", "rpm", "yum")
    assert (c.selinux, c.firmware, c.initramfs_tool) == ("permissive", "bios", "dracut")
    assert c.vmware_tools == ("tarball",)


def test_dual_boot(inspected: dict[str, Any]) -> None:
    deb, rhel = info(inspected, "dual-debian"), info(inspected, "dual-rhel")
    assert (deb.distro, deb.hostname, deb.mountpoints) == ("debian", "dual-debian", (("/", "/dev/sdg1"),))
    assert (rhel.distro, rhel.hostname, rhel.mountpoints) == ("rhel", "dual-rhel", (("/", "/dev/sdg2"),))
    assert rhel.default_kernel == RHEL_K and rhel.selinux == "enforcing"
    assert deb.default_kernel == "5.10.0-28-amd64" and deb.selinux == "absent"


def test_bls_saved_entry_picks_an_older_kernel(appliance: Any) -> None:
    g = appliance
    g.umount_all()
    mount_guest(g, "/dev/rhel/root")
    env = f"# GRUB Environment Block\nsaved_entry={phony.RHEL8_MACHINE_ID}-{RHEL_OLD}\n".ljust(1024, "#")
    g.write("/boot/grub2/grubenv", env.encode())
    try:
        assert inspect_guest(g, "/dev/rhel/root").default_kernel == RHEL_OLD
    finally:
        g.umount_all()


def test_refuse_unconvertible(inspected: dict[str, Any]) -> None:
    from dataclasses import replace

    refuse_unconvertible(info(inspected, "debian11"))
    with pytest.raises(Vm2kvmError) as err:
        refuse_unconvertible(
            replace(info(inspected, "debian11"), os_type="windows", product_name="Windows Server 2019")
        )
    assert err.value.code == ErrorCode.UNSUPPORTED_GUEST and "--no-guest-conversion" in str(err.value)
    with pytest.raises(Vm2kvmError) as err:
        refuse_unconvertible(replace(info(inspected, "debian11"), arch="aarch64"))
    assert err.value.code == ErrorCode.UNSUPPORTED_GUEST and "aarch64" in str(err.value)
