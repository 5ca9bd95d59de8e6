"""VMware Tools removal from a Linux guest: what to remove and the commands to do it (pure).

The appliance side (``vm2kvmd.convert.linux.tools``) runs the commands and removes
the files; everything decided from file contents or package lists is here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# What inspection puts in GuestInfo.vmware_tools for an install from VMware's tarball.
TARBALL = "tarball"

UNINSTALLER = "/usr/bin/vmware-uninstall-tools.pl"
LOCATIONS = "/etc/vmware-tools/locations"
# The tarball installer keeps the files it replaced under this suffix and puts them back on uninstall.
TARBALL_BACKUP_SUFFIX = ".BeforeVMwareToolsInstall"

# dpkg and rpm name the maintainer's own policy hook; exit 101 = "action forbidden" for invoke-rc.d
# and deb-systemd-invoke, so no maintainer script tries to stop or start a service in the appliance.
POLICY_RC_D = "/usr/sbin/policy-rc.d"
POLICY_RC_D_TEXT = "#!/bin/sh\n# vm2kvm: temporary, while VMware Tools are removed offline\nexit 101\n"

# Units shipped by open-vm-tools (Debian and RHEL names differ) and by the tarball installer.
VMWARE_UNITS: tuple[str, ...] = (
    "vmtoolsd.service",
    "vmware-tools.service",
    "vmware-tools-thinprint.service",
    "open-vm-tools.service",
    "vgauth.service",
    "vgauthd.service",
    "vmware-vgauth.service",
    "vmware-vmblock-fuse.service",
    "run-vmblock\\x2dfuse.mount",
)

# Leftovers removed whatever the install method (globs, in the guest's tree).
LEFTOVER_GLOBS: tuple[str, ...] = (
    # SysV scripts and their runlevel links (Debian /etc/rcN.d, RHEL /etc/rc.d/rcN.d).
    "/etc/init.d/vmware-tools*",
    "/etc/rc.d/init.d/vmware-tools*",
    "/etc/rc[0-6S].d/[SK][0-9][0-9]vmware-tools*",
    "/etc/rc.d/rc[0-6].d/[SK][0-9][0-9]vmware-tools*",
    # modules-load.d entries load vmw_* drivers that find no device on KVM.
    "/etc/modules-load.d/*vmware*",
    "/etc/modules-load.d/open-vm-tools.conf",
    # initramfs hooks would copy the VMware drivers into the initramfs rebuilt next.
    "/etc/initramfs-tools/hooks/*vmware*",
    "/usr/share/initramfs-tools/hooks/*vmware*",
    "/etc/dracut.conf.d/*vmware*",
    # the tarball's SCSI timeout rules (match VMware disks only; dead weight on KVM).
    "/etc/udev/rules.d/*vmware*",
)

# Kernel modules that only make sense on VMware (virtual hardware that KVM does not emulate).
VMWARE_MODULES: frozenset[str] = frozenset(
    {
        "vmw_pvscsi",
        "pvscsi",
        "vmxnet",
        "vmxnet3",
        "vmw_balloon",
        "vmmemctl",
        "vmw_vmci",
        "vmci",
        "vmw_vsock_vmci_transport",
        "vsock_vmci_transport",
        "vmhgfs",
        "vmsync",
        "vmblock",
        "vmw_pvrdma",
        "vmwgfx",
    }
)


def is_vmware_module(name: str) -> bool:
    return name.replace("-", "_") in VMWARE_MODULES or name.startswith("vmw_")


def units_in(wants_dir_entries: list[str]) -> list[str]:
    """The paths among ``wants_dir_entries`` whose file name is a VMware unit."""
    return [path for path in wants_dir_entries if path.rsplit("/", 1)[-1] in VMWARE_UNITS]


@dataclass(frozen=True)
class RemovalCommand:
    """One package-manager run: the shell line, the packages and how a report names the method."""

    shell: str  # run with the guest's /bin/sh (the environment variable needs a shell), see folded()
    packages: tuple[str, ...]
    method: str  # "dpkg --purge", "rpm -e"


def folded(command: str) -> str:
    """``command`` for ``g.sh`` so that a failure's error text carries all of its output.

    libguestfs puts only stderr in the error of a failed command; package tools
    say half of what went wrong on stdout.
    """
    return (
        f'out=$( ({command}) 2>&1 ); rc=$?; printf "%s\\n" "$out"; '
        '[ $rc -eq 0 ] || { printf "%s\\n" "$out" >&2; exit $rc; }'
    )


def packages_of(found: tuple[str, ...]) -> tuple[str, ...]:
    """The package names in GuestInfo.vmware_tools (everything but the tarball marker), deduplicated."""
    seen: dict[str, None] = {}
    for name in found:
        if name != TARBALL:
            seen.setdefault(name, None)
    return tuple(seen)


def removal_command(
    package_format: str, packages: tuple[str, ...], tool: str | None = None
) -> RemovalCommand | None:
    """How to remove ``packages`` offline; None when there are none or the format is unknown.

    dpkg: purge, not remove, so conffiles and the systemd unit links they own go too;
    --force-depends because metapackages (ubuntu-server, open-vm-tools-desktop's
    dependants) would otherwise block the removal and we do not want to remove them.
    rpm: -e --nodeps for the same reason; yum/dnf/zypper would want repositories.
    """
    if not packages:
        return None
    tool = tool or ("dpkg" if package_format == "deb" else "rpm")
    names = " ".join(shlex.quote(p) for p in packages)
    if package_format == "deb":
        return RemovalCommand(
            f"DEBIAN_FRONTEND=noninteractive {tool} --purge --force-depends {names}",
            packages,
            "dpkg --purge",
        )
    if package_format == "rpm":
        return RemovalCommand(f"{tool} -e --nodeps {names}", packages, "rpm -e")
    return None


@dataclass(frozen=True)
class TarballInstall:
    """What the tarball installer's database (/etc/vmware-tools/locations) says it installed."""

    files: tuple[str, ...]
    directories: tuple[str, ...]  # deepest first, the order to remove them in


_TIMESTAMP = re.compile(r"\s+\d+$")


def parse_locations(text: str) -> TarballInstall:
    """Replay the installer's database: a log where ``remove_file``/``remove_directory`` cancel entries.

    Lines look like ``file /usr/bin/vmtoolsd``, ``file /etc/vmware-tools/tools.conf 1361458352``
    (a timestamp: the file is a conffile), ``directory /etc/vmware-tools``, ``answer BINDIR /usr/bin``.
    Only absolute paths without ``..`` are kept: the file is the guest's and we remove what it names.
    """
    files: dict[str, None] = {}
    dirs: dict[str, None] = {}
    for raw in text.splitlines():
        keyword, _, rest = raw.strip().partition(" ")
        path = _TIMESTAMP.sub("", rest.strip()) if keyword in ("file", "remove_file") else rest.strip()
        if not path.startswith("/") or "/../" in path + "/" or path == "/":
            continue
        if keyword == "file":
            files[path] = None
        elif keyword == "remove_file":
            files.pop(path, None)
        elif keyword == "directory":
            dirs[path] = None
        elif keyword == "remove_directory":
            dirs.pop(path, None)
    ordered_dirs = sorted(dirs, key=lambda d: (-d.count("/"), d))
    return TarballInstall(tuple(files), tuple(ordered_dirs))


# The uninstaller rebuilds the initramfs of every kernel it touched at install time; in the
# appliance that is slow and may fail, and the next step rebuilds the booting kernel's anyway.
LOCATIONS_NO_RAMDISK_RESTORE = (
    "remove_answer RESTORE_RAMDISK_CMD\n"
    "remove_answer RESTORE_RAMDISK_KERNELS\n"
    "remove_answer RESTORE_RAMDISK_ONECALL\n"
)


_ETC_MODULES_LINE = re.compile(r"^\s*([A-Za-z0-9_-]+)")


def comment_vmware_modules(text: str) -> tuple[str, list[str]]:
    """/etc/modules with VMware-only module lines commented out (``# vm2kvm: ``); returns the modules."""
    out: list[str] = []
    removed: list[str] = []
    for line in text.splitlines(keepends=True):
        m = _ETC_MODULES_LINE.match(line)
        if m and not line.lstrip().startswith("#") and is_vmware_module(m.group(1)):
            out.append("# vm2kvm: " + line)
            removed.append(m.group(1))
        else:
            out.append(line)
    return "".join(out), removed
