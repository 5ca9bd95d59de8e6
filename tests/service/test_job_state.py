"""The job's state machine on its own: no bus, no store, no event loop."""

from __future__ import annotations

import json

import pytest

from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.jobs.persistence import JobPersistence, status_from_record
from vm2kvmd.service.jobs.state import Disk, JobState, JobStatus
from vm2kvmd.service.store import JobStore
from vm2kvmd.service.storeio import StoreIO

CANCELLED = ("org.vm2kvm.Error.Cancelled", "cancelled by request")
FAILED = ("org.vm2kvm.Error.CopyFailed", "qemu-img: read error")


def running(**fields: object) -> JobStatus:
    status = JobStatus(7, "/vms/a.vmx", {"name": "web1"}, create_time=1, **fields)  # type: ignore[arg-type]
    status.start(now=10)
    return status


def test_a_successful_run() -> None:
    status = JobStatus(7, "/vms/a.vmx", {}, create_time=1, queue_position=2)
    assert (status.state, status.progress, status.progress_valid) == (JobState.QUEUED, 0.0, False)
    status.start(now=10)
    assert (status.state, status.start_time, status.queue_position) == (JobState.RUNNING, 10, 0)
    assert status.enter_phase("inspect") and not status.enter_phase("inspect")  # the same phase again
    assert status.enter_phase("copy")
    assert status.set_disks([Disk("scsi0:0", "/pool/a", 1000), Disk("scsi0:1", "/pool/b", 3000)])
    assert status.disk_progress(1, 1500, 3000)
    assert (status.bytes, status.bytes_done, status.progress) == (4000, 1500, 0.375)
    # Progress is clamped to the disk's size.
    assert status.disk_progress(0, 5000, 1000) and status.disks[0].done == 1000
    status.succeed("web1", ["/pool/a", "/pool/b"], ["a note"], json.dumps({"format": 1}), now=20)
    assert status.state is JobState.COMPLETED and status.finished
    assert (status.end_time, status.domain, status.error) == (20, "web1", ("", ""))
    assert status.bytes_done == status.bytes and status.progress == 1.0
    assert status.end_message() == "migrated to domain web1"
    assert json.loads(status.report_json()) == {"format": 1}
    assert (status.rate, status.expected_end(now=25)) == (0, 0)  # only while running


def test_without_a_domain_the_end_message_names_the_files() -> None:
    status = running()
    status.succeed("", ["/out/a.qcow2", "/out/a.xml"], [], "", now=20)
    assert status.end_message() == "migrated; disk images and domain XML written, no domain defined"


def test_rollback_keeps_the_phase_where_the_run_stopped() -> None:
    status = running()
    for phase in ("inspect", "prepare", "copy", "cleanup"):
        status.enter_phase(phase)
    assert not status.finish(JobState.FAILED, FAILED, now=30)  # it was not queued
    assert (status.phase, status.work_phase) == ("cleanup", "copy")
    assert status.end_message() == FAILED[1]
    with pytest.raises(Vm2kvmError) as exc:
        status.report_json()
    assert exc.value.code is ErrorCode.NO_REPORT
    assert "job 7 failed in phase copy" in exc.value.message


def test_a_finished_job_ignores_late_reports() -> None:
    status = running()
    status.set_disks([Disk("scsi0:0", "/pool/a", 1000)])
    status.finish(JobState.CANCELLED, CANCELLED, now=30)
    assert not status.enter_phase("define")
    assert not status.set_disks([])
    assert not status.disk_progress(0, 500, 1000)
    assert not status.set_queue_position(4)
    assert (status.phase, len(status.disks), status.bytes_done) == ("", 1, 0)


def test_progress_for_a_disk_never_announced() -> None:
    status = running()
    with pytest.raises(IndexError):
        status.disk_progress(0, 1, 2)


def test_cancelled_in_the_queue_leaves_it() -> None:
    status = JobStatus(7, "/vms/a.vmx", {})
    assert status.set_queue_position(3) and not status.set_queue_position(3)
    assert status.finish(JobState.CANCELLED, CANCELLED, now=5)
    assert (status.queue_position, status.start_time, status.end_time) == (0, 0, 5)
    with pytest.raises(Vm2kvmError) as exc:
        status.report_json()
    assert "job 7 was cancelled before it started" in exc.value.message


def test_dismiss_and_retry_only_when_finished() -> None:
    status = running()
    status.enter_phase("copy")
    for action in (status.dismiss, status.check_retryable):
        with pytest.raises(Vm2kvmError) as exc:
            action()
        assert exc.value.code is ErrorCode.INVALID_STATE
    status.finish(JobState.FAILED, FAILED, now=30)
    status.check_retryable()
    assert status.dismiss() and not status.dismiss()  # the second time changes nothing
    completed = running()
    completed.succeed("vm", [], [], "", now=30)
    with pytest.raises(Vm2kvmError, match="only a failed or cancelled job can be retried"):
        completed.check_retryable()


async def test_written_through_and_read_back() -> None:
    """What ``JobPersistence`` writes, ``status_from_record`` reads back (a real in-memory store)."""
    io = StoreIO(None)  # an in-memory store, opened in the store's thread
    try:
        record = await io.call(JobStore.create, "/vms/a.vmx", {"name": "web1"}, 1000, retry_of=3, now_us=1)
        status = JobStatus(
            record.number, "/vms/a.vmx", {"name": "web1"}, user=1000, create_time=1, retry_of=3
        )
        persistence = JobPersistence(io, record.number)
        status.start(now=10)
        persistence.started(status)
        for phase in ("copy", "cleanup"):
            status.enter_phase(phase)
            persistence.phase(status)
        status.set_disks([Disk("scsi0:0", "/pool/a", 1000)])
        persistence.disks(status)
        status.disk_progress(0, 400, 1000)
        status.finish(JobState.FAILED, FAILED, now=30)
        persistence.finished(status)
        persistence.log_line(31, status.phase, "a line")
        lines = await persistence.log_lines()
        stored = await io.call(JobStore.get, record.number)
    finally:
        await io.close(close_store=True)
    assert stored is not None
    back = status_from_record(stored)
    for name in ("number", "source", "user", "create_time", "retry_of", "state", "phase", "work_phase"):
        assert getattr(back, name) == getattr(status, name), name
    assert (back.start_time, back.end_time, back.error) == (10, 30, FAILED)
    assert back.disks == [Disk("scsi0:0", "/pool/a", 1000, 400)]
    assert dict(back.options) == {"name": "web1"}
    assert lines == [(31, "cleanup", "a line")]


def test_without_a_store_nothing_is_written() -> None:
    persistence = JobPersistence(None, 7)
    status = running()
    persistence.started(status)
    persistence.finished(status)
    persistence.log_line(1, "", "nothing")  # no store: nothing to do, nothing raised
