"""pin_nic_names in the appliance, on phony guests: the pin files written and the changes recorded.

One appliance for the module: every guest is an overlay disk of the same handle.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed.guests.phony import PhonyGuest, build_images, centos6, debian11, rhel8, ubuntu2004
from tests.core.vmware.vmx_support import BASE, build
from vm2kvmd.convert.context import GuestContext
from vm2kvmd.convert.linux.network import pin_nic_names
from vm2kvmd.core.guest.info import DeviceMap, GuestInfo
from vm2kvmd.core.hardware.model import SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import PlanOptions

pytestmark = pytest.mark.slow

CAPS = GuestCaps(
    machine="q35",
    disk_bus="virtio",
    cdrom_bus="sata",
    nic_model="virtio",
    video="vga",
    virtio_rng=False,
    balloon=False,
    guest_agent=False,
    reason="test",
)


def nics_vmx(*nics: tuple[str, int]) -> str:
    """VMX lines for NICs (mac, pciSlotNumber), ethernet0 first."""
    lines = []
    for i, (mac, slot) in enumerate(nics):
        lines += [
            f'ethernet{i}.present = "TRUE"',
            f'ethernet{i}.virtualDev = "vmxnet3"',
            f'ethernet{i}.addressType = "static"',
            f'ethernet{i}.address = "{mac}"',
            f'ethernet{i}.pciSlotNumber = "{slot}"',
        ]
    return BASE + "\n".join(lines) + "\n"


CENTOS6_ETH1 = "DEVICE=eth1\nHWADDR=00:0C:29:5A:6B:86\nTYPE=Ethernet\nONBOOT=yes\nBOOTPROTO=dhcp\n"
SUBIQUITY_NETPLAN = (
    "# This is the network config written by 'subiquity'\nnetwork:\n  ethernets:\n"
    "    ens160:\n      dhcp4: true\n    ens192:\n      addresses:\n      - 10.0.0.20/24\n  version: 2\n"
)


@dataclass(frozen=True)
class Case:
    """A base phony guest (cached images shared with the other tests), edited on its overlay."""

    spec: PhonyGuest
    init_system: str
    vmx: str
    write: tuple[tuple[str, str], ...] = ()  # (path, text) written on the overlay before converting
    remove: tuple[str, ...] = ()


CASES = {
    "debian11": Case(debian11(), "systemd", nics_vmx(("00:50:56:11:22:33", 33))),
    "ubuntu2004": Case(ubuntu2004(), "systemd", nics_vmx(("00:50:56:a1:b2:c3", 160))),
    # the installer's netplan (no MAC match), two NICs
    "ubuntu2004_net": Case(
        ubuntu2004(),
        "systemd",
        nics_vmx(("00:50:56:a1:b2:c3", 160), ("00:50:56:a1:b2:c4", 192)),
        write=(("/etc/netplan/00-installer-config.yaml", SUBIQUITY_NETPLAN),),
        remove=("/etc/netplan/50-cloud-init.yaml",),
    ),
    "rhel8": Case(rhel8(), "systemd", nics_vmx(("00:50:56:8a:3c:01", 192))),
    # eth0 in 70-persistent-net.rules, eth1 configured by HWADDR only
    "centos6": Case(
        centos6(),
        "upstart",
        nics_vmx(("00:0c:29:5a:6b:7c", 33), ("00:0c:29:5a:6b:86", 34)),
        write=(("/etc/sysconfig/network-scripts/ifcfg-eth1", CENTOS6_ETH1),),
    ),
}


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    """One launched handle with an overlay of every case's image; name -> root device."""
    import guestfs

    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    specs = {c.spec.name: c.spec for c in CASES.values()}
    images = build_images(list(specs.values()))
    tmp = tmp_path_factory.mktemp("net-overlays")
    g = guestfs.GuestFS(python_return_dict=True)
    names = list(CASES)
    for name in names:
        overlay = tmp / f"{name}.qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                str(images[CASES[name].spec.name]),
                str(overlay),
            ],
            check=True,
        )
        g.add_drive_opts(str(overlay), format="qcow2")
    g.launch()
    roots: dict[str, str] = {}
    for root in g.inspect_os():
        device = g.canonical_device_name(root)
        if device.startswith("/dev/sd"):
            roots[names[ord(device[7]) - ord("a")]] = root
        else:
            roots["rhel8"] = root  # the only guest on LVM
    try:
        yield g, roots
    finally:
        g.close()


def convert(appliance: tuple[Any, dict[str, str]], name: str, tmp_path: Path) -> tuple[GuestContext, Any]:
    g, roots = appliance
    case = CASES[name]
    g.umount_all()
    root = roots[name]
    for mountpoint, device in sorted(g.inspect_get_mountpoints(root).items(), key=lambda m: len(m[0])):
        g.mount(device, mountpoint)
    for path in case.remove:
        g.rm_f(path)
    for path, text in case.write:
        g.write(path, text.encode())
    vm: SourceVM = build(tmp_path, case.vmx)
    opts = PlanOptions(target_dir=str(tmp_path))
    guest = GuestInfo(root, "linux", name, name, 0, 0, "x86_64", init_system=case.init_system)
    ctx = GuestContext(
        g=g,
        guest=guest,
        vm=vm,
        caps=CAPS,
        replan=lambda caps: plan_domain(vm, opts, caps),
        device_map=lambda _vm, _plan: DeviceMap(),
        log=lambda _msg: None,
    )
    pin_nic_names(ctx)
    return ctx, g


def summaries(ctx: GuestContext) -> list[str]:
    return [c.summary for c in ctx.changes]


def test_debian11_ifupdown_ens33(appliance: tuple[Any, dict[str, str]], tmp_path: Path) -> None:
    ctx, g = convert(appliance, "debian11", tmp_path)
    path = "/etc/systemd/network/10-vm2kvm-ens33.link"
    assert summaries(ctx) == [f"ethernet0 00:50:56:11:22:33 keeps its name ens33 ({path})"]
    text = g.read_file(path).decode()
    assert "MACAddress=00:50:56:11:22:33\n" in text and "Name=ens33\n" in text
    assert not g.exists("/etc/udev/rules.d/70-vm2kvm-net.rules")


def test_ubuntu2004_netplan_set_name_is_already_a_pin(
    appliance: tuple[Any, dict[str, str]], tmp_path: Path
) -> None:
    ctx, g = convert(appliance, "ubuntu2004", tmp_path)
    assert ctx.changes == []
    assert g.glob_expand("/etc/systemd/network/10-vm2kvm-*") == []
    assert [n.message for n in ctx.notes] == [
        "ethernet0 00:50:56:a1:b2:c3 keeps its name ens160: already pinned by netplan set-name"
    ]


def test_ubuntu2004_installer_netplan_two_nics(appliance: tuple[Any, dict[str, str]], tmp_path: Path) -> None:
    ctx, g = convert(appliance, "ubuntu2004_net", tmp_path)
    assert sorted(g.glob_expand("/etc/systemd/network/10-vm2kvm-*")) == [
        "/etc/systemd/network/10-vm2kvm-ens160.link",
        "/etc/systemd/network/10-vm2kvm-ens192.link",
    ]
    assert (
        "MACAddress=00:50:56:a1:b2:c4\n" in g.read_file("/etc/systemd/network/10-vm2kvm-ens192.link").decode()
    )
    assert len(ctx.changes) == 2


def test_rhel8_ifcfg_hwaddr(appliance: tuple[Any, dict[str, str]], tmp_path: Path) -> None:
    ctx, g = convert(appliance, "rhel8", tmp_path)
    path = "/etc/systemd/network/10-vm2kvm-ens192.link"
    assert summaries(ctx) == [f"ethernet0 00:50:56:8a:3c:01 keeps its name ens192 ({path})"]
    assert "Name=ens192\n" in g.read_file(path).decode()


def test_centos6_udev_rule_beside_persistent_rules(
    appliance: tuple[Any, dict[str, str]], tmp_path: Path
) -> None:
    ctx, g = convert(appliance, "centos6", tmp_path)
    path = "/etc/udev/rules.d/70-vm2kvm-net.rules"
    # eth0 is pinned by 70-persistent-net.rules already; eth1 is not.
    assert summaries(ctx) == [f"ethernet1 00:0c:29:5a:6b:86 keeps its name eth1 ({path})"]
    rules = [line for line in g.read_file(path).decode().splitlines() if not line.startswith("#")]
    assert rules == [
        'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="00:0c:29:5a:6b:86", '
        'ATTR{type}=="1", NAME="eth1"'
    ]
    notes = [n.message for n in ctx.notes]
    assert any("eth0: already pinned by /etc/udev/rules.d/70-persistent-net.rules" in n for n in notes)
    assert "/etc/udev/rules.d/70-persistent-net.rules kept" in notes[-1]
    assert g.exists("/etc/udev/rules.d/70-persistent-net.rules")
    assert not g.glob_expand("/etc/systemd/network/*")
