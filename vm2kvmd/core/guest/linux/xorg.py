"""X11 and modprobe configuration of a Linux guest, without the VMware-only drivers (pure).

xorg.conf: the ``vmware`` video driver drives only VMware's SVGA adapter;
``modesetting`` (in the X server itself since 1.17) drives whatever DRM/KMS
device the VM gets (virtio-gpu, QXL, bochs/std VGA).  ``vmmouse`` talks to
VMware's backdoor port; we drop its InputDevice instead of renaming the
driver, so X (>= 1.7, input hotplug) picks up the emulated pointer itself.

modprobe: options/install lines for VMware-only modules are commented out
(``# vm2kvm: ``) so an admin sees what was there; the ``alias
scsi_hostadapter`` and ``alias ethN`` lines that RHEL 5-era mkinitrd and
initscripts read to load the storage and NIC drivers are pointed at the
drivers of the new devices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vm2kvmd.core.guest.linux.tools import is_vmware_module

COMMENT = "# vm2kvm: "

_SECTION = re.compile(r'^\s*Section\s+"([^"]+)"', re.IGNORECASE)
_END = re.compile(r"^\s*EndSection\b", re.IGNORECASE)
_DRIVER = re.compile(r'^(\s*Driver\s+")([^"]*)(".*)$', re.IGNORECASE | re.DOTALL)
_IDENTIFIER = re.compile(r'^\s*Identifier\s+"([^"]*)"', re.IGNORECASE)
_BUSID = re.compile(r"^\s*BusID\b", re.IGNORECASE)
_LAYOUT_INPUT = re.compile(r'^\s*InputDevice\s+"([^"]*)"', re.IGNORECASE)


@dataclass(frozen=True)
class Edit:
    text: str
    summaries: tuple[str, ...]  # one per change, for the report

    @property
    def changed(self) -> bool:
        return bool(self.summaries)


def _sections(lines: list[str]) -> list[tuple[str | None, list[str]]]:
    """Split into (section kind lower-case or None for text between sections, lines)."""
    out: list[tuple[str | None, list[str]]] = []
    current: list[str] = []
    kind: str | None = None
    for line in lines:
        m = _SECTION.match(line)
        if kind is None and m:
            if current:
                out.append((None, current))
            current, kind = [line], m.group(1).lower()
            continue
        current.append(line)
        if kind is not None and _END.match(line):
            out.append((kind, current))
            current, kind = [], None
    if current:
        out.append((kind, current))
    return out


def _driver(lines: list[str]) -> str | None:
    for line in lines:
        m = _DRIVER.match(line)
        if m:
            return m.group(2).lower()
    return None


def _identifier(lines: list[str]) -> str:
    for line in lines:
        m = _IDENTIFIER.match(line)
        if m:
            return m.group(1)
    return ""


def fix_xorg_conf(text: str) -> Edit:
    """``text`` (xorg.conf or an xorg.conf.d snippet) with the VMware drivers replaced or removed."""
    summaries: list[str] = []
    removed_inputs: set[str] = set()
    kept: list[tuple[str | None, list[str]]] = []
    for kind, lines in _sections(text.splitlines(keepends=True)):
        driver = _driver(lines) if kind else None
        if kind == "device" and driver == "vmware":
            new_lines: list[str] = []
            for line in lines:
                m = _DRIVER.match(line)
                if m and m.group(2).lower() == "vmware":
                    new_lines.append(f"{m.group(1)}modesetting{m.group(3)}")
                elif _BUSID.match(line):
                    # VMware's SVGA sits at PCI 0:15.0; a stale BusID makes X find no screen.
                    new_lines.append(COMMENT + line.lstrip())
                else:
                    new_lines.append(line)
            kept.append((kind, new_lines))
            summaries.append(f'Device "{_identifier(lines)}": driver vmware -> modesetting')
        elif kind in ("inputdevice", "inputclass") and driver == "vmmouse":
            ident = _identifier(lines)
            if kind == "inputdevice":
                removed_inputs.add(ident)
            note = f"{COMMENT}removed {kind} section {ident!r} (vmmouse driver; X autodetects the pointer)\n"
            kept.append((None, [note]))
            summaries.append(
                f'removed {"InputDevice" if kind == "inputdevice" else "InputClass"} "{ident}" (vmmouse)'
            )
        else:
            kept.append((kind, lines))
    out: list[str] = []
    for kind, lines in kept:
        for line in lines:
            m = _LAYOUT_INPUT.match(line) if kind == "serverlayout" else None
            if m and m.group(1) in removed_inputs:
                out.append(COMMENT + line.lstrip())
                continue
            out.append(line)
    return Edit("".join(out), tuple(summaries))


# --- modprobe ---------------------------------------------------------------------------

# Controllers VMware emulates (LSI Logic SPI/SAS, BusLogic, PVSCSI): a scsi_hostadapter alias
# naming one of them makes old mkinitrd put that driver, not ours, in the initramfs.
VMWARE_DISK_CONTROLLERS = frozenset(
    {"mptspi", "mptsas", "mptscsih", "mptbase", "buslogic", "vmw_pvscsi", "pvscsi"}
)
# NICs VMware emulates: vlance (pcnet32), e1000, e1000e, vmxnet, vmxnet3.
VMWARE_NICS = frozenset({"pcnet32", "e1000", "e1000e", "vmxnet", "vmxnet3"})

DISK_DRIVER = {"virtio": "virtio_blk", "scsi": "virtio_scsi", "sata": "ahci", "ide": "ata_piix"}
NIC_DRIVER = {"virtio": "virtio_net", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "8139cp"}

_ETH_ALIAS = re.compile(r"^(eth|en)[A-Za-z0-9]*$")


def fix_modprobe_conf(text: str, disk_driver: str | None, nic_driver: str | None) -> Edit:
    """modprobe.conf(5) text for the new devices (see the module docstring)."""
    out: list[str] = []
    summaries: list[str] = []
    hostadapter_done = False
    for line in text.splitlines(keepends=True):
        line = line if line.endswith("\n") else line + "\n"
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or words[0] not in ("alias", "options", "install", "remove", "softdep"):
            out.append(line)
            continue
        shown = " ".join(words)
        if words[0] == "alias" and len(words) >= 3:
            name, target = words[1], words[2].replace("-", "_")
            if name.startswith("scsi_hostadapter") and target.lower() in VMWARE_DISK_CONTROLLERS:
                if disk_driver and not hostadapter_done:
                    out.append(COMMENT + line.lstrip())
                    out.append(f"alias {name} {disk_driver}\n")
                    summaries.append(f"alias {name} {words[2]} -> {disk_driver}")
                    hostadapter_done = True
                else:
                    out.append(COMMENT + line.lstrip())
                    summaries.append(f"commented out '{shown}'")
                continue
            if _ETH_ALIAS.match(name) and target in VMWARE_NICS and nic_driver and nic_driver != target:
                out.append(COMMENT + line.lstrip())
                out.append(f"alias {name} {nic_driver}\n")
                summaries.append(f"alias {name} {words[2]} -> {nic_driver}")
                continue
            if name.startswith("scsi_hostadapter") and target in DISK_DRIVER.values():
                hostadapter_done = True
            module = target
        else:
            module = words[1]
        if is_vmware_module(module):
            out.append(COMMENT + line.lstrip())
            summaries.append(f"commented out '{shown}'")
        else:
            out.append(line)
    if not summaries:
        return Edit(text, ())
    return Edit("".join(out), tuple(summaries))
