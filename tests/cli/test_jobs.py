"""vm2kvmctl jobs / retry / dismiss / logs against vm2kvmd on a private bus.

As in ``test_cli.py``: the daemon runs in this process with a ``ScriptedRunner``
(its in-memory job store), vm2kvmctl is a real subprocess.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
from collections.abc import Iterator

import pytest

from tests.cli.test_cli import assert_one_error_line, ctl, first_line_then_finish, start_ctl
from tests.service.support import ScriptedRunner, serve_daemon
from vm2kvmctl.client import DaemonError
from vm2kvmctl.joblog import JournalUnavailable, LogLine, entry_line
from vm2kvmctl.jobs import JournalLog
from vm2kvmctl.main import PRIVILEGES_HINT, daemon_error_text
from vm2kvmd.constants import job_path
from vm2kvmd.daemon import Daemon
from vm2kvmd.errors import ErrorCode, Vm2kvmError

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[[a-z-]+\] \S.*$")
JOURNAL_SOCKET = "/run/systemd/journal/socket"


async def wait_until_finished(daemon: Daemon, number: int, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        await daemon.manager.jobs[number - 1].wait()


# --- jobs, dismiss --------------------------------------------------------------------


async def test_jobs_hides_dismissed_and_shows_queue_and_owner(private_bus: str) -> None:
    hold = asyncio.Event()
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=hold), max_parallel_jobs=1) as daemon:
        for name in ("a", "b", "c"):
            started = await ctl(private_bus, "migrate", f"/vms/{name}.vmx", "--detach")
            assert started.status == 0, started.err
        table = await ctl(private_bus, "jobs")
        queued = await ctl(private_bus, "jobs", "--json")
        status = await ctl(private_bus, "status", "3")
        busy = await ctl(private_bus, "dismiss", "1")
        hold.set()
        await wait_until_finished(daemon, 3)
        dismissed = await ctl(private_bus, "dismiss", "2")
        dismissed_json = await ctl(private_bus, "dismiss", "3", "--json")
        again = await ctl(private_bus, "dismiss", "2")  # already: fine
        shown = await ctl(private_bus, "jobs")
        shown_json = await ctl(private_bus, "jobs", "--json")
        everything = await ctl(private_bus, "jobs", "--all", "--json")
        everything_table = await ctl(private_bus, "--json", "jobs", "--all")
        await ctl(private_bus, "dismiss", "1")
        none_left = await ctl(private_bus, "jobs")
    rows = [line.split() for line in table.out.splitlines()]
    assert rows[0] == ["JOB", "STATE", "PHASE", "PROGRESS", "USER", "SOURCE", "DOMAIN"]
    assert rows[1][:2] == ["1", "running"]
    assert rows[2] == ["2", "queued", "#1", "-", "-", "root", "/vms/b.vmx", "-"]
    assert rows[3][:3] == ["3", "queued", "#2"]
    listed = queued.json()
    assert [job["queue_position"] for job in listed] == [0, 1, 2]
    assert [job["user"] for job in listed] == [0, 0, 0]
    assert listed[0]["user_name"] == "root"
    assert all(job["create_time"] > 0 and job["end_time"] == 0 for job in listed)
    assert all(job["dismissed"] is False and job["retry_of"] == 0 for job in listed)
    assert "State:    queued (position 2)" in status.out
    assert "User:     root" in status.out
    assert busy.status == 1
    assert len(busy.error_lines) == 1 and "job 1 has not finished" in busy.error_lines[0], busy.err
    assert dismissed.status == 0, dismissed.err
    assert dismissed.out.strip() == "Job 2 dismissed; vm2kvmctl jobs --all still lists it."
    assert dismissed_json.json() == {"job": job_path(3), "number": 3, "dismissed": True}
    assert again.status == 0
    assert [line.split()[0] for line in shown.out.splitlines()[1:]] == ["1"]
    assert [job["number"] for job in shown_json.json()] == [1]
    every = everything.json()
    assert [(job["number"], job["dismissed"]) for job in every] == [(1, False), (2, True), (3, True)]
    assert all(job["end_time"] >= job["create_time"] > 0 for job in every)
    assert everything_table.json() == every
    assert none_left.out.strip() == "No jobs. (3 dismissed; vm2kvmctl jobs --all shows them)"


async def test_progress_shows_the_queue_position(private_bus: str) -> None:
    hold = asyncio.Event()
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=hold), max_parallel_jobs=1):
        await ctl(private_bus, "migrate", "/vms/a.vmx", "--detach")
        await ctl(private_bus, "migrate", "/vms/b.vmx", "--detach")
        proc = await start_ctl(private_bus, "migrate", "/vms/c.vmx")
        _first, run = await first_line_then_finish(proc, hold, "stderr")
    assert run.status == 0, run.err
    lines = run.err.splitlines()
    assert lines[0] == "job 3: queued, position 2"
    assert "job 3: queued, position 1" in lines
    assert lines.index("job 3: queued, position 1") < lines.index("job 3: phase copy")


async def test_unknown_job_commands_are_one_line(private_bus: str) -> None:
    async with serve_daemon(private_bus):
        results = [await ctl(private_bus, command, "9") for command in ("dismiss", "retry", "logs")]
        bad = await ctl(private_bus, "logs", "nine")
    for run in results:
        assert run.status == 1
        assert_one_error_line(run, "no such job 9")
    assert bad.status == 2


# --- retry ----------------------------------------------------------------------------


async def test_retry_follows_the_new_job(private_bus: str) -> None:
    failure = Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img: read error")
    async with serve_daemon(private_bus, runner=ScriptedRunner(fail=failure)) as daemon:
        failed = await ctl(private_bus, "migrate", "/vms/a.vmx", "--name", "a")
        daemon.manager._runner = ScriptedRunner(steps=2)
        retried = await ctl(private_bus, "retry", "1")
        not_retryable = await ctl(private_bus, "retry", "2")
        as_json = await ctl(private_bus, "retry", "1", "--json")
        detached = await ctl(private_bus, "retry", job_path(1), "--detach")
        detached_json = await ctl(private_bus, "retry", "1", "--detach", "--json")
        await wait_until_finished(daemon, 5)
        status = await ctl(private_bus, "status", "2")
    assert failed.status == 1
    assert retried.status == 0, retried.err
    assert retried.err.splitlines()[0] == "Retrying job 1 as job 2"
    assert "job 2: phase copy" in retried.err.splitlines()
    assert retried.out.splitlines()[0] == "Job 2 completed: /vms/a.vmx -> domain vm"
    assert not_retryable.status == 1
    assert_one_error_line(not_retryable, "job 2 is completed; only a failed or cancelled job can be retried")
    data = as_json.json()
    assert (data["number"], data["retry_of"], data["state"]) == (3, 1, "completed")
    assert data["options"] == {"name": "a"}  # the same options as job 1
    assert detached.out.strip() == (
        f"Retrying job 1 as job 4 ({job_path(4)}); follow it with: vm2kvmctl watch 4"
    )
    assert detached_json.json() == {"job": job_path(5), "number": 5, "retry_of": 1}
    assert "Retry of: job 1" in status.out


# --- logs -----------------------------------------------------------------------------


async def test_logs_from_the_store(private_bus: str) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=2)):
        await ctl(private_bus, "migrate", "/vms/a.vmx")
        store = await ctl(private_bus, "logs", "1", "--source", "store")
        store_json = await ctl(private_bus, "logs", "1", "--source", "store", "--json")
        auto = await ctl(private_bus, "logs", "1")
    assert store.status == 0, store.err
    lines = store.out.splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), lines
    assert any(line.endswith("[copy] copying") for line in lines)
    assert any(line.endswith("[inspect] phase inspect") for line in lines)
    entries = store_json.json()
    assert [LogLine(**entry).text() for entry in entries] == lines
    assert all(isinstance(entry["time"], int) and entry["time"] > 0 for entry in entries)
    assert [entry["time"] for entry in entries] == sorted(entry["time"] for entry in entries)
    # Here the in-process daemon logs nothing to journald: auto falls back to the store.
    assert auto.status == 0, auto.err
    assert auto.out == store.out


async def test_logs_from_the_journal_when_it_has_nothing(private_bus: str) -> None:
    """``--source journal`` for a job the journal does not know: one line, and where else to look."""
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1)):
        await ctl(private_bus, "migrate", "/vms/a.vmx")
        run = await ctl(private_bus, "logs", "1", "--source", "journal")
    assert run.status == 1
    assert len(run.error_lines) == 1, run.err
    assert run.error_lines[0].endswith("vm2kvmctl logs --source store 1 shows the daemon's copy")


async def test_logs_follow(private_bus: str) -> None:
    hold = asyncio.Event()
    runner = ScriptedRunner(hold=hold, steps=2)
    async with serve_daemon(private_bus, runner=runner):
        await ctl(private_bus, "migrate", "/vms/a.vmx", "--detach")
        await runner.copying.wait()
        proc = await start_ctl(private_bus, "logs", "1", "--follow", "--source", "store")
        first, run = await first_line_then_finish(proc, hold)
    assert run.status == 0, run.err
    lines = [first.rstrip("\n"), *run.out.splitlines()]
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert any(line.endswith("[copy] copying") for line in lines)
    assert any("[define] phase define" in line for line in lines)  # logged after following began
    assert len(lines) == len(set(lines))  # no line twice


@pytest.fixture
def journald_handler() -> Iterator[None]:
    """vm2kvmd's log records also go to the real journald, as the installed daemon sends them."""
    try:
        from systemd import journal
    except ImportError:
        pytest.skip("python3-systemd is not installed: vm2kvmctl cannot read the journal here")
    try:
        journal.Reader(flags=journal.SYSTEM).close()
    except OSError as exc:
        pytest.skip(f"the system journal cannot be opened here: {exc}")
    if not os.path.exists(JOURNAL_SOCKET):
        pytest.skip(
            f"journald is not running here (no {JOURNAL_SOCKET}): the journal opens but nothing "
            "can write the entries this test reads (test_logs_journal.py reads a journald namespace "
            "instance of its own instead)"
        )
    handler = journal.JournalHandler(SYSLOG_IDENTIFIER="vm2kvmd")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("vm2kvmd")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.usefixtures("journald_handler")
async def test_logs_from_the_journal(private_bus: str) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=2)):
        await ctl(private_bus, "migrate", "/vms/a.vmx")
        for _attempt in range(50):  # journald writes asynchronously
            run = await ctl(private_bus, "logs", "1", "--source", "journal")
            if run.out:
                break
            await asyncio.sleep(0.2)
        store = await ctl(private_bus, "logs", "1", "--source", "store", "--json")
    assert run.status == 0, run.err
    lines = run.out.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines
    # The same messages as the store, with the phase of the journal field (times differ by µs).
    assert [line.split("] ", 1)[1] for line in lines] == [entry["message"] for entry in store.json()]


async def test_journal_reader_on_this_host() -> None:
    """Reading the system journal for a job it has no entries of: nothing (or the reason it cannot)."""
    try:
        journal = await JournalLog.open(987654, int(dt.datetime.now().timestamp() * 1_000_000), None)
        try:
            lines = await journal.read()
        finally:
            journal.close()
    except JournalUnavailable as exc:
        assert str(exc)  # one line for the user
    else:
        assert lines == []


def test_journal_entry_to_line() -> None:
    """An entry as ``systemd.journal.Reader`` gives it (with our int converter for the time)."""
    when = dt.datetime(2026, 3, 1, 12, 30, 5).timestamp()
    entry = {
        "__REALTIME_TIMESTAMP": int(when * 1_000_000) + 123,
        "MESSAGE": "job 7: phase copy",
        "VM2KVM_JOB_ID": "7",
        "VM2KVM_PHASE": "copy",
        "SYSLOG_IDENTIFIER": "vm2kvmd",
    }
    line = entry_line(7, entry)
    assert line == LogLine(int(when * 1_000_000) + 123, "copy", "phase copy")
    assert line.text() == "2026-03-01 12:30:05 [copy] phase copy"
    assert entry_line(8, entry).message == "job 7: phase copy"  # another job's prefix is kept
    assert LogLine(0, "", "queued").text().endswith(" [-] queued")


# --- errors ----------------------------------------------------------------------------


def test_not_authorized_suggests_privileges() -> None:
    refused = DaemonError("org.vm2kvm.Error.NotAuthorized", "not authorized for org.vm2kvm.migrate.")
    assert daemon_error_text(refused) == f"not authorized for org.vm2kvm.migrate; {PRIVILEGES_HINT}"
    said = DaemonError("org.vm2kvm.Error.NotAuthorized", "run with more privileges")
    assert daemon_error_text(said) == "run with more privileges"
    other = DaemonError("org.vm2kvm.Error.PermissionDenied", "/vms/a.vmx: permission denied")
    assert daemon_error_text(other) == "/vms/a.vmx: permission denied"
