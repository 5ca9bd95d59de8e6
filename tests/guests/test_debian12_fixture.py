"""The Debian 12 fixture guest is set up the VMware-era "hard way" the boot tests rely on."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from lxml import etree

from testbed.guests.boot import boot_xml, parse_probe
from testbed.guests.debian12 import (
    FORBIDDEN_INITRAMFS_MODULES,
    DebianGuest,
    as_first_disk,
    debian_mirror,
    initramfs_modules,
)
from tests.guests.fixtures import GUEST_BUILD_TIMEOUT
from vm2kvmd.sources import load_source


@pytest.mark.slow
@pytest.mark.slow_guest
@pytest.mark.timeout(GUEST_BUILD_TIMEOUT)
def test_image_is_configured_the_vmware_way(debian12_guest: DebianGuest) -> None:
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            g.set_backend("direct")
            g.set_backend_settings(["force_tcg"])
            g.add_drive_opts(str(debian12_guest.disk), format="vmdk", readonly=True)
            g.launch()  # the one appliance launch of this test
            assert g.list_partitions() == ["/dev/sda1"]
            assert g.vfs_type("/dev/sda1") == "ext4"
            g.mount_ro("/dev/sda1", "/")
            fstab = g.cat("/etc/fstab")
            grub_cfg = g.cat("/boot/grub/grub.cfg")
            default_grub = g.cat("/etc/default/grub")
            interfaces = g.cat("/etc/network/interfaces")
            hostname = g.cat("/etc/hostname")
            dpkg_status = g.cat("/var/lib/dpkg/status")
            initrds = [p for p in g.ls("/boot") if p.startswith("initrd.img-")]
            assert len(initrds) == 1, initrds
            initrd = Path(tmp) / initrds[0]
            g.download(f"/boot/{initrds[0]}", str(initrd))
            probe_enabled = g.is_symlink("/etc/systemd/system/multi-user.target.wants/vm2kvm-probe.service")
            tools_enabled = g.is_symlink("/etc/systemd/system/multi-user.target.wants/open-vm-tools.service")
            udev_rules = g.ls("/etc/udev/rules.d") if g.is_dir("/etc/udev/rules.d") else []
            g.umount_all()
            g.shutdown()
        finally:
            g.close()
        modules = initramfs_modules(initrd)

    assert re.search(r"(?m)^/dev/sda1\s+/\s+ext4\s+errors=remount-ro\s+0\s+1$", fstab), fstab
    linux = [line.split() for line in grub_cfg.splitlines() if line.strip().startswith("linux")]
    assert linux and all("root=/dev/sda1" in line for line in linux), grub_cfg
    assert all("console=ttyS0,115200n8" in line for line in linux), grub_cfg
    assert "GRUB_DISABLE_LINUX_UUID=true" in default_grub
    assert "GRUB_DISABLE_OS_PROBER=true" in default_grub
    # The VMware-era initramfs: the SATA and LSI drivers, nothing for virtio.
    assert not set(FORBIDDEN_INITRAMFS_MODULES) & modules, sorted(modules)
    assert {"ahci", "sd_mod", "mptspi", "ext4", "e1000"} <= modules, sorted(modules)
    assert "allow-hotplug ens33" in interfaces and "iface ens33 inet dhcp" in interfaces
    assert hostname.strip() == "vm2kvm-debian12"
    tools = re.search(r"(?ms)^Package: open-vm-tools\n.*?^Status: (.*?)$", dpkg_status)
    assert tools and tools.group(1) == "install ok installed"
    assert probe_enabled and tools_enabled
    # Nothing pins the NIC's name: a new PCI address must give a new name.
    assert not [r for r in udev_rules if "net" in r], udev_rules


@pytest.mark.slow
@pytest.mark.slow_guest
@pytest.mark.timeout(GUEST_BUILD_TIMEOUT)
def test_vmx_loads_with_the_projects_parser(debian12_guest: DebianGuest) -> None:
    vm = load_source(str(debian12_guest.vmx))
    assert vm.display_name == "vm2kvm Debian 12"
    assert vm.guest_os == "debian12-64"
    assert vm.notes == (), vm.notes
    assert [(d.path, d.problem) for d in vm.disks] == [(str(debian12_guest.disk), None)]
    assert [(n.mac, n.address_type, n.pci_slot) for n in vm.nics] == [(debian12_guest.mac, "static", 33)]
    assert {p.name for p in debian12_guest.files} == {
        "debian12.vmx",
        "debian12.vmdk",
        "debian12-s001.vmdk",
        "debian12-s002.vmdk",
    }
    assert all(not p.stat().st_mode & 0o222 for p in debian12_guest.files)
    assert debian12_guest.checksums() == debian12_guest.checksums()


def test_mirror_comes_from_the_host_sources() -> None:
    assert debian_mirror().startswith(("http://", "https://"))


def test_probe_report_is_parsed_through_console_noise() -> None:
    console = (
        "[    3.1] random kernel line\r\n"
        "VM2KVM-PROBE start\r\n"
        "VM2KVM-PROBE state degraded\r\n"
        "VM2KVM-PROBE multi-user active\r\n"
        "VM2KVM-PROBE failed-unit ifup@ens33.service\r\n"
        "VM2KVM-PROBE root /dev/sda1 ext4 rw,relatime,errors=remount-ro\r\n"
        "VM2KVM-PROBE root-disk sda\r\n"
        "vm2kvm-debian12 login: VM2KVM-PROBE root-drivers sd ahci\r\n"
        "VM2KVM-PROBE link enp1s0 00:50:56:3a:12:c4 e1000\r\n"
        "VM2KVM-PROBE link ens4 52:54:00:00:00:01 virtio_net\r\n"
        "VM2KVM-PROBE ipv4 ens4 10.0.2.15/24\r\n"
        "VM2KVM-PROBE tools-status ii \r\n"
        "VM2KVM-PROBE vmtoolsd present\r\n"
        "VM2KVM-PROBE tools-unit open-vm-tools.service loaded active\r\n"
        "VM2KVM-PROBE done\r\n"
    )
    result = parse_probe(console, 12.5)
    assert result.state == "degraded" and result.multi_user
    assert result.failed_units == ("ifup@ens33.service",)
    assert (result.root_source, result.root_fstype) == ("/dev/sda1", "ext4")
    assert result.root_driver == "sd" and result.root_drivers == ("sd", "ahci")
    assert result.interfaces == {
        "enp1s0": ("00:50:56:3a:12:c4", []),
        "ens4": ("52:54:00:00:00:01", ["10.0.2.15/24"]),
    }
    assert result.interface_drivers["ens4"] == "virtio_net"
    assert result.tools_installed and result.vmtoolsd_present
    assert result.tools_units == ("open-vm-tools.service loaded active",)
    with pytest.raises(ValueError, match="incomplete"):
        parse_probe(console.replace("VM2KVM-PROBE done", ""))


def test_boot_xml_logs_the_serial_port_and_uses_user_networking(tmp_path: Path) -> None:
    xml = """<domain type='qemu'><name>d</name><devices>
      <interface type='network'><mac address='00:50:56:3a:12:c4'/><source network='default'/>
        <model type='e1000'/><address type='pci' domain='0' bus='2' slot='1' function='0'/></interface>
      <interface type='bridge'><mac address='00:50:56:3a:12:c5'/><source bridge='br0'/>
        <model type='virtio'/></interface>
      <serial type='pty'><target port='0'/></serial><console type='pty'/>
      <graphics type='vnc' port='-1'/>
    </devices></domain>"""
    log = tmp_path / "console.log"
    root = etree.fromstring(boot_xml(xml, log).encode())
    nics = root.findall("devices/interface")
    assert [n.get("type") for n in nics] == ["user", "user"]
    assert root.xpath("devices/interface/mac/@address") == ["00:50:56:3a:12:c4", "00:50:56:3a:12:c5"]
    assert root.xpath("devices/interface/model/@type") == ["e1000", "virtio"]
    assert root.xpath("devices/interface/address/@slot") == ["1"]
    assert not root.xpath("devices/interface/source | devices/graphics")
    assert root.xpath("devices/serial[@type='file']/source/@path") == [str(log)]
    assert root.xpath("devices/console[@type='file']/target/@type") == ["serial"]
    assert root.xpath("seclabel[@model='dac']/label/text()") == ["+0:+0"]


def test_grub_cfg_written_on_another_disk_name_is_made_the_first_disks() -> None:
    # What update-grub wrote in an appliance that named the disk /dev/sdb.
    other = (
        "\tset root='hd1,msdos1'\n"
        "\t  search --no-floppy --fs-uuid --set=root --hint-bios=hd1,msdos1 --hint-efi=hd1,msdos1 "
        "--hint-baremetal=ahci1,msdos1  5d0a4b9e\n"
        "\tlinux\t/boot/vmlinuz-6.1.0-50-amd64 root=/dev/sdb1 ro console=ttyS0,115200n8 quiet\n"
    )
    assert as_first_disk(other, "b") == (
        "\tset root='hd0,msdos1'\n"
        "\t  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 --hint-efi=hd0,msdos1 "
        "--hint-baremetal=ahci0,msdos1  5d0a4b9e\n"
        "\tlinux\t/boot/vmlinuz-6.1.0-50-amd64 root=/dev/sda1 ro console=ttyS0,115200n8 quiet\n"
    )
    assert as_first_disk(other, "a") == other
