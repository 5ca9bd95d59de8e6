"""libosinfo ids from guest inspection and from VMware guest ids; the description's origin line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from vm2kvmd.core.planning.origin import describe_origin, source_label
from vm2kvmd.core.planning.osinfo import osinfo_from_guest, osinfo_from_vmware

OSINFO_DB = Path("/usr/share/osinfo/os")
# Releases newer than Debian 12's osinfo-db (20221130): the rule's id, as newer databases spell it.
NEWER_THAN_DB = {
    "http://debian.org/debian/12",
    "http://microsoft.com/win/2k25",
    "http://fedoraproject.org/fedora/40",
    "http://ubuntu.com/ubuntu/24.04",
}

GUESTS = [
    (("linux", "debian", 12, 4, "Debian GNU/Linux 12 (bookworm)"), "http://debian.org/debian/12"),
    (("linux", "debian", 11, 0, ""), "http://debian.org/debian/11"),
    (("linux", "ubuntu", 22, 4, "Ubuntu 22.04.3 LTS"), "http://ubuntu.com/ubuntu/22.04"),
    (("linux", "ubuntu", 24, 4, ""), "http://ubuntu.com/ubuntu/24.04"),
    (("linux", "rhel", 7, 9, ""), "http://redhat.com/rhel/7.9"),
    (("linux", "rhel", 5, 5, ""), "http://redhat.com/rhel/5.5"),
    (("linux", "centos", 7, 0, ""), "http://centos.org/centos/7.0"),
    (("linux", "centos", 8, 3, ""), "http://centos.org/centos/8"),
    (("linux", "centos", 9, 0, ""), "http://centos.org/centos-stream/9"),
    (("linux", "fedora", 37, 0, ""), "http://fedoraproject.org/fedora/37"),
    (("linux", "fedora", 40, 0, ""), "http://fedoraproject.org/fedora/40"),
    (("linux", "sles", 11, 1, ""), "http://suse.com/sles/11.1"),
    (("linux", "sles", 12, 0, ""), "http://suse.com/sles/12"),
    (("linux", "sles", 15, 4, ""), "http://suse.com/sle/15.4"),
    (("linux", "opensuse", 15, 4, ""), "http://opensuse.org/opensuse/15.4"),
    (("linux", "oraclelinux", 7, 9, ""), "http://oracle.com/ol/7.9"),
    (("linux", "oraclelinux", 5, 4, ""), "http://oracle.com/oel/5.4"),
    (("linux", "almalinux", 9, 1, ""), "http://almalinux.org/almalinux/9"),
    (("linux", "rocky", 8, 6, ""), "http://rockylinux.org/rocky/8"),
    (("freebsd", "freebsd", 13, 1, ""), "http://freebsd.org/freebsd/13.1"),
    (("windows", "windows", 6, 1, "Windows 7 Professional"), "http://microsoft.com/win/7"),
    (("windows", "windows", 6, 1, "Windows Server 2008 R2 Standard"), "http://microsoft.com/win/2k8r2"),
    (("windows", "windows", 6, 3, "Windows Server 2012 R2 Datacenter"), "http://microsoft.com/win/2k12r2"),
    (("windows", "windows", 5, 1, "Microsoft Windows XP"), "http://microsoft.com/win/xp"),
    (("windows", "windows", 5, 2, "Windows Server 2003 R2"), "http://microsoft.com/win/2k3r2"),
    (("windows", "windows", 10, 0, "Windows 10 Pro"), "http://microsoft.com/win/10"),
    (("windows", "windows", 10, 0, "Windows 11 Enterprise"), "http://microsoft.com/win/11"),
    (("windows", "windows", 10, 0, "Windows Server 2016 Standard"), "http://microsoft.com/win/2k16"),
    (("windows", "windows", 10, 0, "Windows Server 2019 Datacenter"), "http://microsoft.com/win/2k19"),
    (("windows", "windows", 10, 0, "Windows Server 2022 Standard"), "http://microsoft.com/win/2k22"),
    (("windows", "windows", 10, 0, "Windows Server 2025 Standard"), "http://microsoft.com/win/2k25"),
]

VMWARE = [
    ("debian12-64", "http://debian.org/debian/12"),
    ("debian10", "http://debian.org/debian/10"),
    ("rhel7-64", "http://redhat.com/rhel/7-unknown"),
    ("rhel5-64", "http://redhat.com/rhel/5.0"),
    ("centos7-64", "http://centos.org/centos/7.0"),
    ("centos8-64", "http://centos.org/centos/8"),
    ("oraclelinux8-64", "http://oracle.com/ol/8.0"),
    ("sles11-64", "http://suse.com/sles/11"),
    ("sles15-64", "http://suse.com/sle/15"),
    ("freebsd12-64", "http://freebsd.org/freebsd/12.0"),
    ("winxppro", "http://microsoft.com/win/xp"),
    ("winnetenterprise", "http://microsoft.com/win/2k3"),
    ("longhorn-64", "http://microsoft.com/win/2k8"),
    ("windows7", "http://microsoft.com/win/7"),
    ("windows7srv-64", "http://microsoft.com/win/2k8r2"),
    ("windows8srv-64", "http://microsoft.com/win/2k12"),
    ("windows9-64", "http://microsoft.com/win/10"),
    ("windows9srv-64", "http://microsoft.com/win/2k16"),
    ("windows2019srv-64", "http://microsoft.com/win/2k19"),
    ("windows2019srvnext-64", "http://microsoft.com/win/2k22"),
    ("windows11-64", "http://microsoft.com/win/11"),
    ("winnt", "http://microsoft.com/winnt/4.0"),
]


@pytest.mark.parametrize(("guest", "expected"), GUESTS, ids=[e.split("//")[1] for _, e in GUESTS])
def test_from_guest(guest: tuple[str, str, int, int, str], expected: str) -> None:
    assert osinfo_from_guest(*guest) == expected


@pytest.mark.parametrize(("guest_os", "expected"), VMWARE, ids=[g for g, _ in VMWARE])
def test_from_vmware(guest_os: str, expected: str) -> None:
    assert osinfo_from_vmware(guest_os) == expected


@pytest.mark.parametrize(
    "guest_os", ["ubuntu-64", "centos-64", "other5xlinux-64", "otherlinux", "other-64", "darwin19-64", ""]
)
def test_vmware_ids_naming_no_release_give_none(guest_os: str) -> None:
    assert osinfo_from_vmware(guest_os) is None


@pytest.mark.parametrize(
    "guest",
    [
        ("linux", "gentoo", 2, 0, ""),
        ("linux", "debian", 0, 0, ""),
        ("unknown", "unknown", 0, 0, ""),
        ("windows", "windows", 4, 0, "Windows NT"),
    ],
)
def test_unknown_guests_give_none(guest: tuple[str, str, int, int, str]) -> None:
    assert osinfo_from_guest(*guest) is None


def _database_ids() -> set[str]:
    ids = set()
    for path in OSINFO_DB.glob("*/*.xml"):
        text = path.read_text(errors="replace")
        start = text.find('<os id="')
        if start >= 0:
            ids.add(text[start + 8 : text.index('"', start + 8)])
    return ids


@pytest.mark.skipif(not OSINFO_DB.is_dir(), reason="osinfo-db is not installed")
def test_every_id_is_in_libosinfos_database() -> None:
    """The rules spell ids as libosinfo does: each one the tables give is a real database entry."""
    known = _database_ids()
    produced = {e for _, e in GUESTS} | {e for _, e in VMWARE}
    assert len(known) > 500
    assert sorted(produced - known - NEWER_THAN_DB) == []


def test_source_labels() -> None:
    assert source_label("/vms/a/a.vmx") == "VMware VMX /vms/a/a.vmx"
    assert source_label("/vms/a.OVA") == "OVA /vms/a.OVA"
    assert source_label("/vms/a/a.ovf") == "OVF /vms/a/a.ovf"
    assert source_label("esx://root@esx1.example.com/?no_verify=1", "web01") == (
        "VMware ESXi host esx1.example.com (VM 'web01')"
    )
    assert (
        source_label("vpx://admin@vc.example.com/DC/host1", "db") == "VMware vCenter vc.example.com (VM 'db')"
    )


def test_origin_line_with_time_in_utc_and_notes_after() -> None:
    started = datetime(2026, 12, 7, 20, 31, 59, tzinfo=UTC)
    assert describe_origin("/vms/a/a.vmx", "a", "", started) == (
        "Migrated by vm2kvm from VMware VMX /vms/a/a.vmx on 2026-12-07 20:31 UTC."
    )
    assert describe_origin("/vms/a/a.vmx", "a", "owner: ops\n", None) == (
        "Migrated by vm2kvm from VMware VMX /vms/a/a.vmx.\n\nowner: ops\n"
    )
    assert describe_origin("/vms/a/a.vmx", "a", "  \n", None).endswith(".vmx.")
