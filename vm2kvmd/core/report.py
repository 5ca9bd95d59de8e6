"""The migration report: source and target side by side, and what was changed in the guest.

``build_report`` is pure: it turns what the migration knew (the ``SourceVM``,
the ``DomainPlan`` it became, the guest ``Conversion``) into JSON-ready data
with stable keys, the way a migration engineer writes a hand-over sheet:
one row per item with the VMware side and the KVM side, the guest's own
facts, every edit made inside the guest grouped by area, and the notes.
Texts are final (sizes in GiB, "dropped", "guest not converted"), so every
client shows the same words; the machine-readable details of each device are
in the Inspect result.  The layout is documented in ``docs/dbus-api.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from vm2kvmd.core.guest.info import Conversion, GuestInfo
from vm2kvmd.core.guest.windows.info import WindowsInfo
from vm2kvmd.core.hardware.model import (
    Bus,
    CharPort,
    MediaKind,
    Nic,
    Note,
    PortKind,
    RemovableDrive,
    SourceDisk,
    SourceVM,
)
from vm2kvmd.core.planning.plan import DomainPlan, PlannedCharPort, PlannedDisk, PlannedNic, PlannedRemovable
from vm2kvmd.core.units import size_text

REPORT_FORMAT: Final = 1  # bumped when a key changes meaning or disappears
NOT_CONVERTED: Final = "guest not converted"
DROPPED: Final = "dropped"

# The appliance names the planned disks /dev/sda, /dev/sdb, ... in plan order
# (vm2kvmd.core.guest.info.DiskName); partitions follow as digits.
_APPLIANCE_DEV = re.compile(r"^/dev/sd([a-z]+)(\d*)$")


def build_report(
    vm: SourceVM, plan: DomainPlan, conversion: Conversion | None, notes: Sequence[Note]
) -> dict[str, Any]:
    """The report of migrating ``vm`` as ``plan``; ``conversion`` None: the guest was not converted."""
    guest = conversion.guest if conversion is not None else None
    return {
        "format": REPORT_FORMAT,
        "name": plan.name,
        "source": vm.source_path,
        "hardware": hardware_rows(vm, plan),
        "guest": _guest(guest, plan),
        "changes": _changes(conversion),
        "devices": _caps(conversion),
        "notes": _notes(notes, conversion.notes if conversion is not None else ()),
        "timings": [
            {"step": step, "seconds": round(seconds, 3)}
            for step, seconds in (conversion.timings if conversion is not None else ())
        ],
    }


# --- texts ---------------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _row(key: str, item: str, source: str, target: str) -> dict[str, str]:
    return {"key": key, "item": item, "source": source, "target": target}


# --- hardware ------------------------------------------------------------------------


def hardware_rows(vm: SourceVM, plan: DomainPlan) -> list[dict[str, str]]:
    """One row per item: ``key`` (stable: ``cpus``, ``disk:scsi0:0``), ``item``, ``source``, ``target``."""
    rows = [
        _row("name", "Name", vm.display_name, plan.name),
        _row("uuid", "UUID", vm.uuid_bios or "none", _uuid_target(plan)),
        _row("firmware", "Firmware", _firmware(vm.firmware.value, vm.secure_boot), _target_firmware(plan)),
        _row(
            "machine",
            "Machine",
            f"VMware virtual hardware {vm.hw_version}"
            if vm.hw_version
            else "VMware (hardware version unknown)",
            f"{plan.domain_type}, {plan.machine}" + (f", CPU {plan.cpu_mode}" if plan.cpu_mode else ""),
        ),
        _row("guest-os", "Guest OS type", vm.guest_os or "unknown", _os_target(plan)),
        _row("cpus", "CPUs", _source_cpus(vm), _target_cpus(plan)),
        _row(
            "memory",
            "Memory",
            _source_memory(vm),
            f"{plan.memory_mib} MiB" + (", locked" if plan.memory_locked else ""),
        ),
    ]
    planned_disks = {d.source.address.key: d for d in plan.disks}
    models = {(c.bus, c.index): c.model for c in vm.controllers}
    for disk in vm.disks:
        key = disk.address.key
        rows.append(
            _row(
                f"disk:{key}", f"Disk {key}", _source_disk(disk, models), _target_disk(planned_disks.get(key))
            )
        )
    for kind, drives, planned in (
        ("cdrom", vm.cdroms, plan.cdroms),
        ("floppy", vm.floppies, plan.floppies),
    ):
        by_key = {d.source.address.key: d for d in planned}
        label = "CD-ROM" if kind == "cdrom" else "Floppy"
        for drive in drives:
            key = drive.address.key
            rows.append(
                _row(f"{kind}:{key}", f"{label} {key}", _source_drive(drive), _target_drive(by_key.get(key)))
            )
    nics = {n.source.index: n for n in plan.nics}
    for nic in vm.nics:
        rows.append(
            _row(
                f"nic:ethernet{nic.index}",
                f"NIC ethernet{nic.index}",
                _source_nic(nic),
                _target_nic(nics.get(nic.index)),
            )
        )
    rows.append(_row("video", "Video", _source_video(vm), _target_video(plan)))
    rows.append(
        _row(
            "sound",
            "Sound",
            vm.sound.model if vm.sound else "none",
            _target_or_dropped(vm.sound is not None, plan.sound_model),
        )
    )
    rows.append(_row("usb", "USB", _source_usb(vm), _target_usb(plan)))
    for device, ports, planned_ports in (
        ("serial", vm.serials, plan.serials),
        ("parallel", vm.parallels, plan.parallels),
    ):
        by_index = {p.source.index: p for p in planned_ports}
        for port in ports:
            key = f"{device}{port.index}"
            rows.append(
                _row(
                    key,
                    f"{device.capitalize()} port {port.index}",
                    _source_port(port),
                    _target_port(by_index.get(port.index)),
                )
            )
    rows.append(
        _row("graphics", "Console", _source_console(vm), plan.graphics.upper() if plan.graphics else "none")
    )
    # Devices only the KVM side has: what the guest can use that VMware did not offer.
    extras = [
        ("rng", "Random number generator", plan.rng, "virtio-rng (/dev/urandom)"),
        ("balloon", "Memory balloon", plan.balloon, "virtio-balloon"),
        ("guest-agent", "Guest agent channel", plan.guest_agent, "virtio-serial org.qemu.guest_agent.0"),
    ]
    rows.extend(
        _row(key, item, "none", target if present else "none") for key, item, present, target in extras
    )
    return rows


def _firmware(kind: str, secure_boot: bool) -> str:
    text = "UEFI" if kind == "efi" else "BIOS"
    return f"{text} with Secure Boot" if secure_boot else text


def _target_firmware(plan: DomainPlan) -> str:
    if plan.firmware.value == "efi":
        return "UEFI (OVMF) with Secure Boot" if plan.secure_boot else "UEFI (OVMF)"
    return "BIOS (SeaBIOS)"


def _uuid_target(plan: DomainPlan) -> str:
    if plan.smbios_uuid and plan.smbios_uuid != plan.uuid:
        return f"{plan.uuid} (the guest sees {plan.smbios_uuid})"
    return plan.uuid


def _os_target(plan: DomainPlan) -> str:
    # libvirt has no OS type: virt-manager and cockpit-machines read libosinfo's id from
    # <metadata>; without one, only the VMware value is kept there.
    if plan.os_id:
        return f"{plan.os_id} (libosinfo), clock {plan.clock_offset}"
    return f"{plan.guest_os or 'unknown'} in the domain metadata, clock {plan.clock_offset}"


def _source_cpus(vm: SourceVM) -> str:
    cores = max(1, vm.cpu.cores_per_socket)
    sockets = max(1, vm.cpu.vcpus // cores)
    return f"{_plural(vm.cpu.vcpus, 'vCPU')} ({_plural(sockets, 'socket')} x {_plural(cores, 'core')})"


def _target_cpus(plan: DomainPlan) -> str:
    topology = " x ".join(
        (_plural(plan.sockets, "socket"), _plural(plan.cores, "core"), _plural(plan.threads, "thread"))
    )
    return f"{_plural(plan.vcpus, 'vCPU')} ({topology})"


def _source_memory(vm: SourceVM) -> str:
    mem = vm.memory
    extra = []
    if mem.reservation_mib:
        extra.append(f"reserved {mem.reservation_mib} MiB")
    if mem.limit_mib:
        extra.append(f"limit {mem.limit_mib} MiB")
    if mem.pinned:
        extra.append("pinned")
    return f"{mem.size_mib} MiB" + (f" ({', '.join(extra)})" if extra else "")


def _source_disk(disk: SourceDisk, models: dict[tuple[Bus, int], str | None]) -> str:
    address = disk.address
    controller = address.bus.value.upper()
    if model := models.get((address.bus, address.controller)):
        controller = f"{controller} {model}"
    count = disk.capacity if not disk.missing else None
    size = size_text(count, unknown="size unknown")
    text = f"{disk.file_name}, {size}, {controller}"
    if disk.mode != "persistent":
        text += f", {disk.mode}"
    if disk.missing:
        text += f"; MISSING: {disk.problem or 'file not found'}"
    return text


def _target_disk(planned: PlannedDisk | None) -> str:
    if planned is None:
        return "not copied"
    size = size_text(planned.capacity)
    text = f"{planned.target_dev} on {planned.bus}, {planned.format}, {size}, {planned.target_path}"
    if planned.boot_order is not None:
        text += f", boot {planned.boot_order}"
    return text


def _source_drive(drive: RemovableDrive) -> str:
    if drive.kind is MediaKind.EMPTY:
        text = "empty"
    elif drive.kind is MediaKind.HOST:
        text = f"host drive {drive.file_name or ''}".rstrip()
    else:
        text = drive.path or drive.file_name or "image"
        if drive.missing:
            text += " (image missing)"
    return text if drive.start_connected else f"{text}, not connected at power on"


def _target_drive(planned: PlannedRemovable | None) -> str:
    if planned is None:
        return DROPPED
    return f"{planned.target_dev} on {planned.bus}, {planned.path or 'empty'}"


def _source_nic(nic: Nic) -> str:
    text = f"{nic.mac or 'no MAC'}, {nic.model}, network {nic.source_network!r}"
    return text if nic.start_connected else f"{text}, not connected"


def _target_nic(planned: PlannedNic | None) -> str:
    if planned is None:
        return DROPPED
    text = f"{planned.mac or 'new MAC'}, {planned.model}, {planned.kind} {planned.target!r}"
    return text if planned.link_up else f"{text}, link down"


def _source_video(vm: SourceVM) -> str:
    video = vm.video
    if video is None:
        return "none"
    parts = ["SVGA"]
    if video.vram_kib:
        parts.append(f"{size_text(video.vram_kib * 1024)} VRAM")
    parts.append(_plural(video.num_displays, "display"))
    if video.accel_3d:
        parts.append("3D")
    return ", ".join(parts)


def _target_video(plan: DomainPlan) -> str:
    if plan.video_model is None:
        return "none"
    parts = [plan.video_model]
    if plan.video_vram_kib:
        parts.append(f"{size_text(plan.video_vram_kib * 1024)} VRAM")
    parts.append(_plural(plan.video_heads, "display"))
    return ", ".join(parts)


def _target_or_dropped(present: bool, model: str | None) -> str:
    if model:
        return model
    return DROPPED if present else "none"


def _source_usb(vm: SourceVM) -> str:
    kinds = [
        label
        for on, label in ((vm.usb.uhci, "USB 1.1"), (vm.usb.ehci, "USB 2.0"), (vm.usb.xhci, "USB 3"))
        if on
    ]
    return ", ".join(kinds) or "none"


def _target_usb(plan: DomainPlan) -> str:
    if plan.usb_model is None:
        return "none"
    return f"{plan.usb_model}, tablet" if plan.tablet else plan.usb_model


def _source_port(port: CharPort) -> str:
    if port.kind is PortKind.NETWORK and port.endpoint is not None:
        side = "server" if port.endpoint.server else "client"
        text = f"network {port.endpoint.protocol}://{port.endpoint.host or ''}:{port.endpoint.port} ({side})"
    else:
        text = f"{port.kind.value} {port.target or ''}".rstrip()
    return text if port.start_connected else f"{text}, not connected"


def _target_port(planned: PlannedCharPort | None) -> str:
    if planned is None:
        return DROPPED
    if planned.kind == "tcp":
        text = f"tcp {planned.host or ''}:{planned.port}"
        if planned.mode:
            text += f" ({planned.mode}{', ' + planned.protocol if planned.protocol else ''})"
        return text
    text = f"{planned.kind} {planned.path or ''}".rstrip()
    return f"{text} ({planned.mode})" if planned.mode else text


def _source_console(vm: SourceVM) -> str:
    if vm.vnc is not None and vm.vnc.enabled:
        return f"VNC port {vm.vnc.port}" if vm.vnc.port else "VNC"
    return "VMware console"


# --- guest -------------------------------------------------------------------------


def _guest(guest: GuestInfo | None, plan: DomainPlan) -> dict[str, Any]:
    if guest is None:
        return {"converted": False, "status": NOT_CONVERTED, "facts": [], "filesystems": []}
    if guest.windows is not None:
        return {
            "converted": True,
            "status": f"converted: {guest.product_name or 'Windows'}",
            "facts": windows_facts(guest.windows),
            "filesystems": filesystem_rows(guest, plan),
        }
    return {
        "converted": True,
        "status": f"converted: {guest.product_name or guest.distro}",
        "facts": guest_facts(guest),
        "filesystems": filesystem_rows(guest, plan),
    }


def _fact(key: str, item: str, value: str) -> dict[str, str]:
    return {"key": key, "item": item, "value": value}


def guest_facts(guest: GuestInfo) -> list[dict[str, str]]:
    """What inspection found in the guest, one fact per row (``key``, ``item``, ``value``)."""
    kernel = guest.booting_kernel
    if kernel is None:
        booting = "none found"
    else:
        booting = f"{kernel.version} ({kernel.vmlinuz}, initramfs {kernel.initrd or 'none'})"
    bootloader = guest.bootloader
    if guest.boot_config:
        bootloader += f" ({guest.boot_config})"
    facts = [
        _fact("product", "Product", guest.product_name or "unknown"),
        _fact("distro", "Distribution", f"{guest.distro} {guest.major}.{guest.minor}"),
        _fact("os-type", "OS type", guest.os_type),
        _fact("arch", "Architecture", guest.arch),
        _fact("hostname", "Host name", guest.hostname or "unknown"),
        _fact("root", "Root file system", guest.root),
        _fact("firmware", "Boots with", "UEFI" if guest.firmware == "uefi" else "BIOS"),
        _fact("bootloader", "Bootloader", bootloader),
        _fact("kernel", "Booting kernel", booting),
        _fact("kernels", "Installed kernels", ", ".join(k.version for k in guest.kernels) or "none"),
        _fact("init", "Init system", guest.init_system),
        _fact("packages", "Package manager", f"{guest.package_manager} ({guest.package_format})"),
        _fact("initramfs", "Initramfs tool", guest.initramfs_tool),
        _fact("selinux", "SELinux", guest.selinux),
        _fact("vmware-tools", "VMware Tools found", ", ".join(guest.vmware_tools) or "none"),
    ]
    return facts


def windows_facts(guest: WindowsInfo) -> list[dict[str, str]]:
    """What inspection found in a Windows guest, one fact per row."""
    tools = [a.name for a in guest.apps if "vmware tools" in a.name.lower()]
    static = [f"{n.description}: {', '.join(n.addresses)}" for n in guest.nics if not n.dhcp and n.addresses]
    return [
        _fact("product", "Product", guest.product_name or "unknown"),
        _fact("version", "Version", f"{guest.major}.{guest.minor} build {guest.build}"),
        _fact("edition", "Edition", f"{guest.edition or 'unknown'} ({guest.installation_type})"),
        _fact("os-type", "OS type", "windows"),
        _fact("arch", "Architecture", guest.arch),
        _fact("hostname", "Host name", guest.hostname or "unknown"),
        _fact("root", "System volume", guest.root),
        _fact("systemroot", "Windows directory", guest.systemroot),
        _fact("control-set", "Current control set", guest.current_control_set),
        _fact("firmware", "Boots with", "UEFI" if guest.firmware == "uefi" else "BIOS"),
        _fact("rtc", "Hardware clock", "UTC" if guest.rtc_utc else "local time"),
        _fact("vmware-tools", "VMware Tools found", ", ".join(tools) or "none"),
        _fact("static-ip", "Static IP addresses", "; ".join(static) or "none"),
    ]


def filesystem_rows(guest: GuestInfo, plan: DomainPlan) -> list[dict[str, str | None]]:
    """The guest's file systems ("partitions"): mounted ones in mount order, then the rest (swap)."""
    by_device = {fs.device: fs for fs in guest.filesystems}
    rows: list[dict[str, str | None]] = []
    seen: set[str] = set()
    for mountpoint, device in guest.mountpoints:
        fs = by_device.get(device)
        rows.append(
            _fs_row(
                mountpoint,
                device,
                fs.fstype if fs else None,
                fs.uuid if fs else None,
                fs.label if fs else None,
                plan,
            )
        )
        seen.add(device)
    for fs in guest.filesystems:
        if fs.device not in seen:
            rows.append(_fs_row(None, fs.device, fs.fstype, fs.uuid, fs.label, plan))
    return rows


def _fs_row(
    mountpoint: str | None,
    device: str,
    fstype: str | None,
    uuid: str | None,
    label: str | None,
    plan: DomainPlan,
) -> dict[str, str | None]:
    return {
        "mountpoint": mountpoint,
        "device": device,
        "target_device": target_device(device, plan),
        "type": fstype,
        "uuid": uuid,
        "label": label,
    }


def target_device(device: str, plan: DomainPlan) -> str:
    """``/dev/sda1`` in the appliance → ``/dev/vda1`` on the target (the plan's target dev).

    Names that are not a whole planned disk or its partition (LVM, md) stay.
    """
    match = _APPLIANCE_DEV.match(device)
    if match is None:
        return device
    index = 0
    for char in match.group(1):
        index = index * 26 + (ord(char) - ord("a") + 1)
    index -= 1
    if index >= len(plan.disks):
        return device
    return f"/dev/{plan.disks[index].target_dev}{match.group(2)}"


# --- changes, caps, notes ----------------------------------------------------------------


def _changes(conversion: Conversion | None) -> list[dict[str, Any]]:
    """Every change, grouped by area in the order the areas were first touched (the step order)."""
    groups: dict[str, list[dict[str, str | None]]] = {}
    for change in conversion.changes if conversion is not None else ():
        groups.setdefault(change.area, []).append({"summary": change.summary, "path": change.path})
    return [{"area": area, "changes": items} for area, items in groups.items()]


def _caps(conversion: Conversion | None) -> dict[str, Any]:
    if conversion is None:
        return {"reason": NOT_CONVERTED}
    caps = conversion.caps
    return {
        "reason": caps.reason,
        "machine": caps.machine,
        "disk_bus": caps.disk_bus,
        "cdrom_bus": caps.cdrom_bus,
        "nic_model": caps.nic_model,
        "video": caps.video,
        "virtio_rng": caps.virtio_rng,
        "balloon": caps.balloon,
        "guest_agent": caps.guest_agent,
    }


def _notes(*groups: Iterable[Note]) -> list[str]:
    """The notes as one line each, without repeats (the conversion's may also be in ``notes``)."""
    seen: dict[str, None] = {}
    for group in groups:
        for note in group:
            seen.setdefault(str(note), None)
    return list(seen)
