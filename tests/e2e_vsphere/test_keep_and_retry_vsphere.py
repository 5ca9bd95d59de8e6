"""``--snapshots keep``, retries that trust the server as the first run did, and NSX segment
names in ``list-vms``, from VMware's vSphere simulator through vm2kvmctl → D-Bus → vm2kvmd.

The VM gets a two-level chain the way ESXi makes one: a ``vmfs`` base, snapshot 1, a
``vmfsSparse`` delta, snapshot 2, a second delta the VM writes into.  The simulator creates the
snapshots (names, descriptions, the tree, each snapshot's config) but no delta disks, so the test
puts the deltas into the datastore and points the VM at them after each snapshot, as ESXi does
itself.  Every kept layer must read as ``qemu-img`` reads the same layer locally, libvirt must
have both snapshots in their tree, and the datastore must not change.

A retry finds the first run's ``--thumbprint``/``--ca-file`` in the job (only the password is
asked again).  The first runs fail for certain: their disk's ``-flat.vmdk`` is moved away after the
VM points at it, which the preflight (descriptors only) cannot see and the job's readers can.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree
from pyVim.task import WaitForTask
from pyVmomi import vim

from testbed.services import DirPool
from testbed.vcsim import Vcsim
from tests.e2e.support import DaemonProcess, ctl

# The simulator (one per module) and the password file are that module's fixtures.
from tests.e2e_vsphere.test_migrate_vsphere import (
    SECRET,
    Sim,
    migrate,
    password_file,
    place_flat_disk,
    sim,
    target_path,
    undefine,
)
from tests.helpers.vmdk_factory import images_equal, make_delta, make_vmdk, sha256_tree
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.core.vsphere.uri import TlsPolicy
from vm2kvmd.pipeline.vsphere import inspect_vsphere

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]
__all__ = ["password_file", "sim"]

MiB = 1 << 20
VM = "ha-host_VM1"
_dev: Any = vim.vm.device
_vim: Any = vim


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
    # An inspection with keep (in process: vm2kvmctl inspect has no --no-guest-conversion) says
    # what happens to the snapshots.
    source = VsphereSource(sim.uri, VM, TlsPolicy(ca_file=sim.info.ca_file), SECRET)
    options = MigrateOptions(snapshots="keep", guest_conversion=False)
    notes = " | ".join(str(n) for n in inspect_vsphere(source, options, None, strict=False).notes)
    assert "2 VMware snapshots (snapshot.rootSnapshotList) kept" in notes, notes
    assert "themselves are not" not in notes, notes
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


def _last_job(daemon: DaemonProcess) -> dict[str, Any]:
    run = ctl(daemon.address, "--json", "jobs", "--all")
    assert run.status == 0, run.err
    job: dict[str, Any] = max(run.json(), key=lambda j: j["number"])
    return job


def _failing_disk(sim: Sim, name: str) -> tuple[Path, Path, Path]:
    """A disk whose data file is away (the job fails reading it); (descriptor, data, away)."""
    disk = place_flat_disk(sim, VM, name, 4 * MiB, random=True)
    data = disk.with_name(f"{name}-flat.vmdk")
    away = data.with_name(f"{name}.away")
    data.rename(away)
    return disk, data, away


def _retry(daemon: DaemonProcess, number: int, *more: str) -> Any:
    return ctl(daemon.address, "retry", str(number), *more, timeout=120)


def test_a_retry_trusts_the_server_as_the_first_run_did(
    sim: Sim,
    daemon: DaemonProcess,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    password_file: Path,
    tmp_path: Path,
) -> None:
    secret = ("--password-file", str(password_file))
    # Pinned by thumbprint only: without the stored pin, the retry would check the system CA store.
    disk, data, away = _failing_disk(sim, "pinned")
    run = ctl(daemon.address, "migrate", sim.uri, "--vm", VM, *secret, "--thumbprint", sim.info.thumbprint,
              "--pool", dir_pool.name, "--name", domain_name, timeout=120)  # fmt: skip
    assert run.status == 1, run.err
    failed = _last_job(daemon)
    assert failed["state"] == "failed"
    assert failed["options"]["thumbprint"] == sim.info.thumbprint
    assert dir_pool.volume_names() == []
    away.rename(data)
    run = _retry(daemon, failed["number"], *secret)
    assert run.status == 0, run.err
    try:
        assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
        retried = _last_job(daemon)
        assert retried["retry_of"] == failed["number"]
        assert retried["options"]["thumbprint"] == sim.info.thumbprint  # kept for the next retry
        assert SECRET not in str(retried["options"])
    finally:
        undefine(libvirt_conn, domain_name)

    # A CA file: its path is stored and checked again at the retry.
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(Path(sim.info.ca_file).read_bytes())
    disk, data, away = _failing_disk(sim, "cafile")
    domain_name += "-ca"
    run = ctl(daemon.address, "migrate", sim.uri, "--vm", VM, *secret, "--ca-file", str(ca_file),
              "--pool", dir_pool.name, "--name", domain_name, timeout=120)  # fmt: skip
    assert run.status == 1, run.err
    failed = _last_job(daemon)
    assert failed["state"] == "failed" and failed["options"]["ca-file"] == str(ca_file)
    away.rename(data)
    ca_file.rename(tmp_path / "ca.moved")
    jobs = failed["number"]
    run = _retry(daemon, failed["number"], *secret)
    assert run.status == 1 and str(ca_file) in run.err, run.err
    assert _last_job(daemon)["number"] == jobs  # refused before a job exists
    (tmp_path / "ca.moved").rename(ca_file)
    run = _retry(daemon, failed["number"], *secret)
    assert run.status == 0, run.err
    try:
        assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
    finally:
        undefine(libvirt_conn, domain_name)

    # no_verify is part of the URI, so of the job's source: the retry keeps it and its warning.
    disk, data, away = _failing_disk(sim, "noverify")
    domain_name += "-nv"
    run = ctl(daemon.address, "migrate", sim.uri + "?no_verify=1", "--vm", VM, *secret,
              "--pool", dir_pool.name, "--name", domain_name, timeout=120)  # fmt: skip
    assert run.status == 1, run.err
    failed = _last_job(daemon)
    assert failed["state"] == "failed"
    away.rename(data)
    run = _retry(daemon, failed["number"], *secret)
    assert run.status == 0, run.err
    try:
        assert images_equal(disk, target_path(libvirt_conn, domain_name), fmt_a="vmdk")
        log = ctl(daemon.address, "logs", str(_last_job(daemon)["number"])).out
        assert "is not verified (no_verify)" in log, log
    finally:
        undefine(libvirt_conn, domain_name)


def test_list_vms_names_an_nsx_segment_when_the_api_shows_it(
    daemon: DaemonProcess, password_file: Path
) -> None:
    """The NIC's segment by name from the VM's network list, by its id while the list lacks it.

    Its own simulator: the segment is added through a test control, which the module's shared
    simulator does not expose.
    """
    simulator = Vcsim("esx", password=SECRET)
    info = simulator.start()
    try:
        sim = Sim(info)
        try:
            vm = sim.vm("ha-host_VM0")
            nic = next(d for d in vm.config.hardware.device if isinstance(d, _dev.VirtualEthernetCard))
            nic.backing = _dev.VirtualEthernetCard.OpaqueNetworkBackingInfo(
                opaqueNetworkId="5b1a7c2e-segment", opaqueNetworkType="nsx.LogicalSwitch"
            )
            change = _dev.VirtualDeviceSpec(operation="edit", device=nic)
            WaitForTask(vm.ReconfigVM_Task(_vim.vm.ConfigSpec(deviceChange=[change])))
        finally:
            sim.close()

        def listed_network() -> str:
            run = ctl(daemon.address, "--json", "list-vms", sim.uri, "--password-file", str(password_file),
                      "--ca-file", info.ca_file)  # fmt: skip
            assert run.status == 0, run.err
            (listed,) = [v for v in run.json() if v["name"] == "ha-host_VM0"]
            (first, *_) = listed["nics"]
            network: str = first["network"]
            return network

        assert listed_network() == "5b1a7c2e-segment"  # the simulator lists no network for it yet
        simulator.opaque_network("ha-host_VM0", "web-tier", "5b1a7c2e-segment")
        assert listed_network() == "web-tier"
    finally:
        simulator.stop()
