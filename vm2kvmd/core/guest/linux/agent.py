"""Installing qemu-guest-agent at the converted guest's first boot: the script and unit texts (pure).

It cannot be installed in the appliance: that has no network and the guest's
package manager wants its repositories.  So a first-boot job installs it
with the guest's own package manager, enables and starts it, and removes
itself; when the install fails (no network yet) it stays and retries at the
next boot.
"""

from __future__ import annotations

from dataclasses import dataclass

SCRIPT = "/usr/local/sbin/vm2kvm-install-qemu-guest-agent"
UNIT_NAME = "vm2kvm-install-qemu-guest-agent.service"
UNIT = f"/etc/systemd/system/{UNIT_NAME}"
WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"
LOG = "/var/log/vm2kvm-install-qemu-guest-agent.log"

_INSTALL = {
    "apt": "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-guest-agent",
    "dnf": "dnf -y install qemu-guest-agent",
    "yum": "yum -y install qemu-guest-agent",
    "zypper": "zypper -n in qemu-guest-agent",
}


def install_command(package_manager: str) -> str | None:
    """The guest's install command, None for a package manager we do not know."""
    return _INSTALL.get(package_manager)


@dataclass(frozen=True)
class FirstBoot:
    script: str
    unit: str | None  # None: not systemd, the script is started from rc.local


def first_boot(package_manager: str, systemd: bool, rc_local: str | None = None) -> FirstBoot | None:
    """The first-boot script (and unit for systemd guests); None when we cannot install."""
    install = install_command(package_manager)
    if install is None:
        return None
    if systemd:
        cleanup = f"systemctl disable {UNIT_NAME}\nrm -f {UNIT} {SCRIPT}\nsystemctl daemon-reload\n"
        enable = "systemctl enable qemu-guest-agent\nsystemctl start qemu-guest-agent\n"
    else:
        # RHEL 6 calls the service qemu-ga; Debian's and SUSE's SysV scripts qemu-guest-agent.
        cleanup = f"sed -i '\\#{SCRIPT}#d' {rc_local or '/etc/rc.local'}\nrm -f {SCRIPT}\n"
        enable = (
            "for svc in qemu-ga qemu-guest-agent; do\n"
            '  [ -x "/etc/init.d/$svc" ] || continue\n'
            '  if command -v chkconfig >/dev/null; then chkconfig "$svc" on;\n'
            '  elif command -v update-rc.d >/dev/null; then update-rc.d "$svc" defaults; fi\n'
            '  service "$svc" start\n'
            "done\n"
        )
    script = (
        "#!/bin/sh\n"
        "# vm2kvm: install qemu-guest-agent once, at the first boot on KVM, then remove this job.\n"
        f"exec >>{LOG} 2>&1\n"
        "date\n"
        "tries=0\n"
        f"until {install}; do\n"
        "  tries=$((tries + 1))\n"
        '  if [ "$tries" -ge 5 ]; then echo "install failed; retrying at next boot"; exit 1; fi\n'
        "  sleep 20\n"
        "done\n"
        f"{enable}"
        f"{cleanup}"
    )
    unit = None
    if systemd:
        unit = (
            "[Unit]\n"
            "Description=vm2kvm: install qemu-guest-agent (first boot after migration)\n"
            "Wants=network-online.target\n"
            "After=network-online.target\n"
            f"ConditionPathExists={SCRIPT}\n"
            "\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"ExecStart={SCRIPT}\n"
            "TimeoutStartSec=15min\n"
            "\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        )
    return FirstBoot(script, unit)


def add_to_rc_local(text: str | None) -> str:
    """rc.local that starts the script in the background (before a final ``exit 0``)."""
    line = f"{SCRIPT} &\n"
    if text is None or not text.strip():
        return "#!/bin/sh\n" + line + "exit 0\n"
    if SCRIPT in text:
        return text
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for i in range(len(lines) - 1, -1, -1):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped == "exit 0":
            return "".join([*lines[:i], line, *lines[i:]])
        break
    return "".join([*lines, line])
