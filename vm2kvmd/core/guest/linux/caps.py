"""Which devices a converted Linux guest can drive: decided from its booting kernel.

virtio is used only where the kernel that will boot has the driver (as a
module or built in); otherwise the devices every Linux of the last twenty
years drives (SATA/AHCI, else IDE; e1000), with a note saying why.  The
initramfs step later makes sure the disk driver is in that kernel's
initramfs; if it cannot, ``without_virtio_disk`` takes the disk back.
"""

from __future__ import annotations

from dataclasses import replace

from vm2kvmd.core.guest.info import GuestInfo, Kernel
from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.planning.diskbus import caps_bus, unsupported_bus
from vm2kvmd.core.planning.guestcaps import GuestCaps

# virtio_pci carries every virtio device on a PCI machine; without it no virtio driver binds.
_PCI = "virtio_pci"


def caps_for_linux(guest: GuestInfo, disk_bus: str | None = None) -> tuple[GuestCaps, list[Note]]:
    """The devices for ``guest`` and the notes that explain a fallback.

    ``disk_bus``: the ``disk-bus`` option (``core.planning.diskbus``); a bus the booting kernel
    has no driver for is refused with ``DiskBusUnsupported``.
    """
    notes: list[Note] = []
    kernel = guest.booting_kernel
    if disk_bus is not None:
        _check_bus(kernel, disk_bus)
    if kernel is None:
        notes.append(Note("no kernel found in the guest; keeping devices every OS drives (SATA, e1000)"))
        return replace(GuestCaps.unconverted(), os_id=guest.os_id), notes
    pci = kernel.has(_PCI)
    if not pci and any(kernel.has(m) for m in ("virtio_blk", "virtio_scsi", "virtio_net")):
        # Without it the other virtio drivers never bind: say so, not "has no virtio_net".
        notes.append(Note(f"kernel {kernel.version} has virtio drivers but no virtio_pci; no virtio devices"))
    disk_bus = caps_bus(disk_bus) if disk_bus is not None else _disk_bus(kernel, pci, notes)
    nic = "virtio" if pci and kernel.has("virtio_net") else "e1000"
    if nic != "virtio" and pci:
        notes.append(Note(f"kernel {kernel.version} has no virtio_net driver; the NICs stay e1000"))
    video = "virtio" if pci and kernel.has("virtio_gpu") else "vga"
    caps = GuestCaps(
        machine="q35" if disk_bus != "ide" else "pc",
        disk_bus=disk_bus,
        cdrom_bus="sata" if disk_bus != "ide" else "ide",
        nic_model=nic,
        video=video,
        virtio_rng=pci and kernel.has("virtio_rng"),
        balloon=pci and kernel.has("virtio_balloon"),
        guest_agent=True,
        reason=f"converted: drivers of kernel {kernel.version}",
        os_id=guest.os_id,
    )
    return caps, notes


# The drivers a kernel needs for each disk-bus option value (virtio_pci for both virtio buses).
_BUS_DRIVERS = {"virtio": (_PCI, "virtio_blk"), "virtio-scsi": (_PCI, "virtio_scsi"), "sata": ("ahci",)}


def _check_bus(kernel: Kernel | None, disk_bus: str) -> None:
    if kernel is None:
        raise unsupported_bus(disk_bus, "no kernel was found in the guest", "check the guest's /boot")
    missing = [m for m in _BUS_DRIVERS[disk_bus] if not kernel.has(m)]
    if missing:
        raise unsupported_bus(
            disk_bus,
            f"kernel {kernel.version} has no {', '.join(missing)} driver",
            "install a kernel with it in the VM first",
        )


def _disk_bus(kernel: Kernel, pci: bool, notes: list[Note]) -> str:
    if pci and kernel.has("virtio_blk"):
        return "virtio"
    if pci and kernel.has("virtio_scsi"):
        notes.append(Note(f"kernel {kernel.version} has virtio_scsi but no virtio_blk; disks on virtio-scsi"))
        return "scsi"
    if kernel.has("ahci"):
        notes.append(Note(f"kernel {kernel.version} has no virtio disk driver; disks stay on SATA (AHCI)"))
        return "sata"
    message = f"kernel {kernel.version} has neither virtio nor AHCI drivers; disks on IDE (pc machine)"
    notes.append(Note(message))
    return "ide"


def without_virtio_disk(caps: GuestCaps, kernel: Kernel, why: str) -> tuple[GuestCaps, Note]:
    """``caps`` with the disks moved off virtio, when the initramfs could not be given the driver."""
    bus = "sata" if kernel.has("ahci") else "ide"
    machine = caps.machine if bus == "sata" else "pc"
    new = replace(caps, disk_bus=bus, machine=machine, cdrom_bus="ide" if bus == "ide" else caps.cdrom_bus)
    return new, Note(f"disks stay on {bus.upper()}: {why}")
