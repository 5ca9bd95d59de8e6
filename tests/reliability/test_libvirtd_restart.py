"""libvirtd restarted or gone while jobs run, through a real vm2kvmd and the test's own libvirtd.

The job is held for a moment on entering the phase under test
(``VM2KVMD_TEST_HOLD``) so the fault lands there; the volumes exist by then
and the domain is defined after it, so the job meets the dead connection in
its next libvirt call.  Restarted within the bound: the job completes, its
log tells the outage.  Away past the bound (``libvirt_retry_seconds = 3``):
``LibvirtUnavailable`` and nothing left once libvirtd is back.  Down at the
start: ``Migrate`` refuses at once, no job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.private_libvirtd import PrivateLibvirtd
from testbed.services import DirPool
from tests.e2e.lifecycle_support import (
    HOLD_ENV,
    DBusCallError,
    ServiceDaemon,
    dbus_call,
    manager_jobs,
    start_job,
    wait_finished,
    wait_phase,
)
from tests.helpers.vmdk_factory import sha256_tree
from tests.reliability.conftest import connect
from tests.reliability.support import NOTHING, job_log, leftovers, same_content, small_vm
from vm2kvmd.constants import MANAGER_IFACE, MANAGER_PATH

pytestmark = pytest.mark.libvirt

UNAVAILABLE = "org.vm2kvm.Error.LibvirtUnavailable"


def test_libvirtd_restarted_during_the_copy_job_completes(
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
    own_libvirtd.restart_after(4)  # as `apt upgrade` does: stopped now, back 4 s later

    props = wait_finished(daemon.address, number, timeout=120)
    own_libvirtd.join()
    assert props["State"] == "completed", props["Error"]
    assert props["Domain"] == domain_name
    conn = connect(own_libvirtd.uri)
    try:
        assert conn.lookupByName(domain_name).UUIDString()
    finally:
        conn.close()
    (volume,) = props["Outputs"]
    assert same_content(vm_dir / "disk.vmdk", volume)
    log = job_log(daemon, number)
    waiting = [line for line in log if "not reachable since" in line]
    assert waiting and "retrying for up to 120 s" in waiting[0], log
    assert any("reachable again after" in line for line in log), log
    assert sha256_tree(vm_dir) == before


def test_libvirtd_away_past_the_bound_fails_named_and_leaves_nothing(
    reliab_daemon: Callable[..., ServiceDaemon],
    own_libvirtd: PrivateLibvirtd,
    own_pool: DirPool,
    domain_name: str,
    vm_dir: Path,
) -> None:
    vmx = small_vm(vm_dir)
    before = sha256_tree(vm_dir)
    daemon = reliab_daemon(retry=3, env={HOLD_ENV: "copy:1"})
    number = start_job(daemon, str(vmx), "--name", domain_name)
    wait_phase(daemon.address, number, "copy")
    own_libvirtd.stop()
    stopped = time.monotonic()

    props = wait_finished(daemon.address, number, timeout=60)
    assert props["State"] == "failed"
    name, message = props["Error"]
    assert name == UNAVAILABLE, props["Error"]
    assert "not reachable since" in message and "up to 3 s" in message, message
    assert time.monotonic() - stopped < 30  # the bound, not forever
    log = job_log(daemon, number)
    assert any("retrying for up to 3 s" in line for line in log), log
    assert daemon.alive

    own_libvirtd.start()
    assert leftovers(own_libvirtd, own_pool, daemon, domain_name, number) == NOTHING
    assert sha256_tree(vm_dir) == before


def test_migrate_answers_at_once_when_libvirtd_is_down(
    reliab_daemon: Callable[..., ServiceDaemon],
    own_libvirtd: PrivateLibvirtd,
    own_pool: DirPool,
    domain_name: str,
    vm_dir: Path,
) -> None:
    vmx = small_vm(vm_dir)
    daemon = reliab_daemon()
    own_libvirtd.stop()
    begin = time.monotonic()
    run = daemon.ctl("migrate", str(vmx), "--name", domain_name, "--detach", "--json")
    assert time.monotonic() - begin < 15  # a Python start for vm2kvmctl, and no waiting
    assert run.status != 0
    assert "cannot connect to libvirt" in run.err and "is libvirtd running?" in run.err, run.err
    # The error's name, as a D-Bus caller sees it.
    call = dbus_call(daemon.address, MANAGER_PATH, MANAGER_IFACE, "Migrate", "sa{sv}", [str(vmx), {}])
    with pytest.raises(DBusCallError) as exc:
        asyncio.run(call)
    assert exc.value.name == UNAVAILABLE
    assert manager_jobs(daemon.address) == []
