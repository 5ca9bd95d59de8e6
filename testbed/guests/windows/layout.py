"""The phony Windows layouts: what each disk of a phony Windows guest holds, as plain values.

A layout names the Windows release (the values its registry carries), the
disk layout its installer makes (XP: one partition at sector 63; 7 and
later on BIOS: a 100 MB "System Reserved" partition before C:, here 16 MiB;
UEFI: GPT with an EFI system partition, the MSR and C:), VMware Tools, a
vmxnet3 NIC with a static address, a second disk, and the broken states
the converter must refuse (hibernated, Fast Startup, BitLocker, dynamic
disk).  ``hives.py`` turns a layout into registry content, ``build.py``
into disk images.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass, replace

NET_CLASS = "{4d36e972-e325-11ce-bfc1-08002be10318}"
SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR_TYPE = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC_DATA_TYPE = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
VMXNET3_ID = "pci\\ven_15ad&dev_07b0&subsys_07b015ad&rev_01"


@dataclass(frozen=True)
class PhonyNic:
    class_key: str  # its subkey of Control\Class\{4d36e972-...}
    instance_id: str  # NetCfgInstanceId
    description: str = "vmxnet3 Ethernet Adapter"
    hardware_id: str = VMXNET3_ID
    service: str = "vmxnet3ndis6"
    inf: str = "oem5.inf"
    characteristics: int = 0x84  # NCF_PHYSICAL | NCF_HAS_UI
    addresses: tuple[str, ...] = ()  # static IPv4 addresses; () = DHCP
    masks: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


STATIC_NIC = PhonyNic(
    class_key="0007",
    instance_id="{3C1E5A6B-7D8E-4F90-A1B2-C3D4E5F60718}",
    addresses=("192.0.2.10",),
    masks=("255.255.255.0",),
    gateways=("192.0.2.1",),
    dns=("192.0.2.53", "192.0.2.54"),
)
# A WAN miniport as every install has: a network-class adapter that is not hardware.
WAN_MINIPORT = PhonyNic(
    class_key="0000",
    instance_id="{5E0C1F2A-3B4C-4D5E-8F60-718293A4B5C6}",
    description="WAN Miniport (IP)",
    hardware_id="ms_ndiswanip",
    service="NdisWan",
    inf="netrasa.inf",
    characteristics=0x29,  # NCF_VIRTUAL | NCF_HIDDEN | NCF_NOT_USER_REMOVABLE
)


@dataclass(frozen=True)
class Partition:
    role: str  # system-reserved, c, esp, msr, d
    start: int  # sector
    sectors: int
    fstype: str  # ntfs, vfat, "" (none: MSR), bitlocker (a BitLocker boot sector)
    mbr_id: int = 0x07
    gpt_type: str = BASIC_DATA_TYPE
    gpt_guid: str = ""


@dataclass(frozen=True)
class WindowsLayout:
    name: str
    product_name: str
    current_version: str  # "6.1"; Windows 10 and later still say "6.3"
    major: int
    minor: int
    build: int
    arch: str  # i386 | x86_64
    edition: str = ""
    installation_type: str = ""  # Client | Server; "" on XP/2003 (ProductOptions tells)
    product_type: str = "WinNT"  # WinNT (client) | ServerNT
    csd_version: str = ""  # "Service Pack 3"
    systemroot: str = "/Windows"
    firmware: str = "bios"
    hostname: str = "win-phony"
    control_set: int = 1
    vmware_tools: bool = True
    tools_version: str = "12.1.5.20735119"
    nics: tuple[PhonyNic, ...] = (WAN_MINIPORT, STATIC_NIC)
    data_disk: bool = False
    system_reserved: bool = True
    driver_database: bool = False  # Windows 8 / 2012 and later
    rtc_utc: bool = False
    hiberfil: bytes = b""  # hiberfil.sys's first bytes; b"" = no hiberfil.sys
    hiberboot: bool = False  # Fast Startup on (HiberbootEnabled)
    bitlocker: bool = False  # C: is a BitLocker volume (nothing readable on it)
    dynamic: bool = False  # C:'s partition is LDM (MBR type 0x42)
    disk_mib: int = 96

    @property
    def disk_signature(self) -> int:
        """The MBR disk signature (unique per layout: MountedDevices finds C: by it)."""
        return _signature(self.name)

    @property
    def data_disk_signature(self) -> int:
        return _signature(self.name + "/data")

    @property
    def partitions(self) -> tuple[Partition, ...]:
        last = (self.disk_mib << 20) // SECTOR - 34  # room for the GPT backup header
        c_type = "bitlocker" if self.bitlocker else "ntfs"
        c_id = 0x42 if self.dynamic else 0x07
        if self.firmware == "uefi":
            esp = Partition("esp", 2048, 32 << 11, "vfat", 0xEF, ESP_TYPE, self._guid(1))
            msr = Partition("msr", esp.start + esp.sectors, 16 << 11, "", 0, MSR_TYPE, self._guid(2))
            start = msr.start + msr.sectors
            return esp, msr, Partition("c", start, last - start, c_type, c_id, BASIC_DATA_TYPE, self._guid(3))
        if not self.system_reserved:
            # XP's installer starts the first partition at sector 63 (one "track").
            return (Partition("c", 63, last - 63, c_type, c_id),)
        reserved = Partition("system-reserved", 2048, 16 << 11, "ntfs")
        start = reserved.start + reserved.sectors
        return reserved, Partition("c", start, last - start, c_type, c_id)

    @property
    def disk_guid(self) -> str:
        return self._guid(0)

    def _guid(self, n: int) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vm2kvm-phony-windows/{self.name}/{n}")).upper()

    @property
    def data_partition(self) -> Partition:
        return Partition("d", 2048, (32 << 11) - 2048 - 34, "ntfs")

    @property
    def mounted_devices(self) -> tuple[tuple[str, bytes], ...]:
        """MountedDevices blobs: MBR disk signature + byte offset, or "DMIO:ID:" + the GPT partition GUID."""
        c = next(p for p in self.partitions if p.role == "c")
        if self.firmware == "uefi":
            blob = b"DMIO:ID:" + uuid.UUID(c.gpt_guid).bytes_le
        else:
            blob = struct.pack("<IQ", self.disk_signature, c.start * SECTOR)
        found = [("C", blob)]
        if self.data_disk:
            found.append(
                ("D", struct.pack("<IQ", self.data_disk_signature, self.data_partition.start * SECTOR))
            )
        return tuple(found)


def _signature(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") or 1


def xp_sp3() -> WindowsLayout:
    return WindowsLayout(
        name="winxp-sp3-x86",
        product_name="Microsoft Windows XP",
        current_version="5.1",
        major=5,
        minor=1,
        build=2600,
        arch="i386",
        csd_version="Service Pack 3",
        systemroot="/WINDOWS",
        hostname="xp-desk",
        system_reserved=False,
        tools_version="10.0.12.4448",
        nics=(replace(STATIC_NIC, class_key="0001", service="vmxnet3ndis5", inf="oem2.inf"),),
    )


def win7_x86() -> WindowsLayout:
    return WindowsLayout(
        name="win7-x86",
        product_name="Windows 7 Professional",
        current_version="6.1",
        major=6,
        minor=1,
        build=7601,
        arch="i386",
        edition="Professional",
        installation_type="Client",
        csd_version="Service Pack 1",
        hostname="win7-desk",
        tools_version="10.3.10.12406962",
    )


def win2008r2() -> WindowsLayout:
    return WindowsLayout(
        name="win2008r2",
        product_name="Windows Server 2008 R2 Standard",
        current_version="6.1",
        major=6,
        minor=1,
        build=7601,
        arch="x86_64",
        edition="ServerStandard",
        installation_type="Server",
        product_type="ServerNT",
        csd_version="Service Pack 1",
        hostname="files01",
        control_set=2,
        data_disk=True,
        tools_version="11.0.6.19689",
    )


def win2019() -> WindowsLayout:
    return WindowsLayout(
        name="win2019",
        product_name="Windows Server 2019 Standard",
        current_version="6.3",
        major=10,
        minor=0,
        build=17763,
        arch="x86_64",
        edition="ServerStandard",
        installation_type="Server",
        product_type="ServerNT",
        hostname="app01",
        data_disk=True,
        driver_database=True,
        rtc_utc=True,
    )


def win2022() -> WindowsLayout:
    return WindowsLayout(
        name="win2022",
        product_name="Windows Server 2022 Datacenter",
        current_version="6.3",
        major=10,
        minor=0,
        build=20348,
        arch="x86_64",
        edition="ServerDatacenter",
        installation_type="Server",
        product_type="ServerNT",
        hostname="db01",
        driver_database=True,
    )


def win11_uefi() -> WindowsLayout:
    # Windows 11 still says "Windows 10" in ProductName; only the build (22000+) tells them apart.
    return WindowsLayout(
        name="win11-uefi",
        product_name="Windows 10 Pro",
        current_version="6.3",
        major=10,
        minor=0,
        build=22631,
        arch="x86_64",
        edition="Professional",
        installation_type="Client",
        firmware="uefi",
        hostname="laptop-11",
        driver_database=True,
    )


def win7_hibernated() -> WindowsLayout:
    return replace(win7_x86(), name="win7-hibernated", hiberfil=b"hibr" + bytes(4092))


def win11_fast_startup() -> WindowsLayout:
    return replace(win11_uefi(), name="win11-fast-startup", hiberfil=b"HIBR" + bytes(4092), hiberboot=True)


def win2019_bitlocker() -> WindowsLayout:
    return replace(win2019(), name="win2019-bitlocker", bitlocker=True, data_disk=False)


def win2019_dynamic() -> WindowsLayout:
    return replace(win2019(), name="win2019-dynamic", dynamic=True, data_disk=False)


GOOD_LAYOUTS = (xp_sp3, win7_x86, win2008r2, win2019, win2022, win11_uefi)
REFUSED_LAYOUTS = (win7_hibernated, win11_fast_startup, win2019_bitlocker, win2019_dynamic)
ALL_LAYOUTS = GOOD_LAYOUTS + REFUSED_LAYOUTS
