"""NIC planning: an all-zero static MAC (NSX assigns the MAC at power-on) gets a fresh one."""

from __future__ import annotations

import re
from dataclasses import replace

from tests.core.ovf.test_ovf import SCSI, disk_item, envelope
from tests.core.ovf.test_ovf import build as build_ovf
from tests.core.planning.test_mapping import OPTS, make_nic, make_vm, messages, plan
from vm2kvmd.core.guest.linux.network import configured_names, link_file, plan_pins
from vm2kvmd.core.hardware.model import ZERO_MAC, SourceVM
from vm2kvmd.core.planning.network import FRESH_MAC_PREFIX, fresh_mac

KEPT = "00:50:56:aa:bb:01"
NETPLAN = """\
network:
  version: 2
  ethernets:
    ens192:
      dhcp4: true
"""


def nsx_vm(**changes: object) -> SourceVM:
    nsx = replace(make_nic(0, ZERO_MAC, "nsx-segment-web"), pci_slot=192)
    return make_vm(nics=(nsx, make_nic(1, KEPT, "VM Network")), **changes)


def test_zero_mac_gets_a_fresh_locally_administered_mac_with_a_note() -> None:
    p = plan(nsx_vm())
    fresh, kept = (n.mac for n in p.nics)
    assert fresh is not None and re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", fresh)
    assert int(fresh[:2], 16) & 0b11 == 0b10  # locally administered, unicast
    assert kept == KEPT
    (note,) = [m for m in messages(p, "ethernet0") if "MAC" in m]
    assert "no MAC address" in note and "NSX assigns it at power-on" in note
    assert fresh in note and "DHCP reservations" in note
    assert not [m for m in messages(p, "ethernet1") if "MAC" in m]


def test_fresh_mac_is_the_same_at_every_planning_and_differs_per_vm_and_nic() -> None:
    first, again = plan(nsx_vm()), plan(nsx_vm())
    assert first.nics[0].mac == again.nics[0].mac
    # A UUID taken on the host gives the domain a random UUID; the MAC follows the source's.
    taken = plan(nsx_vm(), replace(OPTS, uuid_taken=True, new_uuid=None))
    assert taken.uuid != first.uuid and taken.nics[0].mac == first.nics[0].mac
    other_vm = plan(nsx_vm(uuid_bios="564d0000-0000-4000-8000-000000000002"))
    assert other_vm.nics[0].mac != first.nics[0].mac
    two = plan(make_vm(nics=(make_nic(0, ZERO_MAC), make_nic(1, ZERO_MAC))))
    assert len({n.mac for n in two.nics}) == 2


def test_a_vm_without_uuids_uses_its_path() -> None:
    bare = nsx_vm(uuid_bios=None, vc_uuid=None)
    assert plan(bare).nics[0].mac == plan(bare).nics[0].mac
    moved = replace(bare, source_path="/elsewhere/web01.vmx")
    assert plan(moved).nics[0].mac != plan(bare).nics[0].mac


def test_fresh_mac_skips_the_vms_other_macs() -> None:
    first = fresh_mac("vm", 0, set())
    assert first.startswith(FRESH_MAC_PREFIX + ":")
    second = fresh_mac("vm", 0, {first})
    assert second != first and second.startswith(FRESH_MAC_PREFIX + ":")


def test_guest_nic_name_is_pinned_to_the_fresh_mac() -> None:
    p = plan(nsx_vm())
    names = configured_names({"/etc/netplan/50-cloud-init.yaml": NETPLAN})
    pins = plan_pins(names, p.nics, systemd=True)
    (pin,) = pins.pins
    assert (pin.nic, pin.name, pin.mac) == ("ethernet0", "ens192", p.nics[0].mac)
    assert f"MACAddress={p.nics[0].mac}\n" in link_file(pin)
    assert ZERO_MAC not in link_file(pin)


def test_ovf_with_an_all_zero_mac_plans_a_fresh_one() -> None:
    nic = (
        "<Item><rasd:Address>00:00:00:00:00:00</rasd:Address><rasd:Connection>nsx-web</rasd:Connection>"
        "<rasd:InstanceID>20</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>"
        "<rasd:ResourceType>10</rasd:ResourceType></Item>"
    )
    vm = build_ovf(envelope(SCSI + disk_item() + nic))
    (planned,) = plan(vm).nics
    assert planned.mac is not None and planned.mac.startswith(FRESH_MAC_PREFIX + ":")
    assert any("NSX assigns it at power-on" in m for m in messages(plan(vm), "ethernet0"))


def test_every_other_network_goes_where_the_user_said_and_pairs_win() -> None:
    vm = make_vm(nics=(make_nic(0, KEPT, "VM Network"), make_nic(1, "00:50:56:aa:bb:02", "DMZ")))
    opts = replace(OPTS, networks=(("DMZ", "dmz"),), other_networks=("bridge", "br0"))
    p = plan(vm, opts)
    assert [(n.kind, n.target) for n in p.nics] == [("bridge", "br0"), ("network", "dmz")]
    assert not [m for m in messages(p) if "mapping" in m]
    unmapped = plan(vm, replace(OPTS, networks=(("DMZ", "dmz"),)))
    assert (unmapped.nics[0].kind, unmapped.nics[0].target) == ("network", "default")
    assert any("has no --network/--bridge mapping" in m for m in messages(unmapped, "ethernet0"))
