"""Putting the virtio drivers into a Linux guest's initramfs: config edits and commands (pure).

The root disk's driver must be in the initramfs: the kernel needs it to find
``/`` before any module on the root file system can be loaded.  The NIC
driver does not strictly need to be there (udev loads it from the root file
system), but it is cheap and makes NFS/iSCSI roots work; nothing else
virtio (rng, balloon, console) is needed before the root is mounted.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from vm2kvmd.core.guest.info import Kernel, module_name

BACKUP_SUFFIX = ".vm2kvm-orig"
INITRAMFS_TOOLS_MODULES = "/etc/initramfs-tools/modules"
INITRAMFS_TOOLS_CONF = "/etc/initramfs-tools/initramfs.conf"
DRACUT_CONF = "/etc/dracut.conf.d/vm2kvm-virtio.conf"
SUSE_SYSCONFIG_KERNEL = "/etc/sysconfig/kernel"

MARKER = "# Added by vm2kvm: virtio drivers the converted VM needs to find its root disk"


def disk_modules(disk_bus: str) -> tuple[str, ...]:
    """The drivers the root disk needs on ``disk_bus``, in load order; () when not virtio."""
    if disk_bus == "virtio":
        return ("virtio_pci", "virtio_blk")
    if disk_bus == "scsi":
        # virtio-scsi presents SCSI disks: sd_mod is the disk driver on top of the HBA.
        return ("virtio_pci", "virtio_scsi", "sd_mod")
    return ()


def wanted_modules(disk_bus: str, nic_model: str) -> tuple[str, ...]:
    """Only what the root disk needs: ``nic_model`` is deliberately unused.

    A NIC driver in the initramfs makes udev name the NIC there, before the
    real root's pins apply (and renaming again later needs systemd >= 240);
    a local root needs no network, so virtio_net loads from the real root.
    """
    del nic_model
    return disk_modules(disk_bus)


@dataclass(frozen=True)
class ModulePlan:
    add: tuple[str, ...]  # loadable modules to put in the initramfs
    builtin: tuple[str, ...]  # compiled into the kernel: nothing to do
    missing: tuple[str, ...]  # the kernel has them neither way

    @property
    def disk_missing(self) -> bool:
        return any(m != "virtio_net" for m in self.missing)


def plan_modules(kernel: Kernel, disk_bus: str, nic_model: str) -> ModulePlan:
    add: list[str] = []
    builtin: list[str] = []
    missing: list[str] = []
    for mod in wanted_modules(disk_bus, nic_model):
        name = module_name(mod)
        if name in kernel.builtins:
            builtin.append(mod)
        elif name in kernel.modules:
            add.append(mod)
        else:
            missing.append(mod)
    return ModulePlan(tuple(add), tuple(builtin), tuple(missing))


# --- initramfs-tools (Debian, Ubuntu) -------------------------------------------------


def _listed_modules(text: str) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            names.add(module_name(words[0]))
    return names


def add_to_modules_file(text: str, modules: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """/etc/initramfs-tools/modules (one module per line, modules(5)) with ``modules`` appended.

    Returns the new text and the modules actually added (those not listed yet).
    """
    listed = _listed_modules(text)
    added = tuple(m for m in modules if module_name(m) not in listed)
    if not added:
        return text, ()
    new = text if not text or text.endswith("\n") else text + "\n"
    new += MARKER + "\n" + "".join(m + "\n" for m in added)
    return new, added


_MODULES_DEP = re.compile(r"""^(\s*MODULES\s*=\s*)(["']?)dep\2(\s*(?:#.*)?)$""", re.MULTILINE)


def modules_dep_to_most(text: str) -> str | None:
    """initramfs.conf with ``MODULES=dep`` turned into ``MODULES=most``; None when not ``dep``.

    ``dep`` makes mkinitramfs pick drivers from the devices of the machine it
    runs on: here the libguestfs appliance, not the converted VM (and it
    aborts when it cannot resolve the root device there).  ``most`` is
    Debian's default and includes every storage driver.
    """
    if not _MODULES_DEP.search(text):
        return None
    return _MODULES_DEP.sub(
        lambda m: (
            "# vm2kvm: was MODULES=dep (that picks drivers from the conversion appliance)\n"
            f"{m.group(1)}most{m.group(3)}"
        ),
        text,
        count=1,
    )


def update_initramfs_command(version: str) -> list[str]:
    return ["update-initramfs", "-u", "-k", version]


# --- dracut (RHEL/Fedora/CentOS >= 6, SLES >= 12, recent openSUSE) --------------------


def dracut_conf_text(modules: tuple[str, ...]) -> str:
    """A dracut.conf.d snippet so later kernel updates keep the drivers (spaces around: dracut's rule)."""
    return (
        "# vm2kvm: the converted VM boots from virtio disks; keep their drivers in every initramfs\n"
        f'add_drivers+=" {" ".join(modules)} "\n'
    )


def dracut_command(initrd: str, version: str, modules: tuple[str, ...]) -> list[str]:
    return ["dracut", "-f", "--add-drivers", " ".join(modules), initrd, version]


# --- mkinitrd: SUSE (SLES 11) and Red Hat (RHEL 5) ------------------------------------

_INITRD_MODULES = re.compile(r"""^(\s*INITRD_MODULES\s*=\s*)(["']?)([^"'\n]*)\2(.*)$""", re.MULTILINE)


def add_initrd_modules(text: str, modules: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """/etc/sysconfig/kernel with ``modules`` added to INITRD_MODULES (created when absent)."""
    m = _INITRD_MODULES.search(text)
    current = m.group(3).split() if m else []
    have = {module_name(x) for x in current}
    added = tuple(x for x in modules if module_name(x) not in have)
    if not added:
        return text, ()
    value = " ".join([*current, *added])
    if m is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return f'{text}{sep}# vm2kvm: virtio drivers for the root disk\nINITRD_MODULES="{value}"\n', added
    line = f'{m.group(1)}"{value}"{m.group(4)}'
    return text[: m.start()] + line + text[m.end() :], added


def suse_mkinitrd_command(vmlinuz: str, initrd: str) -> list[str]:
    # SLES 11 mkinitrd takes its module list from INITRD_MODULES in /etc/sysconfig/kernel.
    return ["mkinitrd", "-k", vmlinuz, "-i", initrd]


def redhat_mkinitrd_command(initrd: str, version: str, modules: tuple[str, ...]) -> list[str]:
    return ["mkinitrd", "-f", *(f"--with={m}" for m in modules), initrd, version]


def shell_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# --- verification ---------------------------------------------------------------------

_KO = re.compile(r"/([^/]+)\.ko(?:\.(?:xz|gz|zst|bz2))?$")


def modules_in_listing(lines: list[str]) -> frozenset[str]:
    """Module names in an ``lsinitramfs``/``lsinitrd`` listing (normalised)."""
    found: set[str] = set()
    for line in lines:
        m = _KO.search(line.strip().split()[-1] if line.strip() else "")
        if m:
            found.add(module_name(m.group(1)))
    return frozenset(found)
