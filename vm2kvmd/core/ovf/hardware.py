"""An ``OvfEnvelope`` to a ``SourceVM``: the same model the VMX reader builds.

Pure apart from the injected ``OvfDiskLoader`` (which reads VMDK files or
members of an OVA).  Everything the descriptor says that has no place in the
model becomes a ``Note`` naming the element (``Item[rasd:InstanceID='9']``).

Item kinds by ``rasd:ResourceType`` (CIM_ResourceAllocationSettingData):
3 processor, 4 memory, 5 IDE, 6 SCSI (``ResourceSubType`` lsilogic,
VirtualSCSI = pvscsi, buslogic, lsilogicsas), 20 other storage (SATA
``vmware.sata.ahci``/``AHCI``, NVMe ``vmware.nvme.controller``), 17 disk,
15/16 CD/DVD, 14 floppy, 10 Ethernet, 23 USB, 24 graphics, 21/22 serial and
parallel ports (dropped: the OVF carries no backing).  Sound cards are
``ResourceType`` 1 with ``ResourceSubType`` ``vmware.soundcard.*`` (VMware)
or 35 (VirtualBox); the VMCI device is 1 ``vmware.vmci``.

Values in ``vmw:ExtraConfig`` are VMX keys and are read with the VMX reader's
accessors (``uuid.bios``, ``vc.uuid``, ``vm.genid``, ``RemoteDisplay.vnc.*``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from vm2kvmd.core.hardware.limits import MAX_NICS, beyond_vmware
from vm2kvmd.core.hardware.model import (
    Cpu,
    Firmware,
    Memory,
    Nic,
    Sound,
    SourceVM,
    Usb,
    Video,
    is_64bit_guest,
)
from vm2kvmd.core.ovf.envelope import (
    OvfEnvelope,
    OvfItem,
    descriptor_stem,
    invalid_source,
    invalid_value,
    parse_units,
)
from vm2kvmd.core.ovf.guest import guest_os_of
from vm2kvmd.core.ovf.items import (
    CPU,
    ETHERNET,
    GRAPHICS,
    MEMORY,
    OTHER,
    PARALLEL,
    SERIAL,
    SOUND,
    USB,
    OvfContext,
    by_type,
    listing,
    parse_bool,
    pci_slot,
)
from vm2kvmd.core.ovf.storage import KNOWN_STORAGE_TYPES, OvfDiskLoader, read_storage
from vm2kvmd.core.vmware.vmx import VmxFile
from vm2kvmd.core.vmware.vmx_devices import CONNECTION_TYPES, guest_default_nic, read_vnc
from vm2kvmd.core.vmware.vmx_hardware import MAX_MEMORY_MIB, MAX_VCPUS, parse_genid, parse_vmware_uuid
from vm2kvmd.errors import Vm2kvmError

__all__ = ["OvfDiskLoader", "build_source_vm"]

MIB = 1 << 20

_NIC_MODELS = {
    "e1000": "e1000",
    "e1000e": "e1000e",
    "vmxnet3": "vmxnet3",
    "vmxnet2": "vmxnet2",
    "vmxnet": "vmxnet",
    "pcnet32": "vlance",
    "vlance": "vlance",
}
_SOUND_MODELS = {"ensoniq1371": "es1371", "es1371": "es1371", "hdaudio": "hdaudio", "sb16": "sb16"}
_MAC_RE = re.compile(r"^[0-9a-f]{2}(?:[:-]?[0-9a-f]{2}){5}$")
_SECURE_BOOT_KEYS = ("bootOptions.efiSecureBootEnabled", "uefi.secureBoot.enabled")


@contextmanager
def _ovf_hint() -> Iterator[None]:
    """Errors of the VMX accessors, with a hint that fits an OVF descriptor."""
    try:
        yield
    except Vm2kvmError as err:
        raise Vm2kvmError(
            err.code,
            err.message,
            file=err.file,
            key=err.key,
            value=err.value,
            hint=f"correct {err.key} in the OVF descriptor (and its digest in the .mf manifest)",
        ) from None


# --- identity, CPU, memory, firmware -----------------------------------------------


def _extra_vmx(env: OvfEnvelope) -> VmxFile:
    """``vmw:ExtraConfig`` as the VMX keys it is; messages name the element."""
    entries = {key.lower(): value for key, value in env.extra_config.items()}
    spelling = {key.lower(): f"vmw:ExtraConfig[{key}]" for key in env.extra_config}
    return VmxFile(path=env.path, entries=entries, spelling=spelling)


def _uuid_text(ctx: OvfContext, raw: str, where: str) -> str:
    vmx = VmxFile(path=ctx.path, entries={"uuid": raw}, spelling={"uuid": where})
    parsed = parse_vmware_uuid(vmx, "uuid")
    assert parsed is not None  # raw is not blank
    return parsed


def _identity(ctx: OvfContext, extra: VmxFile) -> tuple[str | None, str | None, str | None]:
    uuid_bios = parse_vmware_uuid(extra, "uuid.bios")
    if uuid_bios is None and (raw := ctx.env.config.get("uuid", "").strip()):
        uuid_bios = _uuid_text(ctx, raw, "vmw:Config[uuid]")
    if uuid_bios is None and ctx.env.vmw_uuid and ctx.env.vmw_uuid.strip():
        uuid_bios = _uuid_text(ctx, ctx.env.vmw_uuid, "VirtualSystem/@vmw:uuid")
    if uuid_bios is None:
        ctx.note("the descriptor carries no BIOS UUID (export with ovftool --exportFlags=uuid to keep it)")
    return uuid_bios, parse_vmware_uuid(extra, "vc.uuid"), parse_genid(extra, ctx.notes)


def _quantity_item(ctx: OvfContext, items: list[OvfItem], kind: int, what: str) -> OvfItem | None:
    """The processor or memory Item (the first of several, with a note); it must give a quantity."""
    found = by_type(items, kind)
    if not found:
        return None
    item = found[0]
    if len(found) > 1:
        ctx.note(f"{len(found)} {what} Items; the first used", item.label)
    if item.quantity is None:
        raise invalid_source(ctx.path, f"the {what} Item has no rasd:VirtualQuantity", key=item.locator)
    return item


def _cpu(ctx: OvfContext, items: list[OvfItem]) -> Cpu:
    item = _quantity_item(ctx, items, CPU, "processor")
    if item is None or item.quantity is None:
        ctx.note("no processor Item; VMware's default of 1 vCPU used", "VirtualHardwareSection")
        return Cpu(vcpus=1)
    vcpus = ctx.number(item.quantity, f"{item.locator}/rasd:VirtualQuantity", MAX_VCPUS)
    if vcpus < 1:
        raise invalid_value(
            ctx.path, f"{item.locator}/rasd:VirtualQuantity", item.quantity, "must be at least 1"
        )
    cores = 1
    if item.cores_per_socket is not None:
        cores = ctx.number(item.cores_per_socket, f"{item.locator}/vmw:CoresPerSocket", MAX_VCPUS) or 1
    if vcpus % cores:
        ctx.note(
            f"{cores} cores per socket do not divide {vcpus} vCPUs; one core per socket used", item.label
        )
        cores = 1
    ctx.ignored_config(item)
    return Cpu(vcpus=vcpus, cores_per_socket=cores)


def _mib(ctx: OvfContext, item: OvfItem, text: str, what: str, unit: int) -> int:
    key = f"{item.locator}/rasd:{what}"
    value = ctx.number(text, key, MAX_MEMORY_MIB * MIB)
    size = value * unit
    if size > MAX_MEMORY_MIB * MIB:
        raise invalid_value(ctx.path, key, text, f"(x {unit} bytes) is more than the 24 TiB ESXi allows")
    mib = -(-size // MIB)
    if size % MIB:
        ctx.note(f"{what} of {size} bytes rounded up to {mib} MiB", item.label)
    return mib


def _memory(ctx: OvfContext, items: list[OvfItem]) -> Memory:
    item = _quantity_item(ctx, items, MEMORY, "memory")
    if item is None or item.quantity is None:
        ctx.note("no memory Item; VMware's default of 32 MiB used", "VirtualHardwareSection")
        return Memory(size_mib=32)
    if item.units is None:
        ctx.note("no rasd:AllocationUnits; MiB assumed (VMware's unit)", item.label)
    unit = parse_units(item.units, ctx.path, f"{item.locator}/rasd:AllocationUnits", default=MIB)
    size = _mib(ctx, item, item.quantity, "VirtualQuantity", unit)
    if size < 1:
        raise invalid_value(
            ctx.path, f"{item.locator}/rasd:VirtualQuantity", item.quantity, "must be at least 1 MiB"
        )
    reservation = _mib(ctx, item, item.reservation, "Reservation", unit) if item.reservation else None
    # VMware writes -1 or the memory size for "unlimited"; only real limits are kept.
    unlimited = not item.limit or item.limit.strip().startswith("-")
    limit = None if unlimited else _mib(ctx, item, item.limit or "", "Limit", unit)
    if reservation is not None and reservation > size:
        ctx.note(f"reservation above the memory size; capped at {size} MiB", item.label)
        reservation = size
    if limit is not None and limit >= size:
        limit = None
    pinned = parse_bool(ctx.env.config.get("memoryReservationLockedToMax")) is True
    ctx.ignored_config(item)
    return Memory(size_mib=size, reservation_mib=reservation or None, limit_mib=limit, pinned=pinned)


def _firmware(ctx: OvfContext) -> tuple[Firmware, bool]:
    env = ctx.env
    raw, where = env.config.get("firmware"), "vmw:Config[firmware]"
    if raw is None:
        raw, where = env.extra_config.get("firmware"), "vmw:ExtraConfig[firmware]"
    if raw is None and "firmware=uefi" in env.other_config.get("HVM_boot_params", "").lower():
        raw, where = "efi", "VirtualSystemOtherConfigurationData[HVM_boot_params]"
    word = (raw or "").strip().lower()
    if word in ("", "bios"):
        firmware = Firmware.BIOS
    elif word in ("efi", "uefi"):
        firmware = Firmware.EFI
    else:
        raise invalid_value(ctx.path, where, raw or "", "is neither efi nor bios")
    secure = False
    for key in _SECURE_BOOT_KEYS:
        for source, name in ((env.config, "vmw:Config"), (env.extra_config, "vmw:ExtraConfig")):
            if parse_bool(source.get(key)):
                secure = True
                if firmware is Firmware.BIOS:
                    ctx.note("secure boot needs EFI firmware; ignored", f"{name}[{key}]")
                    secure = False
    return firmware, secure


# --- network and other devices -------------------------------------------------------


def _mac(ctx: OvfContext, item: OvfItem) -> str | None:
    raw = (item.address or "").strip().lower()
    if not raw:
        return None
    if not _MAC_RE.match(raw):
        ctx.note(f"rasd:Address {item.address!r} is not a MAC address; the target generates one", item.label)
        return None
    digits = re.sub(r"[:-]", "", raw)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _nics(ctx: OvfContext, items: list[OvfItem], is_64bit: bool) -> tuple[Nic, ...]:
    nics: list[Nic] = []
    for item in by_type(items, ETHERNET):
        if len(nics) == MAX_NICS:
            raise beyond_vmware(f"more than {MAX_NICS} NICs", item.label, "10 NICs")
        sub = (item.subtype or "").strip().lower()
        model = _NIC_MODELS.get(sub)
        if model is None:
            model = guest_default_nic(is_64bit)
            ctx.note(f"NIC type {item.subtype!r} unknown; treated as {model}", item.label)
        mac = _mac(ctx, item)
        if mac is None:
            ctx.note(
                "no MAC address in the descriptor; the target generates one "
                "(export with ovftool --exportFlags=mac to keep it)",
                item.label,
            )
        connection = item.connections[0] if item.connections else None
        if len(item.connections) > 1:
            ctx.note(f"several rasd:Connection values; {connection!r} used", item.label)
        # ovftool writes Workstation's connection types as network names.
        kind = connection.lower() if connection and connection.lower() in CONNECTION_TYPES else None
        ctx.ignored_config(item)
        nics.append(
            Nic(
                index=len(nics),
                model=model,
                mac=mac,
                address_type="static" if mac else "generated",
                connection_type=kind or "bridged",
                network_name=None if kind else connection,
                vnet=None,
                pci_slot=pci_slot(item),
                start_connected=item.automatic_allocation is not False,
            )
        )
    return tuple(nics)


def _video(ctx: OvfContext, items: list[OvfItem]) -> Video | None:
    cards = by_type(items, GRAPHICS)
    if not cards:
        return None
    item = cards[0]
    config = item.config
    vram = config.get("videoRamSizeInKB", "")
    displays = config.get("numDisplays", "")
    ctx.ignored_config(
        item,
        (
            "videoRamSizeInKB",
            "numDisplays",
            "useAutoDetect",
            "enable3DSupport",
            "use3dRenderer",
            "graphicsMemorySizeInKB",
        ),
    )
    return Video(
        vram_kib=ctx.number(vram, f"{item.locator}/vmw:Config[videoRamSizeInKB]", 4 << 20) or None
        if vram
        else None,
        num_displays=max(1, min(10, int(displays))) if displays.isdigit() else 1,
        autodetect=parse_bool(config.get("useAutoDetect")) is not False,
        accel_3d=parse_bool(config.get("enable3DSupport")) is True,
    )


def _sound(ctx: OvfContext, items: list[OvfItem]) -> Sound | None:
    for item in items:
        sub = (item.subtype or "").strip().lower()
        if item.resource_type == SOUND or (
            item.resource_type == OTHER and sub.startswith("vmware.soundcard.")
        ):
            name = sub.removeprefix("vmware.soundcard.")
            model = _SOUND_MODELS.get(name)
            if model is None:
                ctx.note(f"sound card type {item.subtype!r} unknown; es1371 assumed", item.label)
                model = "es1371"
            return Sound(model=model)
    return None


def _usb(ctx: OvfContext, items: list[OvfItem]) -> Usb:
    uhci = ehci = xhci = False
    for item in by_type(items, USB):
        sub = (item.subtype or "").strip().lower()
        if "xhci" in sub:
            xhci = True
        elif "ehci" in sub:
            # VMware's "USB 2.0" controller is UHCI with an EHCI companion unless ehciEnabled is false.
            uhci = True
            ehci = ehci or parse_bool(item.config.get("ehciEnabled")) is not False
        else:
            uhci = True
    return Usb(uhci=uhci, ehci=ehci, xhci=xhci)


_KNOWN_TYPES = KNOWN_STORAGE_TYPES | {CPU, MEMORY, ETHERNET, USB, GRAPHICS, SOUND}


def _dropped_items(ctx: OvfContext, items: list[OvfItem]) -> None:
    for item in items:
        sub = (item.subtype or "").strip().lower()
        if item.resource_type in (SERIAL, PARALLEL):
            what = "serial" if item.resource_type == SERIAL else "parallel"
            ctx.note(f"{what} port dropped: the descriptor does not say what it was connected to", item.label)
        elif item.resource_type == OTHER and sub == "vmware.vmci":
            ctx.note("VMCI device dropped (VMware Tools communication channel)", item.label)
        elif item.resource_type == OTHER and sub.startswith("vmware.soundcard."):
            continue
        elif item.resource_type not in _KNOWN_TYPES:
            ctx.note(
                f"device of ResourceType {item.resource_type} ({item.subtype or 'no subtype'}) dropped",
                item.label,
            )


_USED_SECTION_KEYS = frozenset({"firmware", "uuid", "memoryReservationLockedToMax", *_SECURE_BOOT_KEYS})
_USED_EXTRA_KEYS = frozenset(
    {"nvram", "uuid.bios", "vc.uuid", "vm.genid", "vm.genidx", "firmware", "uefi.secureboot.enabled"}
)


def _section_notes(ctx: OvfContext) -> None:
    env = ctx.env
    rest = [f"{k}={v}" for k, v in env.config.items() if k not in _USED_SECTION_KEYS]
    if rest:
        ctx.note("settings not carried over: " + listing(rest), "VirtualHardwareSection/vmw:Config")
    extra = [
        k
        for k in env.extra_config
        if k.lower() not in _USED_EXTRA_KEYS and not k.lower().startswith("remotedisplay.vnc.")
    ]
    if extra:
        ctx.note("VMX settings not used: " + listing(extra), "vmw:ExtraConfig")
    if "nvram" in (k.lower() for k in env.extra_config):
        # OVMF finds \EFI\BOOT\BOOTX64.EFI (or the OS's own loader) on the disk without them.
        ctx.note(
            "the EFI variable store (nvram) is not carried over; boot entries start afresh",
            "vmw:ExtraConfig[nvram]",
        )
    other = [k for k in env.other_config if k != "HVM_boot_params"]
    if other:
        ctx.note("XenServer settings not used: " + listing(other), "VirtualSystemOtherConfigurationData")


# --- the VM --------------------------------------------------------------------------


def build_source_vm(env: OvfEnvelope, load_disk: OvfDiskLoader, *, source_path: str) -> SourceVM:
    """The full hardware model of the VM ``env`` describes; ``source_path`` is the .ovf/.ova.

    Raises ``Vm2kvmError`` (INVALID_SOURCE, INVALID_VALUE naming the element)
    for a descriptor that makes no sense; disk problems do not raise but are
    recorded on the disk, as for a VMX.
    """
    ctx = OvfContext(env, list(env.notes))
    display_name = (env.name or "").strip() or (env.system_id or "").strip()
    if not display_name:
        display_name = descriptor_stem(source_path)
        ctx.note(f"the VirtualSystem has no Name; the file name {display_name!r} used", "VirtualSystem/Name")
    guest_os = guest_os_of(env, ctx.notes)
    firmware, secure_boot = _firmware(ctx)
    items = list(env.items)
    extra = _extra_vmx(env)
    with _ovf_hint():
        uuid_bios, vc_uuid, genid = _identity(ctx, extra)
        vnc = read_vnc(extra)
    cpu = _cpu(ctx, items)
    memory = _memory(ctx, items)
    storage = read_storage(ctx, items, load_disk)
    nics = _nics(ctx, items, is_64bit_guest(guest_os))
    video = _video(ctx, items)
    sound = _sound(ctx, items)
    usb = _usb(ctx, items)
    _dropped_items(ctx, items)
    _section_notes(ctx)
    return SourceVM(
        source_path=source_path,
        display_name=display_name,
        annotation=env.annotation,
        guest_os=guest_os,
        hw_version=env.hw_version,
        firmware=firmware,
        secure_boot=secure_boot,
        cpu=cpu,
        memory=memory,
        uuid_bios=uuid_bios,
        vc_uuid=vc_uuid,
        genid=genid,
        controllers=storage.controllers,
        disks=storage.disks,
        cdroms=storage.cdroms,
        floppies=storage.floppies,
        nics=nics,
        video=video,
        sound=sound,
        usb=usb,
        vnc=vnc,
        notes=tuple(ctx.notes),
    )
