"""The pure Windows inspection rules: registry trees in, ``WindowsInfo`` out."""

from __future__ import annotations

import struct

import pytest

from vm2kvmd.core.guest.windows.info import (
    NET_CLASS,
    DiskFacts,
    RegKey,
    WindowsInfo,
    hibernation,
    pe_arch,
    refuse_windows,
    version_of,
    vmware_infs,
    windows_info,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def key(path: str, values: dict[str, object] | None = None, *children: RegKey) -> RegKey:
    """A key at a backslash path, wrapped in its parents (the last part carries values and children)."""
    parts = path.split("\\")
    node = RegKey(parts[-1], dict(values or {}), tuple(children))  # type: ignore[arg-type]
    for name in reversed(parts[:-1]):
        node = RegKey(name, {}, (node,))
    return node


def hive(*keys: RegKey) -> RegKey:
    """A hive's root key holding ``keys``, keys of the same name merged (tests write paths separately)."""
    return RegKey("", {}, _merged(keys))


def _merged(keys: tuple[RegKey, ...]) -> tuple[RegKey, ...]:
    groups: dict[str, list[RegKey]] = {}
    for k in keys:
        groups.setdefault(k.name.lower(), []).append(k)
    return tuple(
        RegKey(
            g[0].name,
            {n: v for k in g for n, v in k.values.items()},
            _merged(tuple(c for k in g for c in k.children)),
        )
        for g in groups.values()
    )


NIC_GUID = "{9a8b7c6d-1111-2222-3333-444455556666}"

SYSTEM = hive(
    key("Select", {"Current": 2}),
    key("ControlSet002\\Control\\ComputerName\\ComputerName", {"ComputerName": "APP01"}),
    key("ControlSet002\\Control\\TimeZoneInformation", {"RealTimeIsUniversal": 1}),
    key(
        f"ControlSet002\\Control\\Class\\{NET_CLASS}\\0007",
        {
            "NetCfgInstanceId": NIC_GUID,
            "DriverDesc": "vmxnet3 Ethernet Adapter",
            "MatchingDeviceId": "pci\\ven_15ad&dev_07b0",
        },
        RegKey("Ndi", {"Service": "vmxnet3ndis6"}),
    ),
    key(f"ControlSet002\\Control\\Class\\{NET_CLASS}\\Properties", {}),
    key(
        f"ControlSet002\\Services\\Tcpip\\Parameters\\Interfaces\\{NIC_GUID}",
        {
            "EnableDHCP": 0,
            "IPAddress": ("192.0.2.10", "192.0.2.11"),
            "SubnetMask": ("255.255.255.0", "255.255.255.0"),
            "DefaultGateway": ("192.0.2.1",),
            "NameServer": "192.0.2.53,192.0.2.54",
        },
    ),
    key(
        "ControlSet002\\Services\\vmxnet3ndis6",
        {"Type": 1, "Start": 3, "ImagePath": "system32\\DRIVERS\\vmxnet3.sys"},
    ),
    key("ControlSet001\\Control\\ComputerName\\ComputerName", {"ComputerName": "STALE"}),
    key("DriverDatabase", {}),
)
SOFTWARE = hive(
    key(
        "Microsoft\\Windows NT\\CurrentVersion",
        {
            "ProductName": "Windows Server 2019 Standard",
            "CurrentVersion": "6.3",
            "CurrentMajorVersionNumber": 10,
            "CurrentMinorVersionNumber": 0,
            "CurrentBuildNumber": "17763",
            "EditionID": "ServerStandard",
            "InstallationType": "Server",
        },
    ),
    key(
        "Microsoft\\Windows\\CurrentVersion\\Uninstall\\{AAAA}",
        {
            "DisplayName": "VMware Tools",
            "UninstallString": "MsiExec.exe /I{AAAA}",
            "DisplayVersion": "12.1.5",
        },
    ),
    key("Microsoft\\Windows\\CurrentVersion\\Uninstall\\KB123", {}),
    key("WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\Old", {"DisplayName": "Old 32-bit"}),
)


def sample(arch: str = "x86_64", disks: DiskFacts | None = None) -> WindowsInfo:
    return windows_info(
        root="/dev/sda2",
        arch=arch,
        systemroot="/Windows",
        system=SYSTEM,
        software=SOFTWARE,
        disks=disks or DiskFacts(),
    )


def test_windows_info_reads_the_current_control_set_and_both_uninstall_views() -> None:
    info = sample()
    assert (info.major, info.minor, info.build) == (10, 0, 17763)
    assert info.current_control_set == "ControlSet002"
    assert info.hostname == "APP01"
    assert info.server and info.rtc_utc and info.driver_database
    assert [(a.name, a.wow64) for a in info.apps] == [("VMware Tools", False), ("Old 32-bit", True)]
    (nic,) = info.nics
    assert nic.class_key == "0007" and nic.service == "vmxnet3ndis6" and not nic.dhcp
    assert nic.addresses == ("192.0.2.10", "192.0.2.11")
    assert nic.gateways == ("192.0.2.1",) and nic.dns == ("192.0.2.53", "192.0.2.54")
    assert info.service("VMXNET3NDIS6") is not None
    assert info.hibernation == "none"
    # A 32-bit guest has no WOW6432Node view.
    info32 = windows_info(
        root="/dev/sda1",
        arch="i386",
        systemroot="/Windows",
        system=SYSTEM,
        software=SOFTWARE,
        disks=DiskFacts(),
    )
    assert [a.name for a in info32.apps] == ["VMware Tools"]


def test_old_versions_read_current_version_text_and_product_options() -> None:
    assert version_of(RegKey("CurrentVersion", {"CurrentVersion": "5.1", "CurrentBuildNumber": "2600"})) == (
        5,
        1,
        2600,
    )
    system = hive(key("ControlSet001\\Control\\ProductOptions", {"ProductType": "WinNT"}))
    software = key(
        "Microsoft\\Windows NT\\CurrentVersion", {"CurrentVersion": "5.1", "CurrentBuildNumber": "2600"}
    )
    software = RegKey("", {}, (software,))
    info = windows_info(
        root="/dev/sda1",
        arch="i386",
        systemroot="/WINDOWS",
        system=system,
        software=software,
        disks=DiskFacts(),
    )
    assert info.installation_type == "Client" and not info.server
    assert info.current_control_set == "ControlSet001"


def test_hibernation_is_told_from_fast_startup_by_hiberboot() -> None:
    power = key("Control\\Session Manager\\Power", {"HiberbootEnabled": 1})
    ccs = RegKey("ControlSet001", {}, (power,))
    assert hibernation(b"HIBR\0\0\0\0", ccs) == "fast-startup"
    assert hibernation(b"hibr\0\0\0\0", RegKey("ControlSet001")) == "hibernated"
    assert hibernation(b"wake\0\0\0\0", ccs) == "none"
    assert hibernation(b"", ccs) == "none"


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        (DiskFacts(hiberfil=b"hibr"), ErrorCode.GUEST_HIBERNATED),
        (DiskFacts(dynamic_system_disk=True), ErrorCode.DYNAMIC_DISK),
    ],
)
def test_refusals_name_what_to_do(facts: DiskFacts, code: ErrorCode) -> None:
    info = sample(disks=facts)
    with pytest.raises(Vm2kvmError) as err:
        refuse_windows(info)
    assert err.value.code == code
    assert err.value.hint
    refuse_windows(sample())


def test_windows_on_arm_is_refused() -> None:
    """Windows on ARM (cmd.exe an ARM64 PE; the appliance test checks libguestfs says aarch64)."""
    info = sample("aarch64")
    with pytest.raises(Vm2kvmError) as err:
        refuse_windows(info)
    assert err.value.code is ErrorCode.UNSUPPORTED_GUEST and err.value.value == "aarch64"
    assert "only x86 Windows guests can be converted" in err.value.message
    assert err.value.hint is not None and "aarch64 KVM host" in err.value.hint


def test_vmware_driver_packages_are_found_by_provider_and_device_id() -> None:
    system = hive(
        key(
            "DriverDatabase\\DriverPackages\\vm3d.inf_amd64_1111",
            {"": "oem12.inf", "Provider": "VMware, Inc."},
        ),
        key(
            "DriverDatabase\\DriverPackages\\netkvm.inf_amd64_2222",
            {"": "oem3.inf", "Provider": "Red Hat, Inc."},
        ),
        # Windows' inbox vmxnet3 is no oemN.inf: it stays.
        key(
            "DriverDatabase\\DeviceIds\\PCI\\VEN_15AD&DEV_07B0",
            {"oem5.inf": b"\x01\xff\0\0", "vmxnet3.inf": b""},
        ),
        key("DriverDatabase\\DeviceIds\\PCI\\VEN_15AD&DEV_07C0", {"oem12.inf": b"\x01\xff\0\0"}),
        key("DriverDatabase\\DeviceIds\\PCI\\VEN_1AF4&DEV_1000", {"oem3.inf": b"\x01\xff\0\0"}),
    )
    assert vmware_infs(system) == ("oem5.inf", "oem12.inf")
    assert vmware_infs(hive(key("Select", {"Current": 1}))) == ()  # 7 and older: no DriverDatabase


def test_pe_arch_reads_the_coff_machine() -> None:
    from testbed.guests.windows.build import pe_header

    head = bytearray(pe_header("x86_64"))
    assert (pe_arch(pe_header("i386")), pe_arch(bytes(head))) == ("i386", "x86_64")
    struct.pack_into("<H", head, 0x84, 0xAA64)
    assert pe_arch(bytes(head)) == "aarch64"
    struct.pack_into("<H", head, 0x84, 0x0200)  # Itanium: refused like any other non-x86
    assert pe_arch(bytes(head)) == "unknown"
    assert pe_arch(b"MZ" + bytes(100)) is None and pe_arch(b"\x7fELF" + bytes(100)) is None
