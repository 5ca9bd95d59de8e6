"""Windows inspection on the phony Windows guests, in one appliance: every layout to its golden
``WindowsInfo`` (tests/data/windows/<layout>.json), and each broken layout refused with its named
error through the same calls a migration makes.

Appliance device names in the golden files are written as ``<layout>:disk<N>[p<partition>]`` so
adding a layout does not rewrite every file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from testbed.guests.windows.layout import GOOD_LAYOUTS
from tests.convert.windows.conftest import SharedAppliance
from vm2kvmd.convert.inspect import inspect_guest, mount_guest, refuse_unconvertible
from vm2kvmd.convert.windows.inspect import (
    bitlocker_volumes,
    inspect_windows,
    ldm_partitions,
    refuse_hidden_windows,
)
from vm2kvmd.core.guest.windows.info import WindowsInfo
from vm2kvmd.errors import ErrorCode, Vm2kvmError

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "windows"
GOOD = [layout().name for layout in GOOD_LAYOUTS]
HIBERNATED = ["win7-hibernated", "win11-fast-startup"]


def system_root(shared: SharedAppliance, roots: list[str], layout: str) -> str:
    (root,) = [r for r in roots if any(r.startswith(d) for d in shared.disks[layout][:1])]
    return root


def named(shared: SharedAppliance, text: str) -> str:
    def name(m: re.Match[str]) -> str:
        disk = shared.disk_names["/dev/" + m.group(1)]
        return disk + (f"p{m.group(2)}" if m.group(2) else "")

    return re.sub(r"/dev/(sd[a-z]+)(\d*)", name, text)


@pytest.fixture(scope="module")
def roots(windows_appliance: SharedAppliance) -> list[str]:
    return list(windows_appliance.g.inspect_os())


def test_inspection_finds_every_readable_windows(
    windows_appliance: SharedAppliance, roots: list[str]
) -> None:
    # BitLocker hides C: and libguestfs skips LDM partitions: those two layouts have no root.
    found = sorted(named(windows_appliance, r).split(":")[0] for r in roots)
    assert found == sorted(GOOD + HIBERNATED)


@pytest.mark.parametrize("layout", GOOD)
def test_layout_inspects_to_its_golden_info(
    windows_appliance: SharedAppliance, roots: list[str], layout: str, regenerate: bool
) -> None:
    g = windows_appliance.g
    root = system_root(windows_appliance, roots, layout)
    g.umount_all()
    g.mount_ro(root, "/")
    try:
        info = inspect_windows(g, root)
    finally:
        g.umount_all()
    text = named(windows_appliance, json.dumps(info.to_json(), indent=2, sort_keys=True)) + "\n"
    golden = GOLDEN / f"{layout}.json"
    if regenerate:
        golden.write_text(text)
    assert text == golden.read_text()


def test_windows_guest_info_for_the_conversion(windows_appliance: SharedAppliance, roots: list[str]) -> None:
    """The migration's own calls: mount read-write (on the overlay), inspect, refuse or not."""
    g = windows_appliance.g
    root = system_root(windows_appliance, roots, "win2019")
    g.umount_all()
    assert mount_guest(g, root) == []
    try:
        guest = inspect_guest(g, root)
    finally:
        g.umount_all()
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
    assert named(windows_appliance, str(info.drive_letters)) == str(
        (("C", "win2019:disk0p2"), ("D", "win2019:disk1p1"))
    )


@pytest.mark.parametrize("layout", HIBERNATED)
def test_hibernated_windows_is_refused(
    windows_appliance: SharedAppliance, roots: list[str], layout: str
) -> None:
    g = windows_appliance.g
    root = system_root(windows_appliance, roots, layout)
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
    assert [named(windows_appliance, v) for v in locked] == ["win2019-bitlocker:disk0p2"]
    # The VM of that disk alone has no OS libguestfs can see (find_roots then asks this).
    with pytest.raises(Vm2kvmError) as err:
        refuse_hidden_windows(g, windows_appliance.disks["win2019-bitlocker"])
    assert err.value.code == ErrorCode.GUEST_ENCRYPTED
    assert named(windows_appliance, err.value.value or "") == "win2019-bitlocker:disk0p2"
    assert err.value.hint is not None and "manage-bde -off C:" in err.value.hint
    assert "--key-file" in err.value.hint  # what unlocks it instead (convert.windows.bitlocker)


def test_dynamic_system_disk_is_refused(windows_appliance: SharedAppliance) -> None:
    g = windows_appliance.g
    ldm = [named(windows_appliance, p) for p in ldm_partitions(g, g.list_devices())]
    assert ldm == ["win2019-dynamic:disk0p2"]
    with pytest.raises(Vm2kvmError) as err:
        refuse_hidden_windows(g, windows_appliance.disks["win2019-dynamic"])
    assert err.value.code == ErrorCode.DYNAMIC_DISK
    assert named(windows_appliance, err.value.value or "") == "win2019-dynamic:disk0p2"
    assert err.value.hint is not None and "basic disk" in err.value.hint
    # A VM whose disks hold a readable Windows is not refused for what other VMs' disks hold.
    refuse_hidden_windows(g, windows_appliance.disks["win2019"])
