"""Boot a migrated domain under TCG and read what its probe reports.

``boot_and_probe(conn, domain_name, work_dir)`` takes a domain a migration
defined, rewrites its definition for a test boot, starts it, waits for the
``VM2KVM-PROBE done`` line that ``vm2kvm-probe.service`` (see
``testbed/guests/debian12_files/``) writes on ttyS0, and always destroys the
domain at the end; the definition stays (rewritten) for the test to undefine.

The rewrite:

- the first serial port goes to ``work_dir/console.log`` (plus a ``<console>``
  on it), which is where the probe's lines are read from;
- every ``<interface>`` becomes ``type='user'`` with its ``<mac>``,
  ``<model>`` and PCI ``<address>``: QEMU's user-mode network answers DHCP
  (10.0.2.15) without host bridges or libvirt networks;
- ``<graphics>`` are removed: nobody looks, and a VNC/SPICE server only
  costs ports and time;
- QEMU runs as root (a static DAC label without relabelling), so images and
  the log in root-only temp directories are readable without chowning them.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

PREFIX = "VM2KVM-PROBE "
# What an interface keeps when it becomes type='user'; <source>, <target>,
# <virtualport> and the like only make sense for the original network type.
_KEPT_INTERFACE_CHILDREN = ("mac", "model", "driver", "address", "boot", "rom", "link", "mtu")
_PROBE_RE = re.compile(r"VM2KVM-PROBE (\S+)(?: (.*))?$")


@dataclass(frozen=True)
class ProbeResult:
    """What the guest's probe reported; ``console`` is the whole serial log."""

    state: str  # systemctl is-system-running: running, degraded, starting...
    multi_user: bool
    root_source: str  # /dev/sda1, /dev/vda1...
    root_fstype: str
    root_options: str
    root_disk: str  # the disk holding /: sda, vda
    root_driver: str  # the disk's own driver: sd, virtio_blk
    root_drivers: tuple[str, ...]  # from the disk up to the controller: ("sd", "ahci")
    interfaces: dict[str, tuple[str, list[str]]]  # name -> (mac, IPv4 addresses with prefix)
    interface_drivers: dict[str, str]  # name -> driver (e1000, virtio_net)
    tools_status: str  # dpkg's abbreviated status of open-vm-tools ("ii", "" when absent)
    vmtoolsd_present: bool
    tools_units: tuple[str, ...]  # loaded units named like VMware Tools, "NAME LOAD ACTIVE"
    failed_units: tuple[str, ...]
    console: str
    seconds: float  # from start to the probe's last line
    fstab_root: tuple[str, str] = ("", "")  # the / entry of /etc/fstab and the device it names ("missing")

    @property
    def tools_installed(self) -> bool:
        return self.tools_status.startswith("i")

    def tail(self, lines: int = 60) -> str:
        return console_tail(self.console, lines)


def console_tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def boot_and_probe(conn: Any, domain_name: str, work_dir: Path, timeout: float = 420) -> ProbeResult:
    """Start ``domain_name`` for a test, wait for its probe report, stop it (blocking).

    Raises AssertionError with the end of the console when no report arrives
    within ``timeout`` seconds or the guest stops before finishing it.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "console.log"
    log.unlink(missing_ok=True)
    dom = conn.lookupByName(domain_name)
    xml = boot_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), log)
    (work_dir / "domain.xml").write_text(xml)
    dom = conn.defineXML(xml)
    begin = time.monotonic()
    dom.create()
    try:
        outcome = _wait(dom, log, begin + timeout)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
    seconds = time.monotonic() - begin
    console = _read(log)
    if outcome != "done":
        reason = {
            "timeout": f"no probe report within {timeout:.0f} s",
            "stuck": "the initramfs did not find the root file system",
        }.get(outcome, "the guest stopped before the probe reported")
        raise AssertionError(f"{domain_name}: {reason} (console {log}); last lines:\n{console_tail(console)}")
    return parse_probe(console, seconds)


def boot_xml(xml: str, console_log: Path) -> str:
    """``xml`` rewritten for a test boot (see the module docstring)."""
    root = etree.fromstring(xml.encode())
    devices = root.find("devices")
    if devices is None:
        raise ValueError("domain XML without <devices>")
    for tag in ("serial", "console", "graphics"):
        for element in devices.findall(tag):
            devices.remove(element)
    for old in devices.findall("interface"):
        new = etree.Element("interface", type="user")
        # The PCI address stays: it decides the name udev gives the NIC in the guest.
        for tag in _KEPT_INTERFACE_CHILDREN:
            for child in old.findall(tag):
                new.append(child)
        new.tail = old.tail
        old.addprevious(new)
        devices.remove(old)
    serial = etree.SubElement(devices, "serial", type="file")
    etree.SubElement(serial, "source", path=str(console_log), append="off")
    etree.SubElement(serial, "target", port="0")
    console = etree.SubElement(devices, "console", type="file")
    etree.SubElement(console, "source", path=str(console_log), append="off")
    etree.SubElement(console, "target", type="serial", port="0")
    for label in root.findall("seclabel"):
        root.remove(label)
    seclabel = etree.SubElement(root, "seclabel", type="static", model="dac", relabel="no")
    etree.SubElement(seclabel, "label").text = "+0:+0"
    return etree.tostring(root, encoding="unicode")


def _read(log: Path) -> str:
    try:
        return log.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# The initramfs gave up on the root device: nothing more will come, no need to wait for the timeout.
_STUCK = ("Gave up waiting for root file system device", "(initramfs) ")


def _wait(dom: Any, log: Path, deadline: float) -> str:
    """``done``, ``stopped`` (shut off without a report), ``stuck`` (initramfs shell) or ``timeout``."""
    while True:
        text = _read(log)
        if f"{PREFIX}done" in text:
            return "done"
        if any(marker in text for marker in _STUCK):
            time.sleep(2)  # let the initramfs print why
            return "stuck"
        if not dom.isActive():
            # The probe powers off right after "done": read once more.
            return "done" if f"{PREFIX}done" in _read(log) else "stopped"
        if time.monotonic() > deadline:
            return "timeout"
        time.sleep(1)


def parse_probe(console: str, seconds: float = 0.0) -> ProbeResult:
    """The probe's report in a console log; raises ValueError when it is incomplete."""
    values: dict[str, str] = {}
    failed: list[str] = []
    tools_units: list[str] = []
    macs: dict[str, str] = {}
    drivers: dict[str, str] = {}
    addresses: dict[str, list[str]] = {}
    for raw_line in console.replace("\r", "").splitlines():
        # Kernel or getty output may precede the prefix on the same line.
        m = _PROBE_RE.search(raw_line.strip())
        if not m:
            continue
        key, rest = m.group(1), (m.group(2) or "").strip()
        if key == "failed-unit":
            failed.append(rest)
        elif key == "tools-unit":
            tools_units.append(rest)
        elif key == "link":
            name, mac, driver = ([*rest.split(), "", "", ""])[:3]
            macs[name] = mac
            drivers[name] = driver
            addresses.setdefault(name, [])
        elif key == "ipv4":
            name, _, address = rest.partition(" ")
            addresses.setdefault(name, []).append(address)
        else:
            values[key] = rest
    missing = [k for k in ("state", "multi-user", "root", "root-drivers", "done") if k not in values]
    if missing:
        raise ValueError(f"incomplete probe report, missing {missing}:\n{console_tail(console)}")
    root_source, root_fstype, root_options = ([*values["root"].split(), "", "", ""])[:3]
    root_drivers = tuple(d for d in values["root-drivers"].split() if d != "none")
    fstab_spec, fstab_device = ([*values.get("fstab-root", "").split(), "", ""])[:2]
    return ProbeResult(
        state=values["state"],
        multi_user=values["multi-user"] == "active",
        root_source=root_source,
        root_fstype=root_fstype,
        root_options=root_options,
        root_disk=values.get("root-disk", ""),
        root_driver=root_drivers[0] if root_drivers else "",
        root_drivers=root_drivers,
        interfaces={name: (macs.get(name, ""), addresses.get(name, [])) for name in macs},
        interface_drivers=drivers,
        tools_status="" if values.get("tools-status", "none") == "none" else values["tools-status"],
        vmtoolsd_present=values.get("vmtoolsd") == "present",
        tools_units=tuple(tools_units),
        failed_units=tuple(failed),
        console=console,
        seconds=seconds,
        fstab_root=(fstab_spec, fstab_device),
    )
