"""Which operating system a domain runs, as a libosinfo id (``http://debian.org/debian/12``).

virt-manager and cockpit-machines read ``<libosinfo:os id=…>`` from a domain's
metadata to show its OS and to apply that OS's defaults (device models, minimum
resources).  The id comes from the guest inspection when a conversion ran (what
the guest itself says it is, down to the minor version), else from VMware's
guestOS (what the VM's owner picked in VMware, often only a family or an older
release).  When neither says enough, there is no id: an unknown OS is better
than a wrong one.

Ids are spelled as libosinfo's database (osinfo-db) spells them; each vendor
numbers its releases its own way, hence one rule per distribution.  Ids of
releases newer than the installed database (Debian 12 in osinfo-db 20221130)
follow the same rule: libvirt stores any id, and virt-manager shows it once its
database knows it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["osinfo_from_guest", "osinfo_from_vmware"]


def osinfo_from_guest(
    os_type: str, distro: str, major: int, minor: int, product_name: str = ""
) -> str | None:
    """The id of an OS found by guest inspection (libguestfs' ``distro`` names); None if unknown."""
    if os_type == "windows":
        return _windows(major, minor, product_name)
    if os_type == "freebsd":
        return f"http://freebsd.org/freebsd/{major}.{minor}" if major >= 1 else None
    if os_type != "linux":
        return None
    rule = _LINUX.get(distro)
    return rule(major, minor) if rule is not None and major > 0 else None


def _debian(major: int, minor: int) -> str | None:
    # Since Debian 4 a release is its major number (point releases are updates).
    return f"http://debian.org/debian/{major}" if major >= 4 else None


def _ubuntu(major: int, minor: int) -> str | None:
    return f"http://ubuntu.com/ubuntu/{major}.{minor:02d}"


def _rhel(major: int, minor: int) -> str | None:
    return f"http://redhat.com/rhel/{major}.{minor}" if major >= 4 else None


def _centos(major: int, minor: int) -> str | None:
    # CentOS 8 has one id for all its updates; CentOS Stream 9 is a distribution of its own.
    if major >= 9:
        return f"http://centos.org/centos-stream/{major}"
    if major == 8:
        return "http://centos.org/centos/8"
    return f"http://centos.org/centos/{major}.{minor}" if major >= 5 else None


def _sles(major: int, minor: int) -> str | None:
    # From 15 on, SUSE Linux Enterprise Server and Desktop share one id ("sle"); service packs are minors.
    family = "sle" if major >= 15 else "sles"
    return f"http://suse.com/{family}/{major}" + (f".{minor}" if minor else "")


def _oracle(major: int, minor: int) -> str | None:
    # Oracle renamed "Enterprise Linux" (oel) to "Linux" (ol) with 5.5.
    if (major, minor) < (5, 5):
        return f"http://oracle.com/oel/{major}.{minor}" if major >= 4 else None
    return f"http://oracle.com/ol/{major}.{minor}"


_LINUX: dict[str, Callable[[int, int], str | None]] = {
    "debian": _debian,
    "ubuntu": _ubuntu,
    "rhel": _rhel,
    "centos": _centos,
    "fedora": lambda major, _minor: f"http://fedoraproject.org/fedora/{major}",
    "sles": _sles,
    "opensuse": lambda major, minor: f"http://opensuse.org/opensuse/{major}.{minor}",
    "oraclelinux": _oracle,
    "almalinux": lambda major, _minor: f"http://almalinux.org/almalinux/{major}",
    "rocky": lambda major, _minor: f"http://rockylinux.org/rocky/{major}",
}


def _windows(major: int, minor: int, product: str) -> str | None:
    """Windows by its kernel version; client and server releases share one, the product name tells."""
    server = "server" in product.lower()
    if (major, minor) == (10, 0):
        if server:
            for year, short in (("2025", "2k25"), ("2022", "2k22"), ("2019", "2k19")):
                if year in product:
                    return f"http://microsoft.com/win/{short}"
            return "http://microsoft.com/win/2k16"
        return (
            "http://microsoft.com/win/11"
            if "windows 11" in product.lower()
            else "http://microsoft.com/win/10"
        )
    if (major, minor) == (5, 2):
        # 5.2 is Server 2003 (R2) and XP Professional x64.
        if "xp" in product.lower():
            return "http://microsoft.com/win/xp"
        return "http://microsoft.com/win/2k3r2" if "r2" in product.lower() else "http://microsoft.com/win/2k3"
    versions = {
        (5, 0): ("2k", "2k"),
        (5, 1): ("xp", "xp"),
        (6, 0): ("vista", "2k8"),
        (6, 1): ("7", "2k8r2"),
        (6, 2): ("8", "2k12"),
        (6, 3): ("8.1", "2k12r2"),
    }
    if (major, minor) not in versions:
        return None
    client, server_id = versions[(major, minor)]
    return f"http://microsoft.com/win/{server_id if server else client}"


# VMware guest ids (lower case, "-64" removed) with no version in them to parse.
_VMWARE_WINDOWS = {
    "win31": "3.1",
    "win95": "95",
    "win98": "98",
    "winme": "me",
    "win2000pro": "2k",
    "win2000serv": "2k",
    "win2000advserv": "2k",
    "winxphome": "xp",
    "winxppro": "xp",
    "winnetweb": "2k3",
    "winnetstandard": "2k3",
    "winnetenterprise": "2k3",
    "winnetdatacenter": "2k3",
    "winnetbusiness": "2k3",
    "winvista": "vista",
    "longhorn": "2k8",
    "windows7": "7",
    "windows7srv": "2k8r2",
    "windows7server": "2k8r2",
    "windows8": "8",
    # VMware has one id for Server 2012 and 2012 R2; 2012 is the older, safer guess.
    "windows8srv": "2k12",
    "windows8server": "2k12",
    "windows9": "10",
    "windows9srv": "2k16",
    "windows9server": "2k16",
    "windows2019srv": "2k19",
    "windows2019srvnext": "2k22",
    "windows11": "11",
}

_VERSIONED = re.compile(r"(?P<family>[a-z]+?)(?P<major>\d+)")


def osinfo_from_vmware(guest_os: str) -> str | None:
    """The id of a VMware guestOS (``debian12-64``, ``windows9srv-64``); None when it names no release.

    Family-only ids (``ubuntu-64``, ``other5xlinux-64``, ``centos-64``) give None.
    A VMware id names a major release; where libosinfo has an id for "any minor
    of N" it is used (``rhel/7-unknown``), else the first minor (``centos/7.0``).
    """
    word = guest_os.strip().lower().removesuffix("-64")
    if word == "winnt":
        return "http://microsoft.com/winnt/4.0"
    if word in _VMWARE_WINDOWS:
        return f"http://microsoft.com/win/{_VMWARE_WINDOWS[word]}"
    match = _VERSIONED.fullmatch(word)
    if match is None:
        return None
    family, major = match["family"], int(match["major"])
    if family == "debian":
        return _debian(major, 0)
    if family == "rhel":
        return f"http://redhat.com/rhel/{major}-unknown" if major >= 6 else _rhel(major, 0)
    if family == "centos":
        return _centos(major, 0)
    if family == "oraclelinux":
        return _oracle(major, 0) if major >= 6 else None
    if family == "sles":
        return _sles(major, 0)
    if family == "freebsd":
        return f"http://freebsd.org/freebsd/{major}.0"
    return None
