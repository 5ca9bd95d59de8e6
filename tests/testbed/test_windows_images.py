"""The phony Windows builder's parts, without an appliance: the hive it writes (read back by the
conversion's own reader and by hivexregedit), its partition tables (read by sfdisk) and its PE
headers (read by file, as libguestfs does)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from testbed.guests.windows.build import gpt, mbr, pe_header
from testbed.guests.windows.hives import empty_hive, software_hive, system_hive, write_hive
from testbed.guests.windows.layout import SECTOR, WindowsLayout, win11_uefi, win2008r2, xp_sp3
from vm2kvmd.convert.windows.inspect import read_software_hive, read_system_hive
from vm2kvmd.core.guest.windows.info import DiskFacts, windows_info


def test_empty_hive_is_a_hive_hivex_and_hivexregedit_accept(tmp_path: Path) -> None:
    path = tmp_path / "EMPTY"
    path.write_bytes(empty_hive("EMPTY"))
    assert len(path.read_bytes()) == 8192
    out = subprocess.run(
        ["hivexregedit", "--export", str(path), "\\"], capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines()[2] == "[\\]"


@pytest.mark.parametrize("layout", [xp_sp3(), win2008r2()], ids=lambda layout: str(layout.name))
def test_written_hives_read_back_as_the_layout_says(tmp_path: Path, layout: WindowsLayout) -> None:
    write_hive(tmp_path / "SYSTEM", "SYSTEM", system_hive(layout))
    write_hive(tmp_path / "SOFTWARE", "SOFTWARE", software_hive(layout))
    info = windows_info(
        root="/dev/sda1",
        arch=layout.arch,
        systemroot=layout.systemroot,
        system=read_system_hive(tmp_path / "SYSTEM"),
        software=read_software_hive(tmp_path / "SOFTWARE"),
        disks=DiskFacts(),
    )
    assert (info.product_name, info.major, info.minor, info.build) == (
        layout.product_name,
        layout.major,
        layout.minor,
        layout.build,
    )
    assert info.current_control_set == f"ControlSet{layout.control_set:03d}"
    assert info.hostname == layout.hostname
    assert [n.addresses for n in info.nics] == [n.addresses for n in layout.nics if n.characteristics & 4]
    assert info.service("VMTools") is not None and info.service("vmci") is not None


def _sfdisk(path: Path) -> dict[str, object]:
    out = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True, check=True)
    table = json.loads(out.stdout)["partitiontable"]
    assert isinstance(table, dict)
    return table


def test_mbr_has_the_signature_and_partitions_mounted_devices_name(tmp_path: Path) -> None:
    layout = win2008r2()
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(layout.disk_mib << 20)
        f.write(mbr(layout.disk_signature, layout.partitions))
    table = _sfdisk(path)
    assert table["label"] == "dos" and table["id"] == f"0x{layout.disk_signature:08x}"
    parts = table["partitions"]
    assert isinstance(parts, list)
    assert [(p["start"], p["size"], p["type"], p.get("bootable", False)) for p in parts] == [
        (p.start, p.sectors, "7", n == 0) for n, p in enumerate(layout.partitions)
    ]


def test_gpt_is_valid_with_its_backup(tmp_path: Path) -> None:
    layout = win11_uefi()
    path = tmp_path / "disk.img"
    size = layout.disk_mib << 20
    first, last = gpt(size // SECTOR, layout.disk_guid, layout.partitions)
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(first)
        f.seek(size - len(last))
        f.write(last)
    out = subprocess.run(["sfdisk", "--verify", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    table = _sfdisk(path)
    assert table["label"] == "gpt" and str(table["id"]).upper() == layout.disk_guid
    parts = table["partitions"]
    assert isinstance(parts, list)
    assert [(p["start"], p["type"], p["uuid"]) for p in parts] == [
        (p.start, p.gpt_type, p.gpt_guid) for p in layout.partitions
    ]


@pytest.mark.parametrize(("arch", "words"), [("i386", "PE32 executable"), ("x86_64", "PE32+ executable")])
def test_pe_header_is_what_file_reports(tmp_path: Path, arch: str, words: str) -> None:
    path = tmp_path / "cmd.exe"
    path.write_bytes(pe_header(arch))
    out = subprocess.run(["file", "-b", str(path)], capture_output=True, text=True, check=True).stdout
    assert out.startswith(words)
    assert ("x86-64" if arch == "x86_64" else "Intel 80386") in out
