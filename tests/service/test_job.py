"""Job lifecycle over a real private bus, with an injected runner."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from dbus_fast.signature import Variant

from tests.service.support import BusClient, Disk, ScriptedRunner, serve_daemon
from vm2kvmd.constants import BUS_NAME, JOB_IFACE, MANAGER_PATH, error_name, job_path
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.errors import INTERNAL_MESSAGE
from vm2kvmd.service.jobs.dbus_object import JobObject
from vm2kvmd.service.jobs.job import Job
from vm2kvmd.service.jobs.progress import PropertyBatcher, RateMeter
from vm2kvmd.service.jobs.state import JobState


def changed_values(client: BusClient, path: str, name: str) -> list[object]:
    return [s.body[1][name].value for s in client.job_signals(path, "PropertiesChanged") if name in s.body[1]]


async def test_job_runs_to_completion(private_bus: str, client: BusClient) -> None:
    runner = ScriptedRunner(
        disks=(Disk("scsi0:0", "/pool/a.qcow2", 1000), Disk("nvme0:0", "/pool/b.qcow2", 3000))
    )
    async with serve_daemon(private_bus, runner=runner):
        options = {"name": Variant("s", "web1"), "network": Variant("as", ["VM Network=default"])}
        path = await client.migrate("/vms/web1/web1.vmx", options)
        assert path == job_path(1)
        (completed,) = await client.wait_for(path, "Completed")
        props = await client.job_props(path)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert len(client.job_signals(path, "Completed")) == 1

    assert completed.body == [True, "migrated to domain vm"]
    assert runner.calls[0][0] == "/vms/web1/web1.vmx"
    assert runner.calls[0][1].name == "web1"
    assert changed_values(client, path, "State") == ["running", "completed"]
    # A successful run rolls nothing back: no "cleanup" phase.
    assert changed_values(client, path, "Phase") == ["inspect", "prepare", "convert", "copy", "define"]
    assert props["State"] == "completed"
    assert props["Phase"] == "define"
    assert props["Progress"] == 1.0
    assert props["ProgressValid"] is True
    assert props["Bytes"] == props["BytesDone"] == 4000
    assert [list(d) for d in props["Disks"]] == [
        ["scsi0:0", "/pool/a.qcow2", 1000, 1000],
        ["nvme0:0", "/pool/b.qcow2", 3000, 3000],
    ]
    assert props["Outputs"] == ["/pool/a.qcow2", "/pool/b.qcow2"]
    assert props["Domain"] == "vm"
    assert props["Notes"] == ["sound.virtualDev: sound card es1371 mapped to ich9"]
    assert list(props["Error"]) == ["", ""]
    assert props["Cancelable"] is False
    assert props["Source"] == "/vms/web1/web1.vmx"
    assert props["StartTime"] > 1_600_000_000_000_000  # µs since the epoch, not s or ns
    assert props["ExpectedEndTime"] == 0
    assert {k: v.value for k, v in props["Options"].items()} == {
        "name": "web1",
        "network": ["VM Network=default"],
    }
    # The job was announced through the ObjectManager, from the manager's path.
    added = [s for s in client.signals if s.member == "InterfacesAdded"]
    assert [(s.path, s.body[0]) for s in added] == [(MANAGER_PATH, path)]
    assert added[0].body[1][JOB_IFACE]["Source"].value == "/vms/web1/web1.vmx"


async def test_final_values_are_sent_before_completed(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=3)):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_for(path, "Completed")
    members = [s.member for s in client.signals if s.path == path]
    assert members[-1] == "Completed"
    last_change = client.job_signals(path, "PropertiesChanged")[-1].body[1]
    assert last_change["State"].value == "completed"
    assert last_change["BytesDone"].value == last_change["Bytes"].value > 0


async def test_progress_signals_are_batched(private_bus: str, client: BusClient) -> None:
    # 200 progress reports in about 2 s: far more than 10 per second.
    runner = ScriptedRunner(steps=200, step_delay=0.01)
    async with serve_daemon(private_bus, runner=runner):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_for(path, "Completed", within=30)
    progress = [
        s
        for s in client.job_signals(path, "PropertiesChanged")
        if "BytesDone" in s.body[1] and "State" not in s.body[1] and "Phase" not in s.body[1]
    ]
    span = progress[-1].at - progress[0].at
    assert span > 1.0
    assert 5 <= len(progress) <= 10 * span + 2, (len(progress), span)
    # Rate and the expected end were known while copying.
    assert any(s.body[1]["Rate"].value > 0 for s in progress)
    assert any(s.body[1]["ExpectedEndTime"].value > 0 for s in progress)
    fractions = [s.body[1]["Progress"].value for s in progress]
    assert fractions == sorted(fractions)
    assert all(0.0 <= f <= 1.0 for f in fractions)


async def test_cancel_stops_the_job(private_bus: str, client: BusClient) -> None:
    runner = ScriptedRunner(hold=asyncio.Event())
    async with serve_daemon(private_bus, runner=runner):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_property(path, "Phase", "copy")
        await client.call_ok(BUS_NAME, path, JOB_IFACE, "Cancel")
        (completed,) = await client.wait_for(path, "Completed")
        props = await client.job_props(path)
        # Cancelling again, or a finished job, is harmless.
        await client.call_ok(BUS_NAME, path, JOB_IFACE, "Cancel")
    assert completed.body == [False, "cancelled by request"]
    assert props["State"] == "cancelled"
    assert list(props["Error"]) == [error_name(ErrorCode.CANCELLED), "cancelled by request"]
    assert props["Cancelable"] is False
    assert runner.cleaned_up
    assert changed_values(client, path, "Phase")[-1] == "cleanup"


async def test_failing_runner_sets_error(private_bus: str, client: BusClient) -> None:
    failure = Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img: Could not open", file="/vms/a-flat.vmdk")
    async with serve_daemon(private_bus, runner=ScriptedRunner(fail=failure)):
        path = await client.migrate("/vms/a.vmx")
        (completed,) = await client.wait_for(path, "Completed")
        props = await client.job_props(path)
        # The daemon keeps serving.
        second = await client.migrate("/vms/b.vmx")
    message = "/vms/a-flat.vmdk: qemu-img: Could not open"
    assert completed.body == [False, message]
    assert props["State"] == "failed"
    assert list(props["Error"]) == ["org.vm2kvm.Error.CopyFailed", message]
    assert props["Phase"] == "cleanup"
    assert props["Domain"] == ""
    assert second == job_path(2)


async def test_runner_bug_is_internal_error_without_details(
    private_bus: str, client: BusClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(fail=KeyError("secret-detail"))):
        path = await client.migrate("/vms/a.vmx")
        (completed,) = await client.wait_for(path, "Completed")
        props = await client.job_props(path)
    assert list(props["Error"]) == [error_name(ErrorCode.INTERNAL), INTERNAL_MESSAGE]
    assert completed.body == [False, INTERNAL_MESSAGE]
    # ... while the daemon log has the traceback.
    assert "secret-detail" in caplog.text
    assert "Traceback" in caplog.text


async def test_shutdown_cancels_and_awaits_running_jobs(private_bus: str, client: BusClient) -> None:
    runner = ScriptedRunner(hold=asyncio.Event())
    async with serve_daemon(private_bus, runner=runner) as daemon:
        path = await client.migrate("/vms/a.vmx")
        # Copying: its volumes exist, so the cancelled run rolls back before stop() returns.
        await client.wait_property(path, "Phase", "copy")
        job = daemon.manager.job(path)
        await daemon.stop(grace=10)
        assert job.state is JobState.CANCELLED
        assert runner.cleaned_up
        # Completed went out before the daemon let go of the bus.
        (completed,) = await client.wait_for(path, "Completed")
    assert completed.body == [False, "vm2kvmd is shutting down"]


async def test_events_from_worker_threads(private_bus: str, client: BusClient) -> None:
    """The pipeline may report from a thread (a qemu-img progress reader)."""

    async def threaded(source: str, options: MigrateOptions, events: object) -> object:
        runner = ScriptedRunner(steps=5)

        def report() -> None:
            events.phase("copy")  # type: ignore[attr-defined]
            events.disks(runner.disks)  # type: ignore[attr-defined]
            events.disk_progress(0, 10, runner.disks[0].total)  # type: ignore[attr-defined]

        await asyncio.to_thread(report)
        return await runner(source, options, events)  # type: ignore[arg-type]

    async with serve_daemon(private_bus, runner=threaded):  # type: ignore[arg-type]
        path = await client.migrate("/vms/a.vmx")
        (completed,) = await client.wait_for(path, "Completed")
    assert completed.body[0] is True
    assert changed_values(client, path, "Phase")[0] == "copy"


async def test_cancel_while_queued_never_runs_the_runner() -> None:
    runner = ScriptedRunner()
    job = Job(1, "/vms/a.vmx", MigrateOptions(), runner)
    job.start()
    assert job.cancel()
    await job.wait()
    assert job.state is JobState.CANCELLED
    assert runner.calls == []
    assert not job.cancel()


async def test_cancel_in_the_managers_queue_ends_the_job_at_once() -> None:
    """A job the manager has not started yet has no task: cancelling it finishes it there and then."""
    runner = ScriptedRunner()
    job = Job(1, "/vms/a.vmx", MigrateOptions(), runner)
    obj = JobObject(job)
    ended: list[JobState] = []
    job.on_finished = lambda j: ended.append(j.state)
    job.set_queue_position(3)
    assert obj.properties()["QueuePosition"] == 3
    assert job.cancel("no longer wanted")
    assert ended == [JobState.CANCELLED]
    props = obj.properties()
    assert props["QueuePosition"] == 0 and props["StartTime"] == 0 and props["EndTime"] > 0
    assert props["Error"] == [error_name(ErrorCode.CANCELLED), "no longer wanted"]
    await job.wait()  # returns: the job has ended
    job.start()  # too late: nothing runs
    assert runner.calls == []
    job.dismiss()
    assert obj.properties()["Dismissed"] is True


def test_dismiss_of_an_unfinished_job_is_invalid_state() -> None:
    job = Job(4, "/vms/a.vmx", MigrateOptions(), ScriptedRunner())
    with pytest.raises(Vm2kvmError) as exc:
        job.dismiss()
    assert exc.value.code is ErrorCode.INVALID_STATE
    assert "job 4 has not finished (queued)" in exc.value.describe()


async def test_progress_for_unknown_disk_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    async def bad(source: str, options: MigrateOptions, events: object) -> object:
        events.disk_progress(3, 1, 2)  # type: ignore[attr-defined]
        return await ScriptedRunner(steps=1)(source, options, events)  # type: ignore[arg-type]

    job = Job(1, "/vms/a.vmx", MigrateOptions(), bad)  # type: ignore[arg-type]
    job.start()
    await job.wait()
    assert job.state is JobState.COMPLETED
    assert "unknown disk 3" in caplog.text


def test_rate_meter_uses_a_moving_window() -> None:
    now = [0.0]
    meter = RateMeter(window=5.0, clock=lambda: now[0])
    for second in range(11):
        now[0] = float(second)
        meter.add(second * 100)  # 100 B/s
    assert meter.rate == 100
    for second in range(11, 21):
        now[0] = float(second)
        meter.add(1000 + (second - 10) * 1000)  # now 1000 B/s
    # Only the last five seconds count.
    assert meter.rate == 1000


async def test_batcher_flushes_at_most_every_interval() -> None:
    emitted: list[tuple[float, list[str]]] = []
    loop = asyncio.get_running_loop()
    batcher = PropertyBatcher(lambda names: emitted.append((loop.time(), names)), interval=0.1)
    begin = loop.time()
    for _ in range(50):
        batcher.changed("BytesDone")
        await asyncio.sleep(0.01)
    span = loop.time() - begin
    batcher.changed("State", now=True)
    batcher.close()
    times = [t for t, _ in emitted]
    # The last emission is the immediate one (a state change); the others are batched.
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]
    assert all(gap >= 0.099 for gap in gaps), gaps
    assert 3 <= len(emitted) <= span / 0.1 + 2
    assert emitted[-1][1][-1] == "State"
    batcher.changed("Phase")  # closed: ignored
    assert emitted[-1][1][-1] == "State"
