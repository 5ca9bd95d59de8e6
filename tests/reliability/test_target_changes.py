"""The target changes under a running job: its pool stopped, its domain name taken by another client.

Both faults land while the job is in its copy phase (held there for a
moment); the job notices before it defines the domain, fails with a named
error, and removes its volumes: nothing of the job is left, and what the
other client made is untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.private_libvirtd import PrivateLibvirtd
from testbed.services import DirPool
from tests.e2e.lifecycle_support import (
    HOLD_ENV,
    ServiceDaemon,
    start_job,
    wait_finished,
    wait_phase,
)
from tests.helpers.vmdk_factory import sha256_tree
from tests.reliability.conftest import connect
from tests.reliability.support import NOTHING, job_log, leftovers, small_vm

pytestmark = pytest.mark.libvirt


def test_pool_stopped_mid_copy_is_pool_vanished(
    reliab_daemon: Callable[..., ServiceDaemon],
    own_libvirtd: PrivateLibvirtd,
    own_pool: DirPool,
    domain_name: str,
    vm_dir: Path,
) -> None:
    vmx = small_vm(vm_dir)
    before = sha256_tree(vm_dir)
    daemon = reliab_daemon(env={HOLD_ENV: "copy:2"})
    number = start_job(daemon, str(vmx), "--name", domain_name)
    wait_phase(daemon.address, number, "copy")
    conn = connect(own_libvirtd.uri)
    try:
        conn.storagePoolLookupByName(own_pool.name).destroy()  # virsh pool-destroy
    finally:
        conn.close()

    props = wait_finished(daemon.address, number, timeout=60)
    assert props["State"] == "failed"
    name, message = props["Error"]
    assert name == "org.vm2kvm.Error.PoolVanished", props["Error"]
    assert f"storage pool {own_pool.name!r} was removed or stopped while the job ran" in message
    assert f"virsh pool-start {own_pool.name}" in message
    assert any(line.startswith("removed volume") for line in job_log(daemon, number))
    assert leftovers(own_libvirtd, own_pool, daemon, domain_name, number) == NOTHING
    assert sha256_tree(vm_dir) == before


def bios_uuid(vmx: Path) -> str:
    """The VM's ``uuid.bios`` as libvirt spells it: the UUID vm2kvm (and virt-v2v) give the domain."""
    line = next(x for x in vmx.read_text().splitlines() if x.startswith("uuid.bios"))
    digits = line.split("=", 1)[1].strip().strip('"').replace(" ", "").replace("-", "")
    return str(uuid.UUID(digits))


@pytest.mark.parametrize("same_vm", [False, True], ids=["another-uuid", "same-vm-uuid"])
def test_domain_name_taken_mid_job_is_domain_exists_and_theirs_stays(
    same_vm: bool,
    reliab_daemon: Callable[..., ServiceDaemon],
    own_libvirtd: PrivateLibvirtd,
    own_pool: DirPool,
    domain_name: str,
    vm_dir: Path,
) -> None:
    """``same_vm``: the other client migrated the same VM (virt-v2v gives it the same UUID); libvirt
    would then silently replace its definition with ours, so only vm2kvm's own check stops that."""
    vmx = small_vm(vm_dir)
    daemon = reliab_daemon(env={HOLD_ENV: "copy:2"})
    number = start_job(daemon, str(vmx), "--name", domain_name)
    wait_phase(daemon.address, number, "copy")
    theirs = bios_uuid(vmx) if same_vm else str(uuid.uuid4())
    conn = connect(own_libvirtd.uri)
    try:
        conn.defineXML(
            f"<domain type='qemu'><name>{domain_name}</name><uuid>{theirs}</uuid>"
            "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
        )
        props = wait_finished(daemon.address, number, timeout=60)
        assert props["State"] == "failed"
        name, message = props["Error"]
        assert name == "org.vm2kvm.Error.DomainExists", props["Error"]
        assert domain_name in message
        # Someone else's domain: still there, still theirs.
        assert conn.lookupByName(domain_name).UUIDString() == theirs
        assert conn.lookupByName(domain_name).maxMemory() == 64 * 1024
        conn.lookupByName(domain_name).undefine()
    finally:
        conn.close()
    assert leftovers(own_libvirtd, own_pool, daemon, domain_name, number) == NOTHING
