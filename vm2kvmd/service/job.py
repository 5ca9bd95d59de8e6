"""One conversion job: its task, its state and its ``org.vm2kvm.Job1`` object.

Modelled on the udisks2 ``Job`` interface: read-only properties a client can
poll or follow through ``PropertiesChanged``, ``Cancel()``, and one
``Completed(success, message)`` at the end.  Progress changes are batched
(at most ``BATCH_INTERVAL`` apart, as PackageKit does); state and phase
changes go out at once, and everything pending is flushed before
``Completed`` so a client that saw ``Completed`` has seen the final values.

A job with a job store (``StoreIO``: the store's own thread, never the event
loop) writes itself through: state and phase changes, the end result and its
log lines at once, disk progress at phase changes and at the end (never per
progress tick).  A job of an earlier daemon run is rebuilt
from its record (``Job.from_record``) as a finished, read-only view.  The
manager decides when a job starts (its queue) and reacts to its end
(``on_finished``); ``Retry`` is the manager's too (``retry_hook``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from dbus_fast.annotations import (
    DBusBool,
    DBusDict,
    DBusDouble,
    DBusObjectPath,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import dbus_property, dbus_signal
from dbus_fast.signature import Variant

from vm2kvmd.constants import (
    FIELD_JOB_ID,
    FIELD_PHASE,
    JOB_IFACE,
    MESSAGE_ID_JOB_STARTED,
    error_name,
    job_path,
)
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.errors import error_pair
from vm2kvmd.service.interface import BusInterface, bus_method
from vm2kvmd.service.jobstate import (
    END_MESSAGE_IDS,
    END_PROPS,
    ENDED,
    PROGRESS_PROPS,
    RETRYABLE,
    DBusCompleted,
    DBusDiskList,
    DBusErrorPair,
    DBusLogLines,
    DBusNoValue,
    DBusStrList,
    Disk,
    JobEventSink,
    JobState,
    property_signatures,
    report_text,
)
from vm2kvmd.service.progress import BATCH_INTERVAL, RATE_WINDOW, PropertyBatcher, RateMeter, now_us
from vm2kvmd.service.runner import MigrationOutcome, Runner
from vm2kvmd.service.store import DiskRecord, JobStore
from vm2kvmd.service.variants import wrap_mapping

if TYPE_CHECKING:
    from vm2kvmd.service.store import JobRecord
    from vm2kvmd.service.storeio import StoreIO

__all__ = [
    "BATCH_INTERVAL",
    "RATE_WINDOW",
    "Job",
    "JobState",
    "PropertyBatcher",
    "RateMeter",
    "now_us",
]

log = logging.getLogger(__name__)


class Job(BusInterface):
    """A migration of ``source`` with ``options``, run by ``runner`` in a task it owns."""

    ARG_NAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "Completed": ("success", "message"),
        "GetReport": ("report",),
        "Retry": ("job",),
        "GetLog": ("log",),
    }

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
        options_mapping: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(JOB_IFACE)
        self.number = number
        self.path = job_path(number)
        self.source = source
        self.options = options
        # What Options shows and Retry starts from: the caller's options, as stored.
        self.options_mapping = options.to_mapping() if options_mapping is None else options_mapping
        self.user = user
        self.create_time = create_time or now_us()
        self.retry_of = retry_of
        self._runner = runner
        self._io = io
        self._state = JobState.QUEUED
        self._phase = ""
        self._work_phase = ""  # the last phase before "cleanup": where a failed job stopped
        self._disks: list[Disk] = []
        self._start_time = 0
        self._end_time = 0
        self._error = ("", "")
        self._domain = ""
        self._outputs: list[str] = []
        self._notes: list[str] = []
        self._report = ""  # JSON text (jobstate.report_text)
        self._queue_position = 0
        self._dismissed = False
        self._json: str | None = None  # a finished job's json_text()
        self._rate = RateMeter()
        self._batcher = PropertyBatcher(self._emit_changed)
        self._task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._cancel_reason: str | None = None
        # Set by the manager.
        self.on_finished: Callable[[Job], None] | None = None
        self.on_dismissed: Callable[[Job], None] | None = None
        self.retry_hook: Callable[[Job], Awaitable[str]] | None = None

    @classmethod
    def from_record(cls, record: JobRecord, io: StoreIO | None = None) -> Job:
        """A finished job of an earlier daemon run, as the store has it (never runs)."""
        job = cls(
            record.number,
            record.source,
            MigrateOptions(),
            None,
            io=io,
            user=record.user,
            create_time=record.create_time,
            retry_of=record.retry_of,
            options_mapping=dict(record.options),
        )
        try:
            job._state = JobState(record.state)
        except ValueError:
            job._state = JobState.FAILED
        job._phase, job._work_phase = record.phase, record.work_phase
        job._start_time, job._end_time = record.start_time, record.end_time
        job._error = (record.error[0], record.error[1]) if len(record.error) == 2 else ("", "")
        job._domain = record.domain
        job._outputs, job._notes = list(record.outputs), list(record.notes)
        job._disks = [Disk(d.key, d.target, d.total, d.done) for d in record.disks]
        job._report = record.report
        job._dismissed = record.dismissed
        if job._state.finished:
            job._batcher.close()
            job._ended = ENDED  # one shared set event: a thousand of them cost 0.7 MiB
        return job

    # --- lifecycle -----------------------------------------------------------

    @property
    def state(self) -> JobState:
        return self._state

    @property
    def dismissed(self) -> bool:
        return self._dismissed

    def start(self) -> None:
        """Run the job now (the manager calls this when the queue lets it)."""
        if self._task is None and not self._state.finished:
            self._task = asyncio.create_task(self._run(), name=f"vm2kvm job {self.number}")

    def cancel(self, reason: str = "cancelled by request") -> bool:
        """Ask the job to stop; False when it has already finished."""
        if self._state.finished:
            return False
        if self._cancel_reason is None:
            self._cancel_reason = reason
            self._log(logging.INFO, "cancelling (%s)", reason)
        if self._task is None:
            # Still in the queue: nothing runs, nothing to undo.
            self._finish(JobState.CANCELLED, (error_name(ErrorCode.CANCELLED), reason))
        elif self._state is JobState.RUNNING:
            self._task.cancel()
        # else: started but not yet running; _run checks the reason first.
        return True

    def dismiss(self) -> None:
        """Mark a finished job as seen: clients hide it (``jobs`` without ``--all``)."""
        if not self._state.finished:
            where = f", phase {self._phase}" if self._phase else ""
            raise Vm2kvmError(
                ErrorCode.INVALID_STATE,
                f"job {self.number} has not finished ({self._state.value}{where}); "
                "only a finished job can be dismissed",
                hint=f"cancel it first (vm2kvmctl cancel {self.number}) or wait for it to finish",
            )
        if self._dismissed:
            return
        self._dismissed = True
        self._json = None
        self._persist(dismissed=True)
        # The batcher is closed once the job has finished: this one change goes out directly.
        self.emit_properties_changed({"Dismissed": True})
        if self.on_dismissed is not None:
            self.on_dismissed(self)

    def set_queue_position(self, position: int) -> None:
        if position != self._queue_position and not self._state.finished:
            self._queue_position = position
            self._batcher.changed("QueuePosition", now=True)

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
        self._state = JobState.RUNNING
        self._start_time = now_us()
        self._queue_position = 0
        self._persist(state=self._state.value, start_time=self._start_time)
        self._batcher.changed("State", "StartTime", "QueuePosition", now=True)
        self._log(logging.INFO, "migrating %s", self.source, message_id=MESSAGE_ID_JOB_STARTED)
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
        self._domain = result.domain_name or ""
        self._outputs = list(result.outputs)
        self._notes = [str(note) for note in result.notes]
        self._report = json.dumps(dict(result.report)) if result.report else ""
        for disk in self._disks:
            disk.done = disk.total
        self._finish(JobState.COMPLETED, ("", ""))

    def _finish(self, state: JobState, error: tuple[str, str]) -> None:
        self._state = state
        self._error = error
        self._end_time = now_us()
        # A job cancelled in the queue leaves it.
        left_queue = ("QueuePosition",) if self._queue_position else ()
        self._queue_position = 0
        self._persist(
            state=state.value,
            phase=self._phase,
            work_phase=self._work_phase,
            end_time=self._end_time,
            error=error,
            domain=self._domain,
            outputs=tuple(self._outputs),
            notes=tuple(self._notes),
            disks=self._disk_records(),
            report=self._report,
        )
        if state is JobState.COMPLETED:
            message = (
                f"migrated to domain {self._domain}"
                if self._domain
                else "migrated; disk images and domain XML written, no domain defined"
            )
            self._log(logging.INFO, "%s", message, message_id=END_MESSAGE_IDS[state.value])
        else:
            message = error[1]
            level = logging.WARNING if state is JobState.FAILED else logging.INFO
            self._log(level, "%s: %s", state.value, message, message_id=END_MESSAGE_IDS[state.value])
        self._batcher.changed(*END_PROPS, *left_queue, *PROGRESS_PROPS, now=True)
        self._batcher.close()
        self.Completed(state is JobState.COMPLETED, message)
        self._ended.set()
        if self.on_finished is not None:
            self.on_finished(self)

    # --- runner events (on the event loop) -------------------------------------

    def _on_phase(self, name: str) -> None:
        if self._state.finished or name == self._phase:
            return
        self._phase = name
        if name != "cleanup":
            self._work_phase = name
        self._persist(phase=name, work_phase=self._work_phase, disks=self._disk_records())
        self._log(logging.INFO, "phase %s", name)
        self._batcher.changed("Phase", now=True)

    def _on_disks(self, disks: list[Disk]) -> None:
        if self._state.finished:
            return
        self._disks = disks
        self._persist(disks=self._disk_records())
        self._batcher.changed(*PROGRESS_PROPS)

    def _on_progress(self, index: int, done: int, total: int) -> None:
        if self._state.finished:
            return
        if not 0 <= index < len(self._disks):
            self._log(logging.WARNING, "progress for unknown disk %d ignored", index)
            return
        disk = self._disks[index]
        disk.total = max(0, total)
        disk.done = min(max(0, done), disk.total)
        self._rate.add(self._bytes_done)
        self._batcher.changed(*PROGRESS_PROPS)

    def _on_log(self, message: str) -> None:
        self._log(logging.INFO, "%s", message)

    def _log(self, level: int, fmt: str, *args: object, message_id: str | None = None) -> None:
        """A log line about this job: "job N: ..." with the journal fields of the job and its phase.

        The same line (without "job N: ") goes to the job's log in the store (``GetLog``).
        """
        extra = {FIELD_JOB_ID: str(self.number), FIELD_PHASE: self._phase}
        if message_id is not None:
            extra["MESSAGE_ID"] = message_id
        log.log(level, "job %d: " + fmt, self.number, *args, extra=extra)
        if self._io is not None:
            self._io.submit(JobStore.append_log, self.number, now_us(), self._phase, fmt % args)

    # --- the job store -------------------------------------------------------------

    def _disk_records(self) -> tuple[DiskRecord, ...]:
        return tuple(DiskRecord(d.key, d.target, d.total, d.done) for d in self._disks)

    def _persist(self, **fields: Any) -> None:
        """Write ``fields`` through to the job's record (in the store's thread, in order)."""
        if self._io is not None:
            self._io.submit(JobStore.update, self.number, **fields)

    async def log_lines(self) -> list[tuple[int, str, str]]:
        if self._io is None:
            return []
        lines = await self._io.call(JobStore.log, self.number)
        return [(t, phase, message) for t, phase, message in lines]

    # --- the report ----------------------------------------------------------------

    def report_json(self) -> str:
        """The migration report as JSON text; ``NoReport`` says why there is none yet or at all."""
        return report_text(self.number, self._state, self._phase, self._work_phase, self._report)

    # --- property values ---------------------------------------------------------

    @property
    def _bytes(self) -> int:
        return sum(d.total for d in self._disks)

    @property
    def _bytes_done(self) -> int:
        return sum(d.done for d in self._disks)

    def _progress(self) -> float:
        if self._state is JobState.COMPLETED:
            return 1.0
        total = self._bytes
        return min(1.0, self._bytes_done / total) if total else 0.0

    def _progress_valid(self) -> bool:
        return self._bytes > 0 or self._state is JobState.COMPLETED

    def _current_rate(self) -> int:
        return self._rate.rate if self._state is JobState.RUNNING else 0

    def _expected_end(self) -> int:
        rate, remaining = self._rate.rate, self._bytes - self._bytes_done
        if self._state is not JobState.RUNNING or rate <= 0 or remaining <= 0:
            return 0
        return now_us() + int(remaining / rate * 1_000_000)

    def properties(self) -> dict[str, Any]:
        """Every Job1 property, by D-Bus name, as the bus sends it."""
        return {
            "State": self._state.value,
            "Phase": self._phase,
            "Progress": self._progress(),
            "ProgressValid": self._progress_valid(),
            "Bytes": self._bytes,
            "BytesDone": self._bytes_done,
            "Rate": self._current_rate(),
            "StartTime": self._start_time,
            "ExpectedEndTime": self._expected_end(),
            "Source": self.source,
            "Outputs": list(self._outputs),
            "Error": list(self._error),
            "Cancelable": not self._state.finished,
            "Disks": [[d.key, d.target, d.total, d.done] for d in self._disks],
            "Domain": self._domain,
            "Notes": list(self._notes),
            "Options": wrap_mapping(self.options_mapping),
            "User": self.user,
            "QueuePosition": self._queue_position,
            "CreateTime": self.create_time,
            "EndTime": self._end_time,
            "Dismissed": self._dismissed,
            "RetryOf": self.retry_of,
        }

    def json_text(self) -> str:
        """``{"job": PATH, "properties": {NAME: VALUE}}`` as JSON (``Manager1.ListJobs``).

        A finished job's is made once: it changes only when the job is dismissed, and
        a listing of a thousand finished jobs should not build them all again.
        """
        if self._json is not None:
            return self._json
        values = self.properties()
        values["Options"] = dict(self.options_mapping)
        text = json.dumps({"job": self.path, "properties": values})
        if self._state.finished:
            self._json = text
        return text

    def variants(self) -> dict[str, Variant]:
        """``properties()`` as the bus sends them (``GetManagedObjects``, ``InterfacesAdded``)."""
        signatures = property_signatures(self)
        return {name: Variant(signatures[name], value) for name, value in self.properties().items()}

    def _emit_changed(self, names: list[str]) -> None:
        self._json = None
        values = self.properties()
        self.emit_properties_changed({name: values[name] for name in names})

    # --- org.vm2kvm.Job1 ---------------------------------------------------------

    @bus_method()
    def Cancel(self) -> DBusNoValue:
        self.cancel()

    @bus_method()
    def Dismiss(self) -> DBusNoValue:
        self.dismiss()

    @bus_method()
    async def Retry(self) -> DBusObjectPath:
        if self._state not in RETRYABLE:
            raise Vm2kvmError(
                ErrorCode.INVALID_STATE,
                f"job {self.number} is {self._state.value}; only a failed or cancelled job can be retried",
            )
        if self.retry_hook is None:
            raise Vm2kvmError(ErrorCode.INTERNAL, f"job {self.number} is not managed")
        return await self.retry_hook(self)

    @bus_method()
    def GetReport(self) -> DBusStr:
        return self.report_json()

    @bus_method()
    async def GetLog(self) -> DBusLogLines:
        return await self.log_lines()

    @dbus_signal()
    def Completed(self, success: bool, message: str) -> DBusCompleted:
        return success, message

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self._state.value

    @dbus_property(access=PropertyAccess.READ)
    def Phase(self) -> DBusStr:
        return self._phase

    @dbus_property(access=PropertyAccess.READ)
    def Progress(self) -> DBusDouble:
        return self._progress()

    @dbus_property(access=PropertyAccess.READ)
    def ProgressValid(self) -> DBusBool:
        return self._progress_valid()

    @dbus_property(access=PropertyAccess.READ)
    def Bytes(self) -> DBusUInt64:
        return self._bytes

    @dbus_property(access=PropertyAccess.READ)
    def BytesDone(self) -> DBusUInt64:
        return self._bytes_done

    @dbus_property(access=PropertyAccess.READ)
    def Rate(self) -> DBusUInt64:
        return self._current_rate()

    @dbus_property(access=PropertyAccess.READ)
    def StartTime(self) -> DBusUInt64:
        return self._start_time

    @dbus_property(access=PropertyAccess.READ)
    def ExpectedEndTime(self) -> DBusUInt64:
        return self._expected_end()

    @dbus_property(access=PropertyAccess.READ)
    def Source(self) -> DBusStr:
        return self.source

    @dbus_property(access=PropertyAccess.READ)
    def Outputs(self) -> DBusStrList:
        return list(self._outputs)

    @dbus_property(access=PropertyAccess.READ)
    def Error(self) -> DBusErrorPair:
        return self._error

    @dbus_property(access=PropertyAccess.READ)
    def Cancelable(self) -> DBusBool:
        return not self._state.finished

    @dbus_property(access=PropertyAccess.READ)
    def Disks(self) -> DBusDiskList:
        return [(d.key, d.target, d.total, d.done) for d in self._disks]

    @dbus_property(access=PropertyAccess.READ)
    def Domain(self) -> DBusStr:
        return self._domain

    @dbus_property(access=PropertyAccess.READ)
    def Notes(self) -> DBusStrList:
        return list(self._notes)

    @dbus_property(access=PropertyAccess.READ)
    def Options(self) -> DBusDict:
        opts: dict[str, Variant] = wrap_mapping(self.options_mapping)
        return opts

    @dbus_property(access=PropertyAccess.READ)
    def User(self) -> DBusUInt32:
        return self.user

    @dbus_property(access=PropertyAccess.READ)
    def QueuePosition(self) -> DBusUInt32:
        return self._queue_position

    @dbus_property(access=PropertyAccess.READ)
    def CreateTime(self) -> DBusUInt64:
        return self.create_time

    @dbus_property(access=PropertyAccess.READ)
    def EndTime(self) -> DBusUInt64:
        return self._end_time

    @dbus_property(access=PropertyAccess.READ)
    def Dismissed(self) -> DBusBool:
        return self._dismissed

    @dbus_property(access=PropertyAccess.READ)
    def RetryOf(self) -> DBusUInt32:
        return self.retry_of
