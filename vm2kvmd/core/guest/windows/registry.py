"""Registry edits for a Windows guest, planned as values: what a boot-critical driver needs offline.

Windows starts a boot-critical (``Start`` 0) storage driver only when three
things agree before any Plug and Play runs:

* the service key (Type 1 kernel driver, Start 0 boot, Group ``SCSI
  miniport``, ErrorControl 1, ImagePath ``system32\\drivers\\X.sys``) and the
  ``.sys`` in ``System32\\drivers``;
* Windows up to 7/2008 R2: ``Control\\CriticalDeviceDatabase\\pci#<id>``
  maps the controller's hardware ID to the service and its setup class;
* Windows 8 and later have no CriticalDeviceDatabase: the SYSTEM hive's
  ``DriverDatabase`` maps ``DeviceIds\\PCI\\<id>`` to a published INF
  (``oemN.inf``), whose ``DriverInfFiles`` entry names the package in
  ``DriverPackages`` and its configuration (the INF's install section), whose
  ``Configurations\\<section>`` names the service.

virt-v2v writes a made-up package (``guestor.inf_tmp``, no files behind it),
which later broke ``pnputil /e`` and Windows Update.  Ours is what
``pnputil /add-driver`` leaves behind: the package is named
``<inf>_<arch>_<hash>`` and its files are really in
``System32\\DriverStore\\FileRepository\\<package>\\``, the INF is published
as ``INF\\oemN.inf`` and every key carries the INF's own provider, class,
date and version (``driver_package``/``published_inf_name``).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from vm2kvmd.core.guest.windows.inf import InfInfo


class RegType(IntEnum):
    SZ = 1
    EXPAND_SZ = 2
    BINARY = 3
    DWORD = 4
    MULTI_SZ = 7


@dataclass(frozen=True)
class RegValue:
    name: str  # "" is the key's default value
    type: RegType
    data: bytes  # as stored in the hive (strings UTF-16LE with their terminator)

    def text(self) -> str:
        """The value as a .reg file line's right-hand side."""
        if self.type is RegType.SZ:
            return '"' + _decode(self.data).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if self.type is RegType.DWORD:
            return f"dword:{struct.unpack('<I', self.data)[0]:08x}"
        kind = "" if self.type is RegType.BINARY else f"({int(self.type)})"
        return f"hex{kind}:" + ",".join(f"{b:02x}" for b in self.data)


def _decode(data: bytes) -> str:
    return data.decode("utf-16-le").rstrip("\0")


def sz(name: str, text: str) -> RegValue:
    return RegValue(name, RegType.SZ, (text + "\0").encode("utf-16-le"))


def expand_sz(name: str, text: str) -> RegValue:
    return RegValue(name, RegType.EXPAND_SZ, (text + "\0").encode("utf-16-le"))


def dword(name: str, number: int) -> RegValue:
    return RegValue(name, RegType.DWORD, struct.pack("<I", number))


def multi_sz(name: str, items: Iterable[str]) -> RegValue:
    return RegValue(name, RegType.MULTI_SZ, "".join(f"{i}\0" for i in items).encode("utf-16-le") + b"\0\0")


def binary(name: str, data: bytes) -> RegValue:
    return RegValue(name, RegType.BINARY, data)


@dataclass(frozen=True)
class RegKey:
    """A key to create (with its parents) and values to set in it; other values stay."""

    hive: str  # SYSTEM or SOFTWARE
    path: tuple[str, ...]  # below the hive's root
    values: tuple[RegValue, ...]


def render_reg(keys: Iterable[RegKey]) -> str:
    """The edits as a ``.reg`` file (``hivexregedit --merge`` reads it), for reports and golden files."""
    out = ["Windows Registry Editor Version 5.00", ""]
    for key in keys:
        out.append("[HKEY_LOCAL_MACHINE\\" + "\\".join((key.hive, *key.path)) + "]")
        for value in key.values:
            name = "@" if value.name == "" else f'"{value.name}"'
            out.append(f"{name}={value.text()}")
        out.append("")
    return "\n".join(out)


# --- the boot-critical storage driver ---------------------------------------------------

# Hardware IDs in the DriverDatabase and the CriticalDeviceDatabase come from the INF; the
# CDDB keys are the IDs with '\' as '#', in lower case, as Windows' own setup writes them.
_PCI_PREFIX = "PCI\\"


@dataclass(frozen=True)
class StorageDriver:
    """What registering one storage driver needs to know (the INF and where things go)."""

    service: str  # viostor or vioscsi: the .sys name without extension
    inf: InfInfo
    inf_bytes_sha256: str  # hex digest of the INF file: names the DriverStore package
    arch: str  # x86_64 or i386
    published_inf: str  # "oem3.inf": the next free oemN.inf of the guest's INF directory


def driver_package(driver: StorageDriver) -> str:
    """The DriverStore package name, ``viostor.inf_amd64_<16 hex digits>``.

    Windows takes the hex part from a hash of the signed package; any stable
    value of that shape works (it only has to match the FileRepository
    directory), so ours is derived from the INF's bytes.
    """
    arch = "amd64" if driver.arch == "x86_64" else "x86"
    return f"{driver.inf.name}_{arch}_{driver.inf_bytes_sha256[:16]}"


def published_inf_name(existing: Iterable[str]) -> str:
    """The next ``oemN.inf`` not taken in the guest's ``INF`` directory (names in any case)."""
    taken = set()
    for name in existing:
        match = re.fullmatch(r"oem(\d+)\.inf", name.lower())
        if match:
            taken.add(int(match.group(1)))
    number = 0
    while number in taken:
        number += 1
    return f"oem{number}.inf"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def service_key(control_set: str, service: str) -> RegKey:
    return RegKey(
        "SYSTEM",
        (control_set, "Services", service),
        (
            dword("Type", 1),
            dword("Start", 0),
            sz("Group", "SCSI miniport"),
            dword("ErrorControl", 1),
            expand_sz("ImagePath", f"system32\\drivers\\{service}.sys"),
        ),
    )


def _pci_ids(inf: InfInfo) -> list[tuple[str, str, str]]:
    """(id without ``PCI\\``, install section, description) for the INF's PCI models."""
    return [
        (m.hardware_id[len(_PCI_PREFIX) :], m.install_section, m.description)
        for m in inf.models
        if m.hardware_id.upper().startswith(_PCI_PREFIX)
    ]


def critical_device_keys(control_set: str, driver: StorageDriver) -> list[RegKey]:
    """Windows up to 7/2008 R2."""
    return [
        RegKey(
            "SYSTEM",
            (control_set, "Control", "CriticalDeviceDatabase", f"pci#{pci_id.lower()}"),
            (sz("Service", driver.service), sz("ClassGUID", driver.inf.class_guid)),
        )
        for pci_id, _section, _desc in _pci_ids(driver.inf)
    ]


# 1601-01-01 to 1970-01-01 in 100 ns FILETIME ticks.
_FILETIME_EPOCH = 116444736000000000


def _filetime(year: int, month: int, day: int) -> int:
    seconds = int(datetime(year, month, day, tzinfo=UTC).timestamp())
    return _FILETIME_EPOCH + seconds * 10_000_000


def package_version(inf: InfInfo) -> bytes:
    """``DriverPackages\\<package>\\Version``: header, class GUID, DriverVer date and version.

    The 8-byte header is what every package written by Windows' own setup
    carries (and what virt-v2v found necessary for Windows-Kernel-Pnp on
    10/2016); then the class GUID in its binary (mixed-endian) form, the
    DriverVer date as a FILETIME, the version as four 16-bit words (most
    significant first, as a little-endian 64-bit number) and 8 zero bytes.
    """
    guid = inf.class_guid.strip("{}")
    parts = guid.split("-")
    guid_bytes = (
        struct.pack("<IHH", int(parts[0], 16), int(parts[1], 16), int(parts[2], 16))
        + bytes.fromhex(parts[3])
        + bytes.fromhex(parts[4])
    )
    a, b, c, d = inf.version
    version = (a << 48) | (b << 32) | (c << 16) | d
    return (
        b"\x00\xff\x09\x00\x00\x00\x00\x00"
        + guid_bytes
        + struct.pack("<QQ", _filetime(*inf.date), version)
        + bytes(8)
    )


def driver_database_keys(driver: StorageDriver) -> list[RegKey]:
    """Windows 8 and later (a SYSTEM hive with a ``DriverDatabase``)."""
    inf = driver.inf
    package = driver_package(driver)
    published = driver.published_inf
    pci = _pci_ids(inf)
    sections = list(dict.fromkeys(section for _id, section, _desc in pci))
    keys = [
        RegKey(
            "SYSTEM",
            ("DriverDatabase", "DriverInfFiles", published),
            (multi_sz("", [package]), sz("Active", package), multi_sz("Configurations", sections)),
        ),
        RegKey(
            "SYSTEM",
            ("DriverDatabase", "DriverPackages", package),
            (
                sz("", published),
                binary("Version", package_version(inf)),
                sz("Provider", inf.provider),
            ),
        ),
    ]
    keys += [
        RegKey(
            "SYSTEM",
            ("DriverDatabase", "DriverPackages", package, "Configurations", section),
            (dword("ConfigFlags", 0), sz("Service", driver.service)),
        )
        for section in sections
    ]
    for pci_id, section, description in pci:
        keys.append(
            RegKey(
                "SYSTEM",
                ("DriverDatabase", "DriverPackages", package, "Descriptors", "PCI", pci_id),
                (
                    sz("Configuration", section),
                    sz("Manufacturer", inf.provider),
                    sz("Description", description),
                ),
            )
        )
        # 01 ff 00 00: the rank Windows records for a signed driver's exact hardware-ID match.
        keys.append(
            RegKey(
                "SYSTEM",
                ("DriverDatabase", "DeviceIds", "PCI", pci_id),
                (binary(published, b"\x01\xff\x00\x00"),),
            )
        )
    return keys


def storage_driver_keys(control_set: str, driver: StorageDriver, *, driver_database: bool) -> list[RegKey]:
    """Every registry edit that makes ``driver`` start at boot, for the guest's kind of database."""
    database = driver_database_keys(driver) if driver_database else critical_device_keys(control_set, driver)
    return [*database, service_key(control_set, driver.service)]


# --- staged drivers ----------------------------------------------------------------------


def extend_device_path(current: str | None, directories: Iterable[str]) -> str:
    """``DevicePath`` with ``directories`` appended once each (Windows' default when unset)."""
    entries = [e for e in (current or "%SystemRoot%\\inf").split(";") if e]
    lowered = {e.lower() for e in entries}
    for directory in directories:
        if directory.lower() not in lowered:
            entries.append(directory)
            lowered.add(directory.lower())
    return ";".join(entries)
