"""vm2kvmctl as a user runs it, against vm2kvmd on a private bus.

The daemon runs in this process with an injected runner/inspector
(``tests/service/support.py``); the CLI is a real subprocess
(``python -m vm2kvmctl.main``, and once the installed console script).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.service.support import (
    Disk,
    ScriptedRunner,
    StaticInspector,
    missing_source,
    serve_daemon,
)
from vm2kvmd.constants import BUS_NAME, job_path
from vm2kvmd.daemon import Daemon
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.jobs.state import JobState

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).parent / "vm2kvmctl"

# What InspectResult.to_json() gives for a small VM (trimmed to what the summary uses).
INSPECTION: dict[str, Any] = {
    "source": "/vms/web1/web1.vmx",
    "name": "web1",
    "display_name": "Web 1",
    "uuid": "564d3b8e-1f2a-9c47-a1d5-6e027c9a4b31",
    "source_uuid": "564d3b8e-1f2a-9c47-a1d5-6e027c9a4b31",
    "guest_os": "debian11-64",
    "hw_version": 19,
    "firmware": "efi",
    "secure_boot": True,
    "domain_type": "kvm",
    "machine": "q35",
    "cpu": {"vcpus": 4, "cores_per_socket": 2, "sockets": 2, "cores": 2, "threads": 1},
    "memory": {"size_mib": 2048},
    "disks": [
        {
            "key": "scsi0:0",
            "file": "web1.vmdk",
            "missing": False,
            "virtual_size": 8 << 30,
            "target": {"dev": "sda", "bus": "sata", "path": "/pool/web1-disk1.qcow2", "format": "qcow2"},
        },
        {
            "key": "scsi0:1",
            "file": "data.vmdk",
            "missing": True,
            "problem": "data.vmdk: file not found",
            "virtual_size": None,
            "target": None,
        },
    ],
    "cdroms": [
        {
            "key": "sata0:1",
            "kind": "image",
            "file": "deb.iso",
            "path": "/isos/deb.iso",
            "missing": False,
            "target": {"dev": "sdc", "bus": "sata", "path": "/isos/deb.iso"},
        },
    ],
    "floppies": [],
    "nics": [
        {
            "key": "ethernet0",
            "mac": "00:50:56:3a:7e:10",
            "model": "vmxnet3",
            "network": "VM Network",
            "target": {"kind": "network", "name": "default", "model": "e1000", "link_up": True},
        },
    ],
    "video": {"vram_kib": 16384, "target_model": "vga"},
    "sound": {"model": "hdaudio", "target_model": "ich9"},
    "usb": {"uhci": False, "ehci": True, "xhci": True, "target_model": "qemu-xhci"},
    "notes": ["ethernet0: NIC model vmxnet3 becomes e1000", "scsi0:1: disk data.vmdk is missing"],
    "domain_xml": "<domain type='kvm'>\n  <name>web1</name>\n</domain>\n",
}


@dataclass
class Run:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("vm2kvmctl: error:")]


def ctl_env(address: str, env_var: str = "DBUS_SESSION_BUS_ADDRESS") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env[env_var] = address
    env["PYTHONPATH"] = str(REPO)  # `python -m vm2kvmctl.main` from any working directory
    return env


async def start_ctl(
    address: str,
    *args: str,
    cwd: Path | None = None,
    env_var: str = "DBUS_SESSION_BUS_ADDRESS",
    stdin: int = asyncio.subprocess.DEVNULL,
) -> asyncio.subprocess.Process:
    bus_args: Sequence[str] = ("--bus", "session") if env_var == "DBUS_SESSION_BUS_ADDRESS" else ()
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vm2kvmctl.main",
        *bus_args,
        *args,
        cwd=cwd or REPO,
        env=ctl_env(address, env_var),
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, within: float = 30.0, err_so_far: str = "") -> Run:
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err_so_far + err.decode())


async def following(proc: asyncio.subprocess.Process, within: float = 20.0) -> str:
    """Stderr up to the first progress line: the CLI is following its job (and handles Ctrl-C)."""
    assert proc.stderr is not None
    seen = ""
    async with asyncio.timeout(within):
        while "phase copy" not in seen:
            line = await proc.stderr.readline()
            assert line, f"vm2kvmctl ended early: {seen}"
            seen += line.decode()
    return seen


async def first_line_then_finish(
    proc: asyncio.subprocess.Process, hold: asyncio.Event, stream: str = "stdout"
) -> tuple[str, Run]:
    """The first line vm2kvmctl writes to ``stream`` (within 10 s) while the job is held, then
    the job released and vm2kvmctl run to its end (a stderr line stays in ``Run.err``)."""
    reader = proc.stdout if stream == "stdout" else proc.stderr
    assert reader is not None
    async with asyncio.timeout(10):
        first = (await reader.readline()).decode()
    hold.set()
    return first, await finish(proc, err_so_far=first if stream == "stderr" else "")


async def ctl(address: str, *args: str, **kwargs: Any) -> Run:
    return await finish(await start_ctl(address, *args, **kwargs))


def assert_one_error_line(run: Run, expected: str) -> None:
    assert run.error_lines == [f"vm2kvmctl: error: {expected}"], run.err
    assert "Traceback" not in run.err
    assert "org.vm2kvm.Error" not in run.err


# --- reaching the daemon --------------------------------------------------------------


async def test_daemon_not_running(private_bus: str) -> None:
    run = await ctl(private_bus, "jobs")
    assert run.status == 2
    assert run.out == ""
    assert run.err.splitlines() == [
        f"vm2kvmctl: error: vm2kvmd is not running (nothing owns {BUS_NAME} on the session bus)"
    ]


async def test_no_bus(tmp_path: Path) -> None:
    run = await ctl(f"unix:path={tmp_path}/nothing", "status", "1")
    assert run.status == 2
    assert run.err.splitlines() == [
        "vm2kvmctl: error: cannot connect to the session bus: No such file or directory"
    ]


async def test_system_bus_is_the_default(private_bus: str) -> None:
    async with serve_daemon(private_bus):
        run = await ctl(private_bus, "jobs", env_var="DBUS_SYSTEM_BUS_ADDRESS")
    assert run.status == 0, run.err
    assert run.out.strip() == "No jobs."


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="vm2kvmctl console script not installed")
async def test_console_script(private_bus: str) -> None:
    async with serve_daemon(private_bus):
        proc = await asyncio.create_subprocess_exec(
            str(CONSOLE_SCRIPT),
            "--bus",
            "session",
            "--json",
            "jobs",
            env=ctl_env(private_bus),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        run = await finish(proc)
    assert run.status == 0, run.err
    assert run.json() == []


# --- migrate ---------------------------------------------------------------------------


async def test_migrate_follows_the_job_to_completion(private_bus: str, tmp_path: Path) -> None:
    runner = ScriptedRunner(disks=(Disk("scsi0:0", "/pool/web1-disk1.qcow2", 64 << 20),), steps=20)
    async with serve_daemon(private_bus, runner=runner):
        run = await ctl(
            private_bus,
            "migrate",
            "vms/web1.vmx",
            "--name",
            "web1",
            "--network",
            "VM Network=default",
            "--bridge",
            "DMZ=br0",
            "--output-dir",
            "out",
            "--datastore",
            "ds1=stores/ds1",
            "--format",
            "raw",
            "--allow-external-paths",
            cwd=tmp_path,
        )
    assert run.status == 0, run.err
    ((source, options),) = runner.calls
    # Paths are made absolute before they are sent.
    assert source == str(tmp_path / "vms/web1.vmx")
    assert options.output_dir == str(tmp_path / "out")
    assert options.datastores == (("ds1", str(tmp_path / "stores/ds1")),)
    assert options.networks == (("VM Network", "default"),)
    assert options.bridges == (("DMZ", "br0"),)
    assert options.format == "raw"
    assert options.allow_external_paths is True
    assert run.out.splitlines() == [
        f"Job 1 completed: {tmp_path}/vms/web1.vmx -> domain vm",
        "Outputs:",
        "  /pool/web1-disk1.qcow2",
        "Notes:",
        "  sound.virtualDev: sound card es1371 mapped to ich9",
    ]
    # Not a terminal: plain progress lines, no bars or escape codes.
    assert "\x1b[" not in run.err
    lines = run.err.splitlines()
    for phase in ("inspect", "prepare", "copy", "define"):
        assert f"job 1: phase {phase}" in lines
    assert "job 1: disk scsi0:0 -> /pool/web1-disk1.qcow2 (64.0 MiB)" in lines
    assert any(line.startswith("job 1: copied ") for line in lines)


async def test_migrate_json(private_bus: str) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=2)):
        run = await ctl(private_bus, "migrate", "/vms/a.vmx", "--json")
        global_flag = await ctl(private_bus, "--json", "migrate", "/vms/b.vmx")
    assert run.status == 0, run.err
    data = run.json()
    assert data["job"] == job_path(1)
    assert data["number"] == 1
    assert data["state"] == "completed"
    assert data["progress"] == 1.0
    assert data["error"] is None
    assert data["domain"] == "vm"
    assert run.err == ""  # no progress lines in JSON mode
    assert global_flag.json()["number"] == 2


async def test_failed_job_is_one_line(private_bus: str) -> None:
    failure = Vm2kvmError(ErrorCode.NO_SPACE, "pool default has 1.0 GiB free, 8.0 GiB needed", key="pool")
    async with serve_daemon(private_bus, runner=ScriptedRunner(fail=failure, fail_phase="prepare")):
        run = await ctl(private_bus, "migrate", "/vms/a.vmx")
        as_json = await ctl(private_bus, "migrate", "/vms/a.vmx", "--json")
    assert run.status == 1
    assert_one_error_line(run, "key pool: pool default has 1.0 GiB free, 8.0 GiB needed")
    assert as_json.status == 1
    assert as_json.json()["error"] == {
        "name": "org.vm2kvm.Error.NoSpace",
        "message": "key pool: pool default has 1.0 GiB free, 8.0 GiB needed",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--network", "=novalue"],
            "key network: option network must look like VMWARE=TARGET, or TARGET for every other network "
            "(value '=novalue')",
        ),
        (["--network", "a=b", "--bridge", "a=br0"], "key network: option network is mapped twice"),
    ],
)
async def test_invalid_option_is_one_line(private_bus: str, args: list[str], message: str) -> None:
    async with serve_daemon(private_bus):
        run = await ctl(private_bus, "migrate", "/vms/a.vmx", *args)
        as_json = await ctl(private_bus, "migrate", "/vms/a.vmx", *args, "--json")
        jobs = await ctl(private_bus, "jobs", "--json")
    assert run.status == 1
    assert run.error_lines and run.error_lines[0].startswith(f"vm2kvmctl: error: {message}")
    assert len(run.err.splitlines()) == 1
    assert "org.vm2kvm.Error" not in run.err
    assert as_json.status == 1
    assert as_json.json()["error"]["name"] == "org.vm2kvm.Error.InvalidOption"
    assert jobs.json() == []


async def test_detach_then_watch(private_bus: str) -> None:
    hold = asyncio.Event()
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=hold)):
        started = await ctl(private_bus, "migrate", "/vms/a.vmx", "--detach")
        started_json = await ctl(private_bus, "migrate", "/vms/b.vmx", "--detach", "--json")
        watch = await start_ctl(private_bus, "watch", "1")
        await asyncio.sleep(0.3)
        hold.set()
        watched = await finish(watch)
        watched_again = await ctl(private_bus, "watch", job_path(1))  # finished: reports at once
    assert started.status == 0
    assert started.out.strip() == (f"Started job 1 ({job_path(1)}); follow it with: vm2kvmctl watch 1")
    assert started_json.json() == {"job": job_path(2), "number": 2}
    assert watched.status == 0, watched.err
    assert watched.out.startswith("Job 1 completed: /vms/a.vmx -> domain vm")
    assert watched_again.status == 0
    assert watched_again.out == watched.out


# --- jobs, status, cancel --------------------------------------------------------------------


async def test_jobs_and_status(private_bus: str) -> None:
    failure = Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img: read error")
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1)) as daemon:
        await ctl(private_bus, "migrate", "/vms/a.vmx", "--name", "a")
        daemon.manager._runner = ScriptedRunner(fail=failure)
        await ctl(private_bus, "migrate", "/vms/b [old].vmx")
        table = await ctl(private_bus, "jobs")
        as_json = await ctl(private_bus, "jobs", "--json")
        status = await ctl(private_bus, "status", "2")
        status_json = await ctl(private_bus, "status", job_path(1), "--json")
        unknown = await ctl(private_bus, "status", "7")
        bad = await ctl(private_bus, "status", "seven")
    assert table.status == 0
    rows = [line.split() for line in table.out.splitlines()]
    assert rows[0] == ["JOB", "STATE", "PHASE", "PROGRESS", "USER", "SOURCE", "DOMAIN"]
    assert rows[1] == ["1", "completed", "define", "100%", "root", "/vms/a.vmx", "vm"]
    assert rows[2][:3] == ["2", "failed", "cleanup"]
    assert "/vms/b [old].vmx" in table.out  # no markup eaten
    listed = as_json.json()
    assert [job["number"] for job in listed] == [1, 2]
    assert listed[1]["error"] == {"name": "org.vm2kvm.Error.CopyFailed", "message": "qemu-img: read error"}
    assert status.status == 0
    assert "State:    failed" in status.out
    assert "Error:    qemu-img: read error" in status.out
    assert "Source:   /vms/b [old].vmx" in status.out
    details = status_json.json()
    assert details["options"] == {"name": "a"}
    assert details["disks"][0]["bytes"] == details["disks"][0]["bytes_done"] > 0
    assert unknown.status == 1
    assert_one_error_line(unknown, "no such job 7")
    assert bad.status == 2
    assert_one_error_line(bad, "JOB must be a job number or a job object path, not 'seven'")


async def test_cancel(private_bus: str) -> None:
    runner = ScriptedRunner(hold=asyncio.Event())
    async with serve_daemon(private_bus, runner=runner):
        await ctl(private_bus, "migrate", "/vms/a.vmx", "--detach")
        await runner.copying.wait()
        cancelled = await ctl(private_bus, "cancel", "1")
        again = await ctl(private_bus, "cancel", "1")
        status = await ctl(private_bus, "status", "1", "--json")
    assert cancelled.status == 0, cancelled.err
    assert cancelled.out.strip() == "Job 1 cancelled."
    assert again.status == 1
    assert_one_error_line(again, "job 1 has already cancelled; nothing to cancel")
    assert status.json()["state"] == "cancelled"
    assert status.json()["error"]["name"] == "org.vm2kvm.Error.Cancelled"


async def test_ctrl_c_cancels_the_migration(private_bus: str) -> None:
    runner = ScriptedRunner(hold=asyncio.Event())
    async with serve_daemon(private_bus, runner=runner) as daemon:
        proc = await start_ctl(private_bus, "migrate", "/vms/a.vmx")
        err = await following(proc)
        proc.send_signal(signal.SIGINT)
        run = await finish(proc, err_so_far=err)
        job = daemon.manager.jobs[0]
    assert run.status == 130, run.err
    assert job.state is JobState.CANCELLED
    assert runner.cleaned_up
    assert_one_error_line(run, "job 1 cancelled: cancelled by request")


async def test_ctrl_c_stops_watching_only(private_bus: str) -> None:
    hold = asyncio.Event()
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=hold)) as daemon:
        await ctl(private_bus, "migrate", "/vms/a.vmx", "--detach")
        proc = await start_ctl(private_bus, "watch", "1")
        err = await following(proc)
        proc.send_signal(signal.SIGINT)
        run = await finish(proc, err_so_far=err)
        state = daemon.manager.jobs[0].state
        hold.set()
    assert run.status == 130, run.err
    assert state is JobState.RUNNING
    assert "Job 1 is still running; vm2kvmctl watch 1 follows it again." in run.err


async def test_daemon_vanishing_while_following(private_bus: str) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=asyncio.Event())) as daemon:
        proc = await start_ctl(private_bus, "migrate", "/vms/a.vmx")
        err = await following(proc)
        drop_connection(daemon)  # as if vm2kvmd crashed: no Completed, the name goes away
        run = await finish(proc, err_so_far=err)
    assert run.status == 2
    assert_one_error_line(run, "vm2kvmd stopped while job 1 was running")


def drop_connection(daemon: Daemon) -> None:
    daemon.bus.disconnect()


# --- inspect -----------------------------------------------------------------------------------


async def test_inspect_summary(private_bus: str, tmp_path: Path) -> None:
    inspector = StaticInspector(data=INSPECTION)
    async with serve_daemon(private_bus, inspector=inspector):
        run = await ctl(private_bus, "inspect", "web1.vmx", "--pool", "fast", cwd=tmp_path)
    assert run.status == 0, run.err
    ((source, options),) = inspector.calls
    assert source == str(tmp_path / "web1.vmx")
    assert options.pool == "fast"
    lines = run.out.splitlines()
    for expected in (
        "Name:      web1 (VMware: Web 1)",
        "UUID:      564d3b8e-1f2a-9c47-a1d5-6e027c9a4b31",
        "Firmware:  EFI with Secure Boot; machine q35, type kvm",
        "CPUs:      4 (2 sockets x 2 cores x 1 thread)",
        "Memory:    2048 MiB",
        "  scsi0:0: web1.vmdk (8.0 GiB) -> sata sda, qcow2 /pool/web1-disk1.qcow2",
        "  scsi0:1: data.vmdk (size unknown) MISSING: data.vmdk: file not found",
        "  sata0:1: /isos/deb.iso -> drive sdc on sata",
        "  ethernet0: 00:50:56:3a:7e:10, vmxnet3 on 'VM Network' -> e1000 on network 'default'",
        "Video:     16.0 MiB VRAM -> vga",
        "Sound:     hdaudio -> ich9",
        "USB:       USB 2.0, USB 3 -> qemu-xhci",
        "  - ethernet0: NIC model vmxnet3 becomes e1000",
        "<domain type='kvm'>",
    ):
        assert expected in lines, expected


async def test_inspect_xml_and_json(private_bus: str) -> None:
    async with serve_daemon(private_bus, inspector=StaticInspector(data=INSPECTION)):
        xml = await ctl(private_bus, "inspect", "/vms/web1.vmx", "--xml")
        as_json = await ctl(private_bus, "inspect", "/vms/web1.vmx", "--json")
        both = await ctl(private_bus, "inspect", "/vms/web1.vmx", "--json", "--xml")
    assert xml.status == 0
    assert xml.out == INSPECTION["domain_xml"]
    assert xml.err.splitlines() == [f"vm2kvmctl: warning: {note}" for note in INSPECTION["notes"]]
    assert as_json.json() == INSPECTION
    assert both.status == 2
    assert_one_error_line(both, "--xml and --json exclude each other")


async def test_inspect_errors(private_bus: str) -> None:
    async with serve_daemon(private_bus, inspector=missing_source):
        missing = await ctl(private_bus, "inspect", "/vms/gone.vmx")
    async with serve_daemon(private_bus, inspector=StaticInspector(fail=RuntimeError("secret-detail"))):
        bug = await ctl(private_bus, "inspect", "/vms/a.vmx")
    assert missing.status == 1
    assert_one_error_line(missing, "/vms/gone.vmx: no such file")
    assert bug.status == 1
    assert_one_error_line(bug, "internal error in vm2kvmd; details are in the daemon log")
    assert "secret-detail" not in bug.err
