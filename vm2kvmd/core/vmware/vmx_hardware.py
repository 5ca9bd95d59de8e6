"""Building a ``SourceVM`` from a parsed VMX file.

``build_source_vm`` is pure: the file system is reached only through the
injected ``PathResolver`` (and its ``HostPaths``) and ``DiskLoader``;
``vm2kvmd.sources.vmware.vm.load_source_vm`` wires in the real VMX reader and
VMDK loader.

Defaults follow VMware where a key is absent: ``numvcpus`` 1, ``memsize``
32 MiB (VMware's historical default, also libvirt's; noted because no modern
guest boots with it), ``firmware`` bios.  Nonsense is rejected with
INVALID_VALUE naming the key: ``memsize`` below 1 MiB or above 24 TiB (the
most ESXi 8 allows), ``numvcpus`` below 1 or above 768.

``vm.genid``/``vm.genidX`` are the two halves of the VM Generation ID as signed
64-bit decimals.  The guest sees them as two 64-bit numbers (genid first);
libvirt hands ``<genid>`` to QEMU, which stores it in the Microsoft GUID byte
order.  So the UUID is built from the little-endian bytes of genid then genidX,
read as a GUID (``uuid.UUID(bytes_le=...)``): the guest then sees the same
generation ID as under VMware and does not reset its identity (Active
Directory) after migration.  virt-v2v chose the same order.
"""

from __future__ import annotations

import os
import re
import uuid

from vm2kvmd.core.hardware.model import Cpu, Firmware, Memory, Note, SourceVM, is_64bit_guest
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.core.vmware.vmx import VmxFile, decode_escapes
from vm2kvmd.core.vmware.vmx_devices import (
    MAX_PARALLELS,
    MAX_SERIALS,
    dropped_notes,
    read_nics,
    read_ports,
    read_sound,
    read_usb,
    read_video,
    read_vnc,
)
from vm2kvmd.core.vmware.vmx_storage import DiskLoader, read_storage

__all__ = ["DiskLoader", "build_source_vm", "parse_genid", "parse_vmware_uuid"]

MAX_VCPUS = 768  # ESXi 8 limit
MAX_MEMORY_MIB = 24 * 1024 * 1024  # 24 TiB, ESXi 8 limit
DEFAULT_MEMORY_MIB = 32
_HEX32_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_SHARES_WORDS = frozenset({"low", "normal", "high"})
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def parse_vmware_uuid(vmx: VmxFile, key: str) -> str | None:
    """``56 4d 12 ab ... cd-ef 01 ...`` (or canonical form) -> canonical lower-case UUID."""
    raw = vmx.get_str(key)
    if raw is None or not raw.strip():
        return None
    digits = re.sub(r"[\s\-{}]", "", raw)
    if not _HEX32_RE.match(digits):
        raise vmx.invalid(
            key, raw, "is not a UUID", hint="expected 16 hex bytes like '56 4d 0a ... 3c-6b 8a ...'"
        )
    return str(uuid.UUID(hex=digits))


def parse_genid(vmx: VmxFile, notes: list[Note]) -> str | None:
    """``vm.genid`` + ``vm.genidX`` -> one canonical UUID (byte order: see the module docstring)."""
    high = vmx.get_int("vm.genid", None, minimum=_INT64_MIN, maximum=_UINT64_MAX)
    low = vmx.get_int("vm.genidX", None, minimum=_INT64_MIN, maximum=_UINT64_MAX)
    if high is None and low is None:
        return None
    if high is None or low is None:
        present = "vm.genid" if high is not None else "vm.genidX"
        notes.append(Note("only one half of the VM generation ID is set; generation ID dropped", present))
        return None
    data = (high % 2**64).to_bytes(8, "little") + (low % 2**64).to_bytes(8, "little")
    return str(uuid.UUID(bytes_le=data))


def _cpu(vmx: VmxFile, notes: list[Note]) -> Cpu:
    if not vmx.has("numvcpus"):
        notes.append(Note("numvcpus missing; VMware's default of 1 vCPU used", "numvcpus"))
    vcpus = vmx.get_int("numvcpus", 1, minimum=1, maximum=MAX_VCPUS) or 1
    cores = vmx.get_int("cpuid.coresPerSocket", 1, minimum=1, maximum=MAX_VCPUS) or 1
    if vcpus % cores:
        notes.append(
            Note(
                f"{cores} cores per socket do not divide {vcpus} vCPUs; one core per socket used",
                vmx.key_name("cpuid.coresPerSocket"),
            )
        )
        cores = 1
    return Cpu(vcpus=vcpus, cores_per_socket=cores)


def _memory(vmx: VmxFile, notes: list[Note]) -> Memory:
    size = vmx.get_int("memsize", None, minimum=1, maximum=MAX_MEMORY_MIB)
    if size is None:
        size = DEFAULT_MEMORY_MIB
        notes.append(Note(f"memsize missing; VMware's default of {size} MiB used", "memsize"))
    reservation = vmx.get_int("sched.mem.min", None, minimum=0, maximum=MAX_MEMORY_MIB) or None
    if reservation is not None and reservation > size:
        notes.append(Note(f"reservation above memsize; capped at {size} MiB", vmx.key_name("sched.mem.min")))
        reservation = size
    # -1 and values at or above memsize mean "unlimited".
    limit = vmx.get_int("sched.mem.max", None, minimum=-1, maximum=MAX_MEMORY_MIB)
    if limit is not None and (limit < 0 or limit >= size):
        limit = None
    shares_key = vmx.key_name("sched.mem.shares")
    shares = (vmx.get_str(shares_key) or "").strip().lower() or None
    if shares is not None and shares not in _SHARES_WORDS and not shares.isdigit():
        notes.append(
            Note(f"memory shares {shares!r} are neither low/normal/high nor a number; ignored", shares_key)
        )
        shares = None
    return Memory(
        size_mib=size,
        reservation_mib=reservation,
        limit_mib=limit,
        pinned=vmx.get_bool("sched.mem.pin", False),
        shares=shares,
    )


def _firmware(vmx: VmxFile, notes: list[Note]) -> tuple[Firmware, bool]:
    raw = vmx.get_str("firmware")
    word = (raw or "").strip().lower()
    if word in ("", "bios"):
        firmware = Firmware.BIOS
    elif word == "efi":
        firmware = Firmware.EFI
    else:
        raise vmx.invalid("firmware", raw or "", "is neither efi nor bios")
    secure = vmx.get_bool("uefi.secureBoot.enabled", False)
    if secure and firmware is Firmware.BIOS:
        notes.append(Note("secure boot needs EFI firmware; ignored", vmx.key_name("uefi.secureBoot.enabled")))
        secure = False
    return firmware, secure


def build_source_vm(vmx: VmxFile, resolver: PathResolver, load_disk: DiskLoader) -> SourceVM:
    """The full hardware model of the VM described by ``vmx``.

    Raises ``Vm2kvmError`` (INVALID_VALUE naming the key) for values that make
    no sense; disk problems do not raise but are recorded on the disk.
    """
    notes: list[Note] = list(vmx.notes)
    raw_name = vmx.get("displayName")
    display_name = decode_escapes(raw_name).strip() if raw_name else ""
    if not display_name:
        display_name = os.path.splitext(os.path.basename(vmx.path))[0]
        notes.append(Note(f"displayName missing; the file name {display_name!r} used", "displayName"))
    guest_os = (vmx.get_str("guestOS") or "").strip().lower()
    if not guest_os:
        guest_os = "other"
        notes.append(Note("guestOS missing; 'other' assumed", "guestOS"))
    hw_version = vmx.get_int("virtualHW.version", None, minimum=1, maximum=255)
    firmware, secure_boot = _firmware(vmx, notes)
    cpu = _cpu(vmx, notes)
    memory = _memory(vmx, notes)
    identity = (
        parse_vmware_uuid(vmx, "uuid.bios"),
        parse_vmware_uuid(vmx, "vc.uuid"),
        parse_genid(vmx, notes),
    )
    storage = read_storage(vmx, resolver, load_disk, hw_version=hw_version, guest_os=guest_os, notes=notes)
    nics = read_nics(vmx, is_64bit=is_64bit_guest(guest_os), notes=notes)
    serials = read_ports(vmx, "serial", MAX_SERIALS, notes)
    parallels = read_ports(vmx, "parallel", MAX_PARALLELS, notes)
    sound = read_sound(vmx, notes)
    notes.extend(dropped_notes(vmx))
    return SourceVM(
        source_path=vmx.path,
        display_name=display_name,
        annotation=decode_escapes(vmx.get("annotation") or ""),
        guest_os=guest_os,
        hw_version=hw_version,
        firmware=firmware,
        secure_boot=secure_boot,
        cpu=cpu,
        memory=memory,
        uuid_bios=identity[0],
        vc_uuid=identity[1],
        genid=identity[2],
        controllers=storage.controllers,
        disks=storage.disks,
        cdroms=storage.cdroms,
        floppies=storage.floppies,
        nics=nics,
        serials=serials,
        parallels=parallels,
        video=read_video(vmx),
        sound=sound,
        usb=read_usb(vmx),
        vnc=read_vnc(vmx),
        notes=tuple(notes),
    )
