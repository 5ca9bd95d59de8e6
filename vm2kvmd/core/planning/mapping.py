"""SourceVM -> DomainPlan: every mapping decision, as pure functions.

The rules, with the reason for each, are the table in ``docs/mapping.md``;
keep the two in step.  Device families live in ``map_storage``,
``map_network``, ``map_chars`` and ``map_misc``; this module decides identity
(name, UUID), CPU, memory and firmware and puts the plan together.
"""

from __future__ import annotations

import posixpath
import re
import uuid

from vm2kvmd.core.hardware.model import Firmware, Memory, Note, SourceVM
from vm2kvmd.core.planning.chars import plan_parallels, plan_serials
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.misc import plan_graphics, plan_sound, plan_usb, plan_video
from vm2kvmd.core.planning.network import plan_nics
from vm2kvmd.core.planning.origin import describe_origin
from vm2kvmd.core.planning.osinfo import osinfo_from_vmware
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions
from vm2kvmd.core.planning.storage import TargetNamer, plan_cdroms, plan_disks, plan_floppies, volume_name
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = ["domain_name_for", "plan_domain", "volume_name"]

# Characters XML 1.0 cannot carry at all; lxml refuses them and so would libvirt.
_XML_INVALID_RE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# libvirt's own limit is 247 bytes (it writes /etc/libvirt/qemu/<name>.xml.new,
# which must fit NAME_MAX); 200 leaves room for the files named after the
# domain: <name>_VARS.fd (NVRAM), <name>-serial0.log, <name>.log.
NAME_MAX_BYTES = 200
# libvirt rejects '/' ("name cannot contain '/'") and newlines ("invalid char in
# name"); "." and ".." pass its parser but the qemu driver then builds
# directory paths from them (checked with 9.0: define fails half-way and
# removes /var/lib/libvirt/qemu/snapshot), so they count as invalid too.
_NAME_FORBIDDEN = ("/", "\n", "\r")


def _xml_text(text: str) -> str:
    return _XML_INVALID_RE.sub("", text)


def _name_problem(name: str) -> str | None:
    """Why libvirt (qemu driver) would not take ``name``; None when it would."""
    if not name.strip():
        return "it is empty"
    if name in (".", ".."):
        return "it is a directory name"
    if any(ch in name for ch in _NAME_FORBIDDEN):
        return "it contains '/' or a line break"
    if _XML_INVALID_RE.search(name):
        return "it contains control characters"
    if len(name.encode()) > NAME_MAX_BYTES:
        return f"it is longer than {NAME_MAX_BYTES} bytes"
    return None


def domain_name_for(display_name: str) -> tuple[str, Note | None]:
    """The domain name for a VMware ``displayName``: the same text whenever libvirt takes it."""
    problem = _name_problem(display_name)
    if problem is None:
        return display_name, None
    name = display_name.replace("/", "-").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    name = _xml_text(name).strip()
    name = name.encode()[:NAME_MAX_BYTES].decode(errors="ignore").strip()
    if name in ("", ".", ".."):
        name = "vm"
    note = Note(
        f"{display_name!r} cannot be a libvirt domain name ({problem}); the domain is named {name!r}",
        "displayName",
    )
    return name, note


def _canonical_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Vm2kvmError(ErrorCode.INVALID_OPTION, f"{what} is not a UUID", key=what, value=value) from None


def _plan_name(vm: SourceVM, opts: PlanOptions, notes: list[Note]) -> str:
    if opts.name is not None:
        problem = _name_problem(opts.name)
        if problem:
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                f"option name cannot be a libvirt domain name: {problem}",
                key="name",
                value=opts.name,
            )
        return opts.name
    display = vm.display_name
    if not display.strip():
        display = posixpath.basename(vm.source_path).removesuffix(".vmx")
        notes.append(Note(f"the VM has no display name; using the file name {display!r}", "displayName"))
    name, note = domain_name_for(display)
    if note:
        notes.append(note)
    return name


def _plan_uuid(vm: SourceVM, opts: PlanOptions, notes: list[Note]) -> tuple[str, str | None]:
    """(domain UUID, guest-visible SMBIOS UUID when it has to differ)."""
    fresh = _canonical_uuid(opts.new_uuid, "new_uuid") if opts.new_uuid else str(uuid.uuid4())
    if vm.uuid_bios is None:
        notes.append(Note(f"the VM has no BIOS UUID; the domain gets the new UUID {fresh}", "uuid.bios"))
        return fresh, None
    if opts.uuid_taken:
        # libvirt refuses a <sysinfo> system UUID that differs from <uuid> ("UUID
        # mismatch between <uuid> and <sysinfo>"); the renderer passes it to QEMU
        # directly so the guest (licences, cloud-init, MDM) still sees its own.
        notes.append(
            Note(
                f"UUID {vm.uuid_bios} is taken by another domain; the domain UUID is {fresh}, the guest "
                "still sees the old one (SMBIOS, set through <qemu:commandline>, which taints the domain)",
                "uuid.bios",
            )
        )
        return fresh, vm.uuid_bios
    return vm.uuid_bios, None


def _identity(vm: SourceVM) -> str:
    """The source's UUIDs, not the domain's: a UUID taken on the host gives the domain a random one.

    The path only when the VM has none, as it differs between machines (golden files).
    """
    if vm.uuid_bios or vm.vc_uuid:
        return f"{vm.uuid_bios}/{vm.vc_uuid}"
    return vm.source_path


def _plan_topology(vcpus: int, cores_per_socket: int, notes: list[Note]) -> tuple[int, int, int]:
    """(sockets, cores, threads); their product is always ``vcpus``."""
    if cores_per_socket >= 1 and vcpus % cores_per_socket == 0:
        return vcpus // cores_per_socket, cores_per_socket, 1
    notes.append(
        Note(
            f"cpuid.coresPerSocket {cores_per_socket} does not divide {vcpus} vCPUs; "
            f"using {vcpus} single-core sockets",
            "cpuid.coresPerSocket",
        )
    )
    return vcpus, 1, 1


def _memory_notes(memory: Memory, notes: list[Note]) -> None:
    if memory.pinned:
        notes.append(
            Note(
                "memory is locked (<memoryBacking><locked/>); with no <memtune> hard_limit libvirt "
                "removes QEMU's locked-memory limit entirely: set one to protect the host",
                "sched.mem.pin",
            )
        )
    if memory.reservation_mib:
        notes.append(
            Note(
                f"memory reservation of {memory.reservation_mib} MiB not mapped: KVM does not reserve "
                "host memory for a guest (locked memory or hugepages come closest)",
                "sched.mem.min",
            )
        )
    if memory.limit_mib is not None:
        notes.append(
            Note(
                f"memory limit of {memory.limit_mib} MiB not mapped: a cgroup hard limit on QEMU "
                "kills the guest where VMware would balloon or swap",
                "sched.mem.max",
            )
        )
    if memory.shares:
        notes.append(
            Note(f"memory shares ({memory.shares}) have no KVM equivalent; not mapped", "sched.mem.shares")
        )


def _plan_secure_boot(vm: SourceVM, machine: str, notes: list[Note]) -> bool:
    if not vm.secure_boot:
        return False
    if vm.firmware is not Firmware.EFI:
        notes.append(Note("secure boot needs EFI firmware; ignored for BIOS", "uefi.secureBoot.enabled"))
        return False
    if machine != "q35":
        # OVMF's secure boot needs SMM, which libvirt offers on q35 only (no
        # firmware descriptor matches efi + secure-boot on pc).
        notes.append(
            Note(f"secure boot needs the q35 machine, not {machine}; disabled", "uefi.secureBoot.enabled")
        )
        return False
    return True


def _is_windows(guest_os: str) -> bool:
    # VMware names Windows guests win*, windows*, and longhorn* (Vista/2008).
    return guest_os.startswith(("win", "longhorn"))


def plan_domain(vm: SourceVM, opts: PlanOptions, caps: GuestCaps) -> DomainPlan:
    """Decide the whole target domain for ``vm``; pure, deterministic given ``opts.new_uuid``."""
    notes: list[Note] = list(vm.notes)
    name = _plan_name(vm, opts, notes)
    domain_uuid, smbios_uuid = _plan_uuid(vm, opts, notes)
    title = " ".join(_xml_text(vm.display_name).splitlines()).strip() or None
    description = _xml_text(describe_origin(vm.source_path, vm.display_name, vm.annotation, opts.started))

    vcpus = max(1, vm.cpu.vcpus)
    sockets, cores, threads = _plan_topology(vcpus, vm.cpu.cores_per_socket, notes)
    _memory_notes(vm.memory, notes)
    secure_boot = _plan_secure_boot(vm, caps.machine, notes)

    namer = TargetNamer()
    disks = plan_disks(
        vm.disks, name, opts.target_dir, opts.disk_format, caps, namer, notes, block=opts.block_volumes
    )
    cdroms = plan_cdroms(vm.cdroms, caps, namer, notes)
    floppies = plan_floppies(vm.floppies, namer, notes)
    nics = plan_nics(vm.nics, opts, caps, notes, _identity(vm))
    source_dir = posixpath.dirname(vm.source_path)
    serials = plan_serials(vm.serials, name, domain_uuid, source_dir, notes)
    parallels = plan_parallels(vm.parallels, name, notes)
    video = plan_video(vm.video, caps, notes)
    sound = plan_sound(vm.sound, caps.machine, notes)
    usb_model = plan_usb(vm.usb)
    graphics = plan_graphics(vm.vnc, notes)

    return DomainPlan(
        name=name,
        uuid=domain_uuid,
        smbios_uuid=smbios_uuid,
        title=title,
        description=description,
        domain_type=opts.domain_type,
        machine=caps.machine,
        firmware=vm.firmware,
        secure_boot=secure_boot,
        vcpus=vcpus,
        sockets=sockets,
        cores=cores,
        threads=threads,
        memory_mib=vm.memory.size_mib,
        memory_locked=vm.memory.pinned,
        genid=vm.genid,
        disks=disks,
        cdroms=cdroms,
        floppies=floppies,
        nics=nics,
        serials=serials,
        parallels=parallels,
        video_model=video.model,
        video_vram_kib=video.vram_kib,
        video_heads=video.heads,
        sound_model=sound,
        usb_model=usb_model,
        tablet=usb_model is not None,
        graphics=graphics.kind,
        vnc_port=graphics.port,
        rng=caps.virtio_rng,
        balloon=caps.balloon,
        guest_agent=caps.guest_agent,
        source_path=vm.source_path,
        source_uuid=vm.uuid_bios,
        vc_uuid=vm.vc_uuid,
        guest_os=vm.guest_os,
        os_id=caps.os_id or osinfo_from_vmware(vm.guest_os),
        hw_version=vm.hw_version,
        notes=tuple(notes),
        vnc_keymap=graphics.keymap,
        clock_offset=caps.clock_offset or ("localtime" if _is_windows(vm.guest_os) else "utc"),
        # host-model gives the guest the host's CPU features (RHEL 9 and Windows 11
        # need x86-64-v2, which QEMU's default qemu64 lacks); TCG cannot do
        # host-model, so there the default model stays.
        cpu_mode="host-model" if opts.domain_type == "kvm" else None,
        hyperv=caps.hyperv,
    )
