# ruff: noqa: E501  (the service tables hold real-world registry values, which are long)
"""Registry hives for phony Windows guests: an empty hive from the regf layout, filled through hivex.

``empty_hive()`` writes the smallest hive hivex (and so libguestfs and
Windows' own loader) accepts, from the documented file layout: a 4 KiB base
block ("regf", sequence numbers, root cell offset, checksum) and one 4 KiB
hive bin holding the root key ("nk") and its security descriptor ("sk").
``write_hive`` fills a copy through hivex: every key of a ``Hive`` (a
backslash path -> its values) is created with its parents.

``system_hive(layout)`` and ``software_hive(layout)`` are what a real
install of that layout has in the places a converter reads: versions,
the control set, services (VMware Tools' as the installer registers them),
network adapters with their TCP/IP settings, Uninstall entries, drive
letters.  Everything else a real hive holds is left out.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from testbed.guests.windows.layout import NET_CLASS, PhonyNic, WindowsLayout

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7
Value = tuple[int, bytes]
Hive = dict[str, dict[str, Value]]  # key path ("ControlSet001\\Services\\Tcpip") -> value name -> value

_BLOCK = 4096


def sz(text: str, kind: int = REG_SZ) -> Value:
    return kind, (text + "\0").encode("utf-16-le")


def expand_sz(text: str) -> Value:
    return sz(text, REG_EXPAND_SZ)


def multi_sz(*texts: str) -> Value:
    return REG_MULTI_SZ, "".join(t + "\0" for t in texts).encode("utf-16-le") + b"\0\0"


def dword(number: int) -> Value:
    return REG_DWORD, struct.pack("<I", number)


def binary(data: bytes) -> Value:
    return REG_BINARY, data


def _cell(body: bytes) -> bytes:
    # A cell is its size (negative: in use) and its data, padded to 8 bytes.
    size = (4 + len(body) + 7) & ~7
    return struct.pack("<i", -size) + body.ljust(size - 4, b"\0")


def empty_hive(name: str) -> bytes:
    """A valid hive with only a root key; ``name`` is the file name the base block records."""
    root_name = b"ROOT"
    nk_offset = 0x20  # offsets are relative to the first hive bin; its header is 32 bytes
    nk_size = len(_cell(b"\0" * (0x4C + len(root_name))))
    sk_offset = nk_offset + nk_size
    # Self-relative security descriptor with no owner, group or ACLs (revision 1, SE_SELF_RELATIVE).
    descriptor = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)
    sk = b"sk" + struct.pack("<HIIII", 0, sk_offset, sk_offset, 1, len(descriptor)) + descriptor
    nk = (
        b"nk"
        + struct.pack("<HQI", 0x2C, 0, 0)  # flags: hive entry, no delete, ASCII name
        + struct.pack("<IIIII", 0, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF)  # parent, subkeys, volatile, lists
        + struct.pack("<II", 0, 0xFFFFFFFF)  # values: none
        + struct.pack("<II", sk_offset, 0xFFFFFFFF)  # security, class name
        + struct.pack("<IIIII", 0, 0, 0, 0, 0)  # largest name/class/value sizes, work var
        + struct.pack("<HH", len(root_name), 0)
        + root_name
    )
    cells = _cell(nk) + _cell(sk)
    free = _BLOCK - 0x20 - len(cells)
    hbin = b"hbin" + struct.pack("<III", 0, _BLOCK, 0) + b"\0" * 16
    hbin += cells + struct.pack("<i", free) + b"\0" * (free - 4)
    base = bytearray(_BLOCK)
    base[0:4] = b"regf"
    struct.pack_into("<IIQIIIIIII", base, 4, 1, 1, 0, 1, 3, 0, 1, nk_offset, _BLOCK, 1)
    base[0x30 : 0x30 + 64] = name.encode("utf-16-le")[:64].ljust(64, b"\0")
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:0x1FC])):
        checksum ^= word
    checksum = {0: 1, 0xFFFFFFFF: 0xFFFFFFFE}.get(checksum, checksum)
    struct.pack_into("<I", base, 0x1FC, checksum)
    return bytes(base) + hbin


def write_hive(path: Path, name: str, hive: Mapping[str, Mapping[str, Value]]) -> None:
    """Write ``hive`` to ``path`` (an empty hive filled through hivex, keys in sorted order)."""
    import hivex  # Debian's python3-hivex (scripts/setup.sh)

    path.write_bytes(empty_hive(name))
    h = hivex.Hivex(str(path), write=True)
    nodes: dict[str, int] = {"": h.root()}

    def node(key: str) -> int:
        lower = key.lower()
        if lower not in nodes:
            parent, _, child = key.rpartition("\\")
            nodes[lower] = h.node_add_child(node(parent), child)
        return nodes[lower]

    for key in sorted(hive, key=str.lower):
        values = hive[key]
        n = node(key)
        if values:
            h.node_set_values(n, [{"key": k, "t": t, "value": v} for k, (t, v) in values.items()])
    h.commit(str(path))


# --- what a real install has ------------------------------------------------------------------

# VMware Tools as its installer registers it: (service, type, start, group, image path, display name).
_TOOLS_SERVICES_NT6 = (
    ("VMTools", 0x10, 2, "", '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"', "VMware Tools"),
    ("VGAuthService", 0x10, 2, "", '"C:\\Program Files\\VMware\\VMware Tools\\VMware VGAuth\\VGAuthService.exe"', "VMware Alias Manager and Ticket Service"),
    ("vmci", 1, 0, "System Bus Extender", "system32\\DRIVERS\\vmci.sys", "VMware VMCI Bus Driver"),
    ("vsock", 1, 3, "", "system32\\DRIVERS\\vsock.sys", "vSockets Virtual Machine Communication Interface Sockets driver"),
    ("vmhgfs", 2, 3, "Network", "system32\\DRIVERS\\vmhgfs.sys", "VMware Host Guest File System"),
    ("vm3dmp", 1, 3, "", "System32\\drivers\\vm3dmp.sys", "vm3dmp"),
    ("vmmouse", 1, 3, "Pointer Port", "system32\\DRIVERS\\vmmouse.sys", "VMware Pointing Device"),
    ("vmusbmouse", 1, 3, "", "system32\\DRIVERS\\vmusbmouse.sys", "VMware USB Pointing Device"),
    ("vmmemctl", 1, 2, "", "\\SystemRoot\\system32\\DRIVERS\\vmmemctl.sys", "Memory Control Driver"),
    ("vmrawdsk", 1, 1, "", "\\SystemRoot\\system32\\DRIVERS\\vmrawdsk.sys", "VMware Physical Disk Helper"),
    ("vmxnet3ndis6", 1, 3, "NDIS", "\\SystemRoot\\System32\\drivers\\vmxnet3.sys", "vmxnet3 NDIS 6 Ethernet Adapter Driver"),
    ("pvscsi", 1, 0, "SCSI miniport", "System32\\drivers\\pvscsi.sys", "pvscsi Storage Controller Driver"),
)  # fmt: skip
_TOOLS_SERVICES_XP = (
    ("VMTools", 0x10, 2, "", '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"', "VMware Tools"),
    ("vmci", 1, 0, "System Bus Extender", "system32\\DRIVERS\\vmci.sys", "VMware VMCI Bus Driver"),
    ("vmhgfs", 2, 1, "Network", "system32\\DRIVERS\\vmhgfs.sys", "VMware Host Guest File System"),
    ("vmx_svga", 1, 3, "Video", "system32\\DRIVERS\\vmx_svga.sys", "VMware SVGA II"),
    ("vmmouse", 1, 3, "Pointer Port", "system32\\DRIVERS\\vmmouse.sys", "VMware Pointing Device"),
    ("vmmemctl", 1, 2, "", "\\SystemRoot\\system32\\DRIVERS\\vmmemctl.sys", "Memory Control Driver"),
    ("vmxnet3ndis5", 1, 3, "NDIS", "system32\\DRIVERS\\vmxnet3n51x86.sys", "vmxnet3 NDIS 5 Ethernet Adapter Driver"),
)  # fmt: skip
# Services every install of that age has (the storage drivers VMware's controllers use among them).
_BASE_SERVICES_NT6 = (
    ("Tcpip", 1, 0, "PNP_TDI", "System32\\drivers\\tcpip.sys", "TCP/IP Protocol Driver"),
    ("LSI_SAS", 1, 0, "SCSI miniport", "System32\\drivers\\lsi_sas.sys", "LSI_SAS"),
    ("intelide", 1, 0, "System Bus Extender", "System32\\drivers\\intelide.sys", "intelide"),
    ("msahci", 1, 3, "SCSI miniport", "System32\\drivers\\msahci.sys", "msahci"),
)  # fmt: skip
_BASE_SERVICES_XP = (
    ("Tcpip", 1, 1, "PNP_TDI", "system32\\DRIVERS\\tcpip.sys", "TCP/IP Protocol Driver"),
    ("atapi", 1, 0, "SCSI miniport", "system32\\DRIVERS\\atapi.sys", "Standard IDE/ESDI Hard Disk Controller"),
    ("intelide", 1, 0, "System Bus Extender", "system32\\DRIVERS\\intelide.sys", "Intel IDE Controller"),
)  # fmt: skip
# VMware Tools' MSI product codes (x86 and x64 packages) and the version they carry.
TOOLS_PRODUCT_X64 = "{E2B6C2F1-5F4E-4B5A-9B8F-4C1D2E3F4A51}"
TOOLS_PRODUCT_X86 = "{7F8A9B0C-1D2E-4F3A-8B4C-5D6E7F8A9B52}"


def _services(layout: WindowsLayout) -> Sequence[tuple[str, int, int, str, str, str]]:
    xp = layout.major < 6
    found = list(_BASE_SERVICES_XP if xp else _BASE_SERVICES_NT6)
    if layout.vmware_tools:
        found += _TOOLS_SERVICES_XP if xp else _TOOLS_SERVICES_NT6
    return found


def _nic_keys(ccs: str, nic: PhonyNic) -> Hive:
    cls = f"{ccs}\\Control\\Class\\{NET_CLASS}\\{nic.class_key}"
    interface = f"{ccs}\\Services\\Tcpip\\Parameters\\Interfaces\\{nic.instance_id}"
    hive: Hive = {
        cls: {
            "DriverDesc": sz(nic.description),
            "NetCfgInstanceId": sz(nic.instance_id),
            "MatchingDeviceId": sz(nic.hardware_id),
            "ComponentId": sz(nic.hardware_id),
            "Characteristics": dword(nic.characteristics),
            "InfPath": sz(nic.inf),
        },
        cls + "\\Ndi": {"Service": sz(nic.service)},
    }
    if nic.characteristics & 0x4:  # only physical adapters have TCP/IP settings of their own here
        tcpip: dict[str, Value] = {"EnableDHCP": dword(0 if nic.addresses else 1)}
        if nic.addresses:
            tcpip["IPAddress"] = multi_sz(*nic.addresses)
            tcpip["SubnetMask"] = multi_sz(*nic.masks)
            tcpip["DefaultGateway"] = multi_sz(*nic.gateways)
            tcpip["NameServer"] = sz(",".join(nic.dns))
        hive[interface] = tcpip
    return hive


def system_hive(layout: WindowsLayout) -> Hive:
    ccs = f"ControlSet{layout.control_set:03d}"
    hive: Hive = {
        "Select": {
            "Current": dword(layout.control_set),
            "Default": dword(layout.control_set),
            "LastKnownGood": dword(layout.control_set + 1),
            "Failed": dword(0),
        },
        "MountedDevices": {
            f"\\DosDevices\\{letter}:": binary(blob) for letter, blob in layout.mounted_devices
        },
        f"{ccs}\\Control\\ComputerName\\ComputerName": {"ComputerName": sz(layout.hostname.upper())},
        f"{ccs}\\Control\\ProductOptions": {"ProductType": sz(layout.product_type)},
        f"{ccs}\\Control\\Session Manager\\Power": {"HiberbootEnabled": dword(1 if layout.hiberboot else 0)},
        f"{ccs}\\Control\\TimeZoneInformation": {"TimeZoneKeyName": sz("UTC")}
        | ({"RealTimeIsUniversal": dword(1)} if layout.rtc_utc else {}),
        f"{ccs}\\Services\\Tcpip\\Parameters": {"Hostname": sz(layout.hostname), "Domain": sz("")},
    }
    # A stale second control set, as every real hive has (LastKnownGood): never to be read.
    hive[f"ControlSet{layout.control_set + 1:03d}\\Control\\ComputerName\\ComputerName"] = {
        "ComputerName": sz("STALE-CONTROL-SET")
    }
    for name, type_, start, group, image, display in _services(layout):
        values = {"Type": dword(type_), "Start": dword(start), "ErrorControl": dword(1)}
        values["ImagePath"] = expand_sz(image)
        values["DisplayName"] = sz(display)
        if group:
            values["Group"] = sz(group)
        hive[f"{ccs}\\Services\\{name}"] = values
    for nic in layout.nics:
        hive.update(_nic_keys(ccs, nic))
    if layout.major < 6 or (layout.major, layout.minor) < (6, 2):
        # Up to 7/2008 R2 boot-critical PCI IDs live here (VMware's pvscsi is one).
        hive[f"{ccs}\\Control\\CriticalDeviceDatabase\\pci#ven_15ad&dev_07c0"] = {
            "Service": sz("pvscsi"),
            "ClassGUID": sz("{4D36E97B-E325-11CE-BFC1-08002BE10318}"),
        }
    if layout.driver_database:
        hive["DriverDatabase"] = {"Architecture": sz("amd64" if layout.arch == "x86_64" else "x86")}
        hive["DriverDatabase\\DriverPackages\\vmxnet3.inf_amd64_0a9c2e4d8b1f7a33"] = {
            "Provider": sz("VMware, Inc."),
            "Version": binary(bytes(32)),
        }
        hive["DriverDatabase\\DeviceIds\\pci\\VEN_15AD&DEV_07B0"] = {"oem5.inf": binary(b"\x01\xff\x00\x00")}
    return hive


def software_hive(layout: WindowsLayout) -> Hive:
    current: dict[str, Value] = {
        "ProductName": sz(layout.product_name),
        "CurrentVersion": sz(layout.current_version),
        "CurrentBuildNumber": sz(str(layout.build)),
        "CurrentBuild": sz(str(layout.build)),
        "SystemRoot": sz("C:" + layout.systemroot.replace("/", "\\")),
    }
    if layout.major >= 10:
        current["CurrentMajorVersionNumber"] = dword(layout.major)
        current["CurrentMinorVersionNumber"] = dword(layout.minor)
    if layout.edition:
        current["EditionID"] = sz(layout.edition)
    if layout.installation_type:
        current["InstallationType"] = sz(layout.installation_type)
    if layout.csd_version:
        current["CSDVersion"] = sz(layout.csd_version)
    uninstall = "Microsoft\\Windows\\CurrentVersion\\Uninstall"
    wow = "WOW6432Node\\" + uninstall
    hive: Hive = {
        "Microsoft\\Windows NT\\CurrentVersion": current,
        "Microsoft\\Windows\\CurrentVersion": {"DevicePath": expand_sz("%SystemRoot%\\inf")},
        # An update without a DisplayName: Windows does not list it, nor do we.
        f"{uninstall}\\KB2999226": {"ParentKeyName": sz("OperatingSystem")},
    }
    if layout.vmware_tools:
        product = TOOLS_PRODUCT_X64 if layout.arch == "x86_64" else TOOLS_PRODUCT_X86
        hive[f"{uninstall}\\{product}"] = {
            "DisplayName": sz("VMware Tools"),
            "DisplayVersion": sz(layout.tools_version),
            "Publisher": sz("VMware, Inc."),
            "InstallLocation": sz("C:\\Program Files\\VMware\\VMware Tools\\"),
            "UninstallString": expand_sz(f"MsiExec.exe /I{product}"),
            "WindowsInstaller": dword(1),
        }
    if layout.arch == "x86_64":
        # A 32-bit program on a 64-bit guest registers in the 32-bit view.
        hive[f"{wow}\\7-Zip"] = {
            "DisplayName": sz("7-Zip 19.00"),
            "DisplayVersion": sz("19.00"),
            "Publisher": sz("Igor Pavlov"),
            "UninstallString": sz('"C:\\Program Files (x86)\\7-Zip\\Uninstall.exe"'),
            "QuietUninstallString": sz('"C:\\Program Files (x86)\\7-Zip\\Uninstall.exe" /S'),
        }
    return hive
