"""Jobs in the job store: across a manager restart, Dismiss, Retry, GetLog, retention, owners.

In-process managers with injected runners on the private bus; the store is
the real ``JobStore`` (in memory), shared by the "restarted" managers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import pytest
from dbus_fast import MessageType
from dbus_fast.signature import Variant

from tests.service.support import BusClient, Disk, ScriptedRunner, serve_daemon
from vm2kvmd.constants import BUS_NAME, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH, error_name, job_path
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.caller import CURRENT, Caller
from vm2kvmd.service.interface import dbus_methods
from vm2kvmd.service.jobs.state import JobState
from vm2kvmd.service.manager import Manager
from vm2kvmd.service.runner import JobEvents
from vm2kvmd.service.store import JobStore

REPORT = {"format": 1, "name": "vm", "notes": []}


@pytest.fixture
def store() -> Iterator[JobStore]:
    job_store = JobStore.open(None)
    yield job_store
    job_store.close()


@dataclass
class ByFile:
    """Runs the ``ScriptedRunner`` named by the source's file name."""

    runners: dict[str, ScriptedRunner]
    order: list[str] = field(default_factory=list)

    async def __call__(self, source: str, options: MigrateOptions, events: JobEvents) -> Any:
        self.order.append(source)
        return await self.runners[PurePath(source).name](source, options, events)


def assert_error(reply: Any, name: str, *fragments: str) -> None:
    assert reply.message_type is MessageType.ERROR, reply.body
    assert reply.error_name == name, (reply.error_name, reply.body)
    for fragment in fragments:
        assert fragment in reply.body[0]


async def get_jobs(client: BusClient) -> list[str]:
    (jobs,) = await client.call_ok(BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetJobs")
    return list(jobs)


async def test_jobs_survive_a_manager_restart(private_bus: str, client: BusClient, store: JobStore) -> None:
    runner = ByFile(
        {
            "ok.vmx": ScriptedRunner(
                steps=2, report=REPORT, disks=(Disk("scsi0:0", "/pool/ok.qcow2", 1000),)
            ),
            "bad.vmx": ScriptedRunner(fail=Vm2kvmError(ErrorCode.DISK_MISSING, "disk gone", file="/vms/x")),
            "held.vmx": ScriptedRunner(hold=asyncio.Event()),
        }
    )
    async with serve_daemon(private_bus, runner=runner, store=store) as daemon:
        ok = await client.migrate("/vms/ok.vmx", {"name": Variant("s", "web1")})
        await client.wait_for(ok, "Completed")
        bad = await client.migrate("/vms/bad.vmx")
        await client.wait_for(bad, "Completed")
        held = await client.migrate("/vms/held.vmx")
        await client.wait_property(held, "Phase", "copy")
        before = {path: await client.job_props(path) for path in (ok, bad)}
        log_before = (await client.call_ok(BUS_NAME, ok, JOB_IFACE, "GetLog"))[0]
        await daemon.stop(grace=10)  # cancels the held job

    assert [ok, bad, held] == [job_path(1), job_path(2), job_path(3)]
    async with serve_daemon(private_bus, runner=runner, store=store) as daemon:
        assert await get_jobs(client) == [ok, bad, held]
        after = {path: await client.job_props(path) for path in (ok, bad)}
        held_props = await client.job_props(held)
        (report,) = await client.call_ok(BUS_NAME, ok, JOB_IFACE, "GetReport")
        (log_after,) = await client.call_ok(BUS_NAME, ok, JOB_IFACE, "GetLog")
        no_report = await client.job_call(bad, "GetReport")
        # Cancel of a finished job stays harmless; the numbers go on from the store.
        await client.call_ok(BUS_NAME, ok, JOB_IFACE, "Cancel")
        fresh = await client.migrate("/vms/ok.vmx")
        await client.wait_for(fresh, "Completed")
        assert daemon.manager.job(ok).state is JobState.COMPLETED

    assert after == before
    assert after[ok]["State"] == "completed" and after[ok]["Domain"] == "vm"
    assert [list(d) for d in after[ok]["Disks"]] == [["scsi0:0", "/pool/ok.qcow2", 1000, 1000]]
    assert after[ok]["EndTime"] >= after[ok]["StartTime"] >= after[ok]["CreateTime"] > 0
    assert {k: v.value for k, v in after[ok]["Options"].items()} == {"name": "web1"}
    assert after[bad]["State"] == "failed"
    assert list(after[bad]["Error"]) == [error_name(ErrorCode.DISK_MISSING), "/vms/x: disk gone"]
    assert held_props["State"] == "cancelled"
    assert list(held_props["Error"]) == [error_name(ErrorCode.CANCELLED), "vm2kvmd is shutting down"]
    assert held_props["Phase"] == "cleanup" and held_props["EndTime"] > 0
    assert [list(d[:3]) for d in held_props["Disks"]] == [["scsi0:0", "/pool/vm-sda.qcow2", 4 << 20]]
    assert report and '"name": "vm"' in report
    assert_error(no_report, error_name(ErrorCode.NO_REPORT), "job 2 failed in phase copy")
    assert log_after == log_before
    assert fresh == job_path(4)


async def test_get_log_has_the_jobs_lines_with_time_and_phase(
    private_bus: str, client: BusClient, store: JobStore
) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1), store=store):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_for(path, "Completed")
        (lines,) = await client.call_ok(BUS_NAME, path, JOB_IFACE, "GetLog")
    times = [line[0] for line in lines]
    assert times == sorted(times) and times[0] > 1_600_000_000_000_000  # µs since the epoch
    entries = [(phase, message) for _, phase, message in lines]
    assert entries[0] == ("", "migrating /vms/a.vmx")
    assert ("inspect", "phase inspect") in entries
    assert ("copy", "copying") in entries  # a runner's log line
    assert entries[-1] == ("define", "migrated to domain vm")
    assert await asyncio.to_thread(store.log, 1) == [tuple(line) for line in lines]


async def test_dismiss(private_bus: str, client: BusClient, store: JobStore) -> None:
    runner = ScriptedRunner(hold=asyncio.Event())
    calls: list[tuple[int, int]] = []
    async with serve_daemon(private_bus, runner=runner, store=store) as daemon:
        daemon.manager.add_listener(lambda: calls.append(daemon.manager.counts()))
        path = await client.migrate("/vms/a.vmx")
        await client.wait_property(path, "State", "running")
        # The authorizer asks the manager whose job it is (cancel-own-job or manage-all-jobs).
        owner_of = daemon.bus.owner_of
        assert owner_of is not None and owner_of(path) == 0 and owner_of(path + "0") is None
        early = await client.job_call(path, "Dismiss")
        assert runner.hold is not None
        runner.hold.set()
        await client.wait_for(path, "Completed")
        listened = len(calls)
        await client.call_ok(BUS_NAME, path, JOB_IFACE, "Dismiss")
        await client.wait_property(path, "Dismissed", True)
        await client.call_ok(BUS_NAME, path, JOB_IFACE, "Dismiss")  # again: nothing changes
        props = await client.job_props(path)
        jobs = await get_jobs(client)
        assert len(calls) == listened + 1
    assert_error(early, error_name(ErrorCode.INVALID_STATE), "job 1 has not finished (running")
    assert props["Dismissed"] is True
    assert jobs == [path]  # dismissed jobs are still listed
    record = await asyncio.to_thread(store.get, 1)
    assert record is not None and record.dismissed


async def test_retry_makes_a_new_job_with_the_same_source_and_options(
    private_bus: str, client: BusClient, store: JobStore
) -> None:
    failing = ScriptedRunner(fail=Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img died"))
    preflights: list[str] = []

    def preflight(source: str, _options: MigrateOptions) -> object:
        preflights.append(source)
        return None

    options = {"name": Variant("s", "web1"), "format": Variant("s", "raw")}
    async with serve_daemon(private_bus, runner=failing, store=store, preflight=preflight):
        first = await client.migrate("/vms/a.vmx", options)
        await client.wait_for(first, "Completed")
    fixed = ScriptedRunner(steps=1)
    async with serve_daemon(private_bus, runner=fixed, store=store, preflight=preflight):
        # A job of the earlier run (a view from the store) can be retried.
        (second,) = await client.call_ok(BUS_NAME, first, JOB_IFACE, "Retry")
        await client.wait_for(second, "Completed")
        props = await client.job_props(second)
        again = await client.job_call(second, "Retry")  # completed: nothing to retry
        jobs = await get_jobs(client)
    assert second == job_path(2)
    assert props["State"] == "completed"
    assert props["RetryOf"] == 1 and props["User"] == 0
    assert props["Source"] == "/vms/a.vmx"
    assert {k: v.value for k, v in props["Options"].items()} == {"name": "web1", "format": "raw"}
    ((source, opts),) = fixed.calls
    assert (source, opts.name, opts.format) == ("/vms/a.vmx", "web1", "raw")
    assert preflights == ["/vms/a.vmx", "/vms/a.vmx"]  # Retry checks like Migrate
    assert_error(again, error_name(ErrorCode.INVALID_STATE), "job 2 is completed")
    assert jobs == [first, second]


async def test_retry_of_a_running_job_is_invalid(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=asyncio.Event())):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_property(path, "State", "running")
        reply = await client.job_call(path, "Retry")
    assert_error(reply, error_name(ErrorCode.INVALID_STATE), "job 1 is running", "failed or cancelled")


async def test_retention_prunes_and_unexports_old_jobs(
    private_bus: str, client: BusClient, store: JobStore
) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1), store=store, job_retention=2):
        paths = []
        for _ in range(3):
            paths.append(await client.migrate("/vms/a.vmx"))
            await client.wait_for(paths[-1], "Completed")
        await client.wait_for(MANAGER_PATH, "InterfacesRemoved")  # pruned after Completed
        jobs = await get_jobs(client)
        gone = await client.job_call(paths[0], "GetReport")
    removed = [s for s in client.signals if s.member == "InterfacesRemoved"]
    assert [(s.path, s.body) for s in removed] == [(MANAGER_PATH, [paths[0], [JOB_IFACE]])]
    assert jobs == paths[1:]
    assert_error(gone, error_name(ErrorCode.NO_SUCH_JOB), "no such job 1")
    assert [r.number for r in await asyncio.to_thread(store.load)] == [2, 3]
    # At start, too.
    async with serve_daemon(private_bus, store=store, job_retention=1):
        assert await get_jobs(client) == [paths[2]]


async def test_unfinished_records_are_marked_interrupted_at_load(store: JobStore) -> None:
    """vm2kvmd runs recovery first; a manager given unrecovered records still never shows them running."""

    def old_run() -> int:
        store.create("/vms/a.vmx", {}, 1000, now_us=1)
        running = store.create("/vms/b.vmx", {}, 0, now_us=2)
        store.update(running.number, state="running", phase="copy", work_phase="copy", start_time=3)
        return running.number

    running = await asyncio.to_thread(old_run)
    manager = Manager(runner=ScriptedRunner(), store=store)
    await manager.load()
    first, second = manager.jobs
    assert first.state is second.state is JobState.FAILED
    assert manager.job_object(first_path := job_path(first.number)).properties()["Error"] == [
        error_name(ErrorCode.INTERRUPTED),
        "interrupted: vm2kvmd stopped while the job was before it started; vm2kvmctl retry 1 starts it again",
    ]
    assert "in phase copy" in second.status.error[1]
    assert first.user == 1000 and manager.job_owner(first_path) == 1000
    assert manager.job_owner(job_path(99)) is None
    record = await asyncio.to_thread(store.get, running)
    assert record is not None and record.state == "failed" and record.end_time > 0
    await manager.shutdown(grace=1)


async def test_user_is_the_callers_uid(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    async def readable(_caller: Caller, _paths: list[str]) -> None:
        return None  # /vms/a.vmx does not exist; file access has tests of its own

    monkeypatch.setattr("vm2kvmd.service.manager.check_readable", readable)
    manager = Manager(runner=ScriptedRunner(steps=1), store=store)
    migrate = dict(dbus_methods(manager))["Migrate"]
    token = CURRENT.set(Caller(":1.9", 1000, (1000, 10), 42))
    try:
        path = await migrate(manager, "/vms/a.vmx", {})
    finally:
        CURRENT.reset(token)
    job = manager.job(path)
    await job.wait()
    assert job.user == 1000 and manager.job_object(path).properties()["User"] == 1000
    assert manager.job_owner(path) == 1000
    await manager.shutdown(grace=1)  # the store has every write once the manager has stopped
    record = await asyncio.to_thread(store.get, job.number)
    assert record is not None and record.user == 1000 and record.state == "completed"


@pytest.mark.parametrize("member", ["Inspect", "Migrate"])
async def test_file_access_is_checked_before_anything_is_read_or_created(
    private_bus: str, client: BusClient, monkeypatch: pytest.MonkeyPatch, member: str
) -> None:
    checked: list[tuple[int, list[str]]] = []

    async def check_readable(caller: Caller, paths: list[str]) -> None:
        checked.append((caller.uid, list(paths)))
        for path in paths:
            if "secret" in path:
                raise Vm2kvmError(ErrorCode.PERMISSION_DENIED, "you may not read it", file=path)

    # The manager checks the source itself, then the files it refers to through
    # access.read_checked.
    monkeypatch.setattr("vm2kvmd.service.manager.check_readable", check_readable)
    monkeypatch.setattr("vm2kvmd.service.access.check_readable", check_readable)
    monkeypatch.setattr("vm2kvmd.service.access.source_files", lambda result: ["/vms/secret.vmdk"])
    runner = ScriptedRunner()
    preflights: list[str] = []

    def preflight(source: str, _options: MigrateOptions) -> object:
        preflights.append(source)
        return object()

    async with serve_daemon(private_bus, runner=runner, preflight=preflight):
        denied = await client.manager(member, "sa{sv}", ["/vms/secret.vmx", {}])
        later = await client.manager(member, "sa{sv}", ["/vms/a.vmx", {}])
        jobs = await get_jobs(client)
    assert_error(denied, error_name(ErrorCode.PERMISSION_DENIED), "/vms/secret.vmx")
    # The files the source refers to are checked after the preflight/inspection.
    assert_error(later, error_name(ErrorCode.PERMISSION_DENIED), "/vms/secret.vmdk")
    assert checked == [(0, ["/vms/secret.vmx"]), (0, ["/vms/a.vmx"]), (0, ["/vms/secret.vmdk"])]
    assert jobs == [] and runner.calls == []
    if member == "Migrate":
        assert preflights == ["/vms/a.vmx"]
