"""One conversion job: its task, its state and its ``org.vm2kvm.Job1`` object.

Modelled on the udisks2 ``Job`` interface: read-only properties a client can
poll or follow through ``PropertiesChanged``, ``Cancel()``, and one
``Completed(success, message)`` at the end.  Progress changes are batched
(at most ``BATCH_INTERVAL`` apart, as PackageKit does); state and phase
changes go out at once, and everything pending is flushed before
``Completed`` so a client that saw ``Completed`` has seen the final values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final

from dbus_fast.annotations import (
    DBusBool,
    DBusDict,
    DBusDouble,
    DBusSignature,
    DBusStr,
    DBusUInt64,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import dbus_method, dbus_property, dbus_signal
from dbus_fast.signature import Variant

from vm2kvmd.constants import (
    FIELD_JOB_ID,
    FIELD_PHASE,
    JOB_IFACE,
    MESSAGE_ID_JOB_CANCELLED,
    MESSAGE_ID_JOB_FAILED,
    MESSAGE_ID_JOB_FINISHED,
    MESSAGE_ID_JOB_STARTED,
    error_name,
    job_path,
)
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.errors import error_pair
from vm2kvmd.service.interface import BusInterface
from vm2kvmd.service.runner import DiskInfo, MigrationOutcome, Runner
from vm2kvmd.service.variants import wrap_mapping

log = logging.getLogger(__name__)

BATCH_INTERVAL: Final = 0.1  # seconds: at most 10 PropertiesChanged per second per job
RATE_WINDOW: Final = 5.0  # seconds of progress samples behind ``Rate``

_END_MESSAGE_IDS: Final = {
    "completed": MESSAGE_ID_JOB_FINISHED,
    "failed": MESSAGE_ID_JOB_FAILED,
    "cancelled": MESSAGE_ID_JOB_CANCELLED,
}

DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusErrorPair = Annotated[tuple[str, str], DBusSignature("(ss)")]
DBusDiskList = Annotated[list[tuple[str, str, int, int]], DBusSignature("a(sstt)")]
DBusCompleted = Annotated[tuple[bool, str], DBusSignature("bs")]
# A bare ``-> None`` reaches dbus-fast as the string "None" (PEP 563) and is
# taken for a signature; an explicit empty signature says "no reply values".
DBusNoValue = Annotated[None, DBusSignature("")]

_PROGRESS_PROPS: Final = (
    "Disks",
    "Bytes",
    "BytesDone",
    "Progress",
    "ProgressValid",
    "Rate",
    "ExpectedEndTime",
)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


def now_us() -> int:
    return time.time_ns() // 1000


class RateMeter:
    """Bytes per second over the last ``window`` seconds of samples."""

    def __init__(self, window: float = RATE_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._rate = 0

    def add(self, done: int) -> None:
        now = self._clock()
        self._samples.append((now, done))
        # Keep one sample at or before the window start as the baseline.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        first_t, first_done = self._samples[0]
        if now - first_t >= 0.2:
            self._rate = max(0, int((done - first_done) / (now - first_t)))

    @property
    def rate(self) -> int:
        return self._rate


class PropertyBatcher:
    """Collects changed property names; emits at most once per ``interval`` unless told ``now``."""

    def __init__(self, emit: Callable[[list[str]], None], interval: float = BATCH_INTERVAL) -> None:
        self._emit = emit
        self._interval = interval
        self._dirty: dict[str, None] = {}
        self._last = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def changed(self, *names: str, now: bool = False) -> None:
        if self._closed:
            return
        self._dirty.update(dict.fromkeys(names))
        if now:
            self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last + self._interval - loop.time())
            self._timer = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._dirty:
            return
        names = list(self._dirty)
        self._dirty.clear()
        self._last = asyncio.get_running_loop().time()
        self._emit(names)

    def close(self) -> None:
        self.flush()
        self._closed = True


@dataclass
class _Disk:
    key: str
    target: str
    total: int
    done: int = 0


class _Events:
    """The ``JobEvents`` a runner gets; safe to call from worker threads."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def phase(self, name: str) -> None:
        self._call(self._job._on_phase, name)

    def disks(self, items: Sequence[DiskInfo]) -> None:
        self._call(self._job._on_disks, [_Disk(i.key, i.target, i.total) for i in items])

    def disk_progress(self, index: int, done: int, total: int) -> None:
        self._call(self._job._on_progress, index, done, total)

    def log(self, message: str) -> None:
        self._call(self._job._on_log, message)


class Job(BusInterface):
    """A migration of ``source`` with ``options``, run by ``runner`` in a task it owns."""

    ARG_NAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "Completed": ("success", "message"),
        "GetReport": ("report",),
    }

    def __init__(self, number: int, source: str, options: MigrateOptions, runner: Runner) -> None:
        super().__init__(JOB_IFACE)
        self.number = number
        self.path = job_path(number)
        self.source = source
        self.options = options
        self._runner = runner
        self._state = JobState.QUEUED
        self._phase = ""
        self._work_phase = ""  # the last phase before "cleanup": where a failed job stopped
        self._disks: list[_Disk] = []
        self._start_time = 0
        self._error = ("", "")
        self._domain = ""
        self._outputs: list[str] = []
        self._notes: list[str] = []
        self._report: dict[str, Any] = {}
        self._rate = RateMeter()
        self._batcher = PropertyBatcher(self._emit_changed)
        self._task: asyncio.Task[None] | None = None
        self._cancel_reason: str | None = None

    # --- lifecycle -----------------------------------------------------------

    @property
    def state(self) -> JobState:
        return self._state

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"vm2kvm job {self.number}")

    def cancel(self, reason: str = "cancelled by request") -> bool:
        """Ask the job to stop; False when it has already finished."""
        if self._state.finished:
            return False
        if self._cancel_reason is None:
            self._cancel_reason = reason
            self._log(logging.INFO, "cancelling (%s)", reason)
        # A queued job has not entered its try block yet; _run checks the reason first.
        if self._state is JobState.RUNNING and self._task is not None:
            self._task.cancel()
        return True

    async def wait(self) -> None:
        """Until the job has finished (its task is owned here, never left behind)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        if self._cancel_reason is not None:
            self._finish(JobState.CANCELLED, (error_name(ErrorCode.CANCELLED), self._cancel_reason))
            return
        self._state = JobState.RUNNING
        self._start_time = now_us()
        self._batcher.changed("State", "StartTime", now=True)
        self._log(logging.INFO, "migrating %s", self.source, message_id=MESSAGE_ID_JOB_STARTED)
        try:
            result = await self._runner(self.source, self.options, _Events(self))
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
        self._report = dict(result.report)
        for disk in self._disks:
            disk.done = disk.total
        self._finish(JobState.COMPLETED, ("", ""))

    def _finish(self, state: JobState, error: tuple[str, str]) -> None:
        self._state = state
        self._error = error
        if state is JobState.COMPLETED:
            message = (
                f"migrated to domain {self._domain}"
                if self._domain
                else "migrated; disk images and domain XML written, no domain defined"
            )
            self._log(logging.INFO, "%s", message, message_id=_END_MESSAGE_IDS[state.value])
        else:
            message = error[1]
            level = logging.WARNING if state is JobState.FAILED else logging.INFO
            self._log(level, "%s: %s", state.value, message, message_id=_END_MESSAGE_IDS[state.value])
        self._batcher.changed(
            "State", "Error", "Cancelable", "Domain", "Outputs", "Notes", *_PROGRESS_PROPS, now=True
        )
        self._batcher.close()
        self.Completed(state is JobState.COMPLETED, message)

    # --- runner events (on the event loop) -------------------------------------

    def _on_phase(self, name: str) -> None:
        if self._state.finished or name == self._phase:
            return
        self._phase = name
        if name != "cleanup":
            self._work_phase = name
        self._log(logging.INFO, "phase %s", name)
        self._batcher.changed("Phase", now=True)

    def _on_disks(self, disks: list[_Disk]) -> None:
        if self._state.finished:
            return
        self._disks = disks
        self._batcher.changed(*_PROGRESS_PROPS)

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
        self._batcher.changed(*_PROGRESS_PROPS)

    def _on_log(self, message: str) -> None:
        self._log(logging.INFO, "%s", message)

    def _log(self, level: int, fmt: str, *args: object, message_id: str | None = None) -> None:
        """A log line about this job: "job N: ..." with the journal fields of the job and its phase."""
        extra = {FIELD_JOB_ID: str(self.number), FIELD_PHASE: self._phase}
        if message_id is not None:
            extra["MESSAGE_ID"] = message_id
        log.log(level, "job %d: " + fmt, self.number, *args, extra=extra)

    # --- the report ----------------------------------------------------------------

    def report_json(self) -> str:
        """The migration report as JSON text; ``NoReport`` says why there is none yet or at all."""
        number, state = self.number, self._state
        hint: str | None
        if state is JobState.COMPLETED and self._report:
            return json.dumps(self._report)
        if state is JobState.COMPLETED:
            message = f"job {number} completed without a report"
            hint = "this kind of migration (e.g. snapshots kept) does not make one"
        elif not state.finished:
            where = f", phase {self._phase}" if self._phase else ""
            message = f"job {number} has not finished ({state.value}{where})"
            hint = "the report is made when the migration has completed"
        else:
            verb = "failed" if state is JobState.FAILED else "was cancelled"
            where = f" in phase {self._work_phase}" if self._work_phase else " before it started"
            message = f"job {number} {verb}{where}; a report is made only for a completed migration"
            hint = "its Error property says why" if state is JobState.FAILED else None
        raise Vm2kvmError(ErrorCode.NO_REPORT, message, hint=hint)

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
            "Options": wrap_mapping(self.options.to_mapping()),
        }

    def _emit_changed(self, names: list[str]) -> None:
        values = self.properties()
        self.emit_properties_changed({name: values[name] for name in names})

    # --- org.vm2kvm.Job1 ---------------------------------------------------------

    @dbus_method()
    def Cancel(self) -> DBusNoValue:
        self.cancel()

    @dbus_method()
    def GetReport(self) -> DBusStr:
        return self.report_json()

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
        opts: dict[str, Variant] = wrap_mapping(self.options.to_mapping())
        return opts
