"""A job's state machine: ``JobStatus``, what a job is and how far it got.

queued → running → completed | failed | cancelled, or queued → cancelled (cancelled
in the queue).  While running, the runner's reports move it on: the phase, the disks
and their progress; at the end, the result or the error.  Nothing here knows the
bus, the job store or the event loop: ``Job`` drives a status, ``JobPersistence``
writes it through, ``JobObject`` shows it as ``Job1`` properties.  Times are µs since
the epoch (``store.now_us``), given by the caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.jobs.progress import RateMeter

log = logging.getLogger(__name__)

# The pipeline's phase while it undoes a failed or cancelled run (``pipeline.PHASES``; the
# service imports the pipeline only when it runs one).
ROLLBACK_PHASE: Final = "cleanup"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


RETRYABLE: Final = (JobState.FAILED, JobState.CANCELLED)


@dataclass
class Disk:
    """A disk of a job as ``Disks`` shows it."""

    key: str
    target: str
    total: int
    done: int = 0


@dataclass(eq=False)
class JobStatus:
    """See the module docstring.  Read the fields; change them only through the methods."""

    number: int
    source: str
    options: Mapping[str, Any]  # the caller's options as stored: what Options shows, Retry starts from
    user: int = 0
    create_time: int = 0
    retry_of: int = 0
    state: JobState = JobState.QUEUED
    phase: str = ""
    work_phase: str = ""  # the last phase before the rollback: where a failed job stopped
    disks: list[Disk] = field(default_factory=list)
    start_time: int = 0
    end_time: int = 0
    error: tuple[str, str] = ("", "")  # (D-Bus error name, message)
    domain: str = ""
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: str = ""  # JSON text (kept as text: a dict of every finished job's would cost megabytes)
    queue_position: int = 0
    dismissed: bool = False
    rate_meter: RateMeter = field(default_factory=RateMeter, repr=False)

    @property
    def finished(self) -> bool:
        return self.state.finished

    # --- transitions -----------------------------------------------------------

    def start(self, now: int) -> None:
        """Queued → running."""
        self.state = JobState.RUNNING
        self.start_time = now
        self.queue_position = 0

    def set_queue_position(self, position: int) -> bool:
        """False when nothing changed (same place, or finished)."""
        if position == self.queue_position or self.finished:
            return False
        self.queue_position = position
        return True

    def enter_phase(self, name: str) -> bool:
        """False when ignored: finished, or already in that phase."""
        if self.finished or name == self.phase:
            return False
        self.phase = name
        if name != ROLLBACK_PHASE:
            self.work_phase = name
        return True

    def set_disks(self, disks: Sequence[Disk]) -> bool:
        """False when ignored (finished)."""
        if self.finished:
            return False
        self.disks = list(disks)
        return True

    def disk_progress(self, index: int, done: int, total: int) -> bool:
        """False when ignored (finished); ``IndexError`` for a disk never announced."""
        if self.finished:
            return False
        if not 0 <= index < len(self.disks):
            raise IndexError(f"progress for unknown disk {index}")
        disk = self.disks[index]
        disk.total = max(0, total)
        disk.done = min(max(0, done), disk.total)
        self.rate_meter.add(self.bytes_done)
        return True

    def succeed(
        self, domain: str, outputs: Sequence[str], notes: Sequence[str], report: str, now: int
    ) -> None:
        self.domain = domain
        self.outputs = list(outputs)
        self.notes = list(notes)
        self.report = report
        for disk in self.disks:
            disk.done = disk.total
        self.finish(JobState.COMPLETED, ("", ""), now)

    def finish(self, state: JobState, error: tuple[str, str], now: int) -> bool:
        """The end; True when the job left the queue by it (cancelled while queued)."""
        left_queue = self.queue_position != 0
        self.state = state
        self.error = error
        self.end_time = now
        self.queue_position = 0
        return left_queue

    def dismiss(self) -> bool:
        """Mark a finished job as seen; False when it already was."""
        if not self.finished:
            where = f", phase {self.phase}" if self.phase else ""
            raise Vm2kvmError(
                ErrorCode.INVALID_STATE,
                f"job {self.number} has not finished ({self.state.value}{where}); "
                "only a finished job can be dismissed",
                hint=f"cancel it first (vm2kvmctl cancel {self.number}) or wait for it to finish",
            )
        if self.dismissed:
            return False
        self.dismissed = True
        return True

    def check_retryable(self) -> None:
        if self.state not in RETRYABLE:
            raise Vm2kvmError(
                ErrorCode.INVALID_STATE,
                f"job {self.number} is {self.state.value}; only a failed or cancelled job can be retried",
            )

    # --- what it amounts to -------------------------------------------------------

    def end_message(self) -> str:
        """What ``Completed`` and the log say about a finished job."""
        if self.state is not JobState.COMPLETED:
            return self.error[1]
        if self.domain:
            return f"migrated to domain {self.domain}"
        return "migrated; disk images and domain XML written, no domain defined"

    @property
    def bytes(self) -> int:
        return sum(d.total for d in self.disks)

    @property
    def bytes_done(self) -> int:
        return sum(d.done for d in self.disks)

    @property
    def progress(self) -> float:
        if self.state is JobState.COMPLETED:
            return 1.0
        total = self.bytes
        return min(1.0, self.bytes_done / total) if total else 0.0

    @property
    def progress_valid(self) -> bool:
        return self.bytes > 0 or self.state is JobState.COMPLETED

    @property
    def rate(self) -> int:
        """Bytes per second while running, else 0."""
        return self.rate_meter.rate if self.state is JobState.RUNNING else 0

    def expected_end(self, now: int) -> int:
        """When the copy should be done at the current rate; 0 when unknown."""
        rate, remaining = self.rate_meter.rate, self.bytes - self.bytes_done
        if self.state is not JobState.RUNNING or rate <= 0 or remaining <= 0:
            return 0
        return now + int(remaining / rate * 1_000_000)

    def report_json(self) -> str:
        """The migration report as JSON text; ``NoReport`` says why there is none yet or at all."""
        hint: str | None
        if self.state is JobState.COMPLETED and parse_report(self.report):
            return self.report
        if self.state is JobState.COMPLETED:
            message = f"job {self.number} completed without a report"
            hint = "this kind of migration (e.g. snapshots kept) does not make one"
        elif not self.finished:
            where = f", phase {self.phase}" if self.phase else ""
            message = f"job {self.number} has not finished ({self.state.value}{where})"
            hint = "the report is made when the migration has completed"
        else:
            verb = "failed" if self.state is JobState.FAILED else "was cancelled"
            where = f" in phase {self.work_phase}" if self.work_phase else " before it started"
            message = f"job {self.number} {verb}{where}; a report is made only for a completed migration"
            hint = "its Error property says why" if self.state is JobState.FAILED else None
        raise Vm2kvmError(ErrorCode.NO_REPORT, message, hint=hint)


def parse_report(text: str) -> dict[str, Any]:
    """A stored report; an unreadable one is no report (GetReport then says so)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("a stored job report is not JSON; ignored")
        return {}
    return data if isinstance(data, dict) else {}
