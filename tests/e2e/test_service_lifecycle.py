"""vm2kvmd as a service across its own death: SIGKILL mid-copy, graceful restarts, dismiss, SIGTERM.

Real vm2kvmd processes (``ServiceDaemon``: a state directory, a work
directory, ``VM2KVMD_TEST_HOLD``) on a private bus, the real vm2kvmctl,
libvirtd and qemu-img.  Every migration is checked for residue everywhere it
could leave some (pool, work directory, domains, the store's residue
records) and its source directory byte for byte.

``kill()`` sends SIGKILL to vm2kvmd alone, as the OOM killer or a ``kill -9``
by hand does (systemd's default KillMode would take the whole cgroup; no
supervisor may be there to do that): the processes vm2kvmd started --
qemu-img, the appliance -- must not outlive it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from testbed.disks import make_unreadable_vmdk
from testbed.disks import make_vmdk as make_data_vmdk
from testbed.services import DirPool, remove_domain, unique_name
from tests.e2e.lifecycle_support import (
    CANCELLED,
    HOLD_ENV,
    INTERRUPTED,
    MakeDaemon,
    MiB,
    ServiceDaemon,
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
from tests.helpers.vmdk_factory import images_equal, sha256_tree

pytestmark = pytest.mark.libvirt


@pytest.fixture(autouse=True)
def _libvirtd_up(libvirt_conn: Any) -> None:
    """A libvirtd answers (another session may have stopped the one we found; this starts ours)."""
    libvirt_conn.getLibVersion()


def domain_identity(conn: Any, name: str) -> tuple[str, list[str], list[str]]:
    """(uuid, MACs, disk source files) of a defined domain."""
    root = etree.fromstring(conn.lookupByName(name).XMLDesc(0).encode())
    uuid = root.xpath("/domain/uuid/text()")
    macs = root.xpath("/domain/devices/interface/mac/@address")
    files = root.xpath("/domain/devices/disk[@device='disk']/source/@file")
    return str(uuid[0]), [str(m) for m in macs], [str(f) for f in files]


def job_entry(jobs: list[dict[str, Any]], number: int) -> dict[str, Any]:
    found = [j for j in jobs if j["number"] == number]
    assert len(found) == 1, (number, [j["number"] for j in jobs])
    return found[0]


def status_json(daemon: ServiceDaemon, number: int) -> dict[str, Any]:
    run = daemon.ctl("status", str(number), "--json")
    assert run.status == 0, run.err
    data: dict[str, Any] = run.json()
    return data


def retry(daemon: ServiceDaemon, number: int) -> int:
    """``vm2kvmctl retry N``: the new job's number, once that job has finished."""
    run = daemon.ctl("retry", str(number), "--json", timeout=180)
    assert run.status == 0, f"{run.err}\n{daemon.logs()}"
    new: int = run.json()["number"]
    assert new != number
    wait_finished(daemon.address, new)
    return new


# --- (a) SIGKILL mid-copy ----------------------------------------------------------------------


def test_kill_mid_copy_recovers_at_start_and_retry_succeeds(
    daemons: MakeDaemon, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    vm = make_vm(tmp_path / "vm", "Killed Mid Copy")
    daemon = daemons(env={HOLD_ENV: "copy:60"}).start()
    number = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", domain_name)
    wait_phase(daemon.address, number, "copy")

    # What a crash now leaves: the volumes, the overlays, and the store's record of both.
    assert len(volumes(libvirt_conn, dir_pool)) == 2
    assert [f for f in work_files(daemon.work_dir) if f.endswith(".qcow2")], work_files(daemon.work_dir)
    kinds = sorted({r.kind for r in store_residues(daemon.state_dir, number)})
    assert "volume" in kinds and "tree" in kinds, kinds
    children = descendants(daemon.pid)
    daemon.kill()
    assert still_running(children) == [], "processes of the killed vm2kvmd kept running"
    # The dead daemon cleaned nothing up: whatever goes now, the next start removed.
    assert len(volumes(libvirt_conn, dir_pool)) == 2
    assert work_files(daemon.work_dir) != []

    daemon.start(env={})  # without the hold: the retry must run through
    job = status_json(daemon, number)
    assert job["state"] == "failed", job
    assert job["error"]["name"] == INTERRUPTED, job
    assert "phase copy" in job["error"]["message"], job
    assert f"retry {number}" in job["error"]["message"], job
    assert residue(libvirt_conn, dir_pool, daemon, domain_name, [number]) == no_residue([number])
    assert vm.unchanged()

    new = retry(daemon, number)
    try:
        props = job_props(daemon.address, new)
        assert props["State"] == "completed", (props["Error"], daemon.logs())
        assert props["RetryOf"] == number
        assert new == number + 1
        assert props["Domain"] == domain_name
        uuid, macs, files = domain_identity(libvirt_conn, domain_name)
        assert uuid == vm.bios_uuid
        assert macs == list(vm.macs)
        assert sorted(files) == sorted(props["Outputs"])
        assert sorted(Path(f).name for f in files) == volumes(libvirt_conn, dir_pool)
        for source, target in zip(vm.disks, files, strict=True):
            assert images_equal(source, Path(target))
        assert work_files(daemon.work_dir) == []
        assert store_residues(daemon.state_dir, new) == []
        again = daemon.ctl("retry", str(new))
        assert again.status != 0 and "completed" in again.err, again.err  # only failed/cancelled ones
    finally:
        remove_domain(libvirt_conn, domain_name)
    assert vm.unchanged()
    assert daemon.terminate()[0] == 0


def test_kill_while_qemu_img_copies(
    daemons: MakeDaemon, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    """No hold: the daemon dies while qemu-img really writes the volume; qemu-img must not outlive it."""
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    size = 512 * MiB  # full of data: a copy that takes a while (~0.7 s here)
    disk = make_data_vmdk(vmdir, "big.vmdk", size, writes=[(0, size, 0x5C)])
    vmx = write_vmx(vmdir, "Busy Copy", [VmxDisk("scsi0:0", disk.name)])
    before = sha256_tree(vmdir)
    daemon = daemons().start()
    number = start_job(daemon, str(vmx), "--pool", dir_pool.name, "--name", domain_name)

    def copying() -> list[Any] | None:
        procs = descendants(daemon.pid)
        busy = [p for p in procs if "qemu-img" in p.cmdline and " convert " in p.cmdline]
        return procs if busy else None

    children = wait_for(copying, 60, "qemu-img convert to start", interval=0.02)
    daemon.kill()
    left = still_running(children, timeout=10)
    assert left == [], f"still running 10 s after vm2kvmd was killed: {left}"
    # Killed with the daemon, not finished as an orphan: the volume holds only the first few percent.
    written = {p.name: p.stat().st_blocks * 512 for p in dir_pool.path.iterdir()}
    assert len(written) == 1, written
    assert all(n < size // 2 for n in written.values()), f"qemu-img outlived vm2kvmd: {written}"

    daemon.start()
    job = status_json(daemon, number)
    assert (job["state"], job["error"]["name"]) == ("failed", INTERRUPTED), job
    assert residue(libvirt_conn, dir_pool, daemon, domain_name, [number]) == no_residue([number])
    assert sha256_tree(vmdir) == before
    assert daemon.terminate()[0] == 0


def test_kill_marks_a_queued_job_interrupted_too(
    daemons: MakeDaemon, libvirt_conn: Any, dir_pool: DirPool, tmp_path: Path
) -> None:
    vm = make_vm(tmp_path / "vm", "Waiting", sizes=[8 * MiB])
    names = [unique_name("dom"), unique_name("dom")]
    daemon = daemons(config="max_parallel_jobs = 1\n", env={HOLD_ENV: "prepare:60"}).start()
    running = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", names[0])
    wait_phase(daemon.address, running, "prepare")
    queued = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", names[1])
    assert job_props(daemon.address, queued)["State"] == "queued"
    daemon.kill()

    daemon.start(env={})
    first, second = status_json(daemon, running), status_json(daemon, queued)
    assert (first["state"], first["error"]["name"]) == ("failed", INTERRUPTED), first
    assert "phase prepare" in first["error"]["message"], first
    assert (second["state"], second["error"]["name"]) == ("failed", INTERRUPTED), second
    assert "before it started" in second["error"]["message"], second
    for name in names:
        assert residue(libvirt_conn, dir_pool, daemon, name, [running, queued]) == no_residue(
            [running, queued]
        )
    assert vm.unchanged()
    assert daemon.terminate()[0] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_during_convert_leaves_no_appliance(
    phony_images: dict[str, Path],
    daemons: MakeDaemon,
    libvirt_conn: Any,
    dir_pool: DirPool,
    domain_name: str,
    tmp_path: Path,
) -> None:
    """SIGKILL while the libguestfs appliance runs on the overlays: it must die with the daemon."""
    pytest.importorskip("guestfs")
    vmdir = tmp_path / "vm"
    vmx, before = phony_vm(phony_images["debian11"], vmdir)
    daemon = daemons().start()
    number, children = converting_job(daemon, vmx, dir_pool.name, domain_name)
    daemon.kill()
    left = still_running(children, timeout=10)
    assert left == [], f"still running 10 s after vm2kvmd was killed: {left}"

    daemon.start()
    job = status_json(daemon, number)
    assert (job["state"], job["error"]["name"]) == ("failed", INTERRUPTED), job
    assert "phase convert" in job["error"]["message"], job
    assert residue(libvirt_conn, dir_pool, daemon, domain_name, [number]) == no_residue([number])
    assert sha256_tree(vmdir) == before
    assert daemon.terminate()[0] == 0


# --- (b) finished jobs survive a graceful restart -------------------------------------------------


def test_finished_jobs_survive_a_restart(
    daemons: MakeDaemon, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    vm = make_vm(tmp_path / "vm", "Survivor", sizes=[16 * MiB])
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    bad = make_unreadable_vmdk(broken_dir, "bad.vmdk", 16 * MiB)
    broken = write_vmx(broken_dir, "Broken", [VmxDisk("scsi0:0", bad.name)])
    broken_sums = sha256_tree(broken_dir)
    daemon = daemons().start()

    done = daemon.ctl("migrate", str(vm.vmx), "--pool", dir_pool.name, "--name", domain_name, "--json")
    assert done.status == 0, done.err
    try:
        ok = done.json()
        failing = daemon.ctl(
            "migrate", str(broken), "--pool", dir_pool.name, "--name", unique_name("dom"), "--json"
        )
        assert failing.status != 0
        failed = failing.json()
        assert failed["state"] == "failed" and failed["number"] == ok["number"] + 1, failed
        report = daemon.ctl("report", str(ok["number"]), "--json")
        assert report.status == 0, report.err
        logs_before = get_log(daemon.address, ok["number"])
        assert [m for _t, _p, m in logs_before if m == "phase copy"], logs_before

        assert daemon.terminate()[0] == 0, daemon.logs()
        daemon.start()

        listed = daemon.ctl("jobs", "--all", "--json")
        assert listed.status == 0, listed.err
        jobs = listed.json()
        stable = ("state", "phase", "source", "domain", "outputs", "notes", "disks", "error", "options")
        for before in (ok, failed):
            after = job_entry(jobs, before["number"])
            assert {k: after[k] for k in stable} == {k: before[k] for k in stable}
        assert ok["outputs"] and all(Path(p).exists() for p in ok["outputs"])
        again = daemon.ctl("report", str(ok["number"]), "--json")
        assert again.status == 0, again.err
        assert json.loads(again.out) == json.loads(report.out)
        assert get_log(daemon.address, ok["number"]) == logs_before
        logs = daemon.ctl("logs", str(ok["number"]), "--source", "store")
        assert logs.status == 0, logs.err
        assert "phase copy" in logs.out
        assert f"defined domain {domain_name}" in logs.out
        failed_logs = daemon.ctl("logs", str(failed["number"]), "--source", "store")
        assert failed_logs.status == 0, failed_logs.err
        assert "bad.vmdk" in failed_logs.out

        # Numbers continue where the last run stopped.
        out = tmp_path / "out"
        out.mkdir()
        third = daemon.ctl("migrate", str(vm.vmx), "--output-dir", str(out), "--name", "third", "--json")
        assert third.status == 0, third.err
        assert third.json()["number"] == failed["number"] + 1
    finally:
        remove_domain(libvirt_conn, domain_name)
    assert vm.unchanged()
    assert sha256_tree(broken_dir) == broken_sums
    assert daemon.terminate()[0] == 0


def test_kill_after_completion_keeps_the_result(
    daemons: MakeDaemon, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    """Recovery undoes unfinished jobs only: a finished migration's domain and volumes stay."""
    vm = make_vm(tmp_path / "vm", "Kept", sizes=[16 * MiB])
    daemon = daemons().start()
    run = daemon.ctl("migrate", str(vm.vmx), "--pool", dir_pool.name, "--name", domain_name, "--json")
    assert run.status == 0, run.err
    try:
        done = run.json()
        daemon.kill()
        daemon.start()
        job = status_json(daemon, done["number"])
        assert (job["state"], job["outputs"], job["domain"]) == ("completed", done["outputs"], domain_name)
        uuid, _macs, files = domain_identity(libvirt_conn, domain_name)
        assert uuid == vm.bios_uuid
        assert sorted(files) == sorted(done["outputs"])
        assert sorted(Path(f).name for f in files) == volumes(libvirt_conn, dir_pool)
        assert images_equal(vm.disks[0], Path(files[0]))
        assert store_residues(daemon.state_dir, done["number"]) == []
    finally:
        remove_domain(libvirt_conn, domain_name)
    assert vm.unchanged()
    assert daemon.terminate()[0] == 0


# --- (c) dismiss ---------------------------------------------------------------------------------------


def test_dismiss_hides_a_job_from_jobs_but_not_from_jobs_all(daemons: MakeDaemon, tmp_path: Path) -> None:
    vm = make_vm(tmp_path / "vm", "Dismissed", sizes=[8 * MiB])
    out = tmp_path / "out"
    out.mkdir()
    daemon = daemons(env={HOLD_ENV: "define:60"}).start()
    held = start_job(daemon, str(vm.vmx), "--output-dir", str(out), "--name", "held")
    wait_phase(daemon.address, held, "define")

    refused = daemon.ctl("dismiss", str(held))
    assert refused.status != 0
    assert "not finished" in refused.err, refused.err
    assert job_props(daemon.address, held)["Dismissed"] is False
    assert daemon.ctl("cancel", str(held)).status == 0

    assert held in [j["number"] for j in daemon.ctl("jobs", "--json").json()]
    dismissed = daemon.ctl("dismiss", str(held))
    assert dismissed.status == 0, dismissed.err
    assert job_props(daemon.address, held)["Dismissed"] is True
    assert held not in [j["number"] for j in daemon.ctl("jobs", "--json").json()]
    assert job_entry(daemon.ctl("jobs", "--all", "--json").json(), held)["state"] == "cancelled"
    assert daemon.ctl("dismiss", "999").status != 0  # no such job

    # Still dismissed after a restart.
    assert daemon.terminate()[0] == 0
    daemon.start()
    assert held not in [j["number"] for j in daemon.ctl("jobs", "--json").json()]
    assert job_entry(daemon.ctl("jobs", "--all", "--json").json(), held)["state"] == "cancelled"
    assert list(out.iterdir()) == []
    assert vm.unchanged()
    assert daemon.terminate()[0] == 0


# --- (d) SIGTERM during a running job -------------------------------------------------------------


def test_sigterm_cancels_a_running_job_and_exits_0(
    daemons: MakeDaemon, libvirt_conn: Any, dir_pool: DirPool, domain_name: str, tmp_path: Path
) -> None:
    from vm2kvmd.daemon import SHUTDOWN_TIMEOUT

    vm = make_vm(tmp_path / "vm", "Stopped Daemon")
    daemon = daemons(config="max_parallel_jobs = 1\n", env={HOLD_ENV: "copy:60"}).start()
    number = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", domain_name)
    wait_phase(daemon.address, number, "copy")
    other = unique_name("dom")
    queued = start_job(daemon, str(vm.vmx), "--pool", dir_pool.name, "--name", other)
    assert job_props(daemon.address, queued)["QueuePosition"] == 1
    assert len(volumes(libvirt_conn, dir_pool)) == 2
    children = descendants(daemon.pid)

    status, seconds = daemon.terminate(timeout=SHUTDOWN_TIMEOUT + 30)
    assert status == 0, daemon.logs()
    assert seconds < SHUTDOWN_TIMEOUT, f"took {seconds:.1f} s"
    assert still_running(children) == []
    assert residue(libvirt_conn, dir_pool, daemon, domain_name, [number]) == no_residue([number])

    assert residue(libvirt_conn, dir_pool, daemon, other, [queued]) == no_residue([queued])

    daemon.start()
    for n in (number, queued):
        job = status_json(daemon, n)
        assert job["state"] == "cancelled", job
        assert job["error"]["name"] == CANCELLED, job
        assert "shutting down" in job["error"]["message"], job
    assert job_props(daemon.address, queued)["StartTime"] == 0  # it never ran
    assert vm.unchanged()
    assert daemon.terminate()[0] == 0
