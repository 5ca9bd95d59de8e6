"""A fake virtio-win tree with the real layout and small but real driver files.

No virtio-win may be downloaded here, so tests build one: the ISO's two
layouts (``viostor/w10/amd64/`` and ``amd64/w10/``), for each driver an INF
with the real ``[Version]`` (Class, ClassGuid, Provider, DriverVer,
CatalogFile) and the real PCI hardware IDs of virtio-win's INFs, a ``.sys``
that is a PE image header for the right machine, and a ``.cat`` that is a
DER PKCS#7 SignedData header (a catalog's container; nothing here checks
signatures).  ``guest-agent/`` holds MSI stand-ins (an OLE compound file
signature).  Pure files: nothing in this module needs an appliance.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCSI_CLASS = ("SCSIAdapter", "{4D36E97B-E325-11CE-BFC1-08002BE10318}")
NET_CLASS = ("Net", "{4D36E972-E325-11CE-BFC1-08002BE10318}")
SYSTEM_CLASS = ("System", "{4D36E97D-E325-11CE-BFC1-08002BE10318}")
DRIVER_VER = "09/05/2024,100.95.104.26200"


@dataclass(frozen=True)
class FakeDriver:
    directory: str  # per-driver layout directory
    stem: str  # file names
    driver_class: tuple[str, str]
    install: str  # the [Models] install section
    description: str
    pci_ids: tuple[str, ...]  # legacy, modern
    extras: tuple[str, ...] = ()


DRIVERS: tuple[FakeDriver, ...] = (
    FakeDriver(
        "viostor",
        "viostor",
        SCSI_CLASS,
        "rhelscsi_inst",
        "Red Hat VirtIO SCSI controller",
        ("VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"),
    ),
    FakeDriver(
        "vioscsi",
        "vioscsi",
        SCSI_CLASS,
        "scsi_inst",
        "Red Hat VirtIO SCSI pass-through controller",
        ("VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00", "VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01"),
    ),
    FakeDriver(
        "NetKVM",
        "netkvm",
        NET_CLASS,
        "kvmnet6.ndi",
        "Red Hat VirtIO Ethernet Adapter",
        ("VEN_1AF4&DEV_1000&SUBSYS_00011AF4&REV_00", "VEN_1AF4&DEV_1041&SUBSYS_11001AF4&REV_01"),
        ("netkvmco.dll",),
    ),
    FakeDriver(
        "Balloon",
        "balloon",
        SYSTEM_CLASS,
        "BALLOON_Device.NT",
        "VirtIO Balloon Driver",
        ("VEN_1AF4&DEV_1002&SUBSYS_00051AF4&REV_00", "VEN_1AF4&DEV_1045&SUBSYS_11001AF4&REV_01"),
        ("blnsvr.exe",),
    ),
    FakeDriver(
        "vioserial",
        "vioser",
        SYSTEM_CLASS,
        "VirtioSerial_Device",
        "VirtIO Serial Driver",
        ("VEN_1AF4&DEV_1003&SUBSYS_00031AF4&REV_00", "VEN_1AF4&DEV_1043&SUBSYS_11001AF4&REV_01"),
    ),
    FakeDriver(
        "viorng",
        "viorng",
        SYSTEM_CLASS,
        "VirtRng_Device",
        "VirtIO RNG Device",
        ("VEN_1AF4&DEV_1005&SUBSYS_00041AF4&REV_00", "VEN_1AF4&DEV_1044&SUBSYS_11001AF4&REV_01"),
    ),
)

# What a 2024 ISO carries: servers 64-bit only, clients also 32-bit up to Windows 10.
CURRENT_ISO: tuple[tuple[str, str], ...] = (
    *((os, "amd64") for os in ("2k8R2", "2k12", "2k12R2", "2k16", "2k19", "2k22", "2k25")),
    *((os, "amd64") for os in ("w7", "w8", "w8.1", "w10", "w11")),
    *((os, "x86") for os in ("w7", "w8", "w8.1", "w10")),
)
# An older tree (virtio-win 0.1.185, the last with XP/2003/2008 drivers).
LEGACY_ISO: tuple[tuple[str, str], ...] = (
    ("xp", "x86"),
    ("2k3", "x86"),
    ("2k3", "amd64"),
    ("2k8", "x86"),
    ("2k8", "amd64"),
)


def inf_text(driver: FakeDriver, arch: str) -> str:
    decoration = "NTamd64" if arch == "amd64" else "NTx86"
    models = "\n".join(f"%{driver.stem}.DeviceDesc% = {driver.install}, PCI\\{pci}" for pci in driver.pci_ids)
    cls, guid = driver.driver_class
    return (
        f"; {driver.stem}.inf (vm2kvm test tree; the [Version] and IDs of virtio-win's INF)\r\n"
        "[Version]\r\n"
        'Signature="$WINDOWS NT$"\r\n'
        f"Class={cls}\r\n"
        f"ClassGUID={guid}\r\n"
        "Provider=%RHEL%\r\n"
        f"DriverVer={DRIVER_VER}\r\n"
        f"CatalogFile={driver.stem}.cat\r\n"
        "PnpLockdown=1\r\n"
        "\r\n"
        "[Manufacturer]\r\n"
        f"%RHEL% = RHEL,{decoration}\r\n"
        "\r\n"
        f"[RHEL.{decoration}]\r\n"
        f"{models}\r\n"
        "\r\n"
        f"[{driver.install}]\r\n"
        f"CopyFiles = {driver.stem}_files\r\n"
        "\r\n"
        "[Strings]\r\n"
        'RHEL = "Red Hat, Inc."\r\n'
        f'{driver.stem}.DeviceDesc = "{driver.description}"\r\n'
    )


def pe_image(arch: str) -> bytes:
    """A PE header: MZ stub pointing at ``PE\\0\\0`` and a COFF header for the machine."""
    machine = 0x8664 if arch == "amd64" else 0x014C
    dos = b"MZ" + bytes(58) + struct.pack("<I", 0x40)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", machine, 0, 0, 0, 0, 0, 0x0022)
    return dos + coff


def _der(tag: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([tag, len(body)]) + body


def catalog() -> bytes:
    """ContentInfo{signedData, SignedData{1, {}, {szOID_CTL}, {}}}: a catalog's outer shape."""
    signed_data_oid = _der(0x06, bytes.fromhex("2a864886f70d010702"))
    ctl_oid = _der(0x06, bytes.fromhex("2b0601040182370a01"))
    signed = _der(0x30, _der(0x02, b"\x01") + _der(0x31, b"") + _der(0x30, ctl_oid) + _der(0x31, b""))
    return _der(0x30, signed_data_oid + _der(0xA0, signed))


MSI_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")


def _write_driver(directory: Path, driver: FakeDriver, arch: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{driver.stem}.inf").write_text(inf_text(driver, arch), newline="")
    (directory / f"{driver.stem}.sys").write_bytes(pe_image(arch))
    (directory / f"{driver.stem}.cat").write_bytes(catalog())
    for extra in driver.extras:
        (directory / extra).write_bytes(pe_image(arch))


def build_virtio_win(
    root: Path,
    oses: Iterable[tuple[str, str]] = CURRENT_ISO,
    *,
    layouts: tuple[str, ...] = ("per-driver", "mixed"),
    drivers: Iterable[str] | None = None,
    guest_agent: bool = True,
) -> Path:
    """Write a tree under ``root``; ``drivers`` limits it to those directory names (lower case)."""
    wanted = None if drivers is None else {d.lower() for d in drivers}
    root.mkdir(parents=True, exist_ok=True)
    for os_dir, arch in oses:
        for driver in DRIVERS:
            if wanted is not None and driver.directory.lower() not in wanted:
                continue
            if "per-driver" in layouts:
                _write_driver(root / driver.directory / os_dir / arch, driver, arch)
            if "mixed" in layouts:
                _write_driver(root / ("amd64" if arch == "amd64" else "i386") / os_dir, driver, arch)
    if guest_agent:
        (root / "guest-agent").mkdir(exist_ok=True)
        for name in ("qemu-ga-x86_64.msi", "qemu-ga-i386.msi"):
            (root / "guest-agent" / name).write_bytes(MSI_MAGIC + bytes(504))
    return root


def listing(root: Path) -> list[str]:
    """The tree's files as the daemon lists them: relative POSIX paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
