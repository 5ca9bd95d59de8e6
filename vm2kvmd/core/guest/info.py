"""What guest inspection found and what guest conversion did: pure values.

``GuestInfo`` is filled by ``vm2kvmd.convert.inspect`` from the libguestfs
appliance; every decision taken from it (``caps_for_linux``, the device map,
the edits) is pure and tested without an appliance.  ``Change`` is one edit
made inside the guest, as a migration engineer would list it in a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vm2kvmd.core.guest.windows.info import WindowsInfo
from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.osinfo import osinfo_from_guest


def module_name(name: str) -> str:
    """Kernel module names treat ``-`` and ``_`` alike (``virtio-blk`` is ``virtio_blk``)."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class Kernel:
    """One installed kernel and the modules it can load."""

    version: str  # "6.1.0-26-amd64", the /lib/modules directory name
    vmlinuz: str  # "/boot/vmlinuz-6.1.0-26-amd64"
    initrd: str | None  # "/boot/initrd.img-6.1.0-26-amd64", None when there is none
    modules: frozenset[str] = frozenset()  # loadable modules, normalised with module_name
    builtins: frozenset[str] = frozenset()  # compiled in (modules.builtin), normalised

    def has(self, module: str) -> bool:
        name = module_name(module)
        return name in self.modules or name in self.builtins


@dataclass(frozen=True)
class Filesystem:
    device: str  # as the appliance names it: /dev/sda1
    fstype: str  # ext4, xfs, swap, ...
    uuid: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class GuestInfo:
    """One operating system found on the VM's disks (one libguestfs inspection root)."""

    root: str  # the root file system, as the appliance names it (/dev/sda1, /dev/vg/root)
    os_type: str  # linux, windows, freebsd, unknown
    distro: str  # debian, ubuntu, rhel, centos, fedora, sles, opensuse, ... (libguestfs' names)
    product_name: str  # "Debian GNU/Linux 12 (bookworm)"
    major: int
    minor: int
    arch: str  # x86_64, i386
    hostname: str = ""
    mountpoints: tuple[tuple[str, str], ...] = ()  # (mount point, appliance device), "/" first
    filesystems: tuple[Filesystem, ...] = ()
    bootloader: str = "unknown"  # grub2, grub-legacy, systemd-boot, unknown
    boot_config: str | None = None  # the bootloader's config file (/boot/grub/grub.cfg, ...)
    kernels: tuple[Kernel, ...] = ()
    default_kernel: str | None = None  # version of the kernel the bootloader starts
    init_system: str = "unknown"  # systemd, sysvinit, upstart, openrc, unknown
    package_format: str = "unknown"  # deb, rpm, unknown
    package_manager: str = "unknown"  # apt, dnf, yum, zypper, unknown
    selinux: str = "absent"  # enforcing, permissive, disabled, absent
    firmware: str = "bios"  # bios or uefi (an ESP is mounted)
    vmware_tools: tuple[str, ...] = ()  # what was found: package names, "tarball" for a tarball install
    initramfs_tool: str = "unknown"  # initramfs-tools, dracut, mkinitrd, unknown
    windows: WindowsInfo | None = None  # what a Windows guest's registry and disks say (issue 13)

    @property
    def os_id(self) -> str | None:
        """This OS as a libosinfo id (``http://debian.org/debian/12``); None when libosinfo has none."""
        return osinfo_from_guest(self.os_type, self.distro, self.major, self.minor, self.product_name)

    @property
    def booting_kernel(self) -> Kernel | None:
        """The kernel that will boot: the bootloader's default, else the newest."""
        for kernel in self.kernels:
            if kernel.version == self.default_kernel:
                return kernel
        return self.kernels[0] if self.kernels else None


@dataclass(frozen=True)
class DiskName:
    """How one planned disk is named in the guest before and after migration."""

    index: int  # position in the plan = order the appliance sees it (/dev/sda, /dev/sdb, ...)
    source_names: tuple[str, ...]  # names the guest used on VMware: ("sda",), ("hda", "sda"), ("nvme0n1",)
    appliance: str  # "sda": the appliance's name for the same disk
    target: str  # "vda": the name on the converted VM (the plan's target dev)


@dataclass(frozen=True)
class DeviceMap:
    disks: tuple[DiskName, ...] = ()


@dataclass(frozen=True)
class Change:
    """One edit made inside the guest."""

    area: str  # vmware-tools, devices, bootloader, initramfs, network, xorg, modprobe, selinux, agent, trim
    summary: str  # "removed package open-vm-tools", "/etc/fstab: /dev/sda1 -> UUID=..."
    path: str | None = None  # the file changed, when there is one

    def to_json(self) -> dict[str, str | None]:
        return {"area": self.area, "summary": self.summary, "path": self.path}


@dataclass(frozen=True)
class Conversion:
    """The result of converting the guest: what the domain may use and what was changed."""

    caps: GuestCaps
    guest: GuestInfo | None  # None with --no-guest-conversion
    changes: tuple[Change, ...] = ()
    notes: tuple[Note, ...] = ()
    timings: tuple[tuple[str, float], ...] = field(default=())  # (step, seconds), for the report and bench
