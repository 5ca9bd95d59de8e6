"""Which virtio-win driver directories fit a Windows guest: pure, over a listing of the tree.

virtio-win (https://github.com/virtio-win/kvm-guest-drivers-windows; ISO and
RPM from https://fedorapeople.org/groups/virt/virtio-win/direct-downloads/;
Debian does not package it) lays its drivers out twice:

* per driver: ``viostor/w10/amd64/viostor.sys`` (``x86`` for 32-bit);
* per OS, all drivers mixed: ``amd64/w10/viostor.sys`` (``i386`` for 32-bit).

The RPM's ``/usr/share/virtio-win/drivers/by-driver`` and ``by-os`` are the
same two layouts one level deeper, so both are matched at any depth.  The OS
directory names are the ISO's (case differs between releases: ``2k8R2``,
``2k12R2``); XP/2003/2008 (``xp``, ``2k3``, ``2k8``; ``wxp``, ``wnet``,
``wlh`` in trees before 2016) left the ISO in 2020 and are used when an
older tree provides them.  Windows 11 and Server 2019-2025 run the same NT
10.0 kernel and driver model as Windows 10 and Server 2016, so a tree
without their own directory falls back to the newest older one of that
family, with a note; anything else without drivers keeps emulated devices.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from vm2kvmd.core.hardware.model import Note

DEFAULT_VIRTIO_WIN = "/usr/share/virtio-win"

# Server builds of NT 10.0 (the product name says "Server"; the build tells which).
_SERVER_2025 = 26100
_SERVER_2022 = 20348
_SERVER_2019 = 17763
_WINDOWS_11 = 22000


@dataclass(frozen=True)
class WindowsRelease:
    """The facts of a Windows guest that select its drivers (from inspection)."""

    major: int  # 10, 6, 5
    minor: int  # 0..3
    build: int  # 17763; 0 when unknown
    server: bool  # a server edition (InstallationType "Server", ProductType not WinNT)
    arch: str  # x86_64 or i386

    @property
    def label(self) -> str:
        return os_dir_names(self)[0][0]


@dataclass(frozen=True)
class Driver:
    """One virtio-win driver we may stage: its directory name and its INF's stem."""

    name: str  # directory in the per-driver layout: "vioserial"
    inf_stem: str  # "vioser" (vioser.inf, vioser.sys, vioser.cat)
    extras: tuple[str, ...] = ()  # other files of the driver in the mixed layout (lower case)


# viostor/vioscsi are boot-critical (registered offline); the rest are staged for PnP.
DRIVERS: tuple[Driver, ...] = (
    Driver("viostor", "viostor"),
    Driver("vioscsi", "vioscsi"),
    Driver("NetKVM", "netkvm"),
    Driver("Balloon", "balloon", ("blnsvr.exe",)),
    Driver("vioserial", "vioser"),
    Driver("viorng", "viorng"),
)
STORAGE_DRIVERS = ("viostor", "vioscsi")


@dataclass(frozen=True)
class DriverFiles:
    """The files of one driver picked for the guest (paths relative to the tree's root)."""

    name: str  # lower-case driver name: viostor, vioscsi, netkvm, balloon, vioserial, viorng
    inf_stem: str
    os_dir: str  # the OS directory used, as written in the tree: "2k8R2"
    files: tuple[str, ...]  # relative paths, sorted

    def file(self, suffix: str) -> str | None:
        """The driver's own ``<stem><suffix>`` file (``.sys``, ``.inf``, ``.cat``)."""
        wanted = self.inf_stem + suffix
        for path in self.files:
            if posixpath.basename(path).lower() == wanted:
                return path
        return None


@dataclass(frozen=True)
class DriverSelection:
    drivers: tuple[DriverFiles, ...]
    guest_agent_msi: str | None  # relative path of the qemu-ga MSI for the guest's architecture
    notes: tuple[Note, ...]

    def get(self, name: str) -> DriverFiles | None:
        for driver in self.drivers:
            if driver.name == name.lower():
                return driver
        return None


def os_dir_names(release: WindowsRelease) -> tuple[tuple[str, ...], ...]:
    """Directory names for the guest, best first; each entry lists spellings of one OS."""
    major, minor, server = release.major, release.minor, release.server
    if major >= 10:
        if server:
            family = [("2k25",), ("2k22",), ("2k19",), ("2k16",)]
            for build, skip in ((_SERVER_2025, 0), (_SERVER_2022, 1), (_SERVER_2019, 2)):
                if release.build >= build:
                    return tuple(family[skip:])
            return (("2k16",),)
        if release.build >= _WINDOWS_11:
            return (("w11",), ("w10",))
        return (("w10",),)
    table: dict[tuple[int, int, bool], tuple[str, ...]] = {
        (6, 3, True): ("2k12r2",),
        (6, 3, False): ("w8.1",),
        (6, 2, True): ("2k12",),
        (6, 2, False): ("w8",),
        (6, 1, True): ("2k8r2",),
        (6, 1, False): ("w7", "win7"),
        # Vista shares Server 2008's kernel and drivers (virtio-win never had a Vista directory).
        (6, 0, True): ("2k8", "wlh"),
        (6, 0, False): ("2k8", "wlh"),
        # XP x64 is 5.2, built from Server 2003.
        (5, 2, True): ("2k3", "wnet"),
        (5, 2, False): ("2k3", "wnet"),
        (5, 1, False): ("xp", "wxp"),
    }
    names = table.get((major, minor, server))
    return (names,) if names else ()


def _arch_dirs(arch: str) -> tuple[str, str]:
    """(per-driver layout, mixed layout) architecture directory names."""
    return ("amd64", "amd64") if arch == "x86_64" else ("x86", "i386")


def _files_per_driver(
    paths: Iterable[tuple[str, tuple[str, ...]]], driver: Driver, os_names: tuple[str, ...], arch: str
) -> list[str]:
    # .../<driver>/<os>/<arch>/<file>
    out = []
    for path, parts in paths:
        if (
            len(parts) >= 4
            and parts[-4] == driver.name.lower()
            and parts[-3] in os_names
            and parts[-2] == arch
        ):
            out.append(path)
    return out


def _files_mixed(
    paths: Iterable[tuple[str, tuple[str, ...]]], driver: Driver, os_names: tuple[str, ...], arch: str
) -> list[str]:
    # .../<arch>/<os>/<file>; the driver's files are those named after its INF, plus its extras
    out = []
    for path, parts in paths:
        if len(parts) >= 3 and parts[-3] == arch and parts[-2] in os_names:
            name = parts[-1]
            if name.startswith(driver.inf_stem) or name in driver.extras:
                out.append(path)
    return out


def _one_directory(files: list[str]) -> list[str]:
    # Both a by-driver and a by-os copy (or an ISO's and an RPM's) may match: keep the
    # shallowest directory so one driver never mixes files of two trees.
    if not files:
        return files
    best = min({posixpath.dirname(f) for f in files}, key=lambda d: (d.count("/"), d))
    return sorted(f for f in files if posixpath.dirname(f) == best)


def _has_inf(files: list[str], driver: Driver) -> bool:
    return any(posixpath.basename(f).lower() == f"{driver.inf_stem}.inf" for f in files)


def select_drivers(listing: Iterable[str], release: WindowsRelease) -> DriverSelection:
    """Pick each driver's files for ``release`` from ``listing`` (file paths relative to the tree)."""
    paths = [(p, tuple(p.lower().split("/"))) for p in listing]
    per_driver_arch, mixed_arch = _arch_dirs(release.arch)
    notes: list[Note] = []
    candidates = os_dir_names(release)
    chosen: list[DriverFiles] = []
    for driver in DRIVERS:
        for rank, names in enumerate(candidates):
            files = _one_directory(_files_per_driver(paths, driver, names, per_driver_arch))
            os_part = -3
            if not _has_inf(files, driver):
                files = _one_directory(_files_mixed(paths, driver, names, mixed_arch))
                os_part = -2
            if not _has_inf(files, driver):
                continue
            os_dir = files[0].split("/")[os_part]
            chosen.append(DriverFiles(driver.name.lower(), driver.inf_stem, os_dir, tuple(files)))
            if rank:
                notes.append(
                    Note(
                        f"virtio-win has no {candidates[0][0]} directory for {driver.name.lower()}; "
                        f"using its {names[0]} driver (same NT 10.0 driver model)"
                    )
                )
            break
    return DriverSelection(tuple(chosen), _guest_agent(paths, release.arch), tuple(notes))


def _guest_agent(paths: list[tuple[str, tuple[str, ...]]], arch: str) -> str | None:
    # guest-agent/qemu-ga-x86_64.msi (older ISOs: qemu-ga-x64.msi); 32-bit: -i386 / -x86.
    wanted = (
        ("qemu-ga-x86_64.msi", "qemu-ga-x64.msi")
        if arch == "x86_64"
        else ("qemu-ga-i386.msi", "qemu-ga-x86.msi")
    )
    found = sorted(
        (
            path
            for path, parts in paths
            if len(parts) >= 2 and parts[-2] == "guest-agent" and parts[-1] in wanted
        ),
        key=lambda p: (p.count("/"), p),
    )
    return found[0] if found else None


def virtio_win_path(option: str | None, environment_value: str | None) -> str:
    """Where the drivers come from: ``--virtio-win``, else ``$VIRTIO_WIN``, else the RPM's directory."""
    return option or environment_value or DEFAULT_VIRTIO_WIN
