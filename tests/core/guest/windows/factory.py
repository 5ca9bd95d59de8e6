"""WindowsInfo values for the pure tests: the layouts the phony images have (win-image's list)."""

from __future__ import annotations

from dataclasses import replace

from vm2kvmd.core.guest.windows.info import InstalledApp, Service, WindowsInfo, WindowsNic
from vm2kvmd.core.guest.windows.virtio_win import WindowsRelease

TOOLS_GUID = "{7BD5F6A8-2D91-4B4B-9B23-0E8B3F3C5B0A}"
VMWARE_TOOLS = InstalledApp(
    key=TOOLS_GUID,
    name="VMware Tools",
    version="12.3.5.22544099",
    publisher="VMware, Inc.",
    uninstall=f"MsiExec.exe /I{TOOLS_GUID}",
)
VMWARE_SERVICES = (
    Service("VMTools", 0x10, 2, '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"', "VMware Tools"),
    Service("vmci", 1, 0, "\\SystemRoot\\system32\\DRIVERS\\vmci.sys"),
    Service("vm3dmp", 1, 3, "\\SystemRoot\\System32\\drivers\\vm3dmp.sys"),
    Service("vmxnet3ndis6", 1, 3, "\\SystemRoot\\System32\\drivers\\vmxnet3.sys"),
    Service(
        "VGAuthService",
        0x10,
        2,
        '"C:\\Program Files\\VMware\\VMware Tools\\VMware VGAuth\\VGAuthService.exe"',
    ),
    Service("vmtoolsnew", 0x10, 2, "C:\\Program Files\\VMware\\VMware Tools\\new.exe"),
    Service("Dhcp", 0x20, 2, "%SystemRoot%\\system32\\svchost.exe -k LocalServiceNetworkRestricted"),
    Service("vmmouse", 1, 4, "\\SystemRoot\\System32\\drivers\\vmmouse.sys"),
)
STATIC_NIC = WindowsNic(
    class_key="0007",
    instance_id="{3A1D8C52-6F0E-4C7B-9A51-2E4D6B8F0C13}",
    description="vmxnet3 Ethernet Adapter",
    hardware_id="pci\\ven_15ad&dev_07b0",
    service="vmxnet3ndis6",
    dhcp=False,
    addresses=("192.168.10.20", "192.168.10.21"),
    masks=("255.255.255.0", "255.255.255.0"),
    gateways=("192.168.10.1",),
    dns=("192.168.10.2", "192.168.10.3"),
)


def info(
    product: str, major: int, minor: int, build: int, server: bool, arch: str = "x86_64", **changes: object
) -> WindowsInfo:
    base = WindowsInfo(
        root="/dev/sda2",
        product_name=product,
        major=major,
        minor=minor,
        build=build,
        edition="ServerStandard" if server else "Professional",
        installation_type="Server" if server else "Client",
        arch=arch,
        systemroot="/Windows",
        hostname="HOST",
        current_control_set="ControlSet001",
        apps=(VMWARE_TOOLS,),
        services=VMWARE_SERVICES,
        nics=(STATIC_NIC,),
        driver_database=(major, minor) >= (6, 2),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


LAYOUTS = {
    "xp-sp3-32": info("Microsoft Windows XP", 5, 1, 2600, False, "i386", installation_type="Client"),
    "7-32": info("Windows 7 Professional", 6, 1, 7601, False, "i386"),
    "2008r2": info("Windows Server 2008 R2 Standard", 6, 1, 7601, True),
    "2019": info("Windows Server 2019 Standard", 10, 0, 17763, True),
    "2022": info("Windows Server 2022 Standard", 10, 0, 20348, True, rtc_utc=True),
    "11-uefi": info("Windows 11 Pro", 10, 0, 22631, False, firmware="uefi"),
}


def release(i: WindowsInfo) -> WindowsRelease:
    return WindowsRelease(i.major, i.minor, i.build, i.server, i.arch)
