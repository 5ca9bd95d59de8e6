"""``Job1.GetReport``: the report of a completed job, ``NoReport`` with the reason otherwise."""

from __future__ import annotations

import asyncio
import json

from dbus_fast import MessageType

from tests.service.support import BusClient, ScriptedRunner, serve_daemon
from vm2kvmd.constants import BUS_NAME, JOB_IFACE, error_name
from vm2kvmd.errors import ErrorCode, Vm2kvmError

REPORT = {
    "format": 1,
    "name": "vm",
    "hardware": [{"key": "cpus", "item": "CPUs", "source": "2 vCPUs", "target": "2 vCPUs"}],
    "guest": {"converted": False, "status": "guest not converted", "facts": [], "filesystems": []},
    "changes": [],
    "notes": [],
}
NO_REPORT = error_name(ErrorCode.NO_REPORT)


async def get_report(client: BusClient, path: str) -> tuple[str, str]:
    """``("", report)`` or ``(error name, message)``."""
    reply = await client.call(BUS_NAME, path, JOB_IFACE, "GetReport")
    if reply.message_type is MessageType.ERROR:
        return reply.error_name or "", reply.body[0]
    return "", reply.body[0]


async def test_completed_job_has_its_report(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1, report=REPORT)):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_for(path, "Completed")
        error, text = await get_report(client, path)
    assert error == ""
    assert json.loads(text) == REPORT


async def test_running_job_has_no_report_yet(private_bus: str, client: BusClient) -> None:
    hold = asyncio.Event()
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=hold, report=REPORT)):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_property(path, "Phase", "copy")
        running = await get_report(client, path)
        hold.set()
        await client.wait_for(path, "Completed")
        done = await get_report(client, path)
    assert running == (
        NO_REPORT,
        "job 1 has not finished (running, phase copy); the report is made when the migration has completed",
    )
    assert done[0] == ""


async def test_failed_job_says_where_it_stopped(private_bus: str, client: BusClient) -> None:
    failure = Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img: Could not open")
    async with serve_daemon(private_bus, runner=ScriptedRunner(fail=failure, report=REPORT)):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_for(path, "Completed")
        error = await get_report(client, path)
    # The phase it failed in, not "cleanup" (where it rolled back).
    assert error == (
        NO_REPORT,
        "job 1 failed in phase copy; a report is made only for a completed migration; "
        "its Error property says why",
    )


async def test_cancelled_job_has_no_report(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(hold=asyncio.Event())):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_property(path, "Phase", "copy")
        await client.call_ok(BUS_NAME, path, JOB_IFACE, "Cancel")
        await client.wait_for(path, "Completed")
        error = await get_report(client, path)
    assert error == (
        NO_REPORT,
        "job 1 was cancelled in phase copy; a report is made only for a completed migration",
    )


async def test_completed_without_report(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1)):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_for(path, "Completed")
        error = await get_report(client, path)
    assert error[0] == NO_REPORT
    assert error[1].startswith("job 1 completed without a report")
