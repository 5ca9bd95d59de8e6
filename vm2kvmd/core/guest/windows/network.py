"""Static IPv4 settings of a Windows guest's VMware NICs, tied to the NICs of the new domain.

Windows keeps TCP/IP settings per adapter instance (``Tcpip\\Parameters\\
Interfaces\\{NetCfgInstanceId}``); the virtio (or e1000) NIC on KVM is a new
instance and starts with DHCP.  The registry does not hold an adapter's MAC
(unless overridden), so guest adapters are tied to the VM's NICs by order:
the PCI network adapters in the order Windows installed them (their class key
``0007``, ``0008`` ...) against the VM's ``ethernet0``, ``ethernet1`` ... —
the order VMware presents them in.  When the counts differ the tie is only
made for a single adapter, with a note.  At first boot the settings are
applied to the adapter that has the planned MAC (``getmac`` finds it), with
``netsh``, which every Windows from XP to 11 has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vm2kvmd.core.guest.windows.info import WindowsNic
from vm2kvmd.core.hardware.model import Note


@dataclass(frozen=True)
class StaticIp:
    mac: str  # the new NIC's MAC, aa:bb:cc:dd:ee:ff
    adapter: str  # the VMware adapter's description, for the log and report
    addresses: tuple[tuple[str, str], ...]  # (address, mask)
    gateways: tuple[str, ...]
    dns: tuple[str, ...]

    @property
    def windows_mac(self) -> str:
        """The MAC as getmac prints it: AA-BB-CC-DD-EE-FF."""
        return self.mac.replace(":", "-").upper()


def _physical(nics: Sequence[WindowsNic]) -> list[WindowsNic]:
    # PCI adapters only: WAN miniports, ISATAP and the like are not NICs of the VM.
    found = [n for n in nics if n.hardware_id.lower().startswith("pci\\")]
    return sorted(found, key=lambda n: int(n.class_key) if n.class_key.isdigit() else 0)


def plan_static_ips(
    nics: Sequence[WindowsNic], macs: Sequence[str | None]
) -> tuple[list[StaticIp], list[Note]]:
    """Which static settings go to which new NIC (by MAC), and notes on what could not be tied."""
    notes: list[Note] = []
    adapters = _physical(nics)
    static = [n for n in adapters if not n.dhcp and n.addresses]
    if not static:
        return [], notes
    if len(adapters) != len(macs):
        if len(adapters) == 1 and len(macs) >= 1:
            pairs = [(adapters[0], macs[0])]
            message = (
                f"the guest has one network adapter, the VM {len(macs)} NICs: its static IP goes to NIC 1"
            )
            notes.append(Note(message))
        else:
            names = ", ".join(f"{n.description} ({', '.join(n.addresses)})" for n in static)
            notes.append(
                Note(
                    f"the guest has {len(adapters)} network adapters and the VM {len(macs)} NICs: static IPs "
                    f"not re-applied ({names}); set them in the guest after first boot"
                )
            )
            return [], notes
    else:
        pairs = list(zip(adapters, macs, strict=True))
    plans = []
    for adapter, mac in pairs:
        if adapter.dhcp or not adapter.addresses:
            continue
        if not mac:
            notes.append(Note(f"{adapter.description}: its NIC has no fixed MAC; static IP not re-applied"))
            continue
        masks = (*adapter.masks, *("255.255.255.0",) * len(adapter.addresses))
        plans.append(
            StaticIp(
                mac=mac,
                adapter=adapter.description,
                addresses=tuple(zip(adapter.addresses, masks, strict=False)),
                gateways=adapter.gateways,
                dns=adapter.dns,
            )
        )
    return plans, notes


def netsh_commands(ip: StaticIp, name_variable: str) -> list[str]:
    """netsh lines re-applying ``ip`` to the adapter whose connection name is in ``%name_variable%``."""
    name = f'name="%{name_variable}%"'
    (first, first_mask), *more = ip.addresses
    gateway = f" {ip.gateways[0]} 1" if ip.gateways else ""
    lines = [f"netsh interface ip set address {name} static {first} {first_mask}{gateway}"]
    lines += [f"netsh interface ip add address {name} {address} {mask}" for address, mask in more]
    lines += [f"netsh interface ip add address {name} gateway={gw} gwmetric=1" for gw in ip.gateways[1:]]
    if ip.dns:
        lines.append(f"netsh interface ip set dns {name} static {ip.dns[0]}")
        lines += [
            f"netsh interface ip add dns {name} {server} index={i}" for i, server in enumerate(ip.dns[1:], 2)
        ]
    return lines
