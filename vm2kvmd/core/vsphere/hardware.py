"""A VM's vSphere configuration (``VsVm``) to a ``SourceVM``: the model the VMX and OVF
readers build, so mapping, conversion and the report work unchanged.

The rules shared with those readers are theirs: the bus rules (SCSI unit 7 is the
controller, 16 or 64 units by hardware version), VMware's default NIC for the guest,
the vCPU and memory limits, the guest id spelling (``debian10_64Guest`` is the VMX's
``debian10-64``) and the VM generation ID (``vm.genid`` in ``extraConfig``).

Decisions (see docs/decisions.md, "vSphere sources"):

- Disks are not local: each ``SourceDisk`` has ``remote`` (datastore, the files of
  its snapshot chain newest first, capacity) and no chain; reading them is the
  migration's job.  The newest layer is the VM's current state, so a VM with
  snapshots migrates what it runs on now.
- Raw device mappings are recorded on the disk as UNSUPPORTED_DISK (inspect shows
  the VM, migrate refuses); a disk on an inaccessible datastore as DATASTORE_INACCESSIBLE.
  Independent disks are migrated with a note (they are outside snapshots, so their
  current content is what the VM sees).
- Firmware other than bios/efi is INVALID_VALUE on ``config.firmware``.
- Two devices on the same unit (the simulator puts the CD-ROM and the disk on
  unit 0) or a unit out of range: the drive moves to the next free unit, with a note.
- ISO and floppy images on datastores are not copied: the drive is left empty, noted.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from vm2kvmd.core.hardware.limits import MAX_NICS, beyond_vmware
from vm2kvmd.core.hardware.model import (
    READ_AT_MIGRATION,
    Bus,
    CharPort,
    Controller,
    Cpu,
    DeviceAddress,
    Firmware,
    MediaKind,
    Memory,
    Nic,
    Note,
    PortKind,
    RemoteDisk,
    RemovableDrive,
    Sound,
    SourceDisk,
    SourceVM,
    Usb,
    Video,
    is_64bit_guest,
)
from vm2kvmd.core.ovf.guest import guest_os_from_vim
from vm2kvmd.core.vmware.vmx import VmxFile
from vm2kvmd.core.vmware.vmx_devices import (
    MAX_SERIALS,
    NIC_MODELS,
    guest_default_nic,
    parse_port_uri,
)
from vm2kvmd.core.vmware.vmx_hardware import MAX_MEMORY_MIB, MAX_VCPUS, parse_genid
from vm2kvmd.core.vmware.vmx_storage import DISK_MODES, Storage, address_order, bus_rules
from vm2kvmd.core.vsphere.config import (
    BackingKind,
    ControllerKind,
    DriveKind,
    NetworkKind,
    SerialKind,
    VsDisk,
    VsDrive,
    VsNic,
    VsSerial,
    VsVm,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = ["build_source_vm"]

_CONTROLLERS: dict[ControllerKind, tuple[Bus, str | None]] = {
    ControllerKind.IDE: (Bus.IDE, None),
    ControllerKind.LSILOGIC: (Bus.SCSI, "lsilogic"),
    ControllerKind.LSISAS: (Bus.SCSI, "lsisas1068"),
    ControllerKind.PVSCSI: (Bus.SCSI, "pvscsi"),
    ControllerKind.BUSLOGIC: (Bus.SCSI, "buslogic"),
    ControllerKind.SATA: (Bus.SATA, None),
    ControllerKind.NVME: (Bus.NVME, None),
}
# VirtualMachine.config.nic addressType -> the VMX ethernetN.addressType it is.
_ADDRESS_TYPES = {"assigned": "vpx", "generated": "generated", "manual": "static"}
_MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_HW_VERSION_RE = re.compile(r"^vmx-(\d{1,3})$")
_DATASTORE_PATH_RE = re.compile(r"^\[(?P<ds>[^\]]*)\]\s*(?P<path>.*)$")
_SILENT_STATES = frozenset({"poweredOff", "poweredOn"})  # powered on: preflight's business


@dataclass
class _Context:
    vm: VsVm
    source_path: str
    notes: list[Note] = field(default_factory=list)

    def note(self, message: str, where: str | None = None) -> None:
        self.notes.append(Note(message, where))

    def invalid(self, key: str, value: object, message: str, hint: str | None = None) -> Vm2kvmError:
        return Vm2kvmError(
            ErrorCode.INVALID_VALUE, message, file=self.source_path, key=key, value=str(value), hint=hint
        )


def datastore_of(file_name: str) -> str | None:
    """``[LocalDS_0] vm/vm.vmdk`` -> ``LocalDS_0``; None when it is not a datastore path."""
    match = _DATASTORE_PATH_RE.match(file_name.strip())
    return match["ds"] if match else None


# --- identity, CPU, memory, firmware -----------------------------------------------


def _hw_version(ctx: _Context) -> int | None:
    raw = (ctx.vm.version or "").strip()
    match = _HW_VERSION_RE.match(raw)
    if match is None:
        if raw:
            ctx.note(f"hardware version {raw!r} not understood; ignored", "config.version")
        return None
    return int(match[1])


def _guest_os(ctx: _Context) -> str:
    guest = guest_os_from_vim(ctx.vm.guest_id) if ctx.vm.guest_id.strip() else None
    if guest:
        return guest
    fallback = "other-64" if "64" in ctx.vm.guest_full_name else "other"
    ctx.note(f"guest id {ctx.vm.guest_id!r} is not a VMware guest id; {fallback!r} assumed", "config.guestId")
    return fallback


def _firmware(ctx: _Context) -> tuple[Firmware, bool]:
    word = ctx.vm.firmware.strip().lower()
    if word in ("", "bios"):
        firmware = Firmware.BIOS
    elif word == "efi":
        firmware = Firmware.EFI
    else:
        raise ctx.invalid(
            "config.firmware",
            ctx.vm.firmware,
            "is neither efi nor bios",
            hint="set the VM's boot firmware to BIOS or EFI in vSphere",
        )
    secure = ctx.vm.secure_boot
    if secure and firmware is Firmware.BIOS:
        ctx.note("secure boot needs EFI firmware; ignored", "config.bootOptions.efiSecureBootEnabled")
        secure = False
    return firmware, secure


def _uuid(ctx: _Context, raw: str | None, key: str) -> str | None:
    if raw is None or not raw.strip():
        return None
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        raise ctx.invalid(key, raw, "is not a UUID") from None


def _cpu(ctx: _Context) -> Cpu:
    vcpus = ctx.vm.num_cpu
    if not 1 <= vcpus <= MAX_VCPUS:
        raise ctx.invalid("config.hardware.numCPU", vcpus, f"must be between 1 and {MAX_VCPUS}")
    cores = ctx.vm.cores_per_socket if ctx.vm.cores_per_socket >= 1 else 1
    if vcpus % cores:
        ctx.note(
            f"{cores} cores per socket do not divide {vcpus} vCPUs; one core per socket used",
            "config.hardware.numCoresPerSocket",
        )
        cores = 1
    return Cpu(vcpus=vcpus, cores_per_socket=cores)


def _memory(ctx: _Context) -> Memory:
    size = ctx.vm.memory_mb
    if not 1 <= size <= MAX_MEMORY_MIB:
        raise ctx.invalid("config.hardware.memoryMB", size, "must be between 1 MiB and 24 TiB")
    reservation = ctx.vm.memory_reservation_mb or None
    if reservation is not None and reservation > size:
        ctx.note(f"reservation above the memory size; capped at {size} MiB", "config.memoryAllocation")
        reservation = size
    # -1 (and anything at or above the size) is "unlimited".
    limit = ctx.vm.memory_limit_mb
    if limit is not None and (limit < 0 or limit >= size):
        limit = None
    return Memory(size_mib=size, reservation_mib=reservation, limit_mib=limit)


# --- storage -----------------------------------------------------------------------


@dataclass
class _Units:
    """Units taken on each controller, by the bus rules of the hardware version."""

    ctx: _Context
    hw_version: int | None
    controllers: dict[int, Controller] = field(default_factory=dict)  # by device key
    used: dict[tuple[Bus, int], set[int]] = field(default_factory=dict)

    def address(self, controller_key: int | None, unit: int | None, where: str) -> DeviceAddress | None:
        ctrl = self.controllers.get(controller_key) if controller_key is not None else None
        if ctrl is None:
            return None
        rule = next(r for r in bus_rules(self.hw_version) if r.bus is ctrl.bus)
        taken = self.used.setdefault((ctrl.bus, ctrl.index), set())
        if unit is None or unit >= rule.units or unit in rule.reserved or unit in taken:
            free = [u for u in range(rule.units) if u not in rule.reserved and u not in taken]
            if not free:
                raise Vm2kvmError(
                    ErrorCode.INVALID_SOURCE,
                    f"{ctrl.bus.value}{ctrl.index} has no free unit left",
                    file=self.ctx.source_path,
                    key=where,
                )
            self.ctx.note(
                f"unit {unit} on {ctrl.bus.value}{ctrl.index} is taken or out of range; unit {free[0]} used",
                where,
            )
            unit = free[0]
        taken.add(unit)
        return DeviceAddress(ctrl.bus, ctrl.index, unit)


def _controllers(ctx: _Context, units: _Units) -> None:
    for vs in sorted(ctx.vm.controllers, key=lambda c: c.key):
        bus, model = _CONTROLLERS[vs.kind]
        rule = next(r for r in bus_rules(units.hw_version) if r.bus is bus)
        if not 0 <= vs.bus_number < rule.controllers:
            raise Vm2kvmError(
                ErrorCode.INVALID_SOURCE,
                f"{bus.value.upper()} controller number {vs.bus_number} is outside VMware's range",
                file=ctx.source_path,
                key=f"config.hardware.device[{vs.key}]",
            )
        units.controllers[vs.key] = Controller(bus, vs.bus_number, model, vs.pci_slot)


def _where(label: str, key: int) -> str:
    if not label:
        return f"device {key}"
    return label if str(key) in label else f"{label} (device {key})"


def _disk_mode(ctx: _Context, raw: str, where: str) -> str:
    mode = raw.strip().lower().replace("_", "-") or "persistent"
    if mode not in DISK_MODES:
        ctx.note(f"unknown disk mode {raw!r}; treated as persistent", where)
        return "persistent"
    if mode == "independent-persistent":
        ctx.note("independent disk: outside snapshots; its current content is migrated", where)
    return mode


def _disk(ctx: _Context, units: _Units, vs: VsDisk) -> SourceDisk:
    where = _where(vs.label, vs.key)
    address = units.address(vs.controller_key, vs.unit_number, where)
    if address is None:
        raise Vm2kvmError(
            ErrorCode.INVALID_SOURCE,
            f"the disk's controller (device {vs.controller_key}) is not a storage controller of the VM",
            file=ctx.source_path,
            key=where,
        )
    top = vs.backing
    mode = _disk_mode(ctx, top.disk_mode, where)
    layers = top.layers
    datastore = top.datastore or datastore_of(top.file_name) or ""

    def refused(code: ErrorCode, message: str, hint: str) -> SourceDisk:
        err = Vm2kvmError(
            code, message, file=ctx.source_path, key=where, value=top.file_name or None, hint=hint
        )
        return SourceDisk(
            address=address,
            file_name=top.file_name,
            path=None,
            mode=mode,
            chain=None,
            problem=err.describe(),
            problem_code=code,
            write_through=top.write_through,
        )

    if top.kind is BackingKind.RDM:
        mapping = top.compatibility_mode or "unknown mode"
        return refused(
            ErrorCode.UNSUPPORTED_DISK,
            f"raw device mapping ({mapping}) of LUN {top.lun or '?'}: the data is on the LUN, "
            "not on the datastore",
            "migrate the disk to a virtual disk in vSphere (Storage vMotion, thick/thin format) "
            "or remove it from the VM and attach the LUN to the new domain by hand",
        )
    if top.kind is BackingKind.OTHER or not top.file_name.strip():
        return refused(
            ErrorCode.UNSUPPORTED_DISK,
            f"disk backing {top.type_name or 'without a file'} has no datastore file to copy",
            "move the disk to a VMDK on a datastore in vSphere, or remove it from the VM",
        )
    for layer in layers:
        if not layer.datastore_accessible:
            name = layer.datastore or datastore_of(layer.file_name) or "?"
            return refused(
                ErrorCode.DATASTORE_INACCESSIBLE,
                f"datastore {name} holding {layer.file_name} is inaccessible",
                f"bring datastore {name} back online (or move the disk) and try again",
            )
    if len(layers) > 1:
        ctx.note(f"current state read through {len(layers)} files (snapshot deltas and base disk)", where)
    remote = RemoteDisk(
        datastore=datastore,
        layers=tuple(layer.file_name for layer in layers),
        capacity=vs.capacity_bytes,
        thin=layers[-1].thin if layers[-1].kind is BackingKind.FLAT else None,
    )
    return SourceDisk(
        address=address,
        file_name=top.file_name,
        path=None,
        mode=mode,
        chain=None,
        problem=f"{top.file_name}: {READ_AT_MIGRATION}",
        write_through=top.write_through,
        remote=remote,
    )


def _drive(ctx: _Context, vs: VsDrive, what: str, address: DeviceAddress) -> RemovableDrive:
    where = _where(vs.label, vs.key)
    kind = MediaKind.EMPTY
    if vs.kind is DriveKind.IMAGE and vs.file_name:
        ctx.note(f"{what} image {vs.file_name} is on the datastore and not copied; drive left empty", where)
    elif vs.kind is DriveKind.HOST:
        kind = MediaKind.HOST
    elif vs.kind is DriveKind.CLIENT:
        ctx.note(f"{what} drive was the vSphere client's device; left empty", where)
    return RemovableDrive(
        address=address,
        kind=kind,
        file_name=vs.file_name if kind is MediaKind.HOST else None,
        path=None,
        start_connected=vs.start_connected,
    )


def _storage(ctx: _Context, hw_version: int | None) -> Storage:
    units = _Units(ctx, hw_version)
    _controllers(ctx, units)
    # Disks first: when two devices share a unit, the disk keeps it.
    disks = [_disk(ctx, units, vs) for vs in sorted(ctx.vm.disks, key=lambda d: d.key)]
    cdroms: list[RemovableDrive] = []
    for vs in sorted(ctx.vm.cdroms, key=lambda d: d.key):
        where = _where(vs.label, vs.key)
        address = units.address(vs.controller_key, vs.unit_number, where)
        if address is None:
            ctx.note(
                f"CD/DVD drive on device {vs.controller_key}, which is no storage controller; dropped", where
            )
            continue
        cdroms.append(_drive(ctx, vs, "CD/DVD", address))
    # VMware has one floppy controller with two drives (floppy0, floppy1).
    floppies = [
        _drive(ctx, vs, "floppy", DeviceAddress(Bus.FLOPPY, index, 0))
        for index, vs in enumerate(sorted(ctx.vm.floppies, key=lambda d: d.key)[:2])
    ]
    if len(ctx.vm.floppies) > 2:
        ctx.note("more than two floppy drives; the others dropped")
    order = list(Bus)
    return Storage(
        controllers=tuple(sorted(units.controllers.values(), key=lambda c: (order.index(c.bus), c.index))),
        disks=tuple(sorted(disks, key=lambda d: address_order(d.address))),
        cdroms=tuple(sorted(cdroms, key=lambda d: address_order(d.address))),
        floppies=tuple(floppies),
    )


# --- network and other devices -------------------------------------------------------


def _mac(ctx: _Context, vs: VsNic, where: str) -> str | None:
    raw = (vs.mac or "").strip().lower().replace("-", ":")
    if not raw:
        ctx.note("no MAC address; the target will generate a new one", where)
        return None
    if not _MAC_RE.match(raw) or int(raw[:2], 16) & 1:
        ctx.note(f"MAC address {vs.mac!r} is not a unicast address; the target will generate one", where)
        return None
    if raw == "00:00:00:00:00:00":
        # NSX assigns such a NIC's address at power-on: there is none to keep.
        ctx.note("the all-zero MAC address (assigned at power-on); the target generates a fresh one", where)
        return None
    return raw


def _nic(ctx: _Context, index: int, vs: VsNic, is_64bit: bool) -> Nic:
    where = _where(vs.label, vs.key)
    model = vs.kind.strip().lower()
    if model not in NIC_MODELS:
        fallback = guest_default_nic(is_64bit)
        ctx.note(f"NIC type {vs.kind!r} has no KVM counterpart; treated as {fallback}", where)
        model = fallback
    address_type = _ADDRESS_TYPES.get(vs.address_type.strip().lower())
    if address_type is None:
        ctx.note(f"unknown addressType {vs.address_type!r}; treated as generated", where)
        address_type = "generated"
    net = vs.network
    name = net.name
    if net.kind is NetworkKind.OPAQUE and net.opaque_id and not name:
        # The host did not show the network (no read permission on it): its id is what we know.
        name = net.opaque_id
        ctx.note(
            f"NSX network {net.opaque_id} ({net.opaque_type or 'opaque'}): its name is not visible to "
            f"this user, so it is mapped by its id (--network {net.opaque_id}=NAME)",
            where,
        )
    elif net.kind is NetworkKind.OPAQUE:
        ctx.note(f"NSX network {net.name!r} ({net.opaque_type or 'opaque'}) mapped by its name", where)
    if net.kind is NetworkKind.OTHER or not name:
        ctx.note("the NIC is on no vSphere network; mapped as the default network", where)
    return Nic(
        index=index,
        model=model,
        mac=_mac(ctx, vs, where),
        address_type=address_type,
        connection_type="bridged",
        network_name=name or None,
        vnet=None,
        dvs_port_group=net.portgroup_key,
        dvs_switch=net.switch_uuid,
        pci_slot=vs.pci_slot,
        start_connected=vs.start_connected,
        opaque_network_id=net.opaque_id,
        opaque_network_type=net.opaque_type,
    )


def _nics(ctx: _Context, is_64bit: bool) -> tuple[Nic, ...]:
    # In the API's device order, which is vSphere's "Network adapter 1, 2 ..." (ethernet0, 1 ...);
    # not by key: keys of NICs added later need not follow 4000, 4001 (the simulator uses 2xx).
    nics = list(ctx.vm.nics)
    if len(nics) > MAX_NICS:
        vs = nics[MAX_NICS]
        raise beyond_vmware(f"more than {MAX_NICS} NICs", _where(vs.label, vs.key), "10 NICs")
    return tuple(_nic(ctx, i, vs, is_64bit) for i, vs in enumerate(nics))


_SERIAL_KINDS = {
    SerialKind.FILE: PortKind.FILE,
    SerialKind.DEVICE: PortKind.DEVICE,
    SerialKind.PIPE: PortKind.PIPE,
    SerialKind.URI: PortKind.NETWORK,
}


def _serial(ctx: _Context, index: int, vs: VsSerial) -> CharPort:
    kind = _SERIAL_KINDS[vs.kind]
    if kind is PortKind.PIPE:
        return CharPort(index, kind, vs.target, pipe_server=vs.server, start_connected=vs.start_connected)
    if kind is PortKind.NETWORK:
        endpoint = parse_port_uri(vs.target, server=vs.server) if vs.target else None
        if endpoint is None:
            ctx.note(
                f"network URI {vs.target!r} has no usable protocol, host or port; port left unconnected",
                _where(vs.label, vs.key),
            )
        return CharPort(index, kind, vs.target, endpoint=endpoint, start_connected=vs.start_connected)
    return CharPort(index, kind, vs.target, start_connected=vs.start_connected)


def _serials(ctx: _Context) -> tuple[CharPort, ...]:
    ports = list(ctx.vm.serials)
    for vs in ports[MAX_SERIALS:]:
        ctx.note(f"more than {MAX_SERIALS} serial ports; dropped", _where(vs.label, vs.key))
    return tuple(_serial(ctx, i, vs) for i, vs in enumerate(ports[:MAX_SERIALS]))


def _video(ctx: _Context) -> Video | None:
    card = ctx.vm.video
    if card is None:
        return None
    return Video(
        vram_kib=card.vram_kib or None,
        num_displays=max(1, min(10, card.num_displays)),
        autodetect=card.autodetect,
        accel_3d=card.accel_3d,
    )


def _state_notes(ctx: _Context) -> None:
    vm = ctx.vm
    if vm.snapshot_count:
        current = f" (on snapshot {vm.current_snapshot!r})" if vm.current_snapshot else ""
        ctx.note(
            f"the VM has {vm.snapshot_count} snapshot(s); its current state{current} is migrated, "
            "the snapshots themselves are not (--snapshots keep keeps them)",
            "snapshot",
        )
    if vm.power_state not in _SILENT_STATES:
        ctx.note(
            f"the VM is {vm.power_state}; its memory state is lost and it cold boots", "runtime.powerState"
        )
    for device in vm.other_devices:
        ctx.note(f"{device} dropped: it has no place in the KVM domain", "config.hardware.device")


# --- the VM --------------------------------------------------------------------------


def build_source_vm(vm: VsVm, *, source_path: str) -> SourceVM:
    """The hardware model of ``vm``; ``source_path`` says where it came from (messages, metadata).

    Raises ``Vm2kvmError`` (INVALID_VALUE naming the property) for values that make
    no sense; disk problems (RDM, inaccessible datastore) are recorded on the disk.
    """
    ctx = _Context(vm, source_path)
    display_name = vm.name.strip() or vm.moid
    guest_os = _guest_os(ctx)
    hw_version = _hw_version(ctx)
    firmware, secure_boot = _firmware(ctx)
    cpu = _cpu(ctx)
    memory = _memory(ctx)
    extra = VmxFile(
        path=source_path,
        entries={k.lower(): v for k, v in vm.extra_config},
        spelling={k.lower(): f"config.extraConfig[{k}]" for k, _ in vm.extra_config},
    )
    genid = parse_genid(extra, ctx.notes)
    storage = _storage(ctx, hw_version)
    nics = _nics(ctx, is_64bit_guest(guest_os))
    serials = _serials(ctx)
    _state_notes(ctx)
    return SourceVM(
        source_path=source_path,
        display_name=display_name,
        annotation=vm.annotation,
        guest_os=guest_os,
        hw_version=hw_version,
        firmware=firmware,
        secure_boot=secure_boot,
        cpu=cpu,
        memory=memory,
        uuid_bios=_uuid(ctx, vm.uuid, "config.uuid"),
        vc_uuid=_uuid(ctx, vm.instance_uuid, "config.instanceUuid"),
        genid=genid,
        controllers=storage.controllers,
        disks=storage.disks,
        cdroms=storage.cdroms,
        floppies=storage.floppies,
        nics=nics,
        serials=serials,
        video=_video(ctx),
        sound=Sound(model=vm.sound) if vm.sound else None,
        usb=Usb(uhci="uhci" in vm.usb, ehci="ehci" in vm.usb, xhci="xhci" in vm.usb),
        notes=tuple(ctx.notes),
    )
