"""remove_vmware_tools on phony guests, in one appliance (slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.guests.phony import centos6, debian11, rhel8, sles12, stub_calls
from tests.convert.steps_support import Appliance, context, guest, launch, text
from vm2kvmd.convert.linux.tools import remove_vmware_tools
from vm2kvmd.errors import ErrorCode, Vm2kvmError

# A cold phony image build plus the launch can exceed the default 300 s on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCENARIOS = {
    "debian11": debian11,
    "debian11-broken": debian11,
    "rhel8": rhel8,
    "sles12": sles12,
    "centos6": centos6,
}


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    pytest.importorskip("guestfs")
    yield from launch(SCENARIOS, tmp_path_factory.mktemp("tools"))


def test_debian11_dpkg_purge_and_leftovers(appliance: Appliance, tmp_path: Path) -> None:
    g, disk = appliance.g, appliance.disk("debian11")
    g.umount_all()
    g.mount(f"{disk}1", "/")
    # What an admin's hand-made setup often adds: a modules-load entry, /etc/modules lines, a hook.
    g.write("/etc/modules", "# /etc/modules\nloop\nvmw_balloon\nvmhgfs\n")
    g.mkdir_p("/etc/modules-load.d")
    g.write("/etc/modules-load.d/open-vm-tools.conf", "vmw_vsock_vmci_transport\n")
    g.mkdir_p("/etc/initramfs-tools/hooks")
    g.write("/etc/initramfs-tools/hooks/vmware-tools-hook", "#!/bin/sh\n")
    g.mkdir_p("/etc/vmware-tools")
    g.write("/etc/vmware-tools/tools.conf", "[logging]\n")
    info = guest(f"{disk}1", "debian", package_format="deb", vmware_tools=("open-vm-tools",))
    ctx = context(g, tmp_path, info, [("/", f"{disk}1")])

    remove_vmware_tools(ctx)

    assert ["dpkg", "--purge", "--force-depends", "open-vm-tools"] in stub_calls(g)
    assert not g.exists("/usr/sbin/policy-rc.d")  # temporary, gone again
    wants = "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service"
    assert not g.is_symlink(wants)
    assert not g.exists("/etc/modules-load.d/open-vm-tools.conf")
    assert not g.exists("/etc/initramfs-tools/hooks/vmware-tools-hook")
    assert not g.exists("/etc/vmware-tools")
    assert text(g, "/etc/modules") == "# /etc/modules\nloop\n# vm2kvm: vmw_balloon\n# vm2kvm: vmhgfs\n"
    summaries = [c.summary for c in ctx.changes]
    assert summaries[0] == "removed package open-vm-tools (dpkg --purge)"
    assert f"removed {wants}" in summaries
    assert "/etc/modules: commented out vmw_balloon, vmhgfs" in summaries
    assert all(c.area == "vmware-tools" for c in ctx.changes)


def test_debian11_keeps_an_existing_policy_rc_d_and_fails_with_dpkg_words(
    appliance: Appliance, tmp_path: Path
) -> None:
    g, disk = appliance.g, appliance.disk("debian11-broken")
    g.umount_all()
    g.mount(f"{disk}1", "/")
    g.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 0\n")
    g.write(
        "/usr/bin/dpkg",
        "#!/bin/sh\necho 'dpkg: error: dpkg frontend lock was locked by another process'\nexit 2\n",
    )
    info = guest(f"{disk}1", "debian", package_format="deb", vmware_tools=("open-vm-tools",))
    ctx = context(g, tmp_path, info, [("/", f"{disk}1")])

    with pytest.raises(Vm2kvmError) as raised:
        remove_vmware_tools(ctx)

    assert raised.value.code == ErrorCode.CONVERSION_FAILED
    assert "frontend lock was locked" in raised.value.message
    assert "dpkg --purge" in raised.value.message
    assert text(g, "/usr/sbin/policy-rc.d") == "#!/bin/sh\nexit 0\n"  # the admin's one stays


def test_rhel8_rpm_erase(appliance: Appliance, tmp_path: Path) -> None:
    g, disk = appliance.g, appliance.disk("rhel8")
    g.umount_all()
    g.mount("/dev/rhel/root", "/")
    g.mount(f"{disk}1", "/boot")
    g.write("/var/lib/rpm/__db.001", "stale")
    info = guest("/dev/rhel/root", "rhel", package_format="rpm", vmware_tools=("open-vm-tools",))
    ctx = context(g, tmp_path, info, [("/", "/dev/rhel/root"), ("/boot", f"{disk}1")])

    remove_vmware_tools(ctx)

    assert ["rpm", "-e", "--nodeps", "open-vm-tools"] in stub_calls(g)
    assert not g.exists("/var/lib/rpm/__db.001")
    assert not g.is_symlink("/etc/systemd/system/multi-user.target.wants/vmtoolsd.service")
    assert [c.summary for c in ctx.changes] == [
        "removed package open-vm-tools (rpm -e)",
        "removed /etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
    ]


def test_sles12_two_packages(appliance: Appliance, tmp_path: Path) -> None:
    g, disk = appliance.g, appliance.disk("sles12")
    info = guest(f"{disk}2", "sles", package_format="rpm", vmware_tools=("open-vm-tools", "libvmtools0"))
    ctx = context(g, tmp_path, info, [("/", f"{disk}2")])
    remove_vmware_tools(ctx)
    assert ["rpm", "-e", "--nodeps", "open-vm-tools", "libvmtools0"] in stub_calls(g)


def test_centos6_tarball_install(appliance: Appliance, tmp_path: Path) -> None:
    g, disk = appliance.g, appliance.disk("centos6")
    g.umount_all()
    g.mount(f"{disk}2", "/")
    # The installer's database lists a binary, its directory and a file it replaced (kept aside).
    g.mkdir_p("/usr/lib/vmware-tools/bin64")
    g.write("/usr/lib/vmware-tools/bin64/vmtoolsd", "")
    g.write("/etc/vmware-tools/locations", text(g, "/etc/vmware-tools/locations") + (
        "directory /usr/lib/vmware-tools\ndirectory /usr/lib/vmware-tools/bin64\n"
        "file /usr/lib/vmware-tools/bin64/vmtoolsd\nfile /etc/issue 1361458352\n"
    ))  # fmt: skip
    g.write("/etc/issue", "VMware Tools banner\n")
    g.write("/etc/issue.BeforeVMwareToolsInstall", "CentOS release 6.10 (Final)\n")
    info = guest(f"{disk}2", "centos", package_format="rpm", vmware_tools=("tarball",))
    ctx = context(g, tmp_path, info, [("/", f"{disk}2"), ("/boot", f"{disk}1")])

    remove_vmware_tools(ctx)

    # The stub uninstaller (perl is there) ran, left its database: the rest is done from it.
    assert ["vmware-uninstall-tools.pl"] in stub_calls(g)
    assert not g.exists("/usr/lib/vmware-tools")
    assert text(g, "/etc/issue") == "CentOS release 6.10 (Final)\n"
    assert not g.exists("/etc/init.d/vmware-tools")
    assert not g.is_symlink("/etc/rc3.d/S03vmware-tools")
    assert not g.exists("/etc/vmware-tools")
    summaries = [c.summary for c in ctx.changes]
    assert summaries[0] == "ran /usr/bin/vmware-uninstall-tools.pl (VMware Tools tarball install)"
    assert "restored /etc/issue from /etc/issue.BeforeVMwareToolsInstall" in summaries
    assert "removed /etc/rc3.d/S03vmware-tools" in summaries
    assert "removed /etc/vmware-tools" in summaries
