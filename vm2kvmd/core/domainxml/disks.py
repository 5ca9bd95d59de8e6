"""``<disk>`` elements for disks, CD-ROMs and floppies, and the SCSI controllers they need."""

from __future__ import annotations

from lxml import etree

from vm2kvmd.core.domainxml._xml import sub
from vm2kvmd.core.planning.plan import DomainPlan, PlannedDisk, PlannedRemovable

# libvirt gives each SCSI controller 7 units when it assigns drive addresses
# from target names (sdh lands on controller 1), and a controller it adds by
# itself is an lsilogic, not virtio-scsi: declare them all.
_SCSI_UNITS_PER_CONTROLLER = 7


def _letters_index(target_dev: str) -> int:
    """``sda`` -> 0, ``sdaa`` -> 26: the inverse of libvirt's virDiskNameToIndex."""
    letters = target_dev[2:]
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def _disk(parent: etree._Element, disk: PlannedDisk) -> None:
    el = sub(parent, "disk", type="block" if disk.block else "file", device="disk")
    sub(
        el,
        "driver",
        name="qemu",
        type=disk.format,
        cache="writethrough" if disk.source.write_through else None,
    )
    if disk.block:
        sub(el, "source", dev=disk.target_path)
    else:
        sub(el, "source", file=disk.target_path)
    sub(el, "target", dev=disk.target_dev, bus=disk.bus)
    if disk.boot_order is not None:
        sub(el, "boot", order=disk.boot_order)


def _removable(parent: etree._Element, drive: PlannedRemovable) -> None:
    el = sub(parent, "disk", type="file", device=drive.device)
    sub(el, "driver", name="qemu", type="raw")
    if drive.path is not None:
        sub(el, "source", file=drive.path)
    sub(el, "target", dev=drive.target_dev, bus=drive.bus)
    if drive.device == "cdrom":
        sub(el, "readonly")


def render_disks(devices: etree._Element, plan: DomainPlan) -> None:
    for disk in plan.disks:
        _disk(devices, disk)
    for drive in plan.cdroms + plan.floppies:
        _removable(devices, drive)


def render_storage_controllers(devices: etree._Element, plan: DomainPlan) -> None:
    scsi = [_letters_index(d.target_dev) for d in plan.disks if d.bus == "scsi"]
    scsi += [_letters_index(d.target_dev) for d in plan.cdroms if d.bus == "scsi"]
    if scsi:
        for index in range(max(scsi) // _SCSI_UNITS_PER_CONTROLLER + 1):
            sub(devices, "controller", type="scsi", index=index, model="virtio-scsi")
