"""``--snapshots keep`` from VMware's vSphere simulator, through vm2kvmctl → D-Bus → vm2kvmd.

The VM gets a two-level chain the way ESXi makes one: a ``vmfs`` base, snapshot 1, a
``vmfsSparse`` delta, snapshot 2, a second delta the VM writes into.  The simulator creates the
snapshots (names, descriptions, the tree, each snapshot's config) but no delta disks, so the test
puts the deltas into the datastore and points the VM at them after each snapshot, as ESXi does
itself.  Every kept layer must read as ``qemu-img`` reads the same layer locally, libvirt must
have both snapshots in their tree, and the datastore must not change.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree
from pyVim.task import WaitForTask

from testbed.services import DirPool
from tests.e2e.support import DaemonProcess, ctl

# The simulator (one per module) and the password file are that module's fixtures.
from tests.e2e_vsphere.test_migrate_vsphere import Sim, migrate, password_file, sim
from tests.helpers.vmdk_factory import images_equal, make_delta, make_vmdk, sha256_tree

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]
__all__ = ["password_file", "sim"]

MiB = 1 << 20
VM = "ha-host_VM1"


def _delta(folder: Path, name: str, parent: Path) -> Path:
    delta = make_delta(folder, name, parent, subformat="vmfsSparse")
    # govmomi 0.24's ReconfigVM wants a NAME-flat.vmdk beside every descriptor it is given.
    (folder / f"{name}-flat.vmdk").write_bytes(b"")
    return delta


def _two_snapshots(sim: Sim) -> tuple[Path, list[Path]]:
    """Base, snapshot "Before update", delta 1, snapshot "After update", delta 2 (current)."""
    folder = sim.datastore / VM
    folder.mkdir(exist_ok=True)
    base = make_vmdk(folder, "kept", "vmfs", 16 * MiB)
    vm = sim.vm(VM)
    sim.power(vm, on=False)
    files = [f"[LocalDS_0] {VM}/kept.vmdk"]
    sim.point_disk(vm, files, 16 * MiB)
    WaitForTask(vm.CreateSnapshot_Task("Before update", "the base system", False, False))
    d1 = _delta(folder, "kept-000001", base)
    files.insert(0, f"[LocalDS_0] {VM}/kept-000001.vmdk")
    sim.point_disk(vm, files, 16 * MiB)
    WaitForTask(vm.CreateSnapshot_Task("After update", "", False, False))
    d2 = _delta(folder, "kept-000002", d1)
    files.insert(0, f"[LocalDS_0] {VM}/kept-000002.vmdk")
    sim.point_disk(vm, files, 16 * MiB)
    return folder, [base, d1, d2]


def _snapshot_state(domain: Any, name: str) -> tuple[Path, str | None]:
    """The disk state a libvirt snapshot reverts to, and its parent's name."""
    root = etree.fromstring(domain.snapshotLookupByName(name).getXMLDesc(0).encode())
    (state,) = root.xpath("domain/devices/disk[@device='disk']/source/@file")
    parent = root.findtext("parent/name")
    return Path(state), parent


def test_keep_migrates_the_snapshot_tree_layer_by_layer(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
) -> None:
    folder, (base, d1, d2) = _two_snapshots(sim)
    before = sha256_tree(folder)
    run = migrate(
        daemon, sim, VM, dir_pool.name, domain_name, password_file,
        "--snapshots", "keep", "--no-guest-conversion",
    )  # fmt: skip
    try:
        assert run.status == 0, run.err
        assert "2 VMware snapshots" in run.out + run.err, run.out + run.err
        pool = Path(dir_pool.path)
        assert sorted(dir_pool.volume_names()) == sorted(
            f"{domain_name}-disk1{part}.qcow2" for part in ("", "-kept", "-kept-000001")
        )
        top = pool / f"{domain_name}-disk1.qcow2"
        domain = libvirt_conn.lookupByName(domain_name)
        assert sorted(domain.snapshotListNames()) == ["After update", "Before update"]
        assert domain.snapshotCurrent().getName() == "After update"
        first, first_parent = _snapshot_state(domain, "Before update")
        second, second_parent = _snapshot_state(domain, "After update")
        assert (first_parent, second_parent) == (None, "Before update")
        assert first == pool / f"{domain_name}-disk1-kept.qcow2"
        assert second == pool / f"{domain_name}-disk1-kept-000001.qcow2"
        description = etree.fromstring(domain.snapshotLookupByName("Before update").getXMLDesc(0).encode())
        assert description.findtext("description") == "the base system"
        # Each layer reads, through its qcow2 backing chain, as qemu-img reads the VMDK layer
        # with its parents from the datastore directory.
        assert images_equal(base, first, fmt_a="vmdk", fmt_b="qcow2")
        assert images_equal(d1, second, fmt_a="vmdk", fmt_b="qcow2")
        assert images_equal(d2, top, fmt_a="vmdk", fmt_b="qcow2")
        assert not images_equal(d1, top, fmt_a="vmdk", fmt_b="qcow2")
        number = max(job["number"] for job in ctl(daemon.address, "--json", "jobs").json())
        log = ctl(daemon.address, "logs", str(number)).out
        assert "with 2 snapshots" in log, log
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            libvirt_conn.lookupByName(domain_name).undefineFlags(
                libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            )
    assert sha256_tree(folder) == before
