"""NICs: every ``ethernetN`` with its MAC, a model the guest can drive, and where it plugs in."""

from __future__ import annotations

import hashlib

from vm2kvmd.core.hardware.model import ZERO_MAC, Nic, Note
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.plan import PlannedNic, PlanOptions

# Models QEMU emulates that a VMware guest already has drivers for: VMware's
# own e1000/e1000e are the same Intel chips, so the guest's driver keeps working
# (and keeps its interface name) even before any conversion.
_SAME_CHIP = frozenset({"e1000", "e1000e"})


def nic_model(source_model: str, caps: GuestCaps) -> str:
    """The libvirt model for a NIC whose VMware model is ``source_model``."""
    if caps.nic_model == "virtio":
        return "virtio"  # a converted guest: virtio drivers are installed
    if source_model in _SAME_CHIP:
        return source_model
    # vlance, vmxnet, vmxnet2, vmxnet3 have no QEMU model: use what caps says
    # the guest can drive (e1000 for an unconverted guest).
    return caps.nic_model


def _valid_mac(mac: str) -> bool:
    # libvirt rejects multicast MACs ("expected unicast mac address").
    try:
        return len(mac.split(":")) == 6 and int(mac.split(":")[0], 16) & 1 == 0
    except ValueError:
        return False


# QEMU's OUI, which libvirt uses for the MACs it generates; locally administered (0x52 has bit 1 set).
FRESH_MAC_PREFIX = "52:54:00"


def fresh_mac(identity: str, index: int, taken: set[str]) -> str:
    """A MAC for NIC ``index`` of the VM ``identity`` (its UUIDs), the same at every planning.

    Derived, not random, so that Inspect shows the MAC Migrate gives and the guest
    conversion can pin the NIC's name to it; ``taken`` (the VM's other MACs) is skipped.
    """
    for attempt in range(256):
        digest = hashlib.sha256(f"{identity}/{index}/{attempt}".encode()).digest()
        mac = FRESH_MAC_PREFIX + "".join(f":{b:02x}" for b in digest[:3])
        if mac not in taken:
            return mac
    raise AssertionError("256 MACs taken by one VM")  # at most 10 NICs


def _zero_mac_note(mac: str) -> str:
    # The source never recorded the MAC NSX gave the NIC, so nothing in it can be kept; the guest's
    # interface name is kept by PCI slot like any NIC's (core.guest.linux.network), pinned to ``mac``.
    return (
        f"the source has no MAC address (a static all-zero one: NSX assigns it at power-on); "
        f"the guest gets {mac}, the same at every migration of this VM. Guest settings keyed on "
        f"interface names are unaffected; DHCP reservations, firewall rules or guest files that "
        f"name the MAC NSX assigned (which the source does not record) need the new one"
    )


def plan_nics(
    nics: tuple[Nic, ...], opts: PlanOptions, caps: GuestCaps, notes: list[Note], identity: str
) -> tuple[PlannedNic, ...]:
    """``identity``: what tells this VM apart from others (its UUIDs), for fresh MACs."""
    bridges = dict(opts.bridges)
    networks = dict(opts.networks)
    planned: list[PlannedNic] = []
    taken = {n.mac for n in nics if n.mac}
    for nic in sorted(nics, key=lambda n: n.index):
        key = f"ethernet{nic.index}"
        source = nic.source_network
        if source in bridges:
            kind, target = "bridge", bridges[source]
        elif source in networks:
            kind, target = "network", networks[source]
        elif opts.other_networks:
            kind, target = opts.other_networks  # virt-v2v's --bridge BR: the user chose it for all
        else:
            kind, target = "network", opts.default_network
            notes.append(
                Note(
                    f"VMware network {source!r} has no --network/--bridge mapping; "
                    f"attached to libvirt network {target!r}",
                    key,
                )
            )
        mac = nic.mac
        if mac == ZERO_MAC:
            mac = fresh_mac(identity, nic.index, taken)
            taken.add(mac)
            notes.append(Note(_zero_mac_note(mac), key))
        elif mac is None:
            notes.append(Note("no MAC address in the source; libvirt will generate one", key))
        elif not _valid_mac(mac):
            notes.append(Note(f"MAC address {mac} is not a unicast address; libvirt will generate one", key))
            mac = None
        model = nic_model(nic.model, caps)
        if model != nic.model:
            notes.append(Note(f"NIC model {nic.model} becomes {model}", key))
        if not nic.start_connected:
            notes.append(Note("not connected at power-on: link state down", key))
        planned.append(
            PlannedNic(
                source=nic, mac=mac, model=model, kind=kind, target=target, link_up=nic.start_connected
            )
        )
    return tuple(planned)
