"""NICs: every ``ethernetN`` with its MAC, a model the guest can drive, and where it plugs in."""

from __future__ import annotations

from vm2kvmd.core.hardware.model import Nic, Note
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


def plan_nics(
    nics: tuple[Nic, ...], opts: PlanOptions, caps: GuestCaps, notes: list[Note]
) -> tuple[PlannedNic, ...]:
    bridges = dict(opts.bridges)
    networks = dict(opts.networks)
    planned: list[PlannedNic] = []
    for nic in sorted(nics, key=lambda n: n.index):
        key = f"ethernet{nic.index}"
        source = nic.source_network
        if source in bridges:
            kind, target = "bridge", bridges[source]
        elif source in networks:
            kind, target = "network", networks[source]
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
        if mac is None:
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
