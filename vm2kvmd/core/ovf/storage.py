"""Storage of an OVF virtual system: controllers, disks, CD/DVD and floppy drives.

Devices sit on their controller by ``rasd:Parent`` (the controller Item's
InstanceID) at unit ``rasd:AddressOnParent``, checked with the VMX reader's
bus rules (SCSI unit 7 is the controller; 16 or 64 units by hardware
version).  A unit that is missing, taken or out of range moves to the next
free one, with a note: OVF producers are less careful than VMware's VMX
writer, and a disk must never be dropped for its address.  Disks are sorted
by bus, controller and unit, as the VMX reader does, so the boot disk is the
same one.  CD/DVD and floppy drives are empty: an OVF carries no media
(ISO images inside a package are not attached).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from vm2kvmd.core.hardware.model import (
    EXTRACTED_AT_MIGRATION,
    Bus,
    Controller,
    DeviceAddress,
    DiskChain,
    MediaKind,
    RemovableDrive,
    SourceDisk,
)
from vm2kvmd.core.ovf.envelope import OvfFile, OvfItem, invalid_source, invalid_value
from vm2kvmd.core.ovf.items import (
    CD,
    DISK,
    DVD,
    FLOPPY,
    IDE,
    OTHER_STORAGE,
    SCSI,
    OvfContext,
    by_type,
    parse_bool,
    pci_slot,
)
from vm2kvmd.core.vmware.vmx_storage import DISK_MODES, bus_rules
from vm2kvmd.errors import ErrorCode, Vm2kvmError

KNOWN_STORAGE_TYPES = frozenset({IDE, SCSI, OTHER_STORAGE, DISK, CD, DVD, FLOPPY})
OvfDiskLoader = Callable[[OvfFile, str], DiskChain]  # (the file, the Item's locator) -> chain


class ExtractedAtMigration(Exception):
    """Raised by a disk loader for a file stored compressed: the migration job extracts it first."""


_SCSI_MODELS = {
    "lsilogic": "lsilogic",
    "virtualscsi": "pvscsi",
    "pvscsi": "pvscsi",
    "buslogic": "buslogic",
    "lsilogicsas": "lsisas1068",
    "lsisas1068": "lsisas1068",
}
_SATA_SUBTYPES = frozenset({"vmware.sata.ahci", "ahci", "sata"})
_NVME_SUBTYPES = frozenset({"vmware.nvme.controller", "nvme"})
_HOST_RESOURCE_RE = re.compile(r"^(?:ovf:)?/(?P<kind>disk|file)/(?P<id>.+)$")


@dataclass
class _Storage:
    ctx: OvfContext
    hw_version: int | None
    controllers: dict[str, Controller] = field(default_factory=dict)  # by InstanceID
    used: dict[tuple[Bus, int], set[int]] = field(default_factory=dict)

    def rule_units(self, bus: Bus) -> tuple[int, int, frozenset[int]]:
        rule = next(r for r in bus_rules(self.hw_version) if r.bus is bus)
        return rule.controllers, rule.units, rule.reserved

    def add_controller(self, item: OvfItem, bus: Bus, model: str | None) -> None:
        limit, _, _ = self.rule_units(bus)
        taken = {c.index for c in self.controllers.values() if c.bus is bus}
        wanted = int(item.address) if item.address and item.address.isdigit() else None
        if wanted is None or wanted >= limit or wanted in taken:
            free = [i for i in range(limit) if i not in taken]
            if not free:
                # No VMware VM has more; dropping the controller would drop its disks.
                raise invalid_source(
                    self.ctx.path, f"more than {limit} {bus.value.upper()} controllers", key=item.locator
                )
            if wanted is not None:
                self.ctx.note(
                    f"controller number {item.address} taken or out of range; {free[0]} used", item.label
                )
            wanted = free[0]
        self.controllers[item.instance_id] = Controller(bus, wanted, model, pci_slot(item))
        self.ctx.ignored_config(item)

    def address(self, item: OvfItem) -> DeviceAddress:
        if item.parent is None:
            ctrl = next(iter(self.controllers.values()), None)
            if ctrl is None:
                ctrl = Controller(Bus.SATA, 0, None)
                self.controllers["(vm2kvm sata0)"] = ctrl
            self.ctx.note(f"device has no rasd:Parent; placed on {ctrl.bus.value}{ctrl.index}", item.label)
        elif item.parent in self.controllers:
            ctrl = self.controllers[item.parent]
        else:
            raise invalid_source(
                self.ctx.path,
                f"rasd:Parent {item.parent!r} names no storage controller Item",
                key=f"{item.locator}/rasd:Parent",
            )
        _, units, reserved = self.rule_units(ctrl.bus)
        used = self.used.setdefault((ctrl.bus, ctrl.index), set())
        raw = item.address_on_parent
        unit = int(raw) if raw and raw.isdigit() else None
        if unit is None or unit >= units or unit in reserved or unit in used:
            free = [u for u in range(units) if u not in reserved and u not in used]
            if not free:
                raise invalid_source(
                    self.ctx.path, f"{ctrl.bus.value}{ctrl.index} has no free unit left", key=item.locator
                )
            if raw is not None:
                self.ctx.note(f"unit {raw} taken or out of range; unit {free[0]} used", item.label)
            unit = free[0]
        used.add(unit)
        return DeviceAddress(ctrl.bus, ctrl.index, unit)


def _controller_kind(ctx: OvfContext, item: OvfItem) -> tuple[Bus, str | None]:
    sub = (item.subtype or "").strip().lower()
    if item.resource_type == IDE:
        return Bus.IDE, None
    if item.resource_type == SCSI:
        if sub in _SCSI_MODELS:
            return Bus.SCSI, _SCSI_MODELS[sub]
        ctx.note(f"SCSI controller type {item.subtype!r} unknown; lsilogic assumed", item.label)
        return Bus.SCSI, "lsilogic"
    if sub in _SATA_SUBTYPES:
        return Bus.SATA, None
    if sub in _NVME_SUBTYPES:
        return Bus.NVME, None
    ctx.note(f"storage controller type {item.subtype!r} unknown; treated as SATA", item.label)
    return Bus.SATA, None


class _NoContent(Exception):
    """A disk whose content cannot be copied: recorded on the disk (migrate fails on it), not raised."""

    def __init__(self, href: str, message: str, *, path: str, key: str, hint: str) -> None:
        super().__init__(message)
        self.href = href
        self.error = Vm2kvmError(ErrorCode.UNSUPPORTED_DISK, message, file=path, key=key, hint=hint)


def _disk_mode(ctx: OvfContext, item: OvfItem) -> str:
    raw = item.config.get("backing.diskMode")
    if raw is None:
        return "persistent"
    mode = raw.strip().lower().replace("_", "-")
    if mode not in DISK_MODES:
        ctx.note(f"unknown disk mode {raw!r}; treated as persistent", item.label)
        return "persistent"
    return mode


def _file_of(ctx: OvfContext, item: OvfItem) -> tuple[OvfFile, int | None]:
    """The file holding a disk Item's content and the DiskSection's capacity; ``_NoContent`` if none."""
    env = ctx.env
    if not item.host_resources:
        raise invalid_source(ctx.path, "the disk Item has no rasd:HostResource", key=item.locator)
    ref = item.host_resources[0]
    match = _HOST_RESOURCE_RE.match(ref)
    key = f"{item.locator}/rasd:HostResource"
    if not match:
        raise invalid_value(ctx.path, key, ref, "is neither ovf:/disk/<id> nor ovf:/file/<id>")
    if match["kind"] == "file":
        file = env.files.get(match["id"])
        if file is None:
            raise invalid_source(ctx.path, f"{ref} names no File in References", key=key)
        return file, None
    disk = env.disks.get(match["id"])
    if disk is None:
        raise invalid_source(ctx.path, f"{ref} names no Disk in the DiskSection", key=key)
    if disk.file_ref is None:
        raise _NoContent(
            "",
            "the disk has no ovf:fileRef: a blank disk the deployer creates, with no content to copy",
            path=ctx.path,
            key=disk.locator,
            hint="remove the disk from the VM before exporting, or add it to the domain after migration",
        )
    file = env.files.get(disk.file_ref)
    if file is None:
        raise invalid_source(
            ctx.path, f"ovf:fileRef {disk.file_ref!r} names no File in References", key=disk.locator
        )
    if disk.parent_ref is not None:
        raise _NoContent(
            file.href,
            "delta disks (ovf:parentRef) are not converted",
            path=ctx.path,
            key=disk.locator,
            hint="consolidate the disk in VMware before exporting",
        )
    if disk.format and "vmdk" not in disk.format.lower():
        raise _NoContent(
            file.href,
            f"disk format {disk.format!r} is not VMDK",
            path=ctx.path,
            key=disk.locator,
            hint="vm2kvm converts VMDK disks; convert the disk with qemu-img",
        )
    return file, disk.capacity


def _check_unpacked(ctx: OvfContext, file: OvfFile) -> None:
    # gzip is for the package loader to handle (an OVA extracts it at migration).
    if file.compression not in (None, "identity", "gzip"):
        raise _NoContent(
            file.href,
            f"the disk file is stored compressed (ovf:compression={file.compression!r})",
            path=ctx.path,
            key=file.locator,
            hint="vm2kvm reads uncompressed packages; re-export without compression "
            "(ovftool without --compress), or unpack the files and migrate the .ovf",
        )
    if file.chunk_size is not None:
        raise _NoContent(
            file.href,
            f"the disk file is split into chunks of {file.chunk_size} bytes (ovf:chunkSize)",
            path=ctx.path,
            key=file.locator,
            hint="re-export without --chunkSize, or join the chunks with cat and migrate the .ovf",
        )


def _disk(ctx: OvfContext, item: OvfItem, address: DeviceAddress, load_disk: OvfDiskLoader) -> SourceDisk:
    try:
        file, capacity = _file_of(ctx, item)
        _check_unpacked(ctx, file)
    except _NoContent as no:
        return SourceDisk(address, no.href, None, "persistent", None, no.error.describe(), no.error.code)
    mode = _disk_mode(ctx, item)
    write_through = parse_bool(item.config.get("backing.writeThrough")) is True
    ctx.ignored_config(item, ("backing.diskMode", "backing.writeThrough"))
    try:
        chain = load_disk(file, item.locator)
    except ExtractedAtMigration:
        if capacity is None:
            ctx.note(f"{file.href} is compressed and the DiskSection gives no capacity", item.label)
        return SourceDisk(
            address,
            file.href,
            None,
            mode,
            None,
            f"{file.href}: {EXTRACTED_AT_MIGRATION}",
            None,
            write_through,
            extracted_capacity=capacity or 0,
        )
    except Vm2kvmError as err:
        return SourceDisk(address, file.href, None, mode, None, err.describe(), err.code, write_through)
    except (OSError, ValueError, UnicodeError, OverflowError) as err:
        wrapped = Vm2kvmError(
            ErrorCode.INVALID_DISK, f"cannot read disk {file.href}: {err}", file=ctx.path, key=item.locator
        )
        return SourceDisk(
            address, file.href, None, mode, None, wrapped.describe(), wrapped.code, write_through
        )
    ctx.notes.extend(chain.notes)
    if capacity is not None and capacity != chain.virtual_size:
        ctx.note(
            f"the DiskSection gives a capacity of {capacity} bytes, the disk file holds "
            f"{chain.virtual_size}; the disk keeps its file's size",
            item.label,
        )
    return SourceDisk(address, file.href, chain.top.path, mode, chain, write_through=write_through)


def _drive(ctx: OvfContext, item: OvfItem, address: DeviceAddress) -> RemovableDrive:
    if item.host_resources:
        ctx.note(f"the image {item.host_resources[0]} is not attached; the drive is left empty", item.label)
    ctx.ignored_config(item)
    connected = item.automatic_allocation is not False
    return RemovableDrive(address, MediaKind.EMPTY, None, None, start_connected=connected)


@dataclass(frozen=True)
class OvfStorage:
    """What ``read_storage`` found, each sorted as the VMX reader sorts."""

    controllers: tuple[Controller, ...]
    disks: tuple[SourceDisk, ...]
    cdroms: tuple[RemovableDrive, ...]
    floppies: tuple[RemovableDrive, ...]


def _order(address: DeviceAddress) -> tuple[int, int, int]:
    return (list(Bus).index(address.bus), address.controller, address.unit)


def read_storage(ctx: OvfContext, items: list[OvfItem], load_disk: OvfDiskLoader) -> OvfStorage:
    """Controllers first (devices name them), then disks and CD/DVD drives in Item order, then floppies."""
    storage = _Storage(ctx, ctx.env.hw_version)
    for item in by_type(items, IDE, SCSI, OTHER_STORAGE):
        storage.add_controller(item, *_controller_kind(ctx, item))
    disks: list[SourceDisk] = []
    cdroms: list[RemovableDrive] = []
    for item in by_type(items, DISK, CD, DVD):
        address = storage.address(item)
        if item.resource_type == DISK:
            disks.append(_disk(ctx, item, address, load_disk))
        else:
            cdroms.append(_drive(ctx, item, address))
    floppies: list[RemovableDrive] = []
    for item in by_type(items, FLOPPY):
        if len(floppies) == 2:
            ctx.note("more than two floppy drives; dropped", item.label)
            continue
        floppies.append(_drive(ctx, item, DeviceAddress(Bus.FLOPPY, len(floppies), 0)))
    bus_order = list(Bus)
    return OvfStorage(
        controllers=tuple(
            sorted(storage.controllers.values(), key=lambda c: (bus_order.index(c.bus), c.index))
        ),
        disks=tuple(sorted(disks, key=lambda d: _order(d.address))),
        cdroms=tuple(sorted(cdroms, key=lambda d: _order(d.address))),
        floppies=tuple(floppies),
    )
