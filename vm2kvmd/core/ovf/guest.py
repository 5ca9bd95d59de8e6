"""The guest OS of an OVF descriptor, as the VMX ``guestOS`` value the mapping knows.

VMware writes ``vmw:osType`` with the vSphere API's guest id
(``rhel7_64Guest``, ``windows9Server64Guest``); the VMX spelling of the same
OS is mostly a mechanical rewrite (drop ``Guest``, ``_64``/``64`` becomes
``-64``, lower case), with a few historical exceptions listed below.  Without
``vmw:osType`` (VirtualBox and other producers) only the CIM operating system
number in ``ovf:id`` is left; it names the OS family, not the version, which is
all the mapping needs (Windows or not, 64-bit or not).
"""

from __future__ import annotations

import re

from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.ovf.envelope import OvfEnvelope

# vSphere guest ids whose VMX guestOS is not the mechanical rewrite.
_VIM_EXCEPTIONS = {
    "winlonghorn": "longhorn",
    "winlonghorn64": "longhorn-64",
    "windows7server64": "windows7srv-64",
    "windows8server64": "windows8srv-64",
    "windows9server64": "windows9srv-64",
    "other64": "other-64",
}

# CIM_OperatingSystem.OSType (DMTF DSP1013) -> a VMX guestOS of the same family.
_CIM_OS = {
    1: "other",
    36: "otherlinux",
    42: "freebsd",
    58: "win2000pro",
    67: "winxppro",
    69: "winnetenterprise",
    70: "winnetenterprise-64",
    71: "winxppro-64",
    73: "winvista",
    74: "winvista-64",
    76: "longhorn",
    77: "longhorn-64",
    78: "freebsd-64",
    79: "rhel",
    80: "rhel-64",
    82: "suse",
    83: "suse-64",
    84: "sles",
    85: "sles-64",
    93: "ubuntu",
    94: "ubuntu-64",
    95: "debian",
    96: "debian-64",
    97: "other24xlinux",
    98: "other24xlinux-64",
    99: "other26xlinux",
    100: "other26xlinux-64",
    101: "otherlinux-64",
    102: "other-64",
    103: "windows7srv-64",
    105: "windows7",
    106: "centos",
    107: "centos-64",
    108: "oraclelinux",
    109: "oraclelinux-64",
    113: "windows8srv-64",
    114: "windows8",
    115: "windows8-64",
    116: "windows8srv-64",
}

_VIM_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def guest_os_from_vim(os_type: str) -> str | None:
    """``rhel7_64Guest`` -> ``rhel7-64``; None when it is not a guest id at all."""
    word = os_type.strip()
    if not _VIM_ID_RE.match(word):
        return None
    if word == "otherGuest64":
        word = "other64"
    word = word.removesuffix("Guest").lower()
    if word in _VIM_EXCEPTIONS:
        return _VIM_EXCEPTIONS[word]
    return re.sub(r"_?64$", "-64", word) or None


def guest_os_of(env: OvfEnvelope, notes: list[Note]) -> str:
    """The VMX-style guest OS of ``env``; the fallbacks are noted."""
    where = "OperatingSystemSection"
    if env.os_type:
        guest = guest_os_from_vim(env.os_type)
        if guest:
            return guest
        notes.append(Note(f"vmw:osType {env.os_type!r} is not a VMware guest id; ignored", where))
    if env.os_id is not None and env.os_id in _CIM_OS:
        guest = _CIM_OS[env.os_id]
        described = f" ({env.os_description})" if env.os_description else ""
        notes.append(
            Note(f"no vmw:osType; guest OS {guest!r} from the CIM OS type {env.os_id}{described}", where)
        )
        return guest
    guest = "other-64" if "64" in (env.os_description or "") else "other"
    notes.append(Note(f"guest OS not recognised; {guest!r} assumed", where))
    return guest
