"""fix_xorg, fix_modprobe, relabel and install_guest_agent on phony guests, in one appliance (slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.guests.phony import centos6, debian11, rhel8
from tests.convert.steps_support import Appliance, context, guest, launch, text
from vm2kvmd.convert.context import ConversionOptions, GuestContext
from vm2kvmd.convert.linux.agent import install_guest_agent
from vm2kvmd.convert.linux.selinux import relabel
from vm2kvmd.convert.linux.xorg import fix_modprobe, fix_xorg
from vm2kvmd.core.guest.linux import agent as la

# A cold phony image build plus the launch can exceed the default 300 s on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCENARIOS = {"debian11": debian11, "rhel8": rhel8, "centos6": centos6}
AGENT = ConversionOptions(install_guest_agent=True)


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    pytest.importorskip("guestfs")
    yield from launch(SCENARIOS, tmp_path_factory.mktemp("misc"))


def _rhel8(appliance: Appliance, tmp_path: Path, options: ConversionOptions | None = None) -> GuestContext:
    disk = appliance.disk("rhel8")
    info = guest("/dev/rhel/root", "rhel", selinux="enforcing", init_system="systemd", package_manager="dnf")
    mounts = [("/", "/dev/rhel/root"), ("/boot", f"{disk}1")]
    return context(appliance.g, tmp_path, info, mounts, options=options)


def _centos6(appliance: Appliance, tmp_path: Path, options: ConversionOptions | None = None) -> GuestContext:
    disk = appliance.disk("centos6")
    info = guest(f"{disk}2", "centos", selinux="permissive", init_system="upstart", package_manager="yum")
    return context(appliance.g, tmp_path, info, [("/", f"{disk}2"), ("/boot", f"{disk}1")], options=options)


def test_rhel8_xorg(appliance: Appliance, tmp_path: Path) -> None:
    ctx = _rhel8(appliance, tmp_path)
    fix_xorg(ctx)
    conf = text(ctx.g, "/etc/X11/xorg.conf")
    assert '\tDriver "modesetting"\n' in conf and "vmmouse" not in conf.replace("(vmmouse driver", "")
    assert '# vm2kvm: InputDevice "Mouse0" "CorePointer"' in conf
    assert ctx.g.exists("/etc/X11/xorg.conf.vm2kvm-orig")
    assert [c.summary for c in ctx.changes] == [
        '/etc/X11/xorg.conf: removed InputDevice "Mouse0" (vmmouse); '
        'Device "Videocard0": driver vmware -> modesetting'
    ]
    fix_xorg(ctx)  # idempotent
    assert len(ctx.changes) == 1


def test_centos6_modprobe(appliance: Appliance, tmp_path: Path) -> None:
    ctx = _centos6(appliance, tmp_path)
    ctx.g.write("/etc/modprobe.conf", "alias eth0 vmxnet3\nalias scsi_hostadapter mptspi\n")
    fix_modprobe(ctx)
    assert text(ctx.g, "/etc/modprobe.d/vmware-tools.conf") == (
        "# Added by VMware Tools\n# vm2kvm: options vmw_pvscsi cmd_per_lun=254 ring_pages=32\n"
    )
    assert text(ctx.g, "/etc/modprobe.conf") == (
        "# vm2kvm: alias eth0 vmxnet3\nalias eth0 virtio_net\n"
        "# vm2kvm: alias scsi_hostadapter mptspi\nalias scsi_hostadapter virtio_blk\n"
    )
    assert {c.path for c in ctx.changes} == {"/etc/modprobe.conf", "/etc/modprobe.d/vmware-tools.conf"}


def test_selinux_relabel(appliance: Appliance, tmp_path: Path) -> None:
    ctx = _rhel8(appliance, tmp_path)
    relabel(ctx)
    assert ctx.g.is_file("/.autorelabel")
    assert ctx.changes[0].summary == (
        "created /.autorelabel: SELinux (enforcing) relabels the file systems at first boot"
    )
    deb = appliance.disk("debian11")
    ctx = context(appliance.g, tmp_path, guest(f"{deb}1", "debian"), [("/", f"{deb}1")])
    relabel(ctx)  # selinux absent
    assert not ctx.g.exists("/.autorelabel") and not ctx.changes


def test_agent_systemd_first_boot_unit(appliance: Appliance, tmp_path: Path) -> None:
    ctx = _rhel8(appliance, tmp_path, AGENT)
    install_guest_agent(ctx)
    g = ctx.g
    assert "dnf -y install qemu-guest-agent" in text(g, la.SCRIPT)
    # statns is no converter call (not in GuestFS), so the raw handle answers it
    assert appliance.g.statns(la.SCRIPT)["st_mode"] & 0o777 == 0o755
    assert f"ExecStart={la.SCRIPT}" in text(g, la.UNIT)
    assert g.readlink(la.WANTS_LINK) == la.UNIT
    assert ctx.changes[0].summary == (
        f"qemu-guest-agent will be installed at first boot (dnf, from systemd unit {la.UNIT_NAME})"
    )


def test_agent_rc_local_and_option_off(appliance: Appliance, tmp_path: Path) -> None:
    ctx = _centos6(appliance, tmp_path)
    install_guest_agent(ctx)  # not asked for
    assert not ctx.changes and not ctx.g.exists(la.SCRIPT)
    ctx = _centos6(appliance, tmp_path, AGENT)
    install_guest_agent(ctx)
    assert "yum -y install qemu-guest-agent" in text(ctx.g, la.SCRIPT)
    assert f"{la.SCRIPT} &\n" in text(ctx.g, "/etc/rc.local")
    assert (
        ctx.changes[0].summary == "qemu-guest-agent will be installed at first boot (yum, from /etc/rc.local)"
    )
