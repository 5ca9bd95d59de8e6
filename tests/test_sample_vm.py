"""The sample VM that ``make demo`` migrates: built by real tools, cached, well formed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build_sample_vm.py"
VM = "Sample Debian"
MIB = 1024 * 1024


def build(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def qemu_img_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, check=True
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def read_vmx(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        entries[key.strip()] = value.strip().strip('"')
    return entries


def mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("sample-vm")
    return out, build(out)


def test_prints_the_vmx_path(sample: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, result = sample
    vmx = out / VM / f"{VM}.vmx"
    assert result.stdout == f"{vmx}\n"
    assert vmx.is_file()
    assert "building" in result.stderr


def test_files_of_a_workstation_vm(sample: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = sample
    assert sorted(p.name for p in (out / VM).iterdir()) == [
        f"{VM}-0.vmdk",
        f"{VM}-s001.vmdk",
        f"{VM}.vmdk",
        f"{VM}.vmsd",
        f"{VM}.vmx",
        f"{VM}.vmxf",
    ]


def test_vmx_describes_the_hardware(sample: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = sample
    vmx = read_vmx(out / VM / f"{VM}.vmx")
    assert vmx["displayName"] == VM
    assert vmx["guestOS"] == "debian11-64"
    assert vmx["virtualHW.version"] == "19"
    assert (vmx["numvcpus"], vmx["cpuid.coresPerSocket"], vmx["memsize"]) == ("2", "2", "1024")
    assert vmx["firmware"] == "bios"
    assert vmx["scsi0.virtualDev"] == "lsilogic"
    assert vmx["scsi0:0.fileName"] == f"{VM}.vmdk"
    assert vmx["nvme0:0.fileName"] == f"{VM}-0.vmdk"
    # The quirks libvirt's own VMX parser rejects and we must accept.
    assert vmx["sata0:1.deviceType"] == "cdrom-image"
    assert vmx["sata0:1.fileName"] == ""
    assert vmx["ethernet1.connectionType"] == "bridged"
    assert "ethernet1.networkName" not in vmx
    assert vmx["ethernet0.generatedAddress"].startswith("00:0c:29:")
    assert vmx["ethernet0.generatedAddress"][-8:] == vmx["uuid.bios"][-8:].replace(" ", ":")
    assert vmx["ethernet1.address"] == "00:50:56:3a:7e:10"


def test_system_disk_is_split_sparse(sample: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = sample
    info = qemu_img_info(out / VM / f"{VM}.vmdk")
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == 256 * MIB
    data = info["format-specific"]["data"]
    assert data["create-type"] == "twoGbMaxExtentSparse"
    assert [Path(e["filename"]).name for e in data["extents"]] == [f"{VM}-s001.vmdk"]


def test_data_disk_is_monolithic_sparse(sample: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = sample
    info = qemu_img_info(out / VM / f"{VM}-0.vmdk")
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == 64 * MIB
    assert info["format-specific"]["data"]["create-type"] == "monolithicSparse"
    assert info["actual-size"] >= MIB  # the data written into it is really there


def test_system_disk_holds_partitioned_ext4(
    sample: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    out, _ = sample
    raw = tmp_path / "system.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out / VM / f"{VM}.vmdk"), str(raw)], check=True)
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True, check=True).stdout
    )["partitiontable"]
    assert table["label"] == "dos"
    assert [(p["start"], p["type"], p.get("bootable", False)) for p in table["partitions"]] == [
        (2048, "83", True)
    ]
    fs = f"{raw}?offset={2048 * 512}"
    fstab = subprocess.run(
        ["debugfs", "-R", "cat /etc/fstab", fs], capture_output=True, text=True, check=True
    ).stdout
    assert "/dev/sda1 / ext4 defaults 0 1" in fstab.splitlines()
    hostname = subprocess.run(
        ["debugfs", "-R", "cat /etc/hostname", fs], capture_output=True, text=True, check=True
    ).stdout
    assert hostname == "sample-debian\n"


def test_second_run_is_a_no_op(sample: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, first = sample
    before = mtimes(out / VM)
    again = build(out)
    assert again.stdout == first.stdout
    assert again.stderr == ""
    assert mtimes(out / VM) == before


def test_rebuilt_when_the_script_changed(tmp_path: Path) -> None:
    build(tmp_path)
    vmx = tmp_path / VM / f"{VM}.vmx"
    vmx.write_text("stale")
    (tmp_path / ".stamp").write_text("digest of an older script\n")
    result = build(tmp_path)
    assert "building" in result.stderr
    assert read_vmx(vmx)["displayName"] == VM
    assert not list(tmp_path.glob(".build-*"))
