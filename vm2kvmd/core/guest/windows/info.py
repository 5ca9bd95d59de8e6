"""What inspection found in a Windows guest: pure values, and the parsers that fill them.

``vm2kvmd.convert.windows.inspect`` reads the guest's SYSTEM and SOFTWARE
hives (through hivex, on copies taken from the appliance) into ``RegKey``
trees and a few facts from its disks (``DiskFacts``); ``windows_info``
turns them into a ``WindowsInfo`` without any I/O, so every rule here is
tested without an appliance.  ``refusal`` says why a guest cannot be
converted (hibernated, BitLocker, dynamic disk), or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vm2kvmd.errors import ErrorCode, Vm2kvmError

# Registry value types (winnt.h REG_*), as hivex reports them.
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_DWORD_BIG_ENDIAN = 5
REG_MULTI_SZ = 7
REG_QWORD = 11

# The network adapter device class (Control\Class\{...}\NNNN holds one key per adapter).
NET_CLASS = "{4d36e972-e325-11ce-bfc1-08002be10318}"

NCF_PHYSICAL = 0x4  # Characteristics bit of an adapter that is hardware (netcfgx.h)

RegData = str | int | tuple[str, ...] | bytes


@dataclass(frozen=True)
class RegKey:
    """One registry key as read from a hive: values by name (case-insensitive lookups) and subkeys."""

    name: str
    values: Mapping[str, RegData] = field(default_factory=dict)
    children: tuple[RegKey, ...] = ()

    def child(self, path: str) -> RegKey | None:
        """The subkey at ``path`` (backslash-separated, case-insensitive), None when absent."""
        key: RegKey | None = self
        for part in (p for p in path.split("\\") if p):
            assert key is not None
            key = next((c for c in key.children if c.name.lower() == part.lower()), None)
            if key is None:
                return None
        return key

    def value(self, name: str) -> RegData | None:
        want = name.lower()
        return next((v for k, v in self.values.items() if k.lower() == want), None)

    def text(self, name: str) -> str:
        """A string value ('' when absent or not a string; the first of a multi-string)."""
        v = self.value(name)
        if isinstance(v, tuple):
            return v[0] if v else ""
        return v if isinstance(v, str) else ""

    def texts(self, name: str) -> tuple[str, ...]:
        """A multi-string value (a single string counts as one; empty entries dropped)."""
        v = self.value(name)
        if isinstance(v, str):
            v = (v,)
        return tuple(s for s in v if s) if isinstance(v, tuple) else ()

    def number(self, name: str) -> int | None:
        v = self.value(name)
        return v if isinstance(v, int) else None


@dataclass(frozen=True)
class InstalledApp:
    """One entry of an Uninstall key (what "Programs and Features" lists)."""

    key: str  # the Uninstall subkey name: "{GUID}" for MSI products
    name: str  # DisplayName
    version: str = ""  # DisplayVersion
    publisher: str = ""
    uninstall: str = ""  # UninstallString: "MsiExec.exe /I{GUID}" for MSI products
    quiet_uninstall: str = ""  # QuietUninstallString, when the product has one
    wow64: bool = False  # from the 32-bit view (SOFTWARE\WOW6432Node) of a 64-bit guest


@dataclass(frozen=True)
class Service:
    """One key under the current control set's Services (a service or a driver)."""

    name: str  # the key name: "vmxnet3ndis6", "VMTools"
    type: int | None = None  # 1 kernel driver, 2 file system driver, 0x10/0x20 Win32 service
    start: int | None = None  # 0 boot, 1 system, 2 automatic, 3 manual, 4 disabled
    image_path: str = ""
    display_name: str = ""
    group: str = ""


@dataclass(frozen=True)
class WindowsNic:
    """A network adapter the guest knows, with its TCP/IP settings (tied through NetCfgInstanceId)."""

    class_key: str  # "0007": its subkey of Control\Class\{4d36e972-...}
    instance_id: str  # NetCfgInstanceId, "{GUID}": names Tcpip\Parameters\Interfaces\{GUID}
    description: str  # DriverDesc: "vmxnet3 Ethernet Adapter"
    hardware_id: str  # MatchingDeviceId: "pci\ven_15ad&dev_07b0"
    service: str = ""  # the driver's service (Ndi\Service): "vmxnet3ndis6"
    dhcp: bool = True
    addresses: tuple[str, ...] = ()  # static IPv4 addresses (IPAddress), in order
    masks: tuple[str, ...] = ()  # SubnetMask, one per address
    gateways: tuple[str, ...] = ()  # DefaultGateway
    dns: tuple[str, ...] = ()  # NameServer (comma or space separated in the registry)


@dataclass(frozen=True)
class DiskFacts:
    """What inspection read from the disks and file system rather than from the hives."""

    hiberfil: bytes = b""  # the first bytes of hiberfil.sys (b"" when there is none)
    bitlocker: tuple[str, ...] = ()  # devices whose boot sector is BitLocker's (-FVE-FS-)
    dynamic_system_disk: bool = False  # the system volume's partition is LDM (MBR 0x42, GPT LDM data)
    firmware: str = "bios"  # bios | uefi (an EFI system partition with \EFI\Microsoft\Boot)


@dataclass(frozen=True)
class WindowsInfo:
    """One Windows installation found on the VM's disks (one libguestfs inspection root)."""

    root: str  # the system volume, as the appliance names it: /dev/sda2
    product_name: str  # "Windows Server 2019 Standard"
    major: int  # 10
    minor: int  # 0
    build: int  # 17763
    edition: str  # EditionID: "ServerStandard", "Professional"; "" on XP
    installation_type: str  # Server, Client, Server Core (XP: from ProductType)
    arch: str  # i386 | x86_64 (cmd.exe's PE header)
    systemroot: str  # the Windows directory as the appliance sees it: /Windows
    hostname: str  # ComputerName
    current_control_set: str  # "ControlSet001" (SYSTEM\Select\Current)
    firmware: str = "bios"  # bios | uefi
    drive_letters: tuple[tuple[str, str], ...] = ()  # ("C", "/dev/sda2"), from MountedDevices
    apps: tuple[InstalledApp, ...] = ()
    services: tuple[Service, ...] = ()
    nics: tuple[WindowsNic, ...] = ()
    driver_database: bool = False  # SYSTEM has DriverDatabase (Windows 8 and later register drivers there)
    rtc_utc: bool = False  # Control\TimeZoneInformation\RealTimeIsUniversal = 1
    hibernation: str = "none"  # none | hibernated | fast-startup
    bitlocker: tuple[str, ...] = ()  # BitLocker volumes seen on the disks
    dynamic_system_disk: bool = False
    # Published INFs (oemN.inf) of VMware's driver packages in the DriverDatabase (8 and later).
    vmware_infs: tuple[str, ...] = ()

    @property
    def server(self) -> bool:
        return self.installation_type.lower().startswith("server")

    def service(self, name: str) -> Service | None:
        want = name.lower()
        return next((s for s in self.services if s.name.lower() == want), None)

    def to_json(self) -> dict[str, object]:
        """A plain-JSON view (the golden files and the report)."""

        def plain(v: object) -> object:
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if hasattr(v, "__dataclass_fields__"):
                return {k: plain(getattr(v, k)) for k in v.__dataclass_fields__}
            return v

        data = plain(self)
        assert isinstance(data, dict)
        data["server"] = self.server
        return data


# --- parsing ---------------------------------------------------------------------------


def decode_value(kind: int, data: bytes) -> RegData:
    """A registry value's data as Python: strings (UTF-16LE, up to the first NUL), numbers, or bytes."""
    if kind in (REG_SZ, REG_EXPAND_SZ):
        return _utf16(data).split("\0", 1)[0]
    if kind == REG_MULTI_SZ:
        return tuple(s for s in _utf16(data).split("\0") if s)
    if kind == REG_DWORD and len(data) >= 4:
        return int.from_bytes(data[:4], "little")
    if kind == REG_DWORD_BIG_ENDIAN and len(data) >= 4:
        return int.from_bytes(data[:4], "big")
    if kind == REG_QWORD and len(data) >= 8:
        return int.from_bytes(data[:8], "little")
    return data


def _utf16(data: bytes) -> str:
    # Some writers leave an odd trailing byte; Windows ignores it, so do we.
    return data[: len(data) & ~1].decode("utf-16-le", "replace")


def current_control_set(system: RegKey) -> str:
    """ControlSet00N that Windows boots with (Select\\Current; 1 when absent, as on a fresh install)."""
    select = system.child("Select")
    current = select.number("Current") if select else None
    return f"ControlSet{current or 1:03d}"


def version_of(current_version: RegKey) -> tuple[int, int, int]:
    """(major, minor, build) from SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion.

    Windows 10 and later keep CurrentVersion at "6.3" for old programs; their
    real version is in CurrentMajor/MinorVersionNumber (DWORDs).
    """
    major = current_version.number("CurrentMajorVersionNumber")
    minor = current_version.number("CurrentMinorVersionNumber")
    if major is None:
        text = current_version.text("CurrentVersion")
        parts = [int(p) for p in text.split(".")[:2] if p.isdigit()]
        major, minor = [*parts, 0, 0][:2]
    build_text = current_version.text("CurrentBuildNumber") or current_version.text("CurrentBuild")
    build = int(build_text) if build_text.isdigit() else 0
    return major, minor or 0, build


def installation_type(current_version: RegKey, control: RegKey | None) -> str:
    """Server, Client or Server Core; XP and 2003 have no InstallationType, ProductOptions says it."""
    kind = current_version.text("InstallationType")
    if kind:
        return kind
    product = control.child("ProductOptions") if control else None
    product_type = product.text("ProductType") if product else ""
    return "Client" if product_type.lower() in ("", "winnt") else "Server"


def apps(software: RegKey, arch: str) -> tuple[InstalledApp, ...]:
    """Installed software from both Uninstall views, in key order (64-bit view first)."""
    found: list[InstalledApp] = []
    views = [("Microsoft\\Windows\\CurrentVersion\\Uninstall", False)]
    if arch == "x86_64":
        views.append(("WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall", True))
    for path, wow64 in views:
        uninstall = software.child(path)
        for key in uninstall.children if uninstall else ():
            name = key.text("DisplayName")
            if not name:
                continue  # updates and components without a name are not listed by Windows either
            found.append(
                InstalledApp(
                    key=key.name,
                    name=name,
                    version=key.text("DisplayVersion"),
                    publisher=key.text("Publisher"),
                    uninstall=key.text("UninstallString"),
                    quiet_uninstall=key.text("QuietUninstallString"),
                    wow64=wow64,
                )
            )
    return tuple(found)


def services(control_set: RegKey) -> tuple[Service, ...]:
    keys = control_set.child("Services")
    return tuple(
        Service(
            name=key.name,
            type=key.number("Type"),
            start=key.number("Start"),
            image_path=key.text("ImagePath"),
            display_name=key.text("DisplayName"),
            group=key.text("Group"),
        )
        for key in (keys.children if keys else ())
    )


def _split_servers(text: str) -> tuple[str, ...]:
    # NameServer is "a,b" on some versions and "a b" on others.
    return tuple(s for s in text.replace(",", " ").split() if s)


def nics(control_set: RegKey) -> tuple[WindowsNic, ...]:
    """Every adapter of the network class with a NetCfgInstanceId, with its TCP/IP settings."""
    adapters = control_set.child(f"Control\\Class\\{NET_CLASS}")
    interfaces = control_set.child("Services\\Tcpip\\Parameters\\Interfaces")
    found = []
    for key in adapters.children if adapters else ():
        instance = key.text("NetCfgInstanceId")
        if not key.name.isdigit() or not instance:
            continue  # "Properties" and the like
        characteristics = key.number("Characteristics")
        if characteristics is not None and not characteristics & NCF_PHYSICAL:
            continue  # WAN miniports, loopback, tunnels: no hardware to carry settings over to
        ndi = key.child("Ndi")
        tcpip = interfaces.child(instance) if interfaces else None
        dhcp = tcpip is None or tcpip.number("EnableDHCP") != 0
        found.append(
            WindowsNic(
                class_key=key.name,
                instance_id=instance,
                description=key.text("DriverDesc"),
                hardware_id=key.text("MatchingDeviceId"),
                service=ndi.text("Service") if ndi else "",
                dhcp=dhcp,
                addresses=() if dhcp or tcpip is None else tcpip.texts("IPAddress"),
                masks=() if dhcp or tcpip is None else tcpip.texts("SubnetMask"),
                gateways=tcpip.texts("DefaultGateway") if tcpip else (),
                dns=_split_servers(tcpip.text("NameServer")) if tcpip else (),
            )
        )
    return tuple(found)


def hostname(control_set: RegKey) -> str:
    """The DNS host name (Tcpip's Hostname, as libguestfs reports it), else the NetBIOS ComputerName."""
    tcpip = control_set.child("Services\\Tcpip\\Parameters")
    name = tcpip.text("Hostname") if tcpip else ""
    if not name:
        key = control_set.child("Control\\ComputerName\\ComputerName")
        name = key.text("ComputerName") if key else ""
    return name


def hibernation(hiberfil: bytes, control_set: RegKey) -> str:
    """none | hibernated | fast-startup, from hiberfil.sys's header and the Power settings.

    A header that starts with ``hibr`` (``HIBR`` from Windows 8 on) holds a
    memory image Windows resumes from; ``wake``, ``RSTR`` or zeros mean it
    was used and is stale.  Fast Startup writes the same header at every
    shutdown, so the two are told apart only by HiberbootEnabled.
    """
    if hiberfil[:4].lower() != b"hibr":
        return "none"
    power = control_set.child("Control\\Session Manager\\Power")
    return "fast-startup" if power and power.number("HiberbootEnabled") == 1 else "hibernated"


# COFF Machine values (winnt.h IMAGE_FILE_MACHINE_*) of the architectures Windows ships for.
_PE_MACHINES = {0x014C: "i386", 0x8664: "x86_64", 0xAA64: "aarch64", 0x01C4: "armv7l"}


def pe_arch(head: bytes) -> str | None:
    """The architecture a PE image is built for, from its first bytes; None when it is not one.

    libguestfs 1.48 (``file_architecture``, inspection) says x86_64 for any
    PE32+ image, ARM64 ones included, so the machine field is read here.
    """
    if head[:2] != b"MZ" or len(head) < 0x40:
        return None
    offset = int.from_bytes(head[0x3C:0x40], "little")
    if head[offset : offset + 4] != b"PE\0\0" or len(head) < offset + 6:
        return None
    return _PE_MACHINES.get(int.from_bytes(head[offset + 4 : offset + 6], "little"), "unknown")


def windows_info(
    *,
    root: str,
    arch: str,
    systemroot: str,
    system: RegKey,
    software: RegKey,
    disks: DiskFacts,
    drive_letters: Sequence[tuple[str, str]] = (),
) -> WindowsInfo:
    """The ``WindowsInfo`` of a guest from its two hives (root keys) and its disk facts."""
    ccs_name = current_control_set(system)
    ccs = system.child(ccs_name) or RegKey(ccs_name)
    current_version = software.child("Microsoft\\Windows NT\\CurrentVersion") or RegKey("CurrentVersion")
    major, minor, build = version_of(current_version)
    tz = ccs.child("Control\\TimeZoneInformation")
    return WindowsInfo(
        root=root,
        product_name=current_version.text("ProductName"),
        major=major,
        minor=minor,
        build=build,
        edition=current_version.text("EditionID"),
        installation_type=installation_type(current_version, ccs.child("Control")),
        arch=arch,
        systemroot=systemroot,
        hostname=hostname(ccs),
        current_control_set=ccs_name,
        firmware=disks.firmware,
        drive_letters=tuple(sorted(drive_letters)),
        apps=apps(software, arch),
        services=services(ccs),
        nics=nics(ccs),
        driver_database=system.child("DriverDatabase") is not None,
        rtc_utc=bool(tz and tz.number("RealTimeIsUniversal")),
        hibernation=hibernation(disks.hiberfil, ccs),
        bitlocker=disks.bitlocker,
        dynamic_system_disk=disks.dynamic_system_disk,
        vmware_infs=vmware_infs(system),
    )


_OEM_INF = re.compile(r"oem\d+\.inf", re.IGNORECASE)
_VMWARE_PCI_VENDOR = "ven_15ad"


def vmware_infs(system: RegKey) -> tuple[str, ...]:
    """The ``oemN.inf`` names VMware's driver packages were published as (DriverDatabase, 8 and later).

    A package whose ``Provider`` is VMware (the package key's default value is
    its published INF), and any third-party INF registered for a VMware PCI
    device (``DeviceIds\\PCI\\VEN_15AD&...``: vmxnet3, pvscsi, SVGA, VMCI).
    Windows' own inbox INFs are never ``oemN.inf``, so they are not touched.
    """
    database = system.child("DriverDatabase")
    if database is None:
        return ()
    found: set[str] = set()
    for package in (database.child("DriverPackages") or RegKey("")).children:
        published = package.text("")
        if "vmware" in package.text("Provider").lower() and _OEM_INF.fullmatch(published):
            found.add(published.lower())
    for device in (database.child("DeviceIds\\PCI") or RegKey("")).children:
        if device.name.lower().startswith(_VMWARE_PCI_VENDOR):
            found.update(name.lower() for name in device.values if _OEM_INF.fullmatch(name))
    return tuple(sorted(found, key=lambda n: int(n[3:-4])))


def refuse_windows(info: WindowsInfo) -> None:
    """Raise for a Windows guest that cannot be converted without losing data or booting."""
    if info.arch not in ("i386", "x86_64"):
        # Windows on ARM (cmd.exe's PE machine is ARM64): no x86 drivers or KVM x86 domain fit it.
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_GUEST,
            f"{info.product_name} is built for {info.arch}; only x86 Windows guests can be converted",
            value=info.arch,
            hint="vm2kvm makes x86 domains only; Windows on ARM needs an aarch64 KVM host and "
            "virtio-win's ARM64 drivers, set up by hand",
        )
    if info.hibernation != "none":
        how = "hibernated" if info.hibernation == "hibernated" else "shut down with Fast Startup on"
        raise Vm2kvmError(
            ErrorCode.GUEST_HIBERNATED,
            f"{info.product_name} on {info.root} was {how}: its hiberfil.sys holds the running "
            "system, which would overwrite any change made to the disk (and the disk is in use)",
            file="C:\\hiberfil.sys",
            hint="boot the VM in VMware and shut it down fully: `shutdown /s /t 0` (not hibernate); "
            "turn Fast Startup off first (`powercfg /h off`)",
        )
    if info.dynamic_system_disk:
        raise Vm2kvmError(
            ErrorCode.DYNAMIC_DISK,
            f"{info.product_name} is installed on a dynamic disk ({info.root}); its volumes are "
            "described by the LDM database, which cannot be converted offline",
            value=info.root,
            hint="convert the system disk back to a basic disk in VMware (Disk Management) first, "
            "or migrate with --no-guest-conversion",
        )
