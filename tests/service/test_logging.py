"""Job log lines carry journal fields; the lifecycle messages carry fixed MESSAGE_IDs; handler choice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.support import BusClient, ScriptedRunner, serve_daemon
from vm2kvmd.constants import (
    BUS_NAME,
    JOB_IFACE,
    MESSAGE_ID_JOB_CANCELLED,
    MESSAGE_ID_JOB_FAILED,
    MESSAGE_ID_JOB_FINISHED,
    MESSAGE_ID_JOB_STARTED,
)
from vm2kvmd.daemon import log_handler
from vm2kvmd.errors import ErrorCode, Vm2kvmError


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def job_records(self, job: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "VM2KVM_JOB_ID", None) == job]

    def with_id(self, message_id: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "MESSAGE_ID", None) == message_id]


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger("vm2kvmd")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def fields(record: logging.LogRecord) -> tuple[str, str]:
    return record.VM2KVM_JOB_ID, record.VM2KVM_PHASE  # type: ignore[attr-defined]


async def test_completed_job_lines_have_job_and_phase_fields(
    private_bus: str, client: BusClient, capture: Capture
) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner()):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_for(path, "Completed")
    records = capture.job_records("1")
    messages = [(r.getMessage(), fields(r)[1]) for r in records]
    assert messages[0] == ("job 1: migrating /vms/a.vmx", "")
    assert ("job 1: phase copy", "copy") in messages
    assert ("job 1: copying", "copy") in messages  # a runner's events.log line
    assert messages[-1] == ("job 1: migrated to domain vm", "define")
    # Every line of the job, not only the lifecycle ones, names the job.
    assert all(r.getMessage().startswith("job 1: ") for r in records)
    assert [r.getMessage() for r in capture.with_id(MESSAGE_ID_JOB_STARTED)] == [
        "job 1: migrating /vms/a.vmx"
    ]
    assert [r.getMessage() for r in capture.with_id(MESSAGE_ID_JOB_FINISHED)] == [
        "job 1: migrated to domain vm"
    ]
    assert not capture.with_id(MESSAGE_ID_JOB_FAILED) and not capture.with_id(MESSAGE_ID_JOB_CANCELLED)


async def test_failed_job_has_the_failed_message_id(
    private_bus: str, client: BusClient, capture: Capture
) -> None:
    failure = Vm2kvmError(ErrorCode.COPY_FAILED, "disk went away", file="/vms/a-flat.vmdk")
    async with serve_daemon(private_bus, runner=ScriptedRunner(fail=failure)):
        path = await client.migrate("/vms/a.vmx")
        await client.wait_for(path, "Completed")
    (failed,) = capture.with_id(MESSAGE_ID_JOB_FAILED)
    assert fields(failed) == ("1", "cleanup")
    assert failed.levelno == logging.WARNING
    assert failed.getMessage().startswith("job 1: failed: ") and "disk went away" in failed.getMessage()
    assert len(capture.with_id(MESSAGE_ID_JOB_STARTED)) == 1
    assert not capture.with_id(MESSAGE_ID_JOB_FINISHED)


async def test_cancelled_job_has_the_cancelled_message_id(
    private_bus: str, client: BusClient, capture: Capture
) -> None:
    runner = ScriptedRunner(hold=asyncio.Event())
    async with serve_daemon(private_bus, runner=runner):
        first = await client.migrate("/vms/a.vmx")
        await runner.copying.wait()
        await client.call_ok(BUS_NAME, first, JOB_IFACE, "Cancel")
        await client.wait_for(first, "Completed")
        cancelling = [r for r in capture.job_records("1") if "cancelling" in r.getMessage()]
        assert [fields(r) for r in cancelling] == [("1", "copy")]
    (cancelled,) = capture.with_id(MESSAGE_ID_JOB_CANCELLED)
    assert fields(cancelled) == ("1", "cleanup")
    assert cancelled.getMessage() == "job 1: cancelled: cancelled by request"
    assert not capture.with_id(MESSAGE_ID_JOB_FAILED) and not capture.with_id(MESSAGE_ID_JOB_FINISHED)


def test_message_ids_are_distinct_journald_ids() -> None:
    ids = {MESSAGE_ID_JOB_STARTED, MESSAGE_ID_JOB_FINISHED, MESSAGE_ID_JOB_FAILED, MESSAGE_ID_JOB_CANCELLED}
    assert len(ids) == 4
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)


def test_stderr_without_journald(tmp_path: Path) -> None:
    handler = log_handler(str(tmp_path / "no-socket"))
    assert type(handler) is logging.StreamHandler


def test_journald_when_its_socket_exists(tmp_path: Path) -> None:
    from systemd.journal import JournalHandler

    socket = tmp_path / "socket"
    socket.touch()
    assert isinstance(log_handler(str(socket)), JournalHandler)
