"""The first-boot qemu-guest-agent job."""

from __future__ import annotations

import subprocess

import pytest

from vm2kvmd.core.guest.linux import agent as la


@pytest.mark.parametrize(
    ("manager", "command"),
    [
        ("apt", "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-guest-agent"),
        ("dnf", "dnf -y install qemu-guest-agent"),
        ("yum", "yum -y install qemu-guest-agent"),
        ("zypper", "zypper -n in qemu-guest-agent"),
    ],
)
def test_systemd_job(manager: str, command: str) -> None:
    job = la.first_boot(manager, systemd=True)
    assert job is not None and job.unit is not None
    assert f"until {command}; do" in job.script
    assert "systemctl enable qemu-guest-agent" in job.script
    assert f"systemctl disable {la.UNIT_NAME}" in job.script
    assert f"ExecStart={la.SCRIPT}" in job.unit and "After=network-online.target" in job.unit
    subprocess.run(["sh", "-n", "-c", job.script], check=True)  # valid shell


def test_sysv_job_removes_its_rc_local_line() -> None:
    job = la.first_boot("yum", systemd=False, rc_local="/etc/rc.d/rc.local")
    assert job is not None and job.unit is None
    assert f"sed -i '\\#{la.SCRIPT}#d' /etc/rc.d/rc.local" in job.script
    assert "qemu-ga qemu-guest-agent" in job.script
    subprocess.run(["sh", "-n", "-c", job.script], check=True)


def test_unknown_package_manager() -> None:
    assert la.first_boot("unknown", systemd=True) is None


def test_rc_local_insertion() -> None:
    debian = "#!/bin/sh -e\n#\n# rc.local\n#\n# By default this script does nothing.\n\nexit 0\n"
    assert la.add_to_rc_local(debian) == (
        f"#!/bin/sh -e\n#\n# rc.local\n#\n# By default this script does nothing.\n\n{la.SCRIPT} &\nexit 0\n"
    )
    rhel = "#!/bin/sh\n\ntouch /var/lock/subsys/local"
    assert la.add_to_rc_local(rhel) == f"#!/bin/sh\n\ntouch /var/lock/subsys/local\n{la.SCRIPT} &\n"
    assert la.add_to_rc_local(None) == f"#!/bin/sh\n{la.SCRIPT} &\nexit 0\n"
    once = la.add_to_rc_local(rhel)
    assert la.add_to_rc_local(once) == once
