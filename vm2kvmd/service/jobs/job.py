"""``Job``: a migration of ``source`` with ``options``, run by ``runner`` in a task it owns.

It drives its ``JobStatus`` from the runner's events (``JobEventSink``, from any
thread), writes every change through (``JobPersistence``), logs (``JobLog``) and tells
its observer -- the ``JobObject`` on the bus -- what changed.  A job of an earlier
daemon run is rebuilt from its record (``Job.from_record``) as a finished, read-only
job.  The manager decides when a job starts (its queue) and reacts to its end
(``on_finished``, ``on_dismissed``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from vm2kvmd.constants import error_name
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.errors import error_pair
from vm2kvmd.service.jobs.log import JobLog
from vm2kvmd.service.jobs.persistence import JobPersistence, status_from_record
from vm2kvmd.service.jobs.state import Disk, JobState, JobStatus
from vm2kvmd.service.runner import DiskInfo, MigrationOutcome, Runner
from vm2kvmd.service.store import now_us

if TYPE_CHECKING:
    from vm2kvmd.service.store import JobRecord
    from vm2kvmd.service.storeio import StoreIO


class JobObserver(Protocol):
    """What is told of a job's changes (``JobObject``: as ``PropertiesChanged`` and ``Completed``)."""

    def started(self) -> None: ...
    def phase_changed(self) -> None: ...
    def progress_changed(self) -> None: ...  # disks, bytes: frequent
    def queue_position_changed(self) -> None: ...
    def finished(self, success: bool, message: str, *, left_queue: bool) -> None: ...
    def dismissed(self) -> None: ...


ENDED = asyncio.Event()  # the "ended" event of every job loaded finished from the store
ENDED.set()


class Job:
    """See the module docstring."""

    def __init__(
        self,
        number: int,
        source: str,
        options: MigrateOptions,
        runner: Runner | None,
        *,
        io: StoreIO | None = None,
        user: int = 0,
        create_time: int = 0,
        retry_of: int = 0,
        status: JobStatus | None = None,
        stored: Mapping[str, Any] | None = None,
    ) -> None:
        """``stored``: more options the job keeps (a vSphere job's TLS options)."""
        self.options = options
        self.status = status or JobStatus(
            number,
            source,
            {**options.to_mapping(), **(stored or {})},
            user=user,
            create_time=create_time or now_us(),
            retry_of=retry_of,
        )
        self._persistence = JobPersistence(io, number)
        self._log = JobLog(self.status, self._persistence)
        self._runner = runner
        self.observer: JobObserver | None = None
        self._task: asyncio.Task[None] | None = None
        self._cancel_reason: str | None = None
        # A job loaded finished never ends again: one shared set event (a thousand cost 0.7 MiB).
        self._ended = ENDED if self.status.finished else asyncio.Event()
        # Set by the manager.
        self.on_finished: Callable[[Job], None] | None = None
        self.on_dismissed: Callable[[Job], None] | None = None

    @classmethod
    def from_record(cls, record: JobRecord, io: StoreIO | None = None) -> Job:
        """A job of an earlier daemon run, as the store has it (never runs)."""
        status = status_from_record(record)
        return cls(record.number, record.source, MigrateOptions(), None, io=io, status=status)

    @property
    def number(self) -> int:
        return self.status.number

    @property
    def source(self) -> str:
        return self.status.source

    @property
    def user(self) -> int:
        return self.status.user

    @property
    def state(self) -> JobState:
        return self.status.state

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Run the job now (the manager calls this when the queue lets it)."""
        if self._task is None and not self.status.finished:
            self._task = asyncio.create_task(self._run(), name=f"vm2kvm job {self.number}")

    def cancel(self, reason: str = "cancelled by request") -> bool:
        """Ask the job to stop; False when it has already finished."""
        if self.status.finished:
            return False
        if self._cancel_reason is None:
            self._cancel_reason = reason
            self._log.line(logging.INFO, "cancelling (%s)", reason)
        if self._task is None:
            # Still in the queue: nothing runs, nothing to undo.
            self._finish(JobState.CANCELLED, (error_name(ErrorCode.CANCELLED), reason))
        elif self.status.state is JobState.RUNNING:
            self._task.cancel()
        # else: started but not yet running; _run checks the reason first.
        return True

    def dismiss(self) -> None:
        """Mark a finished job as seen: clients hide it (``jobs`` without ``--all``)."""
        if not self.status.dismiss():
            return
        self._persistence.dismissed()
        if self.observer is not None:
            self.observer.dismissed()
        if self.on_dismissed is not None:
            self.on_dismissed(self)

    def set_queue_position(self, position: int) -> None:
        if self.status.set_queue_position(position) and self.observer is not None:
            self.observer.queue_position_changed()

    async def wait(self) -> None:
        """Until the job has finished (its task is owned here, never left behind)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        else:
            await self._ended.wait()

    async def _run(self) -> None:
        if self._cancel_reason is not None:
            self._finish(JobState.CANCELLED, (error_name(ErrorCode.CANCELLED), self._cancel_reason))
            return
        self.status.start(now_us())
        self._persistence.started(self.status)
        if self.observer is not None:
            self.observer.started()
        self._log.started()
        try:
            if self._runner is None:
                raise Vm2kvmError(ErrorCode.INTERNAL, f"job {self.number} has no runner")
            result = await self._runner(self.source, self.options, JobEventSink(self))
        except asyncio.CancelledError:
            reason = self._cancel_reason or "cancelled"
            self._finish(JobState.CANCELLED, (error_name(ErrorCode.CANCELLED), reason))
        except Vm2kvmError as exc:
            state = JobState.CANCELLED if exc.code is ErrorCode.CANCELLED else JobState.FAILED
            self._finish(state, error_pair(exc, what=f"job {self.number}"))
        except Exception as exc:
            self._finish(JobState.FAILED, error_pair(exc, what=f"job {self.number}"))
        else:
            self._succeed(result)

    def _succeed(self, result: MigrationOutcome) -> None:
        report = json.dumps(dict(result.report)) if result.report else ""
        notes = [str(note) for note in result.notes]
        self.status.succeed(result.domain_name or "", result.outputs, notes, report, now_us())
        self._end()

    def _finish(self, state: JobState, error: tuple[str, str]) -> None:
        left_queue = self.status.finish(state, error, now_us())
        self._end(left_queue=left_queue)

    def _end(self, *, left_queue: bool = False) -> None:
        self._persistence.finished(self.status)
        self._log.finished()
        if self.observer is not None:
            success = self.status.state is JobState.COMPLETED
            self.observer.finished(success, self.status.end_message(), left_queue=left_queue)
        self._ended.set()
        if self.on_finished is not None:
            self.on_finished(self)

    # --- the runner's events (on the event loop) -------------------------------------

    def phase_reported(self, name: str) -> None:
        if not self.status.enter_phase(name):
            return
        self._persistence.phase(self.status)
        self._log.line(logging.INFO, "phase %s", name)
        if self.observer is not None:
            self.observer.phase_changed()

    def disks_reported(self, disks: list[Disk]) -> None:
        if not self.status.set_disks(disks):
            return
        self._persistence.disks(self.status)
        if self.observer is not None:
            self.observer.progress_changed()

    def progress_reported(self, index: int, done: int, total: int) -> None:
        try:
            changed = self.status.disk_progress(index, done, total)
        except IndexError:
            self._log.line(logging.WARNING, "progress for unknown disk %d ignored", index)
            return
        if changed and self.observer is not None:
            self.observer.progress_changed()

    def runner_logged(self, message: str) -> None:
        self._log.line(logging.INFO, "%s", message)

    async def log_lines(self) -> list[tuple[int, str, str]]:
        return await self._persistence.log_lines()


class JobEventSink:
    """The ``JobEvents`` a runner gets; safe to call from worker threads (forwarded to the loop)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self.thread:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def phase(self, name: str) -> None:
        self._call(self.job.phase_reported, name)

    def disks(self, items: Sequence[DiskInfo]) -> None:
        self._call(self.job.disks_reported, [Disk(i.key, i.target, i.total) for i in items])

    def disk_progress(self, index: int, done: int, total: int) -> None:
        self._call(self.job.progress_reported, index, done, total)

    def log(self, message: str) -> None:
        self._call(self.job.runner_logged, message)
