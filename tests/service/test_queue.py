"""The job queue: MaxParallelJobs, QueuePosition, cancelling queued jobs, counts and listeners."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from dbus_fast.signature import Variant

from tests.service.support import BusClient, ScriptedRunner, serve_daemon
from vm2kvmd.adapters.remote_disk import HostLimiter
from vm2kvmd.constants import BUS_NAME, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH, error_name
from vm2kvmd.errors import ErrorCode
from vm2kvmd.service.jobs.state import JobState
from vm2kvmd.service.manager import Manager
from vm2kvmd.service.runner import pipeline_runner
from vm2kvmd.service.store import JobStore


def changed(client: BusClient, path: str, name: str) -> list[object]:
    return [s.body[1][name].value for s in client.job_signals(path, "PropertiesChanged") if name in s.body[1]]


async def test_one_at_a_time_in_order_with_queue_positions(private_bus: str, client: BusClient) -> None:
    hold = asyncio.Event()
    runner = ScriptedRunner(hold=hold, steps=1)
    counts: list[tuple[int, int]] = []
    async with serve_daemon(private_bus, runner=runner, max_parallel_jobs=1) as daemon:
        manager = daemon.manager
        manager.add_listener(lambda: counts.append(manager.counts()))
        (limit,) = await client.call_ok(
            BUS_NAME,
            MANAGER_PATH,
            "org.freedesktop.DBus.Properties",
            "Get",
            "ss",
            [MANAGER_IFACE, "MaxParallelJobs"],
        )
        first = await client.migrate("/vms/a.vmx")
        second = await client.migrate("/vms/b.vmx")
        third = await client.migrate("/vms/c.vmx")
        await client.wait_property(first, "Phase", "copy")
        queued = [await client.job_props(path) for path in (first, second, third)]
        assert manager.counts() == (1, 2)
        hold.set()
        await client.wait_for(third, "Completed")
        final = [await client.job_props(path) for path in (first, second, third)]
        assert manager.counts() == (0, 0)

    assert limit.value == 1
    assert [(p["State"], p["QueuePosition"]) for p in queued] == [
        ("running", 0),
        ("queued", 1),
        ("queued", 2),
    ]
    assert [p["StartTime"] for p in queued[1:]] == [0, 0]
    # The queue moved: the third job was second, then first in line, then it ran.
    assert changed(client, third, "QueuePosition") == [1, 0]
    assert changed(client, second, "QueuePosition") == [0]
    assert changed(client, third, "State") == ["running", "completed"]
    assert [source for source, _ in runner.calls] == ["/vms/a.vmx", "/vms/b.vmx", "/vms/c.vmx"]
    assert [p["State"] for p in final] == ["completed"] * 3
    # One after the other: each started when the one before had ended.
    assert final[1]["StartTime"] >= final[0]["EndTime"] and final[2]["StartTime"] >= final[1]["EndTime"]
    # InterfacesAdded already told the queue position.
    added = {s.body[0]: s.body[1][JOB_IFACE] for s in client.signals if s.member == "InterfacesAdded"}
    assert [added[p]["QueuePosition"].value for p in (first, second, third)] == [0, 1, 2]
    assert [added[p]["State"].value for p in (first, second, third)] == ["queued"] * 3
    assert (1, 2) in counts and counts[-1] == (0, 0)


async def test_cancelling_a_queued_job(private_bus: str, client: BusClient) -> None:
    hold = asyncio.Event()
    runner = ScriptedRunner(hold=hold, steps=1)
    async with serve_daemon(private_bus, runner=runner, max_parallel_jobs=1) as daemon:
        first = await client.migrate("/vms/a.vmx")
        second = await client.migrate("/vms/b.vmx")
        third = await client.migrate("/vms/c.vmx")
        await client.wait_property(first, "Phase", "copy")
        await client.call_ok(BUS_NAME, second, JOB_IFACE, "Cancel")
        (completed,) = await client.wait_for(second, "Completed")
        await client.wait_property(third, "QueuePosition", 1)
        cancelled = await client.job_props(second)
        # Nothing else was freed or started: the first job still runs, the third still waits.
        assert daemon.manager.counts() == (1, 1)
        assert daemon.manager.job(third).state is JobState.QUEUED
        hold.set()
        await client.wait_for(third, "Completed")
    assert completed.body == [False, "cancelled by request"]
    assert cancelled["State"] == "cancelled"
    assert list(cancelled["Error"]) == [error_name(ErrorCode.CANCELLED), "cancelled by request"]
    assert cancelled["QueuePosition"] == 0 and cancelled["StartTime"] == 0 and cancelled["EndTime"] > 0
    assert cancelled["Phase"] == ""
    assert [source for source, _ in runner.calls] == ["/vms/a.vmx", "/vms/c.vmx"]


async def test_shutdown_cancels_queued_and_running_jobs(private_bus: str, client: BusClient) -> None:
    runner = ScriptedRunner(hold=asyncio.Event())
    async with serve_daemon(private_bus, runner=runner, max_parallel_jobs=1) as daemon:
        first = await client.migrate("/vms/a.vmx")
        second = await client.migrate("/vms/b.vmx")
        await client.wait_property(first, "Phase", "copy")
        await daemon.stop(grace=10)
        states = [daemon.manager.job(p).state for p in (first, second)]
        completed = [(await client.wait_for(p, "Completed"))[0].body for p in (first, second)]
    assert states == [JobState.CANCELLED, JobState.CANCELLED]
    assert completed == [[False, "vm2kvmd is shutting down"]] * 2
    assert len(runner.calls) == 1


async def test_two_parallel_jobs_by_default(private_bus: str, client: BusClient) -> None:
    hold = asyncio.Event()
    runner = ScriptedRunner(hold=hold, steps=1)
    async with serve_daemon(private_bus, runner=runner) as daemon:
        paths = [await client.migrate(f"/vms/{n}.vmx", {"name": Variant("s", n)}) for n in "abc"]
        await client.wait_property(paths[1], "Phase", "copy")
        positions = [(await client.job_props(p))["QueuePosition"] for p in paths]
        assert daemon.manager.counts() == (2, 1)
        hold.set()
        for path in paths:
            await client.wait_for(path, "Completed")
    assert positions == [0, 0, 1]


def test_only_the_pipeline_runner_gets_the_recorder_and_copy_slots() -> None:
    store = JobStore.open(None)
    try:
        manager = Manager(host_disk_parallelism=3, connections_per_host=5)
        runner: Any = manager.job_runner(7, store)
        assert isinstance(runner, functools.partial) and runner.func is pipeline_runner
        assert set(runner.keywords) == {"recorder", "copy_slots", "vsphere", "readers", "bitlocker_key"}
        assert runner.keywords["vsphere"] is None  # a local job: no vSphere source, no password
        assert runner.keywords["bitlocker_key"] is None  # no --key-file
        assert isinstance(runner.keywords["copy_slots"], asyncio.Semaphore)
        # The same semaphore for every job: the limit is the host's.
        other: Any = manager.job_runner(8, store)
        assert other.keywords["copy_slots"] is runner.keywords["copy_slots"]
        # And one limiter of connections per vSphere host for every job.
        assert isinstance(runner.keywords["readers"], HostLimiter)
        assert runner.keywords["readers"].per_host == 5
        assert other.keywords["readers"] is runner.keywords["readers"]
        injected = ScriptedRunner()
        assert Manager(runner=injected).job_runner(9, store) is injected
    finally:
        store.close()
