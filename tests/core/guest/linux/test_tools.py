"""VMware Tools removal decisions: package commands, the tarball database, /etc/modules."""

from __future__ import annotations

import subprocess

from vm2kvmd.core.guest.linux import tools as lt

# /etc/vmware-tools/locations of a VMware Tools 10.3 tarball install on CentOS 6 (abridged).
LOCATIONS = """\
answer BINDIR /usr/bin
file /usr/bin/vmware-uninstall-tools.pl
answer LIBDIR /usr/lib/vmware-tools
directory /usr/lib/vmware-tools
directory /usr/lib/vmware-tools/bin64
file /usr/lib/vmware-tools/bin64/vmtoolsd
file /etc/vmware-tools/tools.conf 1361458352
file /etc/vmware-tools/poweron-vm-default
file /usr/bin/vmware-toolbox-cmd
remove_file /usr/bin/vmware-toolbox-cmd
directory /etc/vmware-tools/plugins
remove_directory /etc/vmware-tools/plugins
file /lib/modules/2.6.32-754.el6.x86_64/misc/vmhgfs.ko
file relative/path
file /etc/../etc/shadow
answer INITSCRIPTSDIR /etc/init.d
file /etc/init.d/vmware-tools
"""


def test_parse_locations_replays_the_log() -> None:
    install = lt.parse_locations(LOCATIONS)
    assert install.files == (
        "/usr/bin/vmware-uninstall-tools.pl",
        "/usr/lib/vmware-tools/bin64/vmtoolsd",
        "/etc/vmware-tools/tools.conf",  # timestamp stripped
        "/etc/vmware-tools/poweron-vm-default",
        "/lib/modules/2.6.32-754.el6.x86_64/misc/vmhgfs.ko",
        "/etc/init.d/vmware-tools",
    )
    # deepest first, remove_directory honoured
    assert install.directories == ("/usr/lib/vmware-tools/bin64", "/usr/lib/vmware-tools")


def test_removal_command_deb_purges_with_noninteractive_frontend() -> None:
    cmd = lt.removal_command("deb", ("open-vm-tools", "open-vm-tools-desktop"))
    assert cmd is not None
    assert cmd.shell == (
        "DEBIAN_FRONTEND=noninteractive dpkg --purge --force-depends open-vm-tools open-vm-tools-desktop"
    )
    assert cmd.method == "dpkg --purge"


def test_removal_command_rpm_and_unknown() -> None:
    cmd = lt.removal_command("rpm", ("open-vm-tools", "vmware-tools-core"))
    assert cmd is not None and cmd.shell == "rpm -e --nodeps open-vm-tools vmware-tools-core"
    assert lt.removal_command("pacman", ("open-vm-tools",)) is None
    assert lt.removal_command("deb", ()) is None


def test_packages_of_drops_the_tarball_marker_and_duplicates() -> None:
    assert lt.packages_of(("open-vm-tools", "tarball", "open-vm-tools")) == ("open-vm-tools",)


def test_comment_vmware_modules_in_etc_modules() -> None:
    text = (
        "# /etc/modules: kernel modules to load at boot time.\n"
        "#\n"
        "loop\n"
        "vmw_balloon\n"
        "vmhgfs\n"
        "vmxnet\n"
        "lp\n"
        "# vmw_pvscsi\n"
    )
    new, removed = lt.comment_vmware_modules(text)
    assert removed == ["vmw_balloon", "vmhgfs", "vmxnet"]
    assert new == (
        "# /etc/modules: kernel modules to load at boot time.\n#\nloop\n"
        "# vm2kvm: vmw_balloon\n# vm2kvm: vmhgfs\n# vm2kvm: vmxnet\nlp\n# vmw_pvscsi\n"
    )


def test_units_in_picks_vmware_units_only() -> None:
    paths = [
        "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service",
        "/etc/systemd/system/multi-user.target.wants/ssh.service",
        "/etc/systemd/system/vmtoolsd.service.requires/vgauthd.service",
        "/etc/systemd/system/local-fs.target.wants/run-vmblock\\x2dfuse.mount",
    ]
    assert lt.units_in(paths) == [paths[0], paths[2], paths[3]]


def test_folded_keeps_stdout_in_the_error_and_the_exit_status() -> None:
    line = lt.folded("echo on stdout; echo on stderr >&2; exit 3")
    result = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=False)
    assert result.returncode == 3
    assert result.stderr == "on stdout\non stderr\n"
    ok = subprocess.run(["sh", "-c", lt.folded("echo fine")], capture_output=True, text=True, check=True)
    assert ok.stdout == "fine\n"
