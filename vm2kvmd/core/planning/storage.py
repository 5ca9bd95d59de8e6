"""Disks, CD-ROMs and floppies: bus, target device name, volume path.

Every drive of the source is planned, in source order, missing ones included
(``inspect`` shows them; ``migrate`` fails on them with the disk's own error).
Target names are handed out by one ``TargetNamer`` per domain so a disk and a
CD-ROM on the same prefix (``sd`` is shared by SATA and SCSI) never collide.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from vm2kvmd.core.hardware.model import (
    EXTRACTED_AT_MIGRATION,
    READ_AT_MIGRATION,
    MediaKind,
    Note,
    RemovableDrive,
    SourceDisk,
)
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.plan import PlannedDisk, PlannedRemovable

# libvirt's target prefix per bus; SATA and SCSI both use "sd" and share letters.
_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd", "fdc": "fd"}
# QEMU's pc machine has exactly one PIIX IDE controller (2 buses x 2 units):
# libvirt refuses hde and beyond ("Only 1 IDE controller is supported").
_IDE_MAX = 4
# Two drives on the one floppy controller (fda, fdb), as on VMware.
_FLOPPY_MAX = 2
# The file-name part of a volume; a pool volume name must not contain '/' and a
# leading '-' or '.' makes a file that command lines and globbing misread.
_VOLUME_SAFE_RE = re.compile(r"[^A-Za-z0-9._+-]+")
_VOLUME_BASE_MAX = 200  # bytes; leaves room for "-diskNN.qcow2" inside NAME_MAX (255)
_EXTENSION = {"qcow2": "qcow2", "raw": "img"}
_NONPERSISTENT_MODES = ("independent-nonpersistent", "nonpersistent")


def disk_name_from_index(prefix: str, index: int) -> str:
    """``sd`` + 0 -> ``sda``, 25 -> ``sdz``, 26 -> ``sdaa`` (libvirt's scheme)."""
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return prefix + letters


@dataclass
class TargetNamer:
    """Hands out target device names; one counter per prefix."""

    used: dict[str, int] = field(default_factory=dict)

    def next(self, bus: str) -> str:
        prefix = _PREFIX[bus]
        index = self.used.get(prefix, 0)
        self.used[prefix] = index + 1
        return disk_name_from_index(prefix, index)

    def count(self, bus: str) -> int:
        return self.used.get(_PREFIX[bus], 0)


def volume_name(domain_name: str, index: int, fmt: str, *, block: bool = False) -> str:
    """The file name of disk ``index`` of ``domain_name``: ``web01-disk1.qcow2``.

    Only ``[A-Za-z0-9._+-]`` survive, so the name is safe in any file system,
    any storage pool and any shell; the disk index makes it unique per disk.
    A logical volume (``block``) has no format, so its name has no extension.
    """
    if block:
        return f"{file_safe(domain_name)}-disk{index}"
    ext = _EXTENSION.get(fmt, fmt)
    return f"{file_safe(domain_name)}-disk{index}.{ext}"


def file_safe(domain_name: str) -> str:
    """``domain_name`` reduced to ``[A-Za-z0-9._+-]``, for files named after the domain."""
    base = _VOLUME_SAFE_RE.sub("_", domain_name).strip("._-")
    return base.encode()[:_VOLUME_BASE_MAX].decode(errors="ignore") or "vm"


def storage_bus(wanted: str, machine: str, what: str, notes: list[Note]) -> str:
    """The bus to use for ``wanted`` on ``machine``."""
    if wanted not in _PREFIX or wanted == "fdc":
        notes.append(Note(f"{what}: bus {wanted!r} is not offered for them; using SATA (AHCI)"))
        return "sata"
    if wanted == "ide" and machine != "pc":
        # q35 has no IDE controller; libvirt rejects the domain outright.
        notes.append(Note(f"{what}: IDE does not exist on the {machine} machine; using SATA (AHCI)"))
        return "sata"
    return wanted


def plan_disks(
    disks: tuple[SourceDisk, ...],
    domain_name: str,
    target_dir: str,
    disk_format: str,
    caps: GuestCaps,
    namer: TargetNamer,
    notes: list[Note],
    *,
    block: bool = False,
) -> tuple[PlannedDisk, ...]:
    bus = storage_bus(caps.disk_bus, caps.machine, "disks", notes)
    planned: list[PlannedDisk] = []
    for number, disk in enumerate(disks, start=1):
        key = disk.address.key
        disk_bus = bus
        if disk_bus == "ide" and namer.count("ide") >= _IDE_MAX:
            notes.append(Note("more than four IDE drives; this disk goes on SATA (AHCI)", key))
            disk_bus = "sata"
        if disk.mode in _NONPERSISTENT_MODES:
            notes.append(
                Note(
                    f"disk mode {disk.mode}: VMware discarded changes at power-off; "
                    "the KVM disk keeps them (persistent)",
                    key,
                )
            )
        if disk.chain is None and disk.extracted_capacity is not None:
            notes.append(
                Note(f"{disk.file_name} is {EXTRACTED_AT_MIGRATION}; size from the DiskSection", key)
            )
        elif disk.chain is None and disk.remote is not None:
            notes.append(Note(f"{disk.file_name} is {READ_AT_MIGRATION}; size from the vSphere API", key))
        elif disk.chain is None:
            why = disk.problem or f"disk {disk.file_name} is missing"
            notes.append(Note(f"planned with size 0 because: {why}", key))
        vol = volume_name(domain_name, number, disk_format, block=block)
        planned.append(
            PlannedDisk(
                source=disk,
                target_dev=namer.next(disk_bus),
                bus=disk_bus,
                volume_name=vol,
                target_path=posixpath.join(target_dir, vol),
                format=disk_format,
                capacity=disk.capacity,
                # The first disk in source order boots, as VMware's BIOS does by
                # default; bios.bootOrder/bios.hddOrder are not read (see notes).
                boot_order=1 if number == 1 else None,
                block=block,
            )
        )
    return tuple(planned)


def _medium(drive: RemovableDrive, what: str, notes: list[Note]) -> str | None:
    """The image to insert, or None for an empty drive."""
    key = drive.address.key
    if drive.kind is MediaKind.HOST:
        notes.append(
            Note(f"{what} was connected to the host drive {drive.file_name or ''}; left empty".strip(), key)
        )
        return None
    if drive.kind is MediaKind.EMPTY:
        return None
    if drive.missing or not drive.path:
        notes.append(Note(f"{what} image {drive.file_name} does not exist; left empty", key))
        return None
    if not drive.start_connected:
        notes.append(
            Note(
                f"{what} image {drive.path} was not connected at power-on; left empty (insert it by hand)",
                key,
            )
        )
        return None
    return drive.path


def plan_cdroms(
    cdroms: tuple[RemovableDrive, ...], caps: GuestCaps, namer: TargetNamer, notes: list[Note]
) -> tuple[PlannedRemovable, ...]:
    bus = storage_bus(caps.cdrom_bus, caps.machine, "CD-ROMs", notes)
    planned: list[PlannedRemovable] = []
    for drive in cdroms:
        drive_bus = bus
        if drive_bus == "ide" and namer.count("ide") >= _IDE_MAX:
            notes.append(
                Note("more than four IDE drives; this CD-ROM goes on SATA (AHCI)", drive.address.key)
            )
            drive_bus = "sata"
        planned.append(
            PlannedRemovable(
                source=drive,
                device="cdrom",
                target_dev=namer.next(drive_bus),
                bus=drive_bus,
                path=_medium(drive, "CD-ROM", notes),
            )
        )
    return tuple(planned)


def plan_floppies(
    floppies: tuple[RemovableDrive, ...], namer: TargetNamer, notes: list[Note]
) -> tuple[PlannedRemovable, ...]:
    # Checked with libvirt 9.0 + QEMU 7.2: a floppy on q35 works, libvirt adds an
    # isa-fdc controller itself, so the machine type does not have to change.
    planned: list[PlannedRemovable] = []
    for drive in floppies:
        if namer.count("fdc") >= _FLOPPY_MAX:
            notes.append(Note("only two floppy drives fit the floppy controller; dropped", drive.address.key))
            continue
        planned.append(
            PlannedRemovable(
                source=drive,
                device="floppy",
                target_dev=namer.next("fdc"),
                bus="fdc",
                path=_medium(drive, "floppy", notes),
            )
        )
    return tuple(planned)
