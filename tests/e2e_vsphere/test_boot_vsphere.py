"""Issue 12's "done when": a guest migrated from the vSphere simulator, converted, boots.

The Debian 12 test guest (``testbed/guests/debian12.py``, the one ``tests/e2e/test_boot_converted.py``
boots) is put into the simulator's datastore as ESXi keeps a disk: a ``vmfs`` descriptor over a
``-flat.vmdk`` (made once with ``qemu-img`` and cached under ``build/``).  A simulator VM gets that
disk, the guest's MAC and enough memory with ``ReconfigVM_Task``; ``vm2kvmctl migrate esx://...``
then runs with guest conversion through the real daemon: the disk is read through nbdkit (curl)
and FUSE, the conversion works on an overlay over that remote disk.  The domain must boot with
the checks of the local boot test, and the datastore must not change.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pyVim.task import WaitForTask

from testbed.guests.boot import boot_and_probe
from testbed.guests.debian12 import DebianGuest, builder_hash
from testbed.services import DirPool
from testbed.vcsim import USER
from tests.e2e.support import DaemonProcess, ctl
from tests.e2e_vsphere.test_migrate_vsphere import SECRET, Sim, _dev, _vim
from tests.guests.fixtures import GUEST_BUILD_TIMEOUT
from tests.helpers.vmdk_factory import sha256_tree

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.slow_guest]

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 420
MIGRATE_TIMEOUT = 900
VM = "ha-host_VM0"
DISK = "debian12"


def esxi_disk(guest: DebianGuest) -> Path:
    """The guest's disk as an ESXi ``vmfs`` descriptor + flat extent, cached by the guest's hash."""
    cache = REPO / "build" / "vsphere-guests" / f"debian12-{builder_hash()}"
    if not (cache / "complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        flat = cache / f"{DISK}-flat.vmdk"
        subprocess.run(
            ["qemu-img", "convert", "-q", "-f", "vmdk", "-O", "raw", str(guest.disk), str(flat)], check=True
        )
        sectors = flat.stat().st_size // 512
        (cache / f"{DISK}.vmdk").write_text(
            '# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=5a3902aa\nparentCID=ffffffff\n'
            'createType="vmfs"\n\n# Extent description\n'
            f'RW {sectors} VMFS "{DISK}-flat.vmdk"\n\n# The Disk Data Base\n#DDB\n\n'
            'ddb.adapterType = "lsilogic"\nddb.thinProvisioned = "1"\nddb.virtualHWVersion = "19"\n'
        )
        (cache / "complete").touch()
    return cache


@pytest.fixture(scope="module")
def sim_with_guest(debian12_guest: DebianGuest) -> Iterator[tuple[Sim, Path]]:
    from testbed.vcsim import Vcsim

    with Vcsim("esx", password=SECRET) as info:
        sim = Sim(info)
        try:
            folder = sim.datastore / VM
            folder.mkdir(exist_ok=True)
            cache = esxi_disk(debian12_guest)
            for name in (f"{DISK}.vmdk", f"{DISK}-flat.vmdk"):
                subprocess.run(["cp", "--sparse=always", str(cache / name), str(folder / name)], check=True)
            vm = sim.vm(VM)
            sim.power(vm, on=False)
            size = (folder / f"{DISK}-flat.vmdk").stat().st_size
            sim.point_disk(vm, [f"[LocalDS_0] {VM}/{DISK}.vmdk"], size)
            # The guest's MAC (its network config is pinned to it) and the memory it boots in.
            nic = next(d for d in vm.config.hardware.device if isinstance(d, _dev.VirtualEthernetCard))
            nic.addressType = "manual"
            nic.macAddress = debian12_guest.mac
            change = _dev.VirtualDeviceSpec(operation="edit", device=nic)
            WaitForTask(
                vm.ReconfigVM_Task(_vim.vm.ConfigSpec(deviceChange=[change], memoryMB=1024, numCPUs=1))
            )
            yield sim, folder
        finally:
            sim.close()


@pytest.mark.timeout(GUEST_BUILD_TIMEOUT + MIGRATE_TIMEOUT + BOOT_TIMEOUT + 120)
def test_converted_vsphere_guest_boots_on_virtio(
    sim_with_guest: tuple[Sim, Path],
    debian12_guest: DebianGuest,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    sim, folder = sim_with_guest
    before = sha256_tree(folder)
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    uri = f"esx://{USER}@{sim.info.host}:{sim.port}/"
    args = ["migrate", uri, "--vm", VM, "--password-file", str(secret), "--ca-file", sim.info.ca_file]
    run = ctl(
        daemon.address,
        *args,
        "--pool",
        dir_pool.name,
        "--name",
        domain_name,
        "--domain-type",
        "qemu",
        timeout=MIGRATE_TIMEOUT,
        convert=True,
    )
    assert run.status == 0, run.err
    try:
        job = str(max(j["number"] for j in ctl(daemon.address, "--json", "jobs").json()))
        report = ctl(daemon.address, "report", job, "--json").json()
        xml = etree.fromstring(libvirt_conn.lookupByName(domain_name).XMLDesc(0).encode())
        result = boot_and_probe(libvirt_conn, domain_name, tmp_path / "boot", timeout=BOOT_TIMEOUT)
    finally:
        libvirt_conn.lookupByName(domain_name).undefineFlags(0x4)  # VIR_DOMAIN_UNDEFINE_NVRAM
    print(f"boot to probe report: {result.seconds:.0f} s")
    assert "phase copy" in run.err, run.err  # progress reached the CLI

    assert xml.xpath("devices/disk[@device='disk']/target/@bus") == ["virtio"]
    assert xml.xpath("devices/interface/model/@type") == ["virtio"]
    assert xml.xpath("devices/interface/mac/@address") == [debian12_guest.mac]

    assert report["guest"]["converted"] is True
    areas = {group["area"] for group in report["changes"]}
    assert {"vmware-tools", "initramfs", "devices", "network", "bootloader"} <= areas, areas
    summaries = "\n".join(c["summary"] for group in report["changes"] for c in group["changes"])
    assert "open-vm-tools" in summaries and "ens33" in summaries

    why = f"\nconsole:\n{result.tail()}"
    assert result.multi_user, why
    assert result.failed_units == (), f"failed units: {', '.join(result.failed_units)}{why}"
    assert result.root_source == "/dev/vda1", why
    assert result.root_driver == "virtio_blk", why
    assert debian12_guest.nic_name in result.interfaces, why
    mac, addresses = result.interfaces[debian12_guest.nic_name]
    assert mac == debian12_guest.mac, why
    assert addresses, why
    assert result.interface_drivers.get(debian12_guest.nic_name) == "virtio_net", why
    assert not result.tools_installed, why
    assert sha256_tree(folder) == before, "the migration changed the datastore"
