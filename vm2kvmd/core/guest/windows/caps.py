"""Which devices a converted Windows guest can drive: what was injected decides.

virtio only where the driver was found for this Windows: the disks on
virtio-blk with viostor (virtio-scsi with vioscsi when the ``disk-bus`` option
asks for it, or when only vioscsi exists), the NICs on virtio with netkvm.  Otherwise the devices
Windows drives out of the box: SATA (AHCI) and e1000 from Vista on; IDE on
the i440fx machine and rtl8139 for XP/2003, which have no AHCI driver and
whose e1000 driver is not in every install.  Each fallback comes with a
note saying what to do after the first boot.
"""

from __future__ import annotations

from vm2kvmd.core.guest.windows.info import WindowsInfo
from vm2kvmd.core.guest.windows.virtio_win import DriverSelection
from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.planning.diskbus import caps_bus, unsupported_bus
from vm2kvmd.core.planning.guestcaps import GuestCaps


def is_legacy(info: WindowsInfo) -> bool:
    """XP and Server 2003 (NT 5.x): no AHCI, no pnputil, i440fx."""
    return info.major < 6


def storage_driver(disk_bus: str) -> str | None:
    """The boot-critical driver to register for ``GuestCaps.disk_bus``: viostor, vioscsi or none."""
    return {"virtio": "viostor", "scsi": "vioscsi"}.get(disk_bus)


def _has_storage(selection: DriverSelection, name: str) -> bool:
    driver = selection.get(name)
    return driver is not None and driver.file(".sys") is not None and driver.file(".inf") is not None


def _disk_bus(
    info: WindowsInfo, selection: DriverSelection, source: str, version: str, disk_bus: str | None
) -> tuple[str, list[Note]]:
    legacy = is_legacy(info)
    fallback = "ide" if legacy else "sata"
    if disk_bus == "sata":
        if legacy:
            raise unsupported_bus(
                disk_bus, f"{version} has no AHCI driver", "XP and Server 2003 boot from IDE only"
            )
        return "sata", []
    if disk_bus is not None:
        driver = "viostor" if disk_bus == "virtio" else "vioscsi"
        if not _has_storage(selection, driver):
            raise unsupported_bus(
                disk_bus,
                f"no {driver} driver for {version} in {source}",
                f"give --virtio-win a virtio-win that has {driver} for this Windows",
            )
        return caps_bus(disk_bus), []
    for driver, bus in (("viostor", "virtio"), ("vioscsi", "scsi")):
        if _has_storage(selection, driver):
            return bus, []
    note = Note(
        f"no virtio storage driver for {version} in {source}: disks on {fallback.upper()}; after the "
        "first boot install viostor from virtio-win, shut down and change the disk bus to virtio"
    )
    return fallback, [note]


def caps_for_windows(
    info: WindowsInfo,
    selection: DriverSelection,
    *,
    source: str,
    disk_bus: str | None = None,
    secure_boot: bool = False,
) -> tuple[GuestCaps, list[Note]]:
    """The devices for ``info`` given the drivers found in ``source`` (the virtio-win path).

    ``disk_bus``: the ``disk-bus`` option (``core.planning.diskbus``); a bus the guest has no
    driver for is refused with ``DiskBusUnsupported``.
    """
    notes: list[Note] = list(selection.notes)
    legacy = is_legacy(info)
    version = f"{info.product_name} ({info.major}.{info.minor}, {info.arch})"
    bus, bus_notes = _disk_bus(info, selection, source, version, disk_bus)
    notes += bus_notes
    if selection.get("netkvm") is not None:
        nic = "virtio"
    else:
        nic = "rtl8139" if legacy else "e1000"
        notes.append(
            Note(
                f"no virtio network driver (netkvm) for {version} in {source}: NICs are {nic}; after the "
                "first boot install netkvm from virtio-win and change the NIC model to virtio"
            )
        )
    if secure_boot and selection.drivers:
        notes.append(
            Note(
                "secure boot is on: Windows loads only drivers signed by Microsoft (WHQL); the "
                f"virtio-win drivers from {source} must be such a build (the Fedora ISO's are not) or the "
                "guest stops at boot; turn secure boot off in the domain if it does",
                "uefi.secureBoot.enabled",
            )
        )
    caps = GuestCaps(
        machine="pc" if legacy else "q35",
        disk_bus=bus,
        cdrom_bus="ide" if legacy else "sata",
        nic_model=nic,
        video="vga",
        virtio_rng=selection.get("viorng") is not None and not legacy,
        balloon=selection.get("balloon") is not None,
        guest_agent=selection.guest_agent_msi is not None and not legacy,
        reason=f"converted: virtio-win drivers for {version}",
        hyperv="" if legacy else ("basic" if (info.major, info.minor) == (6, 0) else "full"),
        clock_offset="utc" if info.rtc_utc else "localtime",
    )
    return caps, notes
