"""Device choice follows the injected drivers; the Windows domain XML (golden, defined in libvirt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbed.virtio_win import CURRENT_ISO, LEGACY_ISO, build_virtio_win, listing
from tests.core.domainxml.test_domainxml import define_everywhere
from tests.core.guest.windows.factory import LAYOUTS, release
from tests.helpers.golden import check_golden
from vm2kvmd.core.domainxml import render_domain_xml
from vm2kvmd.core.guest.windows.caps import caps_for_windows, storage_driver
from vm2kvmd.core.guest.windows.virtio_win import select_drivers
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import PlanOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.vm import load_source_vm

VMX_DIR = Path(__file__).resolve().parents[3] / "data" / "vmx"
DATA = Path(__file__).resolve().parents[3] / "data" / "windows"
OPTS = PlanOptions(
    target_dir="/var/lib/libvirt/images",
    new_uuid="00000000-0000-4000-8000-000000000001",
    networks=(("VM Network", "default"),),
    other_networks=("network", "default"),
)
SRC = "/usr/share/virtio-win"


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return listing(build_virtio_win(tmp_path_factory.mktemp("vw"), (*LEGACY_ISO, *CURRENT_ISO)))


@pytest.fixture(scope="module")
def current_tree(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return listing(build_virtio_win(tmp_path_factory.mktemp("vw"), CURRENT_ISO))


def test_all_virtio_when_every_driver_is_there(full_tree: list[str]) -> None:
    info = LAYOUTS["2019"]
    caps, notes = caps_for_windows(info, select_drivers(full_tree, release(info)), source=SRC)
    assert (caps.machine, caps.disk_bus, caps.cdrom_bus, caps.nic_model) == (
        "q35",
        "virtio",
        "sata",
        "virtio",
    )
    assert caps.balloon and caps.virtio_rng and caps.guest_agent
    assert (caps.hyperv, caps.clock_offset) == ("full", "localtime")
    assert notes == []


def test_vioscsi_when_asked(full_tree: list[str]) -> None:
    info = LAYOUTS["2019"]
    selection = select_drivers(full_tree, release(info))
    caps, notes = caps_for_windows(info, selection, source=SRC, disk_bus="virtio-scsi")
    assert (caps.disk_bus, storage_driver(caps.disk_bus)) == ("scsi", "vioscsi") and notes == []
    caps, _ = caps_for_windows(info, selection, source=SRC, disk_bus="virtio")
    assert (caps.disk_bus, storage_driver(caps.disk_bus)) == ("virtio", "viostor")
    # SATA when asked, though viostor is there: nothing is registered for boot, storahci is.
    caps, notes = caps_for_windows(info, selection, source=SRC, disk_bus="sata")
    assert (caps.disk_bus, storage_driver(caps.disk_bus), caps.nic_model) == ("sata", None, "virtio")
    assert notes == []


def test_vioscsi_alone_is_used_without_the_option(tmp_path: Path) -> None:
    info = LAYOUTS["2022"]
    files = listing(build_virtio_win(tmp_path, CURRENT_ISO, drivers=("vioscsi", "netkvm")))
    caps, notes = caps_for_windows(info, select_drivers(files, release(info)), source=SRC)
    assert caps.disk_bus == "scsi" and notes == []


@pytest.mark.parametrize(
    ("layout", "drivers", "bus", "why"),
    [
        (
            "2022",
            ("viostor", "netkvm"),
            "virtio-scsi",
            "no vioscsi driver for Windows Server 2022 Standard (10.0, x86_64) in /usr/share/virtio-win",
        ),
        (
            "2008r2",
            ("vioscsi",),
            "virtio",
            "no viostor driver for Windows Server 2008 R2 Standard (6.1, x86_64) in /usr/share/virtio-win",
        ),
        ("xp-sp3-32", (), "sata", "Microsoft Windows XP (5.1, i386) has no AHCI driver"),
    ],
)
def test_a_bus_without_its_driver_is_refused(
    tmp_path: Path, layout: str, drivers: tuple[str, ...], bus: str, why: str
) -> None:
    info = LAYOUTS[layout]
    files = listing(build_virtio_win(tmp_path, (*CURRENT_ISO, *LEGACY_ISO), drivers=drivers))
    with pytest.raises(Vm2kvmError) as caught:
        caps_for_windows(info, select_drivers(files, release(info)), source=SRC, disk_bus=bus)
    err = caught.value
    assert (err.code, err.key, err.value) == (ErrorCode.DISK_BUS_UNSUPPORTED, "disk-bus", bus)
    assert err.message == f"the disks cannot go on {bus}: {why}"
    assert err.hint is not None and "leave --disk-bus out" in err.hint


def test_xp_without_drivers_gets_ide_and_rtl8139_with_notes(current_tree: list[str]) -> None:
    info = LAYOUTS["xp-sp3-32"]
    caps, notes = caps_for_windows(info, select_drivers(current_tree, release(info)), source=SRC)
    assert (caps.machine, caps.disk_bus, caps.cdrom_bus, caps.nic_model) == ("pc", "ide", "ide", "rtl8139")
    assert not caps.balloon and not caps.guest_agent and caps.hyperv == ""
    xp = "Microsoft Windows XP (5.1, i386) in /usr/share/virtio-win"
    assert [n.message for n in notes] == [
        f"no virtio storage driver for {xp}: disks on IDE; "
        "after the first boot install viostor from virtio-win, shut down and change the disk bus to virtio",
        f"no virtio network driver (netkvm) for {xp}: NICs "
        "are rtl8139; after the first boot install netkvm from virtio-win and change the NIC model to virtio",
    ]


def test_xp_with_a_legacy_tree_gets_virtio(full_tree: list[str]) -> None:
    info = LAYOUTS["xp-sp3-32"]
    caps, _ = caps_for_windows(info, select_drivers(full_tree, release(info)), source=SRC)
    assert (caps.machine, caps.disk_bus, caps.nic_model) == ("pc", "virtio", "virtio")


def test_nic_only_tree_keeps_sata(tmp_path: Path) -> None:
    info = LAYOUTS["2008r2"]
    files = listing(build_virtio_win(tmp_path, CURRENT_ISO, drivers=("netkvm",)))
    caps, notes = caps_for_windows(info, select_drivers(files, release(info)), source=SRC)
    assert (caps.disk_bus, caps.nic_model, caps.hyperv) == ("sata", "virtio", "full")
    assert len(notes) == 1 and "disks on SATA" in notes[0].message


def test_secure_boot_warns(full_tree: list[str]) -> None:
    info = LAYOUTS["11-uefi"]
    _, notes = caps_for_windows(info, select_drivers(full_tree, release(info)), source=SRC, secure_boot=True)
    assert [n.key for n in notes] == ["uefi.secureBoot.enabled"]
    assert "signed by Microsoft" in notes[0].message


CASES = {
    "esxi-winxp-sp3": ("xp-sp3-32", False),
    "esxi-win7-32": ("7-32", True),
    "player-win2008r2": ("2008r2", True),
    "esxi-win2019-efi": ("2019", True),
    # --disk-bus virtio-scsi: the disks on a virtio-scsi controller (vioscsi registered).
    "esxi-win2019-efi-virtio-scsi": ("2019", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_windows_domain_golden(
    case: str, full_tree: list[str], current_tree: list[str], regenerate: bool, libvirt_conn: Any
) -> None:
    """XP against a current ISO (no drivers: IDE, rtl8139, pc), the others with their drivers."""
    layout, virtio = CASES[case]
    info = LAYOUTS[layout]
    vmx = case.removesuffix("-virtio-scsi")
    vm = load_source_vm(str(VMX_DIR / f"{vmx}.vmx"))
    tree = full_tree if virtio else current_tree
    disk_bus = "virtio-scsi" if case.endswith("-virtio-scsi") else None
    caps, _ = caps_for_windows(info, select_drivers(tree, release(info)), source=SRC, disk_bus=disk_bus)
    xml = render_domain_xml(plan_domain(vm, OPTS, caps)).replace(str(VMX_DIR), "/golden/vmx")
    check_golden(DATA / f"domain-{case}.xml", xml, regenerate=regenerate, test_file=__file__)
    assert ("bus='virtio'" in xml or 'bus="virtio"' in xml) is (virtio and disk_bus is None)
    if disk_bus:
        # Every disk on the virtio-scsi controller, none on virtio-blk.
        assert xml.count('model="virtio-scsi"') == 1 and 'bus="virtio"' not in xml
        assert xml.count('bus="scsi"') == len(vm.disks)
    define_everywhere(libvirt_conn, xml)


def test_rtc_utc_guest_keeps_utc(full_tree: list[str]) -> None:
    info = LAYOUTS["2022"]
    vm = load_source_vm(str(VMX_DIR / "esxi-win2019-efi.vmx"))
    caps, _ = caps_for_windows(info, select_drivers(full_tree, release(info)), source=SRC)
    plan = plan_domain(vm, OPTS, caps)
    assert plan.clock_offset == "utc" and plan.hyperv == "full"
