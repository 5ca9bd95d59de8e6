"""Windows conversion on the phony images: every registry value and file read back after the steps.

The layouts are converted once per session in the appliance the inspection
tests share (``converted.py``: Server 2019 from the ISO file, 2008 R2,
7 32-bit, XP without drivers, 11 UEFI, Server 2022 with --disk-bus
virtio-scsi).  The hives are read on the host with hivex and compared with
the pure plans; the source images must be unchanged (the session fixture
checks).  No Windows boots here (none may be downloaded): the checks are as
strict as a boot would be about paths, value types and data.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import pytest

from tests.convert.windows.converted import Result
from vm2kvmd.core.guest.info import Change
from vm2kvmd.core.guest.windows import firstboot as fb
from vm2kvmd.core.guest.windows import registry as reg
from vm2kvmd.core.guest.windows.inf import parse_inf
from vm2kvmd.core.guest.windows.network import plan_static_ips
from vm2kvmd.core.guest.windows.tools import plan_tools_removal

# The first test of the session pays for the shared appliance: launch, inspect_os of every disk and
# six conversions (minutes under TCG on a busy machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def converted(windows_converted: dict[str, Result]) -> dict[str, Result]:
    return windows_converted


def _value(hive: Path, path: tuple[str, ...], name: str) -> tuple[int, bytes] | None:
    import hivex

    h = hivex.Hivex(str(hive))
    node = h.root()
    for part in path:
        node = h.node_get_child(node, part)
        if node is None:
            return None
    value = h.node_get_value(node, name)
    return h.value_value(value) if value is not None else None


def _assert_keys(result: Result, keys: list[reg.RegKey]) -> None:
    hives = {"SYSTEM": result.system, "SOFTWARE": result.software}
    for key in keys:
        for value in key.values:
            got = _value(hives[key.hive], key.path, value.name)
            where = "\\".join((key.hive, *key.path))
            assert got == (int(value.type), value.data), f"{where} {value.name!r}: {got}"


def _storage(result: Result, service: str) -> reg.StorageDriver:
    """The StorageDriver the conversion must have registered, from the files it wrote."""
    inf_path = next(p for p in result.files if p.endswith(f"/drivers/virtio/{service}/{service}.inf"))
    inf_bytes = result.files[inf_path]
    published = (
        next(p for p, data in result.files.items() if "/inf/oem" in p and data == inf_bytes)
        if (result.info.driver_database)
        else "/windows/inf/oem0.inf"
    )
    return reg.StorageDriver(
        service=service,
        inf=parse_inf(f"{service}.inf", inf_bytes.decode()),
        inf_bytes_sha256=reg.sha256_hex(inf_bytes),
        arch=result.info.arch,
        published_inf=posixpath.basename(published),
    )


def _expected_first_boot(
    result: Result, drivers: tuple[str, ...], msi: str | None, legacy: bool = False
) -> str:
    ips, _ = plan_static_ips(result.info.nics, [n.mac for n in result.plan.nics])
    removal = plan_tools_removal(result.info)
    return fb.script(
        fb.FirstBoot(
            pnputil=not legacy,
            drivers=tuple(fb.staged_inf(d, f"{'vioser' if d == 'vioserial' else d}.inf") for d in drivers),
            guest_agent_msi=msi,
            uninstall=removal.uninstall,
            static_ips=tuple(ips),
            disks=1 if legacy else len(result.plan.disks),
            remove_drivers=result.info.vmware_infs,
            windows10=result.info.major >= 10,
        )
    )


def _vmware_disabled(result: Result) -> None:
    ccs = result.info.current_control_set
    disabled = [s for s in plan_tools_removal(result.info).disable]
    assert disabled, "the phony image has VMware services"
    _assert_keys(
        result, [reg.RegKey("SYSTEM", (ccs, "Services", s.name), (reg.dword("Start", 4),)) for s in disabled]
    )
    for s in disabled:
        assert (
            Change(
                "vmware-tools",
                f"{s.name} disabled (Start {s.start} -> 4)",
                f"HKLM\\SYSTEM\\{ccs}\\Services\\{s.name}",
            )
            in result.changes
        )


def test_server_2019_driver_database(converted: dict[str, Result]) -> None:
    r = converted["win2019"]
    assert (r.caps.machine, r.caps.disk_bus, r.caps.nic_model) == ("q35", "virtio", "virtio")
    assert r.caps.balloon and r.caps.virtio_rng and r.caps.guest_agent and r.caps.hyperv == "full"
    assert [d.bus for d in r.plan.disks] == ["virtio"] * len(r.plan.disks)
    assert {n.model for n in r.plan.nics} == {"virtio"}
    storage = _storage(r, "viostor")
    package = reg.driver_package(storage)
    # The boot driver, the DriverStore package and its published INF: real files, same bytes.
    inf = r.files["/windows/drivers/virtio/viostor/viostor.inf"]
    sys_bytes = r.files["/windows/drivers/virtio/viostor/viostor.sys"]
    assert r.files["/windows/system32/drivers/viostor.sys"] == sys_bytes
    assert sys_bytes[:2] == b"MZ" and b"PE\0\0\x64\x86" in sys_bytes
    repository = f"/windows/system32/driverstore/filerepository/{package}"
    for name in ("viostor.inf", "viostor.sys", "viostor.cat"):
        assert r.files[f"{repository}/{name}"] == r.files[f"/windows/drivers/virtio/viostor/{name}"]
    assert r.files[f"/windows/inf/{storage.published_inf}"] == inf
    keys = reg.storage_driver_keys(r.info.current_control_set, storage, driver_database=True)
    _assert_keys(r, keys)
    # Nothing in the CriticalDeviceDatabase on 8 and later.
    assert (
        _value(
            r.system,
            (
                r.info.current_control_set,
                "Control",
                "CriticalDeviceDatabase",
                "pci#ven_1af4&dev_1001&subsys_00021af4&rev_00",
            ),
            "Service",
        )
        is None
    )
    staged = ("viostor", "vioscsi", "netkvm", "balloon", "vioserial", "viorng")
    for driver in staged:
        assert any(p.startswith(f"/windows/drivers/virtio/{driver}/") for p in r.files), driver
    device_path = _value(r.software, ("Microsoft", "Windows", "CurrentVersion"), "DevicePath")
    assert device_path is not None and device_path[0] == 2
    text = device_path[1].decode("utf-16-le").rstrip("\0")
    assert text.split(";")[-6:] == [f"%SystemRoot%\\Drivers\\VirtIO\\{d}" for d in staged]
    _vmware_disabled(r)
    # First boot: hook, SAN policy, the script and its files.
    _assert_keys(r, [fb.setup_hook(enable=True), fb.san_policy_key(r.info.current_control_set)])
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    assert script == _expected_first_boot(r, staged[1:], "qemu-ga-x86_64.msi")
    assert (
        'pnputil -i -a "%SystemRoot%\\Drivers\\VirtIO\\viostor' not in script
    )  # already a DriverStore package
    assert "msiexec.exe /x {" in script and "/qn /norestart" in script
    # The phony hive's vmxnet3 package (DeviceIds\PCI\VEN_15AD&DEV_07B0 -> oem5.inf) is deleted.
    assert r.info.vmware_infs == ("oem5.inf",)
    assert 'pnputil /delete-driver oem5.inf /uninstall /force >>"%LOG%" 2>&1' in script
    assert "first-boot" in {c.area for c in r.changes if c.summary.startswith("remove the VMware driver")}
    assert "static 192.0.2.10 255.255.255.0 192.0.2.1 1" in script
    assert r.files["/windows/vm2kvm/qemu-ga-x86_64.msi"][:8] == bytes.fromhex("d0cf11e0a1b11ae1")
    assert r.files["/windows/vm2kvm/disks.txt"].decode().startswith("san policy=OnlineAll\r\n")
    assert [c.area for c in r.changes if c.area == "first-boot"]
    # The VMX has secure boot on and two NICs for the guest's one adapter.
    assert [n.key for n in r.notes] == ["uefi.secureBoot.enabled", None]
    assert (
        r.notes[1].message == "the guest has one network adapter, the VM 2 NICs: its static IP goes to NIC 1"
    )


def test_server_2008r2_critical_device_database(converted: dict[str, Result]) -> None:
    r = converted["win2008r2"]
    assert (r.caps.disk_bus, r.caps.nic_model, r.caps.hyperv) == ("virtio", "virtio", "full")
    storage = _storage(r, "viostor")
    _assert_keys(r, reg.storage_driver_keys(r.info.current_control_set, storage, driver_database=False))
    assert not any("DriverStore" in p for p in r.files)
    assert _value(r.system, ("DriverDatabase",), "") is None
    _vmware_disabled(r)
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    staged = ("viostor", "vioscsi", "netkvm", "balloon", "vioserial", "viorng")
    assert script == _expected_first_boot(r, staged, "qemu-ga-x86_64.msi")
    # No DriverDatabase before 8: no VMware package is found offline (its services are disabled).
    assert r.info.vmware_infs == () and "/delete-driver" not in script and "pnputil -f -d" not in script


def test_windows_7_32bit_takes_x86_drivers(converted: dict[str, Result]) -> None:
    r = converted["win7-x86"]
    assert (r.caps.disk_bus, r.caps.nic_model, r.caps.guest_agent) == ("virtio", "virtio", True)
    sys_bytes = r.files["/windows/system32/drivers/viostor.sys"]
    assert sys_bytes[0x40:0x46] == b"PE\0\0\x4c\x01"  # i386 machine
    assert r.files["/windows/drivers/virtio/viostor/viostor.inf"].decode().count("[RHEL.NTx86]") == 1
    _assert_keys(
        r, reg.storage_driver_keys(r.info.current_control_set, _storage(r, "viostor"), driver_database=False)
    )
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    assert 'msiexec.exe /i "%V%\\qemu-ga-i386.msi"' in script
    assert "/windows/vm2kvm/qemu-ga-i386.msi" in r.files


def test_xp_without_drivers_falls_back(converted: dict[str, Result]) -> None:
    r = converted["winxp-sp3-x86"]
    assert (r.caps.machine, r.caps.disk_bus, r.caps.cdrom_bus, r.caps.nic_model) == (
        "pc",
        "ide",
        "ide",
        "rtl8139",
    )
    assert [d.bus for d in r.plan.disks] == ["ide"] * len(r.plan.disks) and {
        n.model for n in r.plan.nics
    } == {"rtl8139"}
    assert (
        len(r.notes) == 2
        and "disks on IDE" in r.notes[0].message
        and "NICs are rtl8139" in r.notes[1].message
    )
    assert not any(p.startswith("/windows/drivers/") for p in r.files)
    assert "/windows/system32/drivers/viostor.sys" not in r.files
    assert _value(r.system, (r.info.current_control_set, "Services", "viostor"), "Start") is None
    _vmware_disabled(r)
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    assert script == _expected_first_boot(r, (), None, legacy=True)
    assert "pnputil" not in script and "diskpart" not in script


def test_windows_11_uefi_fallback_boot_file(converted: dict[str, Result]) -> None:
    r = converted["win11-uefi"]
    manager = next(v for k, v in r.files.items() if k == "esp:/efi/microsoft/boot/bootmgfw.efi")
    fallback = [k for k in r.files if k == "esp:/efi/boot/bootx64.efi"]
    assert len(fallback) == 1 and r.files[fallback[0]] == manager
    assert any(c.area == "bootloader" and "bootx64.efi" in c.summary for c in r.changes)
    assert r.caps.clock_offset == "localtime" and r.caps.disk_bus == "virtio"


def test_conversion_time(converted: dict[str, Result]) -> None:
    # Registry and file edits only: no guest tool runs, so this is seconds, not minutes.
    for r in converted.values():
        assert r.seconds < 60, (r.layout.name, r.seconds)


GOLDEN = Path(__file__).resolve().parents[2] / "data" / "windows"


def test_server_2022_on_virtio_scsi(converted: dict[str, Result]) -> None:
    """--disk-bus virtio-scsi: vioscsi from the 2k22 directory is the DriverDatabase boot driver."""
    r = converted["win2022"]
    assert (r.info.product_name, r.info.build, r.info.driver_database) == (
        "Windows Server 2022 Datacenter",
        20348,
        True,
    )
    assert (r.caps.machine, r.caps.disk_bus, r.caps.cdrom_bus, r.caps.nic_model) == (
        "q35",
        "scsi",
        "sata",
        "virtio",
    )
    assert r.caps.balloon and r.caps.virtio_rng and r.caps.guest_agent
    assert (r.caps.hyperv, r.caps.clock_offset) == ("full", "localtime")
    assert [(d.bus, d.target_dev) for d in r.plan.disks] == [("scsi", "sda")]
    assert [n.model for n in r.plan.nics] == ["virtio"]
    # Every driver from the Server 2022 directory: no fallback, so no note at all (one disk, one NIC).
    staged = ("viostor", "vioscsi", "netkvm", "balloon", "vioserial", "viorng")
    for driver in staged:
        change = next(c for c in r.changes if c.summary.startswith(f"staged {driver} "))
        assert change.summary == f"staged {driver} (2k22) for Plug and Play"
    assert r.notes == []
    # vioscsi: the .sys for boot, the DriverStore package, the published INF, the registry.
    storage = _storage(r, "vioscsi")
    package = reg.driver_package(storage)
    assert package == "vioscsi.inf_amd64_c26bc129dbd2de7e"  # the package of the golden .reg
    sys_bytes = r.files["/windows/drivers/virtio/vioscsi/vioscsi.sys"]
    assert r.files["/windows/system32/drivers/vioscsi.sys"] == sys_bytes
    assert sys_bytes[:2] == b"MZ" and b"PE\0\0\x64\x86" in sys_bytes
    repository = f"/windows/system32/driverstore/filerepository/{package}"
    assert sorted(p for p in r.files if p.startswith(repository + "/")) == [
        f"{repository}/vioscsi.{ext}" for ext in ("cat", "inf", "sys")
    ]
    for name in ("vioscsi.inf", "vioscsi.sys", "vioscsi.cat"):
        assert r.files[f"{repository}/{name}"] == r.files[f"/windows/drivers/virtio/vioscsi/{name}"]
    assert r.files[f"/windows/inf/{storage.published_inf}"] == r.files[f"{repository}/vioscsi.inf"]
    keys = reg.storage_driver_keys(r.info.current_control_set, storage, driver_database=True)
    golden = (GOLDEN / "registry-vioscsi-driverdb.reg").read_text()
    assert reg.render_reg(keys).replace(storage.published_inf, "oem3.inf") == golden
    _assert_keys(r, keys)
    # Both virtio-scsi IDs (legacy DEV_1004, modern DEV_1048) point at the published INF.
    for pci_id in ("VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00", "VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01"):
        assert _value(r.system, ("DriverDatabase", "DeviceIds", "PCI", pci_id), storage.published_inf) == (
            3,
            b"\x01\xff\x00\x00",
        )
    assert _value(r.system, ("ControlSet001", "Services", "vioscsi"), "Start") == (4, b"\0\0\0\0")
    # viostor is only staged: not a boot driver, no package, no virtio-blk IDs.
    assert _value(r.system, ("ControlSet001", "Services", "viostor"), "Start") is None
    assert "/windows/system32/drivers/viostor.sys" not in r.files
    assert not any("viostor.inf_" in p for p in r.files)
    assert (
        _value(
            r.system, ("DriverDatabase", "DeviceIds", "PCI", "VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00"), ""
        )
        is None
    )
    device_path = _value(r.software, ("Microsoft", "Windows", "CurrentVersion"), "DevicePath")
    assert device_path is not None and device_path[0] == 2
    text = device_path[1].decode("utf-16-le").rstrip("\0")
    assert text.split(";")[-6:] == [f"%SystemRoot%\\Drivers\\VirtIO\\{d}" for d in staged]
    _vmware_disabled(r)
    _assert_keys(r, [fb.setup_hook(enable=True)])
    # pnputil for every staged driver but the boot one (already a DriverStore package); one disk:
    # no SAN policy, no diskpart.
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    assert script == _expected_first_boot(
        r, ("viostor", "netkvm", "balloon", "vioserial", "viorng"), "qemu-ga-x86_64.msi"
    )
    assert "vioscsi" not in script and "diskpart" not in script
    assert "/windows/vm2kvm/disks.txt" not in r.files
    assert _value(r.system, ("ControlSet001", "Services", "partmgr", "Parameters"), "SanPolicy") is None
    # The one adapter's static address goes to the one NIC, found by its MAC.
    assert "static 192.0.2.10 255.255.255.0 192.0.2.1 1" in script
    mac = r.plan.nics[0].mac
    assert mac is not None and mac.upper().replace(":", "-") in script.upper()
