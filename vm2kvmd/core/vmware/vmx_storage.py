"""Storage of a VMX file: controllers, disks, CD-ROM and floppy drives.

Which ``busN:M`` units exist follows VMware (and libvirt ``vmx.c``): SCSI
controllers 0-3 with units 0-15, or 0-63 from hardware version 13 on, unit 7
being the controller itself; SATA 0-3 with units 0-29; IDE buses 0-1 with
units 0-1; NVMe 0-3 (units up to 63, the limit of recent hardware versions).

A disk that cannot be resolved or loaded is still listed, with ``chain=None``
and the reason, so ``inspect`` can show the whole VM; ``migrate`` fails on it.
Differences from VMware on purpose: a floppy drive needs at least one
``floppyN.*`` key (VMware adds a host floppy drive when there are none, which
nobody wants on the target), and a device with neither ``deviceType`` nor
``fileName`` becomes an empty CD-ROM drive instead of a disk that cannot start.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from vm2kvmd.core.hardware.limits import beyond_vmware
from vm2kvmd.core.hardware.model import (
    Bus,
    Controller,
    DeviceAddress,
    DiskChain,
    MediaKind,
    Note,
    RemovableDrive,
    SourceDisk,
)
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.core.vmware.vmx import VmxFile, pci_slot
from vm2kvmd.errors import ErrorCode, Vm2kvmError

DiskLoader = Callable[[str, str], DiskChain]  # (resolved descriptor path, vmx key) -> chain

SCSI_MODELS = frozenset({"buslogic", "lsilogic", "lsisas1068", "pvscsi"})
DISK_MODES = frozenset(
    {
        "persistent",
        "nonpersistent",
        "undoable",
        "append",
        "independent-persistent",
        "independent-nonpersistent",
    }
)
_DISK_TYPES = frozenset(
    {"disk", "scsi-harddisk", "ata-harddisk", "sata-harddisk", "nvme-harddisk", "plaindisk", "rawdisk"}
)
_CDROM_IMAGE_TYPES = frozenset({"cdrom-image"})
_CDROM_HOST_TYPES = frozenset({"cdrom-raw", "atapi-cdrom", "scsi-cdrom"})
_PASSTHROUGH_TYPES = frozenset({"scsi-passthru"})
# ddb.adapterType of a VMDK -> scsiN.virtualDev, for controllers without virtualDev.
_ADAPTER_MODELS = {
    "buslogic": "buslogic",
    "legacyesx": "buslogic",
    "lsilogic": "lsilogic",
    "lsisas1068": "lsisas1068",
    "pvscsi": "pvscsi",
}
_AUTO_DETECT = "auto detect"
_HOST_DRIVE_RE = re.compile(r"^(/dev/|/vmfs/devices/|[A-Za-z]:\\?$)")
_VISTA_OR_LATER_RE = re.compile(r"^(winvista|longhorn|winserver2008|windows\d|windows2019|windows2022)")
_OLD_WINDOWS_RE = re.compile(r"^(win2000|winxp|winnt|win31|win95|win98|winme)")


@dataclass(frozen=True)
class _BusRule:
    bus: Bus
    stem: str
    controllers: int
    units: int
    reserved: frozenset[int] = frozenset()
    controller_key: bool = True  # IDE has no ideN.present


@dataclass(frozen=True)
class Storage:
    controllers: tuple[Controller, ...]
    disks: tuple[SourceDisk, ...]
    cdroms: tuple[RemovableDrive, ...]
    floppies: tuple[RemovableDrive, ...]


def bus_rules(hw_version: int | None) -> tuple[_BusRule, ...]:
    # VMware's "super wide" SCSI bus (64 targets) arrived with hardware version 13.
    scsi_units = 64 if (hw_version or 0) >= 13 else 16
    return (
        _BusRule(Bus.SCSI, "scsi", 4, scsi_units, frozenset({7})),
        _BusRule(Bus.SATA, "sata", 4, 30),
        _BusRule(Bus.IDE, "ide", 2, 2, controller_key=False),
        _BusRule(Bus.NVME, "nvme", 4, 64),
    )


def _controllers_text(rule: _BusRule) -> str:
    return f"{rule.controllers} {rule.bus.value.upper()} controllers ({rule.stem}0-{rule.controllers - 1})"


def _units_text(rule: _BusRule, hw_version: int | None) -> str:
    version = f"hardware version {hw_version}" if hw_version else "this hardware version"
    return f"{_controllers_text(rule)} with units {rule.stem}N:0-{rule.units - 1} each at {version}"


def read_storage(
    vmx: VmxFile,
    resolver: PathResolver,
    load_disk: DiskLoader,
    *,
    hw_version: int | None,
    guest_os: str,
    notes: list[Note],
) -> Storage:
    """All storage devices of ``vmx``, ordered by bus, controller, unit."""
    controllers: dict[tuple[Bus, int], Controller] = {}
    disks: list[SourceDisk] = []
    cdroms: list[RemovableDrive] = []
    for rule in bus_rules(hw_version):
        for index in vmx.indices(rule.stem):
            if rule.controller_key and vmx.get_bool(f"{rule.stem}{index}.present", False):
                if index >= rule.controllers:
                    raise beyond_vmware(
                        f"controller {rule.stem}{index}",
                        vmx.key_name(f"{rule.stem}{index}.present"),
                        _controllers_text(rule),
                    )
                controllers[(rule.bus, index)] = _controller(vmx, rule, index)
        for index, unit in vmx.unit_indices(rule.stem):
            prefix = f"{rule.stem}{index}:{unit}"
            if not vmx.get_bool(f"{prefix}.present", False):
                continue
            present_key = vmx.key_name(f"{prefix}.present")
            if index >= rule.controllers or unit >= rule.units:
                raise beyond_vmware(f"device {prefix}", present_key, _units_text(rule, hw_version))
            if unit in rule.reserved:
                notes.append(
                    Note(f"{prefix}: unit {unit} is the SCSI controller itself; ignored", present_key)
                )
                continue
            if not _controller_present(vmx, rule, index, controllers, notes):
                continue
            address = DeviceAddress(rule.bus, index, unit)
            kind = _classify(vmx, prefix, notes)
            if kind == "disk":
                disks.append(_disk(vmx, address, prefix, resolver, load_disk, notes))
            elif kind is not None:
                cdroms.append(_cdrom(vmx, address, prefix, kind, resolver, notes))
    _fill_scsi_models(vmx, controllers, disks, guest_os, notes)
    order = list(Bus)
    return Storage(
        controllers=tuple(sorted(controllers.values(), key=lambda c: (order.index(c.bus), c.index))),
        disks=tuple(sorted(disks, key=lambda d: address_order(d.address))),
        cdroms=tuple(sorted(cdroms, key=lambda d: address_order(d.address))),
        floppies=_floppies(vmx, resolver, notes),
    )


def address_order(address: DeviceAddress) -> tuple[int, int, int]:
    """Sort key of a device address: bus (SCSI, SATA, IDE, NVMe, floppy), controller, unit."""
    return (list(Bus).index(address.bus), address.controller, address.unit)


def _controller(vmx: VmxFile, rule: _BusRule, index: int) -> Controller:
    model: str | None = None
    if rule.bus is Bus.SCSI:
        model = (vmx.get_str(f"scsi{index}.virtualDev") or "").strip().lower() or None
    return Controller(rule.bus, index, model, pci_slot(vmx, f"{rule.stem}{index}.pciSlotNumber"))


def _controller_present(
    vmx: VmxFile,
    rule: _BusRule,
    index: int,
    controllers: dict[tuple[Bus, int], Controller],
    notes: list[Note],
) -> bool:
    if (rule.bus, index) in controllers:
        return True
    key = f"{rule.stem}{index}.present"
    if rule.controller_key and vmx.has(key) and not vmx.get_bool(key, False):
        notes.append(
            Note(
                f"devices on {rule.stem}{index} ignored: the controller is not present",
                vmx.key_name(key),
            )
        )
        return False
    if rule.controller_key:
        notes.append(Note(f"{rule.stem}{index}.present is missing; controller assumed present", key))
        controllers[(rule.bus, index)] = _controller(vmx, rule, index)
    else:
        controllers[(rule.bus, index)] = Controller(rule.bus, index, None)
    return True


def _classify(vmx: VmxFile, prefix: str, notes: list[Note]) -> str | None:
    """ "disk", "image" (CD-ROM image), "host" (CD-ROM host drive) or None (dropped)."""
    type_key = f"{prefix}.deviceType"
    device_type = (vmx.get_str(type_key) or "").strip().lower()
    if device_type in _DISK_TYPES:
        return "disk"
    if device_type in _CDROM_IMAGE_TYPES:
        return "image"
    if device_type in _CDROM_HOST_TYPES:
        return "host"
    if device_type in _PASSTHROUGH_TYPES:
        notes.append(Note("SCSI passthrough of a host device dropped", vmx.key_name(type_key)))
        return None
    name = (vmx.get_str(f"{prefix}.fileName") or "").strip()
    lower = name.lower()
    # VMware's default deviceType is a hard disk; ISO images and host drives are
    # recognised by name, as the VMware UI does.
    if lower.endswith(".iso"):
        guess = "image"
    elif lower == _AUTO_DETECT or _HOST_DRIVE_RE.match(name):
        guess = "host"
    elif not name:
        guess = "image"
    else:
        guess = "disk"
    what = {"disk": "a disk", "image": "a CD-ROM image drive", "host": "a host CD-ROM drive"}[guess]
    if device_type:
        notes.append(
            Note(f"unknown deviceType {device_type!r}; treated as {what} from its fileName", type_key)
        )
    elif guess != "disk":
        notes.append(
            Note(f"no deviceType; treated as {what} from its fileName {name!r}", f"{prefix}.fileName")
        )
    return guess


def _disk(
    vmx: VmxFile,
    address: DeviceAddress,
    prefix: str,
    resolver: PathResolver,
    load_disk: DiskLoader,
    notes: list[Note],
) -> SourceDisk:
    key = vmx.key_name(f"{prefix}.fileName")
    file_name = vmx.get_str(key) or ""
    mode_key = f"{prefix}.mode"
    mode = (vmx.get_str(mode_key) or "persistent").strip().lower()
    if mode not in DISK_MODES:
        notes.append(Note(f"unknown disk mode {mode!r}; treated as persistent", vmx.key_name(mode_key)))
        mode = "persistent"
    write_through = vmx.get_bool(f"{prefix}.writeThrough", False)

    def broken(err: Vm2kvmError, path: str | None) -> SourceDisk:
        return SourceDisk(
            address=address,
            file_name=file_name,
            path=path,
            mode=mode,
            chain=None,
            problem=err.describe(),
            problem_code=err.code,
            write_through=write_through,
        )

    if not file_name.strip():
        empty = Vm2kvmError(
            ErrorCode.INVALID_VALUE,
            f"disk {address.key} has no file name",
            file=vmx.path,
            key=key,
            value=file_name,
            hint="set the .vmdk file of the disk or remove the disk from the VM",
        )
        return broken(empty, None)
    try:
        resolved = resolver.resolve(file_name, key=key, file=vmx.path)
    except Vm2kvmError as err:
        return broken(err, None)
    if resolved.note:
        notes.append(resolved.note)
    try:
        chain = load_disk(resolved.path, key)
    except Vm2kvmError as err:
        return broken(err, resolved.path)
    except (OSError, ValueError, UnicodeError, OverflowError) as err:
        wrapped = Vm2kvmError(
            ErrorCode.INVALID_DISK,
            f"cannot read disk {resolved.path}: {err}",
            file=vmx.path,
            key=key,
            value=file_name,
        )
        return broken(wrapped, resolved.path)
    notes.extend(chain.notes)
    return SourceDisk(
        address=address,
        file_name=file_name,
        path=resolved.path,
        mode=mode,
        chain=chain,
        write_through=write_through,
    )


def _image(
    vmx: VmxFile,
    address: DeviceAddress,
    key: str,
    file_name: str,
    start_connected: bool,
    resolver: PathResolver,
    notes: list[Note],
) -> RemovableDrive:
    """A drive backed by an image file we never read: resolved without the containment rule."""
    try:
        resolved = resolver.resolve(file_name, key=key, file=vmx.path, contained=False)
    except Vm2kvmError as err:
        notes.append(Note(f"image not usable, the drive will be empty: {err.describe()}", key))
        return RemovableDrive(address, MediaKind.IMAGE, file_name, None, start_connected, missing=True)
    if resolved.note:
        notes.append(resolved.note)
    missing = not resolver.host.exists(resolved.path)
    return RemovableDrive(address, MediaKind.IMAGE, file_name, resolved.path, start_connected, missing)


def _client_device(vmx: VmxFile, prefix: str, notes: list[Note]) -> bool:
    key = f"{prefix}.clientDevice"
    if vmx.get_bool(key, False):
        notes.append(Note("drive connected to the remote console's device; left empty", vmx.key_name(key)))
        return True
    return False


def _cdrom(
    vmx: VmxFile,
    address: DeviceAddress,
    prefix: str,
    kind: str,
    resolver: PathResolver,
    notes: list[Note],
) -> RemovableDrive:
    key = vmx.key_name(f"{prefix}.fileName")
    name = (vmx.get_str(key) or "").strip()
    start = vmx.get_bool(f"{prefix}.startConnected", True)
    if _client_device(vmx, prefix, notes):
        return RemovableDrive(address, MediaKind.EMPTY, name or None, None, start)
    if kind == "image" and name.lower() != _AUTO_DETECT:
        if not name:
            return RemovableDrive(address, MediaKind.EMPTY, None, None, start)
        return _image(vmx, address, key, name, start, resolver, notes)
    # A host drive: "auto detect", /dev/cdrom, an ESXi host device; empty means auto detect.
    return RemovableDrive(address, MediaKind.HOST, name or None, None, start)


def _floppies(vmx: VmxFile, resolver: PathResolver, notes: list[Note]) -> tuple[RemovableDrive, ...]:
    drives: list[RemovableDrive] = []
    for index in vmx.indices("floppy"):
        prefix = f"floppy{index}"
        # VMware's default for floppyN.present is TRUE, unlike every other device.
        if not vmx.get_bool(f"{prefix}.present", True):
            continue
        address = DeviceAddress(Bus.FLOPPY, index, 0)
        if index > 1:
            notes.append(Note("floppy drive outside VMware's range (0-1) ignored", prefix))
            continue
        key = vmx.key_name(f"{prefix}.fileName")
        name = (vmx.get_str(key) or "").strip()
        start = vmx.get_bool(f"{prefix}.startConnected", True)
        if _client_device(vmx, prefix, notes):
            drives.append(RemovableDrive(address, MediaKind.EMPTY, name or None, None, start))
            continue
        type_key = f"{prefix}.fileType"
        file_type = (vmx.get_str(type_key) or "").strip().lower()
        if file_type not in ("", "file", "device"):
            notes.append(Note(f"unknown fileType {file_type!r}; guessed from the file name", type_key))
            file_type = ""
        if not file_type:
            host = not name or name.lower() == _AUTO_DETECT or bool(_HOST_DRIVE_RE.match(name))
            file_type = "device" if host else "file"
        if file_type == "device":
            drives.append(RemovableDrive(address, MediaKind.HOST, name or None, None, start))
        elif not name:
            drives.append(RemovableDrive(address, MediaKind.EMPTY, None, None, start))
        else:
            drives.append(_image(vmx, address, key, name, start, resolver, notes))
    return tuple(drives)


def _guest_scsi_default(guest_os: str) -> str:
    """The SCSI adapter VMware picks for a new VM of this guest OS."""
    if _OLD_WINDOWS_RE.match(guest_os) and not guest_os.endswith("-64"):
        return "buslogic"
    if _VISTA_OR_LATER_RE.match(guest_os):
        return "lsisas1068"
    return "lsilogic"


def _fill_scsi_models(
    vmx: VmxFile,
    controllers: dict[tuple[Bus, int], Controller],
    disks: list[SourceDisk],
    guest_os: str,
    notes: list[Note],
) -> None:
    for (bus, index), ctrl in list(controllers.items()):
        if bus is not Bus.SCSI:
            continue
        key = vmx.key_name(f"scsi{index}.virtualDev")
        if ctrl.model in SCSI_MODELS:
            continue
        if ctrl.model is not None:
            notes.append(Note(f"unknown SCSI controller model {ctrl.model!r} kept as written", key))
            continue
        # Without virtualDev VMware looks at the first disk's ddb.adapterType.
        model: str | None = None
        for disk in disks:
            if disk.address.bus is Bus.SCSI and disk.address.controller == index and disk.chain:
                adapter = (disk.chain.top.adapter_type or "").lower()
                model = _ADAPTER_MODELS.get(adapter)
                break
        how = "from the adapter type of its first disk"
        if model is None:
            model = _guest_scsi_default(guest_os)
            how = f"VMware's default for guest OS {guest_os!r}"
        notes.append(Note(f"no virtualDev; model {model} assumed ({how})", key))
        controllers[(bus, index)] = Controller(bus, index, model, ctrl.pci_slot)
