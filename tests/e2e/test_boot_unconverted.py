"""Baseline for guest conversion: the Debian 12 VMware guest migrated WITHOUT conversion, booted.

What an unconverted VMware-era Linux guest does on KVM (the status quo that
the guest conversion has to fix): it still boots, because the migrated disk
is SATA and ``ahci`` is in its initramfs, and cleanly (systemd ``running``,
no failed unit), but the NIC sits at another PCI address, so udev gives it
another name than ``ens33``, ifupdown does not configure it and it gets no
address; VMware Tools stay installed.  Also proves the boot harness
(``testbed/guests/boot.py``) works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbed.guests.boot import boot_and_probe
from testbed.guests.debian12 import DebianGuest
from testbed.services import DirPool
from tests.e2e.support import DaemonProcess, migrate_for_boot
from tests.guests.fixtures import GUEST_BUILD_TIMEOUT

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.slow_guest]

BOOT_TIMEOUT = 420


@pytest.mark.timeout(GUEST_BUILD_TIMEOUT + BOOT_TIMEOUT + 120)
def test_unconverted_guest_boots_but_loses_its_network(
    debian12_guest: DebianGuest,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    before = debian12_guest.checksums()
    run = migrate_for_boot(
        daemon.address, debian12_guest.vmx, dir_pool.name, domain_name, convert=False, timeout=300
    )
    assert run.status == 0, run.err
    try:
        assert debian12_guest.checksums() == before, "the migration changed the source VM"
        result = boot_and_probe(libvirt_conn, domain_name, tmp_path / "boot", timeout=BOOT_TIMEOUT)
    finally:
        libvirt_conn.lookupByName(domain_name).undefineFlags(0x4)  # VIR_DOMAIN_UNDEFINE_NVRAM
    print(f"boot to probe report: {result.seconds:.0f} s")

    why = f"\nconsole:\n{result.tail()}"
    assert result.multi_user, why
    # Nothing fails on the way: the NIC is only "allow-hotplug", and the Tools' units need VMware.
    assert result.failed_units == (), f"failed units: {', '.join(result.failed_units)}{why}"
    assert result.state == "running", f"systemd state {result.state!r}{why}"
    assert (result.root_source, result.root_fstype) == ("/dev/sda1", "ext4"), why
    assert result.fstab_root == ("/dev/sda1", "/dev/sda1"), why
    assert "rw" in result.root_options.split(","), why
    assert result.root_driver != "virtio_blk" and "ahci" in result.root_drivers, why
    # One NIC, the VMware MAC kept, renamed by udev and left unconfigured by ifupdown.
    assert [mac for mac, _ in result.interfaces.values()] == [debian12_guest.mac], why
    [(name, (_, addresses))] = result.interfaces.items()
    assert name != debian12_guest.nic_name, why
    assert addresses == [], why
    assert result.tools_installed and result.vmtoolsd_present, why
    assert debian12_guest.checksums() == before
