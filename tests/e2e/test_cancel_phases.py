"""Cancel works in every phase of a migration and leaves nothing behind.

A real vm2kvmd per test, held in the phase under test
(``VM2KVMD_TEST_HOLD=<phase>:60``, a cancellable sleep on entering it), the
job cancelled with ``vm2kvmctl cancel`` once its ``Phase`` property says it
is there.  Then: state cancelled, no residue anywhere (pool, work directory,
domains, the store's residue records), the source unchanged, no process of
the job still running, and ``cancel`` back within ``CANCEL_BOUND``.  A hold
sleeps before the phase's work starts, so two tests cancel real work: one
while qemu-img writes a volume, one while the libguestfs appliance of a
phony guest is up (convert).  A queued job is cancelled before it ever ran.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from testbed.disks import make_vmdk as make_data_vmdk
from testbed.services import DirPool, unique_name
from tests.e2e.lifecycle_support import (
    CANCELLED,
    HOLD_ENV,
    MakeDaemon,
    MiB,
    ServiceDaemon,
    appliance,
    cancel_now,
    converting_job,
    descendants,
    get_log,
    job_props,
    make_vm,
    no_residue,
    phony_vm,
    residue,
    start_job,
    still_running,
    store_residues,
    volumes,
    wait_finished,
    wait_for,
    wait_phase,
    work_files,
)
from tests.e2e.support import VmxDisk, write_vmx
from tests.helpers.vmdk_factory import sha256_tree

pytestmark = pytest.mark.libvirt

# A cancelled job kills its processes and removes what it made: seconds, however long the phase.
CANCEL_BOUND = 10.0
# Phases after which the job has created volumes and overlays: cancelling there must undo them.
CREATED = ("copy", "verify", "define")


@pytest.fixture(autouse=True)
def _libvirtd_up(libvirt_conn: Any) -> None:
    """A libvirtd answers (another session may have stopped the one we found; this starts ours)."""
    libvirt_conn.getLibVersion()


def cancel(daemon: ServiceDaemon, number: int) -> None:
    """``vm2kvmctl cancel N``, which returns once the job has stopped: within ``CANCEL_BOUND``."""
    begin = time.monotonic()
    run = daemon.ctl("cancel", str(number), timeout=90)
    seconds = time.monotonic() - begin
    assert run.status == 0, f"{run.err}\n{daemon.logs()}"
    assert f"Job {number} cancelled." in run.out, run.out
    assert seconds < CANCEL_BOUND, f"cancelling job {number} took {seconds:.1f} s"


@pytest.mark.parametrize(
    ("phase", "extra"),
    [("inspect", ()), ("prepare", ()), ("copy", ()), ("verify", ("--verify",)), ("define", ())],
)
def test_cancel_in_phase_leaves_nothing(
    phase: str,
    extra: tuple[str, ...],
    daemons: MakeDaemon,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    vm = make_vm(tmp_path / "vm", f"Cancel In {phase}")
    daemon = daemons(env={HOLD_ENV: f"{phase}:60"}).start()
    number = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", domain_name, *extra)
    wait_phase(daemon.address, number, phase)
    status = daemon.ctl("status", str(number), "--json")
    assert status.status == 0, status.err
    assert (status.json()["state"], status.json()["phase"]) == ("running", phase)
    if phase in CREATED:
        # Something to undo, or the test proves nothing.
        assert len(volumes(libvirt_conn, dir_pool)) == 2
        assert [f for f in work_files(daemon.work_dir) if f.endswith(".qcow2")]
        assert store_residues(daemon.state_dir, number) != []
    children = descendants(daemon.pid)

    cancel(daemon, number)

    props = job_props(daemon.address, number)
    assert props["State"] == "cancelled"
    assert props["Error"][0] == CANCELLED, props["Error"]
    assert props["Domain"] == "" and props["Outputs"] == []
    assert residue(libvirt_conn, dir_pool, daemon, domain_name, [number]) == no_residue([number])
    assert still_running(children) == [], "processes of the cancelled job kept running"
    assert vm.unchanged()
    assert daemon.alive
    assert daemon.terminate()[0] == 0


def test_cancel_while_qemu_img_copies(
    daemons: MakeDaemon, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    """No hold: cancelled while qemu-img really writes the volume, which must be killed and removed."""
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    size = 512 * MiB  # full of data: a copy that takes a while (~0.7 s here)
    disk = make_data_vmdk(vmdir, "big.vmdk", size, writes=[(0, size, 0x3C)])
    vmx = write_vmx(vmdir, "Busy Copy", [VmxDisk("scsi0:0", disk.name)])
    before = sha256_tree(vmdir)
    daemon = daemons().start()
    number = start_job(daemon, str(vmx), "--pool", dir_pool.name, "--name", domain_name)

    def copying() -> list[Any] | None:
        procs = descendants(daemon.pid)
        return procs if [p for p in procs if "qemu-img" in p.cmdline and " convert " in p.cmdline] else None

    children = wait_for(copying, 60, "qemu-img convert to start", interval=0.02)
    cancel_now(daemon.address, number)
    props = wait_finished(daemon.address, number)
    # A copy that won the race and finished first would make this test prove nothing.
    assert props["State"] == "cancelled", (props["State"], props["Error"])
    assert still_running(children) == []
    assert residue(libvirt_conn, dir_pool, daemon, domain_name, [number]) == no_residue([number])
    assert sha256_tree(vmdir) == before
    assert daemon.terminate()[0] == 0


def test_cancel_a_queued_job(
    daemons: MakeDaemon, libvirt_conn: Any, dir_pool: DirPool, tmp_path: Path
) -> None:
    """max_parallel_jobs = 1: the second job waits in the queue; cancelled there, it never runs."""
    vm = make_vm(tmp_path / "vm", "Queued", sizes=[8 * MiB])
    names = [unique_name("dom") for _ in range(3)]
    daemon = daemons(config="max_parallel_jobs = 1\n", env={HOLD_ENV: "inspect:60"}).start()
    first = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", names[0])
    wait_phase(daemon.address, first, "inspect")
    second = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", names[1])
    third = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", names[2])
    props = job_props(daemon.address, second)
    assert (props["State"], props["QueuePosition"]) == ("queued", 1)
    assert job_props(daemon.address, third)["QueuePosition"] == 2
    status = daemon.ctl("status", str(second), "--json")
    assert status.status == 0 and status.json()["state"] == "queued", status.out

    cancel(daemon, second)

    props = job_props(daemon.address, second)
    assert props["State"] == "cancelled"
    assert props["Error"][0] == CANCELLED
    # It never ran: no start, no phase, no phase in its log.
    assert (props["StartTime"], props["Phase"], props["QueuePosition"]) == (0, "", 0)
    assert props["EndTime"] > 0
    log = [message for _time, _phase, message in get_log(daemon.address, second)]
    assert log and not [m for m in log if m.startswith("phase ")], log
    # The job behind it moved up; the running one is still held where it was.
    assert job_props(daemon.address, third)["QueuePosition"] == 1
    assert (job_props(daemon.address, first)["State"], job_props(daemon.address, first)["Phase"]) == (
        "running",
        "inspect",
    )

    cancel(daemon, first)
    # With the slot free, the third one starts (and is held in inspect in its turn).
    wait_phase(daemon.address, third, "inspect")
    cancel(daemon, third)
    for name in names:
        assert residue(libvirt_conn, dir_pool, daemon, name, [first, second, third]) == no_residue(
            [first, second, third]
        )
    assert vm.unchanged()
    assert daemon.terminate()[0] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cancel_in_convert_kills_the_appliance(
    phony_images: dict[str, Path],
    daemons: MakeDaemon,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    pytest.importorskip("guestfs")
    vmdir = tmp_path / "vm"
    vmx, before = phony_vm(phony_images["debian11"], vmdir)
    daemon = daemons().start()
    number, children = converting_job(daemon, vmx, dir_pool.name, domain_name)
    assert job_props(daemon.address, number)["Phase"] == "convert"

    cancel(daemon, number)

    props = job_props(daemon.address, number)
    assert (props["State"], props["Error"][0]) == ("cancelled", CANCELLED)
    left = still_running(children, timeout=10)
    assert left == [], f"still running after cancel: {left}"
    assert appliance(descendants(daemon.pid)) == []
    assert residue(libvirt_conn, dir_pool, daemon, domain_name, [number]) == no_residue([number])
    assert sha256_tree(vmdir) == before
    assert daemon.terminate()[0] == 0
