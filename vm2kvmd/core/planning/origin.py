"""Where a migrated domain came from and when: the text of its ``<description>``.

virt-manager shows the description in a VM's overview; cockpit-machines lists
the domain by name only, but ``virsh desc`` and both tools keep it.  The first
line says what vm2kvm read and when it started; the VM's notes from VMware
(its annotation) follow after a blank line, so nothing the owner wrote is lost.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime

__all__ = ["describe_origin", "source_label"]


def source_label(source_path: str, display_name: str = "") -> str:
    """What the source is, in the user's words: "VMware VMX /vms/a.vmx", "VMware ESXi host esx1 (VM 'a')"."""
    if "://" in source_path:
        url = urllib.parse.urlsplit(source_path)
        kind = {"esx": "VMware ESXi host", "vpx": "VMware vCenter"}.get(url.scheme, "VMware vSphere host")
        # The user name is the caller's business, not the domain's (a password is never in a URI).
        where = f"{kind} {url.hostname or '?'}"
        return f"{where} (VM {display_name!r})" if display_name else where
    lower = source_path.lower()
    if lower.endswith(".ova"):
        return f"OVA {source_path}"
    if lower.endswith(".ovf"):
        return f"OVF {source_path}"
    return f"VMware VMX {source_path}"


def describe_origin(source_path: str, display_name: str, annotation: str, started: datetime | None) -> str:
    """The whole description: the origin line, then the VMware notes (when there are any)."""
    line = f"Migrated by vm2kvm from {source_label(source_path, display_name)}"
    if started is not None:
        line += f" on {started.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    line += "."
    return f"{line}\n\n{annotation}" if annotation.strip() else line
