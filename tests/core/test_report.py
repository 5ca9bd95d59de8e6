"""The migration report, from real-world VMX captures and hand-made guest conversions.

The converted case is compared with ``tests/data/report/<case>.json``
(``--regenerate`` rewrites it; review the diff).  The VMX data directory is
machine-specific, so it is written as ``GOLDEN_DIR`` there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.core.vmware.vmx_support import DATA, good_disk
from vm2kvmd.core.guest.info import Change, Conversion, Filesystem, GuestInfo, Kernel
from vm2kvmd.core.guest.linux.caps import caps_for_linux
from vm2kvmd.core.hardware.model import Note, SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions
from vm2kvmd.core.report import build_report, target_device
from vm2kvmd.core.vmware.vmx import parse_vmx
from vm2kvmd.core.vmware.vmx_hardware import build_source_vm
from vm2kvmd.sources.vmware.paths import local_resolver

REPORT_DATA = Path(__file__).resolve().parent.parent / "data" / "report"
GOLDEN_DIR = "/golden/vmx"
OPTS = PlanOptions(
    target_dir="/var/lib/libvirt/images",
    new_uuid="00000000-0000-4000-8000-000000000001",
    networks=(("VM Network", "default"),),
)
VIRTIO = frozenset({"virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi", "virtio_rng", "virtio_balloon"})

# What inspection finds on a RHEL 5.5 web server with VMware Tools from the tarball.
RHEL55 = GuestInfo(
    root="/dev/VolGroup00/LogVol00",
    os_type="linux",
    distro="rhel",
    product_name="Red Hat Enterprise Linux Server release 5.5 (Tikanga)",
    major=5,
    minor=5,
    arch="x86_64",
    hostname="web01.example.com",
    mountpoints=(("/", "/dev/VolGroup00/LogVol00"), ("/boot", "/dev/sda1"), ("/srv", "/dev/sdb1")),
    filesystems=(
        Filesystem("/dev/VolGroup00/LogVol00", "ext3", "3f1b7c2e-5d4a-4f2b-9a6e-1c0d8e7f6a5b"),
        Filesystem("/dev/sda1", "ext3", "9d2c4e6f-8a1b-4c3d-b5e7-0f2a4c6e8b1d", "/boot"),
        Filesystem("/dev/sdb1", "xfs", "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", "srv"),
        Filesystem("/dev/VolGroup00/LogVol01", "swap", "7e6d5c4b-3a29-4187-9654-3210fedcba98"),
    ),
    bootloader="grub-legacy",
    boot_config="/boot/grub/grub.conf",
    kernels=(
        Kernel(
            "2.6.18-194.el5",
            "/boot/vmlinuz-2.6.18-194.el5",
            "/boot/initrd-2.6.18-194.el5.img",
            modules=VIRTIO | {"ahci", "mptspi", "e1000"},
        ),
    ),
    default_kernel="2.6.18-194.el5",
    init_system="sysvinit",
    package_format="rpm",
    package_manager="yum",
    selinux="enforcing",
    vmware_tools=("tarball",),
    initramfs_tool="mkinitrd",
)

CHANGES = (
    Change("vmware-tools", "ran vmware-uninstall-tools.pl", "/usr/bin/vmware-uninstall-tools.pl"),
    Change("initramfs", "rebuilt /boot/initrd-2.6.18-194.el5.img with virtio_blk virtio_pci", None),
    Change("devices", "/etc/fstab: /dev/sda1 -> LABEL=/boot", "/etc/fstab"),
    Change("devices", "/etc/fstab: /dev/sdb1 -> UUID=0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", "/etc/fstab"),
    Change("devices", "/etc/modprobe.conf: scsi_hostadapter mptspi -> virtio_blk", "/etc/modprobe.conf"),
    Change("network", "eth0 pinned to MAC 00:50:56:8a:3c:17", "/etc/sysconfig/network-scripts/ifcfg-eth0"),
    Change("selinux", "relabel at first boot", "/.autorelabel"),
    Change("bootloader", "root=/dev/sda2 -> root=/dev/VolGroup00/LogVol00", "/boot/grub/grub.conf"),
)


def load_vm(name: str) -> SourceVM:
    # The VMDKs of the captures are absent: each disk is given a 1 MiB sparse chain.
    return build_source_vm(
        parse_vmx((DATA / name).read_bytes(), str(DATA / name)), local_resolver(str(DATA)), good_disk()
    )


def converted(vm: SourceVM) -> tuple[DomainPlan, Conversion]:
    caps, notes = caps_for_linux(RHEL55)
    plan = plan_domain(vm, OPTS, caps)
    conversion = Conversion(
        caps=caps,
        guest=RHEL55,
        changes=CHANGES,
        notes=(*notes, Note("VMware Tools were installed from a tarball; removed with its own uninstaller")),
        timings=(("launch", 15.2), ("inspect", 1.31), ("vmware-tools", 0.4), ("initramfs", 6.05)),
    )
    return plan, conversion


def rows(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {row["key"]: (row["source"], row["target"]) for row in report["hardware"]}


def test_converted_rhel55_matches_golden(regenerate: bool) -> None:
    vm = load_vm("esxi-rhel55.vmx")
    plan, conversion = converted(vm)
    report = build_report(vm, plan, conversion, plan.notes)
    text = json.dumps(report, indent=2).replace(str(DATA), GOLDEN_DIR) + "\n"
    golden = REPORT_DATA / "esxi-rhel55-converted.json"
    if regenerate:
        REPORT_DATA.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    elif not golden.exists():
        pytest.fail(f"{golden.name} does not exist; run pytest {__file__} --regenerate", pytrace=False)
    else:
        assert text == golden.read_text(encoding="utf-8"), f"{golden.name} differs; --regenerate and review"


def test_converted_report_sides() -> None:
    vm = load_vm("esxi-rhel55.vmx")
    plan, conversion = converted(vm)
    report = build_report(vm, plan, conversion, plan.notes)
    hw = rows(report)
    assert hw["cpus"] == ("2 vCPUs (2 sockets x 1 core)", "2 vCPUs (2 sockets x 1 core x 1 thread)")
    assert hw["memory"] == ("2048 MiB", "2048 MiB")
    assert hw["disk:scsi0:0"] == (
        "rhel55-web01.vmdk, 1.0 MiB, SCSI lsilogic",
        "vda on virtio, qcow2, 1.0 MiB, /var/lib/libvirt/images/rhel55-web01-disk1.qcow2, boot 1",
    )
    assert hw["nic:ethernet0"] == (
        "00:50:56:8a:3c:17, vmxnet3, network 'VM Network'",
        "00:50:56:8a:3c:17, virtio, network 'default'",
    )
    assert hw["cdrom:ide1:0"] == ("host drive auto detect, not connected at power on", "sda on sata, empty")
    assert hw["rng"] == ("none", "virtio-rng (/dev/urandom)")
    guest = report["guest"]
    assert guest["converted"] is True
    facts = {fact["key"]: fact["value"] for fact in guest["facts"]}
    assert facts["product"] == "Red Hat Enterprise Linux Server release 5.5 (Tikanga)"
    assert facts["kernel"] == (
        "2.6.18-194.el5 (/boot/vmlinuz-2.6.18-194.el5, initramfs /boot/initrd-2.6.18-194.el5.img)"
    )
    assert facts["vmware-tools"] == "tarball"
    assert facts["selinux"] == "enforcing"
    # Mounted file systems in mount order, then swap; the appliance's sdX becomes the target's name.
    assert [(f["mountpoint"], f["device"], f["target_device"], f["type"]) for f in guest["filesystems"]] == [
        ("/", "/dev/VolGroup00/LogVol00", "/dev/VolGroup00/LogVol00", "ext3"),
        ("/boot", "/dev/sda1", "/dev/vda1", "ext3"),
        ("/srv", "/dev/sdb1", "/dev/vdb1", "xfs"),
        (None, "/dev/VolGroup00/LogVol01", "/dev/VolGroup00/LogVol01", "swap"),
    ]
    # Grouped by area, areas in the order the steps ran, changes in the order they were made.
    assert [(g["area"], len(g["changes"])) for g in report["changes"]] == [
        ("vmware-tools", 1),
        ("initramfs", 1),
        ("devices", 3),
        ("network", 1),
        ("selinux", 1),
        ("bootloader", 1),
    ]
    assert report["changes"][2]["changes"][0] == {
        "summary": "/etc/fstab: /dev/sda1 -> LABEL=/boot",
        "path": "/etc/fstab",
    }
    assert report["devices"]["reason"] == "converted: drivers of kernel 2.6.18-194.el5"
    assert report["devices"]["disk_bus"] == "virtio"
    assert "VMware Tools were installed from a tarball; removed with its own uninstaller" in report["notes"]
    assert report["timings"][0] == {"step": "launch", "seconds": 15.2}
    json.dumps(report)  # JSON-ready


def test_without_conversion_says_so() -> None:
    vm = load_vm("fusion-ubuntu-efi.vmx")
    plan = plan_domain(vm, OPTS, GuestCaps.unconverted())
    report = build_report(vm, plan, None, plan.notes)
    assert report["guest"] == {
        "converted": False,
        "status": "guest not converted",
        "facts": [],
        "filesystems": [],
    }
    assert report["changes"] == []
    assert report["devices"] == {"reason": "guest not converted"}
    assert report["timings"] == []
    assert report["notes"] == [str(n) for n in plan.notes]
    hw = rows(report)
    assert hw["firmware"] == ("UEFI", "UEFI (OVMF)")
    assert hw["cpus"] == ("4 vCPUs (2 sockets x 2 cores)", "4 vCPUs (2 sockets x 2 cores x 1 thread)")
    assert hw["memory"] == ("6144 MiB", "6144 MiB")
    assert hw["disk:nvme0:0"][0] == "Virtual Disk.vmdk, 1.0 MiB, NVME"
    assert hw["disk:nvme0:0"][1].startswith("sda on sata, qcow2, 1.0 MiB, ")
    assert hw["nic:ethernet0"] == (
        "00:0c:29:a3:f0:6d, vmxnet3, network 'nat'",
        "00:0c:29:a3:f0:6d, e1000, network 'default'",
    )
    assert hw["sound"] == ("hdaudio", "ich9")
    assert hw["usb"][0] == "USB 1.1, USB 3"
    assert hw["video"][0] == "SVGA, 256.0 MiB VRAM, 1 display, 3D"
    # The keys of the report are stable: documented in docs/dbus-api.md.
    assert list(report) == [
        "format",
        "name",
        "source",
        "hardware",
        "guest",
        "changes",
        "devices",
        "notes",
        "timings",
    ]


def test_conversion_skipped_keeps_its_reason() -> None:
    """--no-guest-conversion: a Conversion with unconverted caps and no guest."""
    vm = load_vm("esxi-rhel55.vmx")
    plan = plan_domain(vm, OPTS, GuestCaps.unconverted())
    conversion = Conversion(caps=GuestCaps.unconverted(), guest=None)
    report = build_report(vm, plan, conversion, plan.notes)
    assert report["guest"]["status"] == "guest not converted"
    assert report["devices"]["reason"] == "guest not converted: devices every x86 OS has drivers for"
    assert rows(report)["disk:scsi0:0"][1].startswith("sda on sata")


def test_notes_are_not_repeated() -> None:
    vm = load_vm("esxi-rhel55.vmx")
    plan, conversion = converted(vm)
    report = build_report(vm, plan, conversion, (*plan.notes, *conversion.notes))
    assert len(report["notes"]) == len(set(report["notes"]))


def test_target_device_names() -> None:
    vm = load_vm("esxi-rhel55.vmx")
    plan, _ = converted(vm)
    assert target_device("/dev/sda", plan) == "/dev/vda"
    assert target_device("/dev/sdb3", plan) == "/dev/vdb3"
    assert target_device("/dev/sdc1", plan) == "/dev/sdc1"  # not a planned disk
    assert target_device("/dev/md0", plan) == "/dev/md0"
