"""A job's status in the job store: written through as it changes, read back after a restart.

Writes go through ``StoreIO`` (the store's own thread, in order, never the event
loop): state and phase changes, the end result and log lines at once, disk
progress at phase changes and at the end (never per progress tick).  Without a
``StoreIO`` (a job made by a test on its own) nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vm2kvmd.service.jobs.state import Disk, JobState, JobStatus
from vm2kvmd.service.store import DiskRecord, JobRecord, JobStore

if TYPE_CHECKING:
    from vm2kvmd.service.storeio import StoreIO


class JobPersistence:
    """Writes job ``number``'s changes to its record and log."""

    def __init__(self, io: StoreIO | None, number: int) -> None:
        self.io = io
        self.number = number

    def started(self, status: JobStatus) -> None:
        self._update(state=status.state.value, start_time=status.start_time)

    def phase(self, status: JobStatus) -> None:
        self._update(phase=status.phase, work_phase=status.work_phase, disks=disk_records(status))

    def disks(self, status: JobStatus) -> None:
        self._update(disks=disk_records(status))

    def finished(self, status: JobStatus) -> None:
        self._update(
            state=status.state.value,
            phase=status.phase,
            work_phase=status.work_phase,
            end_time=status.end_time,
            error=status.error,
            domain=status.domain,
            outputs=tuple(status.outputs),
            notes=tuple(status.notes),
            disks=disk_records(status),
            report=status.report,
        )

    def dismissed(self) -> None:
        self._update(dismissed=True)

    def log_line(self, time_us: int, phase: str, message: str) -> None:
        if self.io is not None:
            self.io.submit(JobStore.append_log, self.number, time_us, phase, message)

    async def log_lines(self) -> list[tuple[int, str, str]]:
        """The job's log (``GetLog``): every line written before this call."""
        if self.io is None:
            return []
        lines = await self.io.call(JobStore.log, self.number)
        return [(t, phase, message) for t, phase, message in lines]

    def _update(self, **fields: Any) -> None:
        if self.io is not None:
            self.io.submit(JobStore.update, self.number, **fields)


def disk_records(status: JobStatus) -> tuple[DiskRecord, ...]:
    return tuple(DiskRecord(d.key, d.target, d.total, d.done) for d in status.disks)


def status_from_record(record: JobRecord) -> JobStatus:
    """The status a record describes (a job of an earlier daemon run)."""
    try:
        state = JobState(record.state)
    except ValueError:
        state = JobState.FAILED
    return JobStatus(
        number=record.number,
        source=record.source,
        options=dict(record.options),
        user=record.user,
        create_time=record.create_time,
        retry_of=record.retry_of,
        state=state,
        phase=record.phase,
        work_phase=record.work_phase,
        disks=[Disk(d.key, d.target, d.total, d.done) for d in record.disks],
        start_time=record.start_time,
        end_time=record.end_time,
        error=(record.error[0], record.error[1]) if len(record.error) == 2 else ("", ""),
        domain=record.domain,
        outputs=list(record.outputs),
        notes=list(record.notes),
        report=record.report,
        dismissed=record.dismissed,
    )
