"""Read the guest into a ``GuestInfo``: libguestfs inspection plus the few files it does not read.

``choose_root`` picks the operating system to convert, ``mount_guest``
mounts it read-write like its fstab does, ``inspect_guest`` fills every
field of ``GuestInfo`` (reading files, never walking trees: a TCG
appliance makes every call slow), ``refuse_unconvertible`` stops what the
conversion cannot handle.  The parsing is small and local; nothing here edits
the guest.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Callable, Sequence

from vm2kvmd.adapters.guestfs_api import GuestFS
from vm2kvmd.convert.windows.inspect import (
    inspect_windows,
    refuse_hidden_windows,
    tools_apps,
    unlock_and_inspect,
)
from vm2kvmd.core.guest.info import Filesystem, GuestInfo, Kernel, module_name
from vm2kvmd.core.guest.windows.info import refuse_windows
from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.secret import Secret
from vm2kvmd.errors import ErrorCode, Vm2kvmError

_NO_CONVERSION_HINT = "migrate with --no-guest-conversion to copy the disks and define the VM unchanged"

# A mount that fails here means edits would land on the wrong file system.
_ESSENTIAL_MOUNTS = ("/", "/boot", "/usr", "/etc", "/var")

_VMWARE_PACKAGES = ("open-vm-tools", "vmware-tools", "vmware-guest")
# Where a tarball VMware Tools install (vmware-install.pl) leaves its marks.
_VMWARE_TARBALL = (
    "/etc/vmware-tools/locations",
    "/usr/bin/vmware-uninstall-tools.pl",
    "/usr/local/bin/vmware-uninstall-tools.pl",
)
_X86 = ("x86_64", "i386", "i486", "i586", "i686")


def find_roots(g: GuestFS, key: Secret | None = None, log: Callable[[str], None] = print) -> list[str]:
    """libguestfs' inspection roots; with none, a BitLocker or dynamic system disk is named as the reason.

    With a BitLocker ``key`` (``--key-file``), a VM that shows no OS has its BitLocker volumes
    opened first (``convert.windows.bitlocker``) and is inspected again.
    """
    roots = list(g.inspect_os())
    if not roots and key is not None:
        roots = unlock_and_inspect(g, key, log)
    if not roots:
        refuse_hidden_windows(g)
    return roots


def choose_root(roots: Sequence[str], wanted: str | None) -> tuple[str, list[Note]]:
    """The root to convert: ``wanted`` (--root) or the first, with a note when there are several."""
    if not roots:
        raise Vm2kvmError(
            ErrorCode.NO_GUEST_OS,
            "no operating system found on the VM's disks (only data, or an OS libguestfs does not know)",
            hint=_NO_CONVERSION_HINT,
        )
    if wanted is not None:
        # "sda2" and "/dev/sda2" name the same root; LVM roots are given as /dev/vg/lv.
        name = wanted if wanted.startswith("/dev/") else "/dev/" + wanted
        if name not in roots:
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                f"no operating system root {wanted}; roots found: {', '.join(roots)}",
                key="root",
                value=wanted,
                hint="pass one of the roots found with --root",
            )
        return name, []
    root = roots[0]
    notes = []
    if len(roots) > 1:
        others = ", ".join(roots[1:])
        message = f"several operating systems found; converting {root}, not {others} (choose with --root)"
        notes.append(Note(message, "root"))
    return root, notes


def mount_guest(g: GuestFS, root: str, scratch_dir: str | None = None) -> list[Note]:
    """Mount the guest's file systems read-write, as its fstab does (shortest mount point first).

    A file system that will not mount is fatal if conversion edits live on it
    (``/``, ``/boot``, ``/usr``, ``/etc``, ``/var``); any other (a data disk
    that is not attached, an fstab line naming a device that does not exist)
    is skipped with a note, because the conversion never touches it.
    """
    notes: list[Note] = []
    mountpoints = g.inspect_get_mountpoints(root)
    for mountpoint, device in sorted(mountpoints.items(), key=lambda item: (len(item[0]), item[0])):
        try:
            g.mount(device, mountpoint)
        except RuntimeError as err:
            if mountpoint == "/" and g.inspect_get_type(root) == "windows":
                _refuse_unmountable_windows(g, root, scratch_dir)
            if mountpoint in _ESSENTIAL_MOUNTS:
                raise Vm2kvmError(
                    ErrorCode.CONVERSION_FAILED,
                    f"cannot mount the guest's {mountpoint} ({device}): {str(err).strip()}",
                    file="/etc/fstab",
                    hint="check the file system (fsck) on VMware first, or " + _NO_CONVERSION_HINT,
                ) from err
            notes.append(Note(f"{mountpoint} ({device}) could not be mounted and is left as it is: {err}"))
    return notes


def _refuse_unmountable_windows(g: GuestFS, root: str, scratch_dir: str | None) -> None:
    """ntfs-3g will not write to a hibernated volume: say why, read-only, before any other error."""
    try:
        g.mount_ro(root, "/")
    except RuntimeError:
        return
    try:
        refuse_windows(inspect_windows(g, root, scratch_dir))
    finally:
        g.umount_all()


def inspect_guest(g: GuestFS, root: str, scratch_dir: str | None = None) -> GuestInfo:
    """Everything the conversion needs to know about the mounted guest at ``root``.

    ``scratch_dir``: where files read out of the guest (Windows' hives) go for a moment."""
    if g.inspect_get_type(root) == "windows":
        return _inspect_windows_guest(g, root, scratch_dir)
    mountpoints = g.inspect_get_mountpoints(root)
    kernels = _kernels(g)
    bootloader, boot_config = _bootloader(g)
    hostname = g.inspect_get_hostname(root)
    return GuestInfo(
        root=root,
        os_type=g.inspect_get_type(root),
        distro=g.inspect_get_distro(root),
        product_name=g.inspect_get_product_name(root),
        major=g.inspect_get_major_version(root),
        minor=g.inspect_get_minor_version(root),
        arch=g.inspect_get_arch(root),
        hostname="" if hostname == "unknown" else hostname,
        mountpoints=tuple(sorted(mountpoints.items(), key=lambda item: (len(item[0]), item[0]))),
        filesystems=_filesystems(g),
        bootloader=bootloader,
        boot_config=boot_config,
        kernels=kernels,
        default_kernel=_default_kernel(g, bootloader, boot_config, kernels),
        init_system=_init_system(g),
        package_format=g.inspect_get_package_format(root),
        package_manager=g.inspect_get_package_management(root),
        selinux=_selinux(g),
        firmware=_firmware(g, mountpoints),
        vmware_tools=_vmware_tools(g, root),
        initramfs_tool=_initramfs_tool(g),
    )


def _inspect_windows_guest(g: GuestFS, root: str, scratch_dir: str | None) -> GuestInfo:
    windows = inspect_windows(g, root, scratch_dir)
    mountpoints = g.inspect_get_mountpoints(root)
    return GuestInfo(
        root=root,
        os_type="windows",
        distro="windows",
        product_name=windows.product_name,
        major=windows.major,
        minor=windows.minor,
        arch=windows.arch,
        hostname=windows.hostname,
        mountpoints=tuple(sorted(mountpoints.items(), key=lambda item: (len(item[0]), item[0]))),
        filesystems=_filesystems(g),
        firmware=windows.firmware,
        vmware_tools=tuple(tools_apps(windows)),
        windows=windows,
    )


def refuse_unconvertible(guest: GuestInfo) -> None:
    """Raise for a guest this converter cannot convert (only x86 Linux, for now)."""
    if guest.windows is not None:
        refuse_windows(guest.windows)  # hibernated, dynamic disk: named, whatever else is wrong
    if guest.os_type != "linux":
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_GUEST,
            f"{guest.product_name or guest.os_type} ({guest.os_type}) guests cannot be converted yet; "
            "only Linux guests are",
            value=guest.os_type,
            hint=_NO_CONVERSION_HINT + " (the VM keeps SATA disks and e1000 NICs)",
        )
    if guest.arch not in _X86:
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_GUEST,
            f"{guest.product_name} is built for {guest.arch}; only x86 guests can be converted",
            value=guest.arch,
            hint=_NO_CONVERSION_HINT,
        )


# --- reading files ---------------------------------------------------------------------------


def _text(g: GuestFS, path: str) -> str | None:
    """The file's text, None when it is not a (link to a) regular file."""
    try:
        if not g.is_file(path):
            return None
        return g.read_file(path).decode("utf-8", "replace")
    except RuntimeError:  # a dangling link, a permission quirk: treat as absent
        return None


def _shell_vars(text: str) -> dict[str, str]:
    """KEY=value lines of a shell-style config (/etc/default/grub, /etc/selinux/config)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2).strip().strip("\"'")
    return values


def _filesystems(g: GuestFS) -> tuple[Filesystem, ...]:
    """Every file system on the VM's disks (swap included: resume= and fstab name it).

    Not ``list_filesystems``: it scans for LVM, md and btrfs whatever the
    disks hold, and every LVM tool run costs seconds in a TCG appliance.
    Here the partitions (and unpartitioned disks) are probed with one
    ``blkid`` each, and logical volumes are listed only when a physical
    volume was seen.
    """
    partitions = list(g.list_partitions())
    partitioned = {re.sub(r"p?\d+$", "", p) for p in partitions}
    devices = partitions + [d for d in g.list_devices() if d not in partitioned]
    found = []
    lvm = False
    for device in devices:
        fs = _probe(g, device)
        if fs is not None and fs.fstype == "LVM2_member":
            lvm = True
        elif fs is not None:
            found.append(fs)
    if lvm:
        found += [fs for lv in g.lvs() if (fs := _probe(g, lv)) is not None]
    return tuple(found)


def _probe(g: GuestFS, device: str) -> Filesystem | None:
    tags: dict[str, str] = {}
    with contextlib.suppress(RuntimeError):  # no signature: an empty or extended partition
        tags = g.blkid(device)
    fstype = tags.get("TYPE")
    if not fstype:
        return None
    uuid, label = tags.get("UUID") or None, tags.get("LABEL") or None
    return Filesystem(device=device, fstype=fstype, uuid=uuid, label=label)


# --- kernels -----------------------------------------------------------------------------------


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting 5.10.0-28 after 5.10.0-9 (numbers compare as numbers)."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


def _module_names(text: str) -> frozenset[str]:
    names = set()
    for line in text.splitlines():
        path = line.split(":", 1)[0].strip()
        if not path:
            continue
        base = posixpath.basename(path)
        base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
        names.add(module_name(base))
    return frozenset(names)


def _kernels(g: GuestFS) -> tuple[Kernel, ...]:
    """Installed kernels (a vmlinuz and a module directory), newest first."""
    if not g.is_dir("/lib/modules"):
        return ()
    kernels = []
    for version in g.ls("/lib/modules"):
        vmlinuz = f"/boot/vmlinuz-{version}"
        if not g.is_file(vmlinuz):
            continue  # modules left behind by a removed kernel
        initrd = next(
            (
                path
                for path in (
                    f"/boot/initrd.img-{version}",  # Debian, Ubuntu
                    f"/boot/initramfs-{version}.img",  # RHEL, Fedora, CentOS
                    f"/boot/initrd-{version}",  # SUSE
                    f"/boot/initrd-{version}.img",  # RHEL 5
                )
                if g.is_file(path)
            ),
            None,
        )
        base = f"/lib/modules/{version}"
        dep = _text(g, f"{base}/modules.dep")
        if dep is None:
            # Not depmod'ed yet: the one case where listing the tree is worth its cost.
            found = g.find(f"{base}/kernel") if g.is_dir(f"{base}/kernel") else []
            dep = "\n".join(p for p in found if re.search(r"\.ko(\.(xz|gz|zst))?$", p))
        builtin = _text(g, f"{base}/modules.builtin") or ""
        kernels.append(
            Kernel(
                version=version,
                vmlinuz=vmlinuz,
                initrd=initrd,
                modules=_module_names(dep),
                builtins=_module_names(builtin),
            )
        )
    kernels.sort(key=lambda k: version_key(k.version), reverse=True)
    return tuple(kernels)


# --- bootloader ------------------------------------------------------------------------------------


def _bootloader(g: GuestFS) -> tuple[str, str | None]:
    """(grub2 | grub-legacy | systemd-boot | unknown, its main config file)."""
    for path in ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg"):
        if g.is_file(path):
            return "grub2", path
    # RHEL/Fedora on UEFI (before the unified config) keep the real grub.cfg on the ESP.
    for path in sorted(g.glob_expand("/boot/efi/EFI/*/grub.cfg")):
        return "grub2", path
    for path in ("/boot/grub/grub.conf", "/boot/grub/menu.lst"):
        # One is usually a link to the other; name the real file.
        if g.is_file(path) and not g.is_symlink(path):
            return "grub-legacy", path
    for path in ("/boot/grub/menu.lst", "/boot/grub/grub.conf"):
        if g.is_file(path):
            return "grub-legacy", path
    for path in ("/boot/efi/loader/loader.conf", "/efi/loader/loader.conf", "/boot/loader/loader.conf"):
        if g.is_file(path):
            return "systemd-boot", path
    return "unknown", None


def _default_kernel(g: GuestFS, bootloader: str, config: str | None, kernels: Sequence[Kernel]) -> str | None:
    """The version the bootloader starts by default; the newest kernel when that cannot be told."""
    if not kernels:
        return None
    versions = {k.version for k in kernels}
    chosen: str | None = None
    with contextlib.suppress(RuntimeError):
        if bootloader == "grub2" and config:
            chosen = _grub2_default(g, config, versions)
        elif bootloader == "grub-legacy" and config:
            chosen = _grub_legacy_default(_text(g, config) or "", versions)
    return chosen if chosen in versions else kernels[0].version


def _version_of(path: str, versions: set[str]) -> str | None:
    """The kernel version of a ``linux``/``kernel`` path (/boot/vmlinuz-V, /vmlinuz-V)."""
    base = posixpath.basename(path)
    version = base[len("vmlinuz-") :] if base.startswith("vmlinuz-") else None
    return version if version in versions else None


def _grubenv(g: GuestFS, config: str) -> dict[str, str]:
    text = _text(g, posixpath.join(posixpath.dirname(config), "grubenv")) or ""
    return {k: v for k, _, v in (line.partition("=") for line in text.splitlines() if "=" in line)}


def _grub2_default(g: GuestFS, config: str, versions: set[str]) -> str | None:
    text = _text(g, config) or ""
    env = _grubenv(g, config)
    default = _shell_vars(_text(g, "/etc/default/grub") or "").get("GRUB_DEFAULT", "0")
    if default == "saved":
        default = env.get("saved_entry", "0") or "0"
    if re.search(r"^\s*blscfg\b", text, re.M):
        return _bls_default(g, env.get("saved_entry"), versions)
    entries = _grub2_entries(text)
    if not entries:
        return None
    if default.isdigit():
        top = [e for e in entries if e[0] == 0]
        index = int(default)
        return _version_of(top[index][2], versions) if index < len(top) else None
    want = default.split(">")[-1]  # "submenu-id>entry-id": the entry is what counts
    for _, title, linux, entry_id in entries:
        if want in (title, entry_id):
            return _version_of(linux, versions)
    return None


def _grub2_entries(text: str) -> list[tuple[int, str, str, str]]:
    """(depth, title, linux path, id) of every menuentry and submenu, in file order.

    A submenu is one top-level entry (``GRUB_DEFAULT=1`` may pick it, and so
    its first entry): its linux path is that of its first entry.
    """
    entries: list[list[object]] = []
    stack: list[int] = []  # index in entries of each open block (-1: another kind of block)
    for line in text.splitlines():
        stripped = line.strip()
        m = re.match(r"(menuentry|submenu)\s+(['\"])(.*?)\2(.*)\{\s*$", stripped)
        if m:
            ident = re.search(r"\$menuentry_id_option\s+'([^']*)'", m.group(4))
            depth = sum(1 for i in stack if i >= 0 and entries[i][4] == "submenu")
            entries.append([depth, m.group(3), "", ident.group(1) if ident else "", m.group(1)])
            stack.append(len(entries) - 1)
        elif stripped.endswith("{"):
            stack.append(-1)  # if/function blocks
        elif stripped == "}" and stack:
            stack.pop()
        elif re.match(r"(linux|linux16|linuxefi)\s", stripped) and stack and stack[-1] >= 0:
            entry = entries[stack[-1]]
            if not entry[2]:
                entry[2] = stripped.split()[1]
                for i in stack:  # the enclosing submenus start this kernel first
                    if i >= 0 and not entries[i][2]:
                        entries[i][2] = entry[2]
    return [(int(str(e[0])), str(e[1]), str(e[2]), str(e[3])) for e in entries]


def _bls_default(g: GuestFS, saved: str | None, versions: set[str]) -> str | None:
    """BLS (RHEL 8+, Fedora): grubenv's saved_entry names an entry file; else the newest entry."""
    paths = g.glob_expand("/boot/loader/entries/*.conf")
    found: dict[str, str] = {}
    for path in paths:
        linux = re.search(r"^\s*linux\s+(\S+)", _text(g, path) or "", re.M)
        version = _version_of(linux.group(1), versions) if linux else None
        if version:
            found[posixpath.basename(path)[: -len(".conf")]] = version
    if saved and saved in found:
        return found[saved]
    return max(found.values(), key=version_key) if found else None


def _grub_legacy_default(text: str, versions: set[str]) -> str | None:
    default = 0
    kernels: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        m = re.match(r"default\s*=?\s*(\d+)", stripped)
        if m:
            default = int(m.group(1))
        elif re.match(r"kernel\s", stripped):
            kernels.append(stripped.split()[1])
    return _version_of(kernels[default], versions) if default < len(kernels) else None


# --- the rest ----------------------------------------------------------------------------------------


def _init_system(g: GuestFS) -> str:
    if g.is_symlink("/sbin/init"):
        with contextlib.suppress(RuntimeError):
            if posixpath.basename(g.readlink("/sbin/init")) == "systemd":
                return "systemd"
    if not g.exists("/sbin/init") and any(
        g.is_file(p) for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
    ):
        return "systemd"
    if g.is_file("/sbin/initctl") and g.is_dir("/etc/init"):
        return "upstart"
    if g.exists("/sbin/openrc") or g.exists("/sbin/openrc-run"):
        return "openrc"
    if g.is_file("/etc/inittab"):
        return "sysvinit"
    return "unknown"


def _selinux(g: GuestFS) -> str:
    text = _text(g, "/etc/selinux/config")
    if text is None:
        return "absent"
    mode = _shell_vars(text).get("SELINUX", "").lower()
    return mode if mode in ("enforcing", "permissive", "disabled") else "absent"


def _firmware(g: GuestFS, mountpoints: dict[str, str]) -> str:
    """uefi when an EFI system partition (vfat with /EFI) is mounted."""
    for mountpoint, device in mountpoints.items():
        with contextlib.suppress(RuntimeError):
            if g.vfs_type(device) == "vfat" and g.is_dir(posixpath.join(mountpoint, "EFI")):
                return "uefi"
    return "bios"


def _installed_packages(g: GuestFS, root: str) -> list[str]:
    try:
        apps = g.inspect_list_applications2(root)
    except RuntimeError:
        apps = []
    names = [str(app.get("app2_name", "")) for app in apps]
    if not names and g.inspect_get_package_format(root) == "rpm":
        # The appliance's librpm cannot read every rpmdb (old BDB formats); the guest's own rpm can.
        with contextlib.suppress(RuntimeError):
            for line in g.command_lines(["rpm", "-qa"]):
                nvra = line.strip()
                if nvra and " " not in nvra:
                    names.append(nvra.rsplit("-", 2)[0])
    return names


def _vmware_tools(g: GuestFS, root: str) -> tuple[str, ...]:
    found = sorted({n for n in _installed_packages(g, root) if n.startswith(_VMWARE_PACKAGES)})
    if any(g.exists(p) for p in _VMWARE_TARBALL):
        found.append("tarball")
    return tuple(found)


def _initramfs_tool(g: GuestFS) -> str:
    if g.is_file("/usr/sbin/update-initramfs") or g.is_dir("/etc/initramfs-tools"):
        return "initramfs-tools"
    # SUSE 12+ has mkinitrd too, but only as a wrapper around dracut.
    if any(g.is_file(p) for p in ("/usr/bin/dracut", "/sbin/dracut", "/usr/sbin/dracut")):
        return "dracut"
    if any(g.is_file(p) for p in ("/sbin/mkinitrd", "/usr/sbin/mkinitrd")):
        return "mkinitrd"
    return "unknown"
