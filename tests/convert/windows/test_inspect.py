"""Windows inspection on the phony Windows guests, in the session's one appliance: every layout to
its golden ``WindowsInfo`` (tests/data/windows/<layout>.json, as the conversion's own inspection
found it), and each broken layout refused with its named error through the same calls a migration
makes.

Appliance device names in the golden files are written as ``<layout>:disk<N>[p<partition>]`` so
adding a layout does not rewrite every file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from testbed.guests.windows.build import pe_header
from testbed.guests.windows.layout import GOOD_LAYOUTS
from tests.convert.windows.converted import CASES, Result, SharedAppliance
from vm2kvmd.convert.inspect import inspect_guest, mount_guest, refuse_unconvertible
from vm2kvmd.convert.windows.inspect import (
    bitlocker_volumes,
    ldm_partitions,
    refuse_hidden_windows,
    windows_arch,
)
from vm2kvmd.core.guest.windows.info import WindowsInfo
from vm2kvmd.errors import ErrorCode, Vm2kvmError

# The first test of the session pays for the shared appliance: launch, inspect_os of every disk and
# six conversions (minutes under TCG on a busy machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "windows"
GOOD = [layout().name for layout in GOOD_LAYOUTS]
HIBERNATED = ["win7-hibernated", "win11-fast-startup"]


@pytest.fixture(scope="module")
def roots(windows_roots: list[str]) -> list[str]:
    return windows_roots


def test_inspection_finds_every_readable_windows(
    windows_appliance: SharedAppliance, roots: list[str]
) -> None:
    # BitLocker hides C: and libguestfs skips LDM partitions: those two layouts have no root.
    found = sorted(windows_appliance.named(r).split(":")[0] for r in roots)
    assert found == sorted(GOOD + HIBERNATED)
    assert sorted(CASES) == sorted(GOOD)  # every readable layout is also converted


@pytest.mark.parametrize("layout", GOOD)
def test_layout_inspects_to_its_golden_info(
    windows_appliance: SharedAppliance, windows_converted: dict[str, Result], layout: str, regenerate: bool
) -> None:
    """What the conversion's own ``inspect_guest`` found (mounted read-write, before converting)."""
    info = windows_converted[layout].info
    text = windows_appliance.named(json.dumps(info.to_json(), indent=2, sort_keys=True)) + "\n"
    golden = GOLDEN / f"{layout}.json"
    if regenerate:
        golden.write_text(text)
    assert text == golden.read_text()


def test_windows_guest_info_for_the_conversion(
    windows_appliance: SharedAppliance, windows_converted: dict[str, Result]
) -> None:
    """The migration's own calls: mount read-write (on the overlay), inspect, refuse or not."""
    guest = windows_converted["win2019"].guest
    assert (guest.os_type, guest.distro, guest.arch, guest.firmware) == (
        "windows",
        "windows",
        "x86_64",
        "bios",
    )
    assert guest.vmware_tools == ("VMware Tools",)
    info = guest.windows
    assert isinstance(info, WindowsInfo)
    assert (info.product_name, info.build, info.server, info.driver_database) == (
        "Windows Server 2019 Standard",
        17763,
        True,
        True,
    )
    (nic,) = info.nics  # the WAN miniport is not hardware and is left out
    assert (nic.addresses, nic.gateways, nic.dhcp) == (("192.0.2.10",), ("192.0.2.1",), False)
    assert windows_appliance.named(str(info.drive_letters)) == str(
        (("C", "win2019:disk0p2"), ("D", "win2019:disk1p1"))
    )


def test_windows_on_arm_reads_as_aarch64(windows_appliance: SharedAppliance) -> None:
    """An ARM64 cmd.exe makes the guest aarch64, which refuse_windows refuses (test_info.py).

    libguestfs 1.48 says x86_64 for any PE32+ image, ARM64 ones included (checked here, so a
    libguestfs that learns better is noticed), hence ``windows_arch`` reads the PE header.  No
    ARM64 phony layout is built (a whole image and its inspection for one value): the header is
    put where a Windows directory would have it, on a partition no other test writes.
    """
    g = windows_appliance.g
    g.umount_all()
    g.mount(windows_appliance.disks["win2019-dynamic"][0] + "1", "/")  # its System Reserved
    arm64 = bytearray(pe_header("x86_64"))
    struct.pack_into("<H", arm64, 0x84, 0xAA64)  # COFF Machine (after "PE\0\0" at 0x80): ARM64
    try:
        g.mkdir_p("/Windows/System32")
        g.write("/Windows/System32/cmd.exe", bytes(arm64))
        root = windows_appliance.disks["win2019"][0] + "2"  # only asked if cmd.exe were unreadable
        assert g.file_architecture("/Windows/System32/cmd.exe") == "x86_64"
        assert windows_arch(g, root, "/Windows") == "aarch64"
        g.write("/Windows/System32/cmd.exe", pe_header("i386"))
        assert windows_arch(g, root, "/Windows") == "i386"
    finally:
        g.rm_rf("/Windows")
        g.umount_all()


@pytest.mark.parametrize("layout", HIBERNATED)
def test_hibernated_windows_is_refused(
    windows_appliance: SharedAppliance, roots: list[str], layout: str
) -> None:
    g = windows_appliance.g
    root = windows_appliance.system_root(roots, layout)
    g.umount_all()
    with pytest.raises(Vm2kvmError) as err:
        # ntfs-3g refuses to mount a hibernated NTFS read-write; either way the refusal is named.
        mount_guest(g, root)
        refuse_unconvertible(inspect_guest(g, root))
    g.umount_all()
    assert err.value.code == ErrorCode.GUEST_HIBERNATED
    how = "hibernated" if layout == "win7-hibernated" else "shut down with Fast Startup on"
    assert how in err.value.message
    assert err.value.hint is not None and "shutdown /s /t 0" in err.value.hint
    assert err.value.file == "C:\\hiberfil.sys"


def test_bitlocker_volume_is_named(windows_appliance: SharedAppliance) -> None:
    g = windows_appliance.g
    locked = bitlocker_volumes(g, g.list_devices())
    assert [windows_appliance.named(v) for v in locked] == ["win2019-bitlocker:disk0p2"]
    # The VM of that disk alone has no OS libguestfs can see (find_roots then asks this).
    with pytest.raises(Vm2kvmError) as err:
        refuse_hidden_windows(g, windows_appliance.disks["win2019-bitlocker"])
    assert err.value.code == ErrorCode.GUEST_ENCRYPTED
    assert windows_appliance.named(err.value.value or "") == "win2019-bitlocker:disk0p2"
    assert err.value.hint is not None and "manage-bde -off C:" in err.value.hint
    assert "--key-file" in err.value.hint  # what unlocks it instead (convert.windows.bitlocker)


def test_dynamic_system_disk_is_refused(windows_appliance: SharedAppliance) -> None:
    g = windows_appliance.g
    ldm = [windows_appliance.named(p) for p in ldm_partitions(g, g.list_devices())]
    assert ldm == ["win2019-dynamic:disk0p2"]
    with pytest.raises(Vm2kvmError) as err:
        refuse_hidden_windows(g, windows_appliance.disks["win2019-dynamic"])
    assert err.value.code == ErrorCode.DYNAMIC_DISK
    assert windows_appliance.named(err.value.value or "") == "win2019-dynamic:disk0p2"
    assert err.value.hint is not None and "basic disk" in err.value.hint
    # A VM whose disks hold a readable Windows is not refused for what other VMs' disks hold.
    refuse_hidden_windows(g, windows_appliance.disks["win2019"])
