"""Keep a Linux guest's NIC names across the move to KVM: find the names, match them to NICs, render pins.

On VMware the first NIC is ``ens33`` (Workstation), ``ens160``/``ens192``
(ESXi), or ``eth0`` from ``70-persistent-net.rules``; on KVM the same NIC
probes as ``enp1s0`` and every config naming the old name stops working.
The MACs are kept, so each NIC's old name is pinned to its MAC: a systemd
``.link`` file, or a udev rule on guests without systemd.  Nothing here
touches the guest: ``configured_names`` reads file texts the appliance step
collected, ``plan_pins`` decides, ``link_file``/``udev_rules`` render.
See docs/conversion/network.md for why pinning beats rewriting configs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vm2kvmd.core.planning.plan import PlannedNic

LINK_DIR = "/etc/systemd/network"
UDEV_RULES = "/etc/udev/rules.d/70-vm2kvm-net.rules"
PERSISTENT_RULES = "/etc/udev/rules.d/70-persistent-net.rules"

# The files that name interfaces, as globs the appliance step expands.
CONFIG_GLOBS: tuple[str, ...] = (
    "/etc/network/interfaces",
    "/etc/network/interfaces.d/*",
    "/etc/netplan/*.yaml",
    "/etc/netplan/*.yml",
    "/etc/NetworkManager/system-connections/*",
    "/etc/sysconfig/network-scripts/ifcfg-*",
    "/etc/sysconfig/network/ifcfg-*",
    PERSISTENT_RULES,
)

# Names a physical NIC gets: kernel (eth0), predictable (ens33, enp3s0, eno1, enx<mac>),
# biosdevname (em1, p2p1).  Bridges, bonds, VLANs, tunnels and lo are not NICs to pin.
_PHYSICAL = re.compile(r"^(eth\d+|en[a-z0-9_]+|em\d+|p\d+p\d+(_\d+)?)$")
_KERNEL = re.compile(r"^eth(\d+)$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# Files the tools themselves skip (initscripts' ignore list) and our own backups.
_SKIPPED = re.compile(r"(~|\.(bak|old|orig|rpmnew|rpmorig|rpmsave|dpkg-old|dpkg-dist|vm2kvm-orig))$")


@dataclass(frozen=True)
class ConfiguredName:
    """An interface name the guest's network configuration depends on."""

    name: str
    path: str  # the file naming it
    mac: str | None = None  # the config ties the name to this MAC (HWADDR=, mac-address=, a rule)
    pinned_by: str | None = None  # an existing pin of name to mac: "netplan set-name", a udev rules file


@dataclass(frozen=True)
class NicPin:
    """One NIC keeps its VMware-era name."""

    nic: str  # "ethernet0"
    mac: str
    name: str
    reason: str  # how the name was matched to the NIC: "MAC in /etc/...", "PCI slot 33", ...
    path: str  # the file that carries the pin


@dataclass(frozen=True)
class PinPlan:
    pins: tuple[NicPin, ...] = ()
    notes: tuple[str, ...] = ()


# --- what the configuration names ----------------------------------------------------


def configured_names(files: Mapping[str, str]) -> tuple[ConfiguredName, ...]:
    """Every physical interface name in ``files`` (path -> text), in path order, each (name, path) once."""
    found: list[ConfiguredName] = []
    for path in sorted(files):
        base = path.rsplit("/", 1)[-1]
        if _SKIPPED.search(base):
            continue
        text = files[path]
        if path == PERSISTENT_RULES:
            found += persistent_rules(text, path)
        elif path.startswith("/etc/network/interfaces"):
            found += ifupdown_names(text, path)
        elif path.startswith("/etc/netplan/"):
            found += netplan_names(text, path)
        elif path.startswith("/etc/NetworkManager/system-connections/"):
            found += nmconnection_names(text, path)
        elif path.startswith("/etc/sysconfig/network-scripts/ifcfg-"):
            found += ifcfg_names(text, path)
        elif path.startswith("/etc/sysconfig/network/ifcfg-"):
            found += suse_ifcfg_names(text, path)
    unique: dict[tuple[str, str, str | None], ConfiguredName] = {}
    for item in found:
        unique.setdefault((item.name, item.path, item.mac), item)
    return tuple(unique.values())


def _physical(names: Iterable[str], path: str) -> list[ConfiguredName]:
    """The physical NIC names among ``names``; ``ens33.10`` (VLAN) and ``eth0:1`` (alias) name their NIC."""
    out = []
    for raw in names:
        name = raw.split(":", 1)[0].split(".", 1)[0]
        if _PHYSICAL.match(name):
            out.append(ConfiguredName(name, path))
    return out


_IFUPDOWN_STANZAS = {"auto", "allow-auto", "allow-hotplug", "iface", "mapping", "no-auto-down", "no-scripts"}
_IFUPDOWN_PORTS = {
    "bridge_ports",
    "bridge-ports",
    "bond-slaves",
    "bond_slaves",
    "bond-primary",
    "bond_primary",
    "vlan-raw-device",
    "vlan_raw_device",
    "raw-device",
}


def ifupdown_names(text: str, path: str) -> list[ConfiguredName]:
    """Debian's /etc/network/interfaces: stanza names and the NICs bridges, bonds and VLANs sit on."""
    names: list[str] = []
    for line in _logical_lines(text):
        words = line.split()
        if not words:
            continue
        if words[0] == "iface" and len(words) > 1:
            names.append(words[1])
        elif words[0] in _IFUPDOWN_STANZAS or words[0].startswith("allow-"):
            names += words[1:]
        elif words[0] in _IFUPDOWN_PORTS:
            names += [w for w in words[1:] if w not in ("none", "all")]
    return _physical(names, path)


def _logical_lines(text: str) -> list[str]:
    """Lines without comments, backslash continuations joined (interfaces(5))."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def _shell_vars(text: str) -> dict[str, str]:
    """KEY=value lines of an ifcfg file, shell quoting removed; later assignments win like in sh."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            words = [value.strip("\"'")]
        values[key.strip()] = " ".join(words)
    return values


def normalise_mac(value: str) -> str | None:
    """``00:50:56:AA:BB:CC``, ``00-50-56-aa-bb-cc`` -> ``00:50:56:aa:bb:cc``; None if not a MAC."""
    mac = value.strip().strip("\"'").lower().replace("-", ":")
    return mac if _MAC.match(mac) else None


def ifcfg_names(text: str, path: str) -> list[ConfiguredName]:
    """RHEL/CentOS/Fedora ifcfg: DEVICE= (else the file name) with HWADDR=, and PHYSDEV= of VLANs."""
    values = _shell_vars(text)
    name = values.get("DEVICE") or path.rsplit("ifcfg-", 1)[-1]
    mac = normalise_mac(values["HWADDR"]) if values.get("HWADDR") else None
    out: list[ConfiguredName] = []
    if mac and not _PHYSICAL.match(name) and "." not in name and ":" not in name:
        out.append(ConfiguredName(name, path, mac))  # a custom name tied to a MAC ("lan0")
    elif mac:
        out += [ConfiguredName(n.name, path, mac) for n in _physical([name], path)]
    else:
        out += _physical([name], path)
    out += _physical([values["PHYSDEV"]] if values.get("PHYSDEV") else [], path)
    return out


def suse_ifcfg_names(text: str, path: str) -> list[ConfiguredName]:
    """SUSE wicked ifcfg: the name is the file's, plus ETHERDEVICE= (VLAN), BONDING_SLAVE*=, BRIDGE_PORTS=."""
    values = _shell_vars(text)
    names = [path.rsplit("ifcfg-", 1)[-1]]
    for key, value in values.items():
        if key == "ETHERDEVICE" or key.startswith("BONDING_SLAVE") or key == "BRIDGE_PORTS":
            names += value.split()
    return _physical(names, path)


def _ini_sections(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def nmconnection_names(text: str, path: str) -> list[ConfiguredName]:
    """NetworkManager keyfiles: ``interface-name=`` (with ``mac-address=``) and a VLAN's ``parent=``.

    A connection restricted by MAC only, or by nothing, follows the NIC
    whatever its name: it needs no pin.
    """
    sections = _ini_sections(text)
    connection = sections.get("connection", {})
    ethernet = sections.get("ethernet") or sections.get("802-3-ethernet") or {}
    out: list[ConfiguredName] = []
    name = connection.get("interface-name")
    if name:
        raw_mac = ethernet.get("mac-address", "").rstrip(";")
        mac = normalise_mac(raw_mac) if raw_mac else None
        if mac and not _PHYSICAL.match(name):
            out.append(ConfiguredName(name, path, mac))
        else:
            out += [ConfiguredName(n.name, path, mac) for n in _physical([name], path)]
    parent = sections.get("vlan", {}).get("parent")
    if parent:
        out += _physical([parent], path)
    return out


_RULE_PAIR = re.compile(r'(\w+(?:\{[^}]*\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"')


def persistent_rules(text: str, path: str) -> list[ConfiguredName]:
    """udev rules pinning a MAC to a name (70-persistent-net.rules): still effective, the MACs are kept.

    A rule that also requires a VMware driver (``DRIVERS=="vmxnet3"``)
    stops matching on KVM: it names the NIC but does not pin it.
    """
    out: list[ConfiguredName] = []
    for line in _logical_lines(text):
        pairs = _RULE_PAIR.findall(line)
        mac = name = None
        effective = True
        for key, op, value in pairs:
            if key in ("ATTR{address}", "SYSFS{address}") and op == "==":
                mac = normalise_mac(value)
            elif key == "NAME" and op in ("=", ":="):
                name = value
            elif key in ("DRIVERS", "DRIVER") and op == "==" and value not in ("?*", "*"):
                effective = False
        if mac and name:
            out.append(ConfiguredName(name, path, mac, path if effective else None))
    return out


# --- netplan: the block-style YAML subset netplan files use ------------------------------


def _yaml_scalar(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _yaml_tree(text: str) -> dict[str, object]:
    """Nested dicts from block mappings; ``- x`` items and ``[a, b]`` lists as lists of strings.

    Enough for netplan (installer and cloud-init output); anchors and
    multi-line scalars, which netplan files do not use, are not supported.
    """
    root: dict[str, object] = {}
    stack: list[tuple[int, dict[str, object]]] = [(-1, root)]
    last_key: tuple[dict[str, object], str] | None = None
    for raw in text.splitlines():
        line = re.sub(r"\s+#.*$", "", raw.rstrip())
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if body.startswith("- "):
            if last_key is not None:
                parent, key = last_key
                items = parent.get(key)
                if not isinstance(items, list):
                    items = []
                    parent[key] = items
                items.append(_yaml_scalar(body[2:]))
            continue
        while stack[-1][0] >= indent:
            stack.pop()
        node = stack[-1][1]
        key, sep, value = body.partition(":")
        if not sep:
            continue
        key = _yaml_scalar(key)
        value = value.strip()
        if not value:
            child: dict[str, object] = {}
            node[key] = child
            stack.append((indent, child))
            last_key = (node, key)
        elif value.startswith("[") and value.endswith("]"):
            node[key] = [_yaml_scalar(v) for v in value[1:-1].split(",") if v.strip()]
        elif value.startswith("{") and value.endswith("}"):
            node[key] = {
                _yaml_scalar(k): _yaml_scalar(v)
                for k, _, v in (pair.partition(":") for pair in value[1:-1].split(","))
                if k.strip()
            }
        else:
            node[key] = _yaml_scalar(value)
    return root


def _mapping(node: object, key: str) -> dict[str, object]:
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def netplan_names(text: str, path: str) -> list[ConfiguredName]:
    """netplan ``ethernets``: the id is the name, unless ``match:`` says otherwise.

    ``match: {macaddress}`` with ``set-name`` already pins the name (netplan
    writes the .link/udev rule at every boot); ``match: {macaddress}`` alone
    and glob ``match: {name: "en*"}`` follow the NIC whatever its name.
    """
    out: list[ConfiguredName] = []
    network = _mapping(_yaml_tree(text), "network")
    for ident, raw in _mapping(network, "ethernets").items():
        entry = raw if isinstance(raw, dict) else {}
        match = _mapping(entry, "match")
        set_name = entry.get("set-name")
        raw_mac = match.get("macaddress")
        mac = normalise_mac(raw_mac) if isinstance(raw_mac, str) else None
        match_name = match.get("name")
        if mac and isinstance(set_name, str):
            out.append(ConfiguredName(set_name, path, mac, "netplan set-name"))
        elif mac:
            continue
        elif isinstance(match_name, str):
            if not any(c in match_name for c in "*?["):
                out += _physical([match_name], path)
        elif not match:
            out += _physical([ident], path)
    return out


# --- matching names to NICs ----------------------------------------------------------------


def vmware_pci_address(slot: int) -> tuple[int, int] | None:
    """(bus, device) a guest sees for a VMware ``pciSlotNumber``, when the layout is known.

    VMware encodes the slot as device (bits 0-4), bridge (5-9) and bridge
    function (10-12).  Observed on virtual hardware 7+: bridge 1 is
    ``pciBridge0`` (bus 2, so slot 33 is 02:01.0, ``enp2s1``); bridges 5-8
    are the PCIe root ports ``pciBridge4``-``7`` with eight functions each,
    buses 3, 11, 19, 27 for function 0 (slot 160 is ``enp3s0``, 192
    ``enp11s0``, 1184 = function 1 of bridge 5 is ``enp4s0``).
    """
    if slot < 32:
        return 0, slot
    device, bridge, function = slot & 0x1F, (slot >> 5) & 0x1F, (slot >> 10) & 0x7
    if bridge == 1 and function == 0:
        return 2, device
    if 5 <= bridge <= 8:
        return 3 + (bridge - 5) * 8 + function, device
    return None


def vmware_names(slot: int | None) -> tuple[str, ...]:
    """The predictable names a Linux guest gave a NIC in this VMware PCI slot: ``ens33``, ``enp2s1``."""
    if slot is None:
        return ()
    names = [f"ens{slot}"]
    address = vmware_pci_address(slot)
    if address:
        names.append(f"enp{address[0]}s{address[1]}")
    return tuple(names)


def _label(nic: PlannedNic) -> str:
    return f"ethernet{nic.source.index}"


def _has_mac(nic: PlannedNic, mac: str) -> bool:
    return mac in (nic.mac, nic.source.mac)


def pin_path(name: str, systemd: bool) -> str:
    return f"{LINK_DIR}/10-vm2kvm-{name}.link" if systemd else UDEV_RULES


def plan_pins(names: Sequence[ConfiguredName], nics: Sequence[PlannedNic], *, systemd: bool) -> PinPlan:
    """Which NIC keeps which name, and what could not be matched.

    Matching, strongest first: a MAC the configuration names; the VMware
    predictable name of the NIC's PCI slot (``ens33``, ``enp2s1``); the
    kernel's order (``ethN`` is the N-th NIC); a single name left over
    with a single NIC left over.  A name that matches no NIC is a note.
    """
    notes: list[str] = []
    by_name: dict[str, list[ConfiguredName]] = {}
    for item in names:
        by_name.setdefault(item.name, []).append(item)

    claimed: dict[str, tuple[PlannedNic, str]] = {}  # name -> (nic, reason)
    taken: dict[int, str] = {}  # id(nic) -> name

    def claim(name: str, nic: PlannedNic, reason: str) -> None:
        if id(nic) in taken:
            notes.append(
                f"{name} ({reason}) would be {_label(nic)}, which keeps the name {taken[id(nic)]}: not pinned"
            )
            return
        claimed[name] = (nic, reason)
        taken[id(nic)] = name

    by_slot, by_order, leftover = [], [], []
    for name, items in by_name.items():
        macs = [i for i in items if i.mac]
        if macs:
            hit = next(((i, n) for i in macs for n in nics if i.mac and _has_mac(n, i.mac)), None)
            if hit:
                claim(name, hit[1], f"MAC in {hit[0].path}")
            else:
                where = ", ".join(sorted({i.path for i in macs}))
                notes.append(
                    f"{name} is tied to MAC {macs[0].mac} ({where}), which no NIC of this VM has: not pinned"
                )
            continue
        if any(name in vmware_names(n.source.pci_slot) for n in nics):
            by_slot.append(name)
        elif _KERNEL.match(name):
            by_order.append(name)
        else:
            leftover.append(name)
    for name in by_slot:
        nic = next(n for n in nics if name in vmware_names(n.source.pci_slot))
        claim(name, nic, f"PCI slot {nic.source.pci_slot}")
    for name in by_order:
        position = int(name[3:])  # _KERNEL matched: "eth" and digits
        if position < len(nics):
            claim(name, nics[position], "kernel order")
        else:
            leftover.append(name)
    free = [n for n in nics if id(n) not in taken]
    if len(leftover) == 1 and len(free) == 1:
        claim(leftover[0], free[0], "the only NIC left")
    else:
        for name in leftover:
            where = ", ".join(sorted({i.path for i in by_name[name]}))
            notes.append(f"{name} (named in {where}) matches no NIC of this VM: not pinned")

    pins: list[NicPin] = []
    for name, (nic, reason) in claimed.items():
        mac = nic.mac or nic.source.mac
        existing = next((i for i in by_name[name] if i.pinned_by and i.mac and _has_mac(nic, i.mac)), None)
        if existing:
            notes.append(f"{_label(nic)} {mac} keeps its name {name}: already pinned by {existing.pinned_by}")
        elif mac is None:
            notes.append(f"{_label(nic)} has no MAC address: its name {name} cannot be pinned")
        elif systemd and _KERNEL.match(name):
            # Renaming into the kernel's ethN namespace races with the kernel naming the next NIC;
            # udev stopped doing it (v197).  A guest that used ethN keeps net.ifnames=0 on its
            # command line or a 70-persistent-net.rules, and the NICs keep their order.
            notes.append(
                f"{_label(nic)} {mac} was {name}, a kernel name: not pinned on a systemd guest "
                "(the kernel names NICs in PCI order, which the VM keeps)"
            )
        else:
            pins.append(NicPin(_label(nic), mac, name, reason, pin_path(name, systemd)))
    return PinPlan(tuple(pins), tuple(notes))


# --- the pins ------------------------------------------------------------------------------


def link_file(pin: NicPin) -> str:
    """A systemd.link(5) file giving the NIC with ``pin.mac`` the name ``pin.name``.

    ``OriginalName=eth*`` keeps VLANs, bonds and bridges, which carry the
    NIC's MAC, from matching: their kernel names are not ``ethN`` (udev
    before v224 does not know the key, warns and matches by MAC only).
    """
    return (
        f"# Written by vm2kvm: {pin.nic} keeps the name it had on VMware ({pin.reason}),\n"
        "# so the guest's network configuration still finds it on KVM.\n"
        "[Match]\n"
        f"MACAddress={pin.mac}\n"
        "OriginalName=eth*\n"
        "\n"
        "[Link]\n"
        f"Name={pin.name}\n"
    )


def udev_rules(pins: Sequence[NicPin]) -> str:
    """udev rules in the style of 70-persistent-net.rules; ``DRIVERS=="?*"`` skips virtual devices."""
    lines = [
        "# Written by vm2kvm: each NIC keeps the name it had on VMware,",
        "# so the guest's network configuration still finds it on KVM.",
    ]
    for pin in pins:
        lines.append(f"# {pin.nic} ({pin.reason})")
        lines.append(
            'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", '
            f'ATTR{{address}}=="{pin.mac}", ATTR{{type}}=="1", NAME="{pin.name}"'
        )
    return "\n".join(lines) + "\n"
