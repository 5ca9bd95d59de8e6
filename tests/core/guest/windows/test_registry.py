"""Registry edit plans for the boot-critical storage driver and staged drivers (golden .reg files)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from testbed.virtio_win import DRIVERS as FAKE_DRIVERS
from testbed.virtio_win import inf_text
from tests.helpers.golden import check_golden
from vm2kvmd.core.guest.windows import registry as r
from vm2kvmd.core.guest.windows.inf import parse_inf

DATA = Path(__file__).resolve().parents[3] / "data" / "windows"


def storage(stem: str, arch: str = "amd64") -> r.StorageDriver:
    fake = next(d for d in FAKE_DRIVERS if d.stem == stem)
    text = inf_text(fake, arch)
    return r.StorageDriver(
        service=stem,
        inf=parse_inf(f"{stem}.inf", text),
        inf_bytes_sha256=r.sha256_hex(text.encode()),
        arch="x86_64" if arch == "amd64" else "i386",
        published_inf="oem3.inf",
    )


@pytest.mark.parametrize(
    ("case", "stem", "arch", "database"),
    [
        ("viostor-cddb-x86", "viostor", "x86", False),  # Windows 7 32-bit
        ("viostor-cddb", "viostor", "amd64", False),  # Server 2008 R2
        ("viostor-driverdb", "viostor", "amd64", True),  # Server 2019
        ("vioscsi-driverdb", "vioscsi", "amd64", True),
    ],
)
def test_storage_driver_golden(case: str, stem: str, arch: str, database: bool, regenerate: bool) -> None:
    keys = r.storage_driver_keys("ControlSet001", storage(stem, arch), driver_database=database)
    check_golden(DATA / f"registry-{case}.reg", r.render_reg(keys), regenerate=regenerate, test_file=__file__)


def test_service_key_values() -> None:
    key = r.service_key("ControlSet002", "viostor")
    assert key.path == ("ControlSet002", "Services", "viostor")
    values = {v.name: v for v in key.values}
    assert values["Type"] == r.dword("Type", 1) and values["Start"] == r.dword("Start", 0)
    assert values["ErrorControl"].data == b"\x01\0\0\0"
    assert values["Group"].data == "SCSI miniport\0".encode("utf-16-le")
    assert values["ImagePath"].type is r.RegType.EXPAND_SZ
    assert values["ImagePath"].data.decode("utf-16-le") == "system32\\drivers\\viostor.sys\0"


def test_cddb_names_both_virtio_blk_ids() -> None:
    keys = r.critical_device_keys("ControlSet001", storage("viostor"))
    assert [k.path[-1] for k in keys] == [
        "pci#ven_1af4&dev_1001&subsys_00021af4&rev_00",
        "pci#ven_1af4&dev_1042&subsys_11001af4&rev_01",
    ]
    scsi = r.critical_device_keys("ControlSet001", storage("vioscsi"))
    assert [k.path[-1] for k in scsi] == [
        "pci#ven_1af4&dev_1004&subsys_00081af4&rev_00",
        "pci#ven_1af4&dev_1048&subsys_11001af4&rev_01",
    ]


def test_driver_database_is_consistent() -> None:
    """Every name one key refers to exists: package, published INF, configuration, service."""
    driver = storage("viostor")
    keys = {k.path: {v.name: v for v in k.values} for k in r.driver_database_keys(driver)}
    package = r.driver_package(driver)
    assert package.startswith("viostor.inf_amd64_") and len(package.rsplit("_", 1)[1]) == 16
    inf_files = keys[("DriverDatabase", "DriverInfFiles", "oem3.inf")]
    assert inf_files[""] == r.multi_sz("", [package]) and inf_files["Active"] == r.sz("Active", package)
    assert inf_files["Configurations"] == r.multi_sz("Configurations", ["rhelscsi_inst"])
    pkg = keys[("DriverDatabase", "DriverPackages", package)]
    assert pkg[""] == r.sz("", "oem3.inf") and pkg["Provider"] == r.sz("Provider", "Red Hat, Inc.")
    config = keys[("DriverDatabase", "DriverPackages", package, "Configurations", "rhelscsi_inst")]
    assert config["Service"] == r.sz("Service", "viostor")
    for pci_id in ("VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"):
        assert keys[("DriverDatabase", "DeviceIds", "PCI", pci_id)] == {
            "oem3.inf": r.binary("oem3.inf", b"\x01\xff\0\0")
        }
        descriptor = keys[("DriverDatabase", "DriverPackages", package, "Descriptors", "PCI", pci_id)]
        assert descriptor["Configuration"] == r.sz("Configuration", "rhelscsi_inst")
    # No made-up package name (virt-v2v's guestor.inf_tmp broke pnputil /e).
    assert not any("guestor" in "\\".join(path) or "_tmp" in "\\".join(path) for path in keys)


def test_package_version_layout() -> None:
    data = r.package_version(storage("viostor").inf)
    assert len(data) == 48 and data[:8] == b"\x00\xff\x09\x00\x00\x00\x00\x00"
    # {4D36E97B-E325-11CE-BFC1-08002BE10318} in binary form
    assert data[8:24] == bytes.fromhex("7be9364d25e3ce11bfc108002be10318")
    filetime, version = struct.unpack("<QQ", data[24:40])
    assert datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=filetime // 10) == datetime(
        2024, 9, 5, tzinfo=UTC
    )
    assert [(version >> s) & 0xFFFF for s in (48, 32, 16, 0)] == [100, 95, 104, 26200]
    assert data[40:] == bytes(8)


def test_published_inf_name() -> None:
    assert r.published_inf_name([]) == "oem0.inf"
    assert r.published_inf_name(["OEM0.INF", "oem1.inf", "oem3.inf", "machine.inf", "oem1.PNF"]) == "oem2.inf"


def test_extend_device_path() -> None:
    dirs = ["%SystemRoot%\\Drivers\\VirtIO\\netkvm", "%SystemRoot%\\Drivers\\VirtIO\\balloon"]
    assert r.extend_device_path(None, dirs) == "%SystemRoot%\\inf;" + ";".join(dirs)
    once = r.extend_device_path("%SystemRoot%\\inf;C:\\Vendor", dirs)
    assert once == "%SystemRoot%\\inf;C:\\Vendor;" + ";".join(dirs)
    assert r.extend_device_path(once.upper(), dirs) == once.upper()  # idempotent, case-insensitive


def test_reg_text_of_each_type() -> None:
    key = r.RegKey(
        "SOFTWARE",
        ("A", "B"),
        (
            r.sz("", 'q"\\'),
            r.expand_sz("E", "x"),
            r.dword("D", 255),
            r.multi_sz("M", ["a", "b"]),
            r.binary("B", b"\x01"),
        ),
    )
    assert r.render_reg([key]).split("\n") == [
        "Windows Registry Editor Version 5.00",
        "",
        "[HKEY_LOCAL_MACHINE\\SOFTWARE\\A\\B]",
        '@="q\\"\\\\"',
        "E=hex(2):78,00,00,00".replace("E=", '"E"='),
        '"D"=dword:000000ff',
        '"M"=hex(7):61,00,00,00,62,00,00,00,00,00',
        '"B"=hex:01',
        "",
    ]
