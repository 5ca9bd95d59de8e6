"""Read a Windows guest into a ``WindowsInfo``, in the job's one appliance session.

libguestfs inspection has found the root and its hives; this copies the
SYSTEM and SOFTWARE hives out of the appliance (one download each, instead
of thousands of hivex round trips to a TCG appliance), reads only the keys
the conversion needs with hivex on the host, and adds what the disks say
(hiberfil.sys's header, BitLocker boot sectors, LDM partitions).  The
parsing is ``core.guest.windows.info``; nothing here writes to the guest.

``refuse_hidden_windows`` explains a VM where inspection found no
operating system at all: a BitLocker system volume or a dynamic disk hide
Windows from libguestfs, and the user should hear that, not "no OS".
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vm2kvmd.adapters.free_space import free_space, work_dir_full
from vm2kvmd.adapters.guestfs_api import GuestFS
from vm2kvmd.convert.windows import bitlocker
from vm2kvmd.core.guest.windows.info import (
    NET_CLASS,
    DiskFacts,
    RegData,
    RegKey,
    WindowsInfo,
    current_control_set,
    decode_value,
    pe_arch,
    windows_info,
)
from vm2kvmd.core.guest.windows.partitions import ESP_TYPE, HEAD_BYTES, is_ldm, partition_types
from vm2kvmd.core.secret import Secret
from vm2kvmd.errors import ErrorCode, Vm2kvmError

_PE_HEAD = 4096  # the DOS and PE headers of any real executable fit (e_lfanew is at most a few hundred)
BITLOCKER_SIGNATURE = b"-FVE-FS-"  # the OEM id of a BitLocker volume's boot sector (offset 3)


def inspect_windows(g: GuestFS, root: str, scratch_dir: str | None = None) -> WindowsInfo:
    """Everything the conversion needs to know about the Windows at ``root`` (mounted at /).

    The hives are copied into a directory under ``scratch_dir`` (the job's work area) for a moment."""
    systemroot = g.inspect_get_windows_systemroot(root)
    arch = windows_arch(g, root, systemroot)
    with tempfile.TemporaryDirectory(prefix="vm2kvm-hives-", dir=scratch_dir) as scratch:
        system_file = _download(g, g.inspect_get_windows_system_hive(root), Path(scratch) / "SYSTEM")
        software_file = _download(g, g.inspect_get_windows_software_hive(root), Path(scratch) / "SOFTWARE")
        system = read_system_hive(system_file)
        software = read_software_hive(software_file)
    hiberfil = b""
    with contextlib.suppress(RuntimeError):  # no hiberfil.sys (the usual case)
        hiberfil = g.pread("/hiberfil.sys", 8, 0)
    letters = g.inspect_get_drive_mappings(root)
    # The guest's own disks: the system disk and those its drive letters are on (MountedDevices
    # maps a letter by disk signature and offset, so a BitLocker volume keeps its letter too).
    volumes = {root, *letters.values()}
    disks = DiskFacts(
        hiberfil=hiberfil,
        bitlocker=bitlocker_volumes(g, sorted({_disk_of(g, v) for v in volumes})),
        dynamic_system_disk=is_dynamic(g, root),
        firmware=_firmware(g, _disk_of(g, root)),
    )
    return windows_info(
        root=root,
        arch=arch,
        systemroot=systemroot,
        system=system,
        software=software,
        disks=disks,
        drive_letters=sorted(letters.items()),
    )


def windows_arch(g: GuestFS, root: str, systemroot: str) -> str:
    """The architecture of cmd.exe's PE header (the Windows at ``root`` mounted at /).

    libguestfs' own answer is kept when cmd.exe cannot be read; it cannot tell
    ARM64 from x64 (both PE32+), so Windows on ARM would pass for x86_64.
    """
    with contextlib.suppress(RuntimeError):  # no cmd.exe where it should be: libguestfs' word
        cmd = g.case_sensitive_path(f"{systemroot}/System32/cmd.exe")
        arch = pe_arch(g.pread(cmd, _PE_HEAD, 0))
        if arch is not None:
            return arch
    return g.inspect_get_arch(root)


def refuse_hidden_windows(g: GuestFS, disks: Sequence[str] | None = None) -> None:
    """Raise GuestEncrypted or DynamicDisk when a VM without an inspectable OS shows why.

    ``disks``: the VM's disks as the appliance names them (all of them by default).
    """
    disks = list(g.list_devices()) if disks is None else disks
    locked = bitlocker_volumes(g, disks)
    if locked:
        raise Vm2kvmError(
            ErrorCode.GUEST_ENCRYPTED,
            f"the VM's disks hold a BitLocker-encrypted volume ({', '.join(locked)}) and no readable "
            "operating system: Windows' system volume cannot be converted without its key",
            value=locked[0],
            hint="give its recovery key or password with --key-file FILE, or in the guest turn "
            "BitLocker off (`manage-bde -off C:`), wait until the volume is fully decrypted, shut "
            "down and migrate again",
        )
    ldm = ldm_partitions(g, disks)
    if ldm:
        raise Vm2kvmError(
            ErrorCode.DYNAMIC_DISK,
            f"the VM's operating system is on a dynamic disk (LDM partition {', '.join(ldm)}), "
            "which cannot be converted offline",
            value=ldm[0],
            hint="convert the system disk back to a basic disk in VMware (Disk Management or "
            "`diskpart`) first, or migrate with --no-guest-conversion",
        )


def unlock_and_inspect(g: GuestFS, key: Secret, log: Callable[[str], None]) -> list[str]:
    """The inspection roots once every BitLocker volume of the VM is opened with ``key``
    (``convert.windows.bitlocker``); [] when the VM has none (the key is not needed)."""
    locked = bitlocker_volumes(g, list(g.list_devices()))
    if not locked:
        log("a BitLocker key was given, but the VM has no BitLocker volume")
        return []
    opened = bitlocker.unlock(g, locked, key, log)
    roots = list(g.inspect_os())
    if not roots:
        # Not GuestEncrypted: the key was right, and asking for it again would not help.
        raise Vm2kvmError(
            ErrorCode.NO_GUEST_OS,
            f"the BitLocker volumes {', '.join(locked)} opened with the key ({', '.join(opened)}), "
            "but no operating system was found on them or the other disks",
            value=locked[0],
            hint="migrate with --no-guest-conversion to copy the disks and define the VM unchanged",
        )
    return roots


# --- the disks ----------------------------------------------------------------------------------


def bitlocker_volumes(g: GuestFS, disks: Sequence[str]) -> tuple[str, ...]:
    """Partitions of ``disks`` whose boot sector is BitLocker's (blkid needs the FVE metadata too)."""
    found = []
    for partition in g.list_partitions():
        if _disk_of(g, partition) not in disks:
            continue
        with contextlib.suppress(RuntimeError):  # an extended partition's 1 KiB, an unreadable one
            if g.pread_device(partition, 11, 0)[3:11] == BITLOCKER_SIGNATURE:
                found.append(partition)
    return tuple(found)


def ldm_partitions(g: GuestFS, disks: Sequence[str]) -> tuple[str, ...]:
    """Partitions of ``disks`` that belong to dynamic disks: MBR type 0x42, GPT LDM metadata/data."""
    found = []
    for disk in disks:
        found += [f"{disk}{n}" for n, kind in _types(g, disk).items() if is_ldm(kind)]
    return tuple(found)


def is_dynamic(g: GuestFS, root: str) -> bool:
    """The system volume is on a dynamic disk (an LDM volume, or a 0x42 partition that still maps it)."""
    if root.startswith("/dev/mapper/ldm_vol_"):
        return True
    if root not in g.list_partitions():
        return False
    return is_ldm(_types(g, g.part_to_dev(root)).get(g.part_to_partnum(root), ""))


def _types(g: GuestFS, disk: str) -> dict[int, str]:
    try:
        return partition_types(g.pread_device(disk, HEAD_BYTES, 0))
    except RuntimeError:  # shorter than 17 KiB, unreadable: no partition table to speak of
        return {}


def _disk_of(g: GuestFS, volume: str) -> str:
    """The disk a partition is on (a whole-disk volume or an LDM volume stands for itself; an
    opened BitLocker volume is on its partition's disk)."""
    try:
        return g.part_to_dev(bitlocker.underlying(volume))
    except RuntimeError:
        return volume


def _firmware(g: GuestFS, disk: str) -> str:
    """uefi when the system disk has an EFI system partition on GPT (Windows boots GPT only by UEFI)."""
    return "uefi" if ESP_TYPE in _types(g, disk).values() else "bios"


# --- the hives --------------------------------------------------------------------------------


def _download(g: GuestFS, path: str, local: Path) -> Path:
    try:
        g.download(path, str(local))
    except RuntimeError as err:
        if os.strerror(errno.ENOSPC) in str(err) or _no_room_for(g, path, local.parent):
            where = str(local.parent.parent)
            raise work_dir_full(where, f"no room in {where} for the guest's registry hive {path}") from err
        raise Vm2kvmError(
            ErrorCode.CONVERSION_FAILED,
            f"cannot read the guest's registry hive: {str(err).strip()}",
            file=path,
            hint="check the volume with `chkdsk` in the VM on VMware first",
        ) from err
    return local


def _no_room_for(g: GuestFS, path: str, directory: Path) -> bool:
    """Whether ``directory`` lacks the room for the guest's file ``path`` after a failed download.

    libguestfs does not always pass the local ENOSPC on: the appliance's side may report the
    transfer as "file receive cancelled by daemon" instead, so the free space is asked directly.
    """
    try:
        return free_space(str(directory)) < g.filesize(path)
    except (OSError, RuntimeError):
        return False


@dataclass
class _Key:
    """A key being collected (mutable while several paths are read into one tree)."""

    name: str
    values: dict[str, RegData] = field(default_factory=dict)
    children: dict[str, _Key] = field(default_factory=dict)

    def freeze(self) -> RegKey:
        return RegKey(self.name, dict(self.values), tuple(c.freeze() for c in self.children.values()))


def read_hive(path: Path, wanted: Mapping[str, int]) -> RegKey:
    """The keys at ``wanted`` paths (path -> how many levels of subkeys to read with them), as one tree.

    Missing paths are simply absent from the tree; a file hivex cannot open is
    ConversionFailed naming it.
    """
    try:
        import hivex
    except ImportError as err:
        raise Vm2kvmError(
            ErrorCode.CONVERSION_FAILED,
            "the hivex Python bindings are not installed (needed to read a Windows guest's registry)",
            hint="install python3-hivex, or migrate with --no-guest-conversion",
        ) from err
    try:
        h = hivex.Hivex(str(path))
    except RuntimeError as err:
        raise Vm2kvmError(
            ErrorCode.CONVERSION_FAILED, f"the guest's registry hive is damaged: {err}", file=path.name
        ) from err
    top = _Key("")
    for key_path, depth in wanted.items():
        node = h.root()
        into = top
        for part in (p for p in key_path.split("\\") if p):
            node = h.node_get_child(node, part)
            if not node:
                break
            name = h.node_name(node)
            into = into.children.setdefault(name.lower(), _Key(name))
        else:
            _read_node(h, node, into, depth)
    return top.freeze()


def _read_node(h: Any, node: int, into: _Key, depth: int) -> None:
    for value in h.node_values(node):
        kind, data = h.value_value(value)
        into.values[h.value_key(value)] = decode_value(kind, data)
    if depth <= 0:
        return
    for child in h.node_children(node):
        name = h.node_name(child)
        _read_node(h, child, into.children.setdefault(name.lower(), _Key(name)), depth - 1)


def read_system_hive(path: Path) -> RegKey:
    control_set = current_control_set(read_hive(path, {"Select": 0}))
    return read_hive(path, system_keys(control_set))


def system_keys(control_set: str) -> dict[str, int]:
    """What the conversion reads from SYSTEM (the current control set only)."""
    ccs = control_set
    return {
        "Select": 0,
        "DriverDatabase": 0,
        # VMware's driver packages (core.guest.windows.info.vmware_infs): providers and device IDs.
        "DriverDatabase\\DriverPackages": 1,
        "DriverDatabase\\DeviceIds\\PCI": 1,
        f"{ccs}\\Control\\ComputerName\\ComputerName": 0,
        f"{ccs}\\Control\\ProductOptions": 0,
        f"{ccs}\\Control\\Session Manager\\Power": 0,
        f"{ccs}\\Control\\TimeZoneInformation": 0,
        f"{ccs}\\Control\\Class\\{NET_CLASS}": 2,  # adapters and their Ndi key
        f"{ccs}\\Services": 1,
        f"{ccs}\\Services\\Tcpip\\Parameters": 0,  # Hostname
        f"{ccs}\\Services\\Tcpip\\Parameters\\Interfaces": 1,
    }


SOFTWARE_KEYS: dict[str, int] = {
    "Microsoft\\Windows NT\\CurrentVersion": 0,
    "Microsoft\\Windows\\CurrentVersion\\Uninstall": 1,
    "WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall": 1,
}


def read_software_hive(path: Path) -> RegKey:
    return read_hive(path, SOFTWARE_KEYS)


def tools_apps(info: WindowsInfo) -> Sequence[str]:
    """Names of the VMware Tools products installed (the Uninstall entries' DisplayNames)."""
    return tuple(sorted({a.name for a in info.apps if a.name.lower().startswith("vmware tools")}))
