"""The parts of a job that are not its bus object: states, disks, the events a runner sends.

``_Events`` is what a runner gets as ``JobEvents``; it forwards to the job on
the event loop, from whatever thread the runner reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final

from dbus_fast.annotations import DBusSignature

from vm2kvmd.constants import MESSAGE_ID_JOB_CANCELLED, MESSAGE_ID_JOB_FAILED, MESSAGE_ID_JOB_FINISHED
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.runner import DiskInfo

if TYPE_CHECKING:
    from vm2kvmd.service.job import Job

log = logging.getLogger(__name__)

# Job1's D-Bus types that dbus-fast's annotations do not name.
DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusErrorPair = Annotated[tuple[str, str], DBusSignature("(ss)")]
DBusDiskList = Annotated[list[tuple[str, str, int, int]], DBusSignature("a(sstt)")]
DBusLogLines = Annotated[list[tuple[int, str, str]], DBusSignature("a(tss)")]
DBusCompleted = Annotated[tuple[bool, str], DBusSignature("bs")]
# A bare ``-> None`` reaches dbus-fast as the string "None" (PEP 563) and is
# taken for a signature; an explicit empty signature says "no reply values".
DBusNoValue = Annotated[None, DBusSignature("")]


END_MESSAGE_IDS: Final = {
    "completed": MESSAGE_ID_JOB_FINISHED,
    "failed": MESSAGE_ID_JOB_FAILED,
    "cancelled": MESSAGE_ID_JOB_CANCELLED,
}

PROGRESS_PROPS: Final = (
    "Disks",
    "Bytes",
    "BytesDone",
    "Progress",
    "ProgressValid",
    "Rate",
    "ExpectedEndTime",
)
END_PROPS: Final = ("State", "Error", "Cancelable", "Domain", "Outputs", "Notes", "EndTime")


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


class JobEventSink:
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
        self._call(self._job._on_disks, [Disk(i.key, i.target, i.total) for i in items])

    def disk_progress(self, index: int, done: int, total: int) -> None:
        self._call(self._job._on_progress, index, done, total)

    def log(self, message: str) -> None:
        self._call(self._job._on_log, message)


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


def report_text(number: int, state: JobState, phase: str, work_phase: str, report: str) -> str:
    """A job's report (JSON text, kept as text: a dict of every finished job's report would
    cost megabytes); ``NoReport`` says why there is none yet or at all."""
    hint: str | None
    if state is JobState.COMPLETED and parse_report(report):
        return report
    if state is JobState.COMPLETED:
        message = f"job {number} completed without a report"
        hint = "this kind of migration (e.g. snapshots kept) does not make one"
    elif not state.finished:
        where = f", phase {phase}" if phase else ""
        message = f"job {number} has not finished ({state.value}{where})"
        hint = "the report is made when the migration has completed"
    else:
        verb = "failed" if state is JobState.FAILED else "was cancelled"
        where = f" in phase {work_phase}" if work_phase else " before it started"
        message = f"job {number} {verb}{where}; a report is made only for a completed migration"
        hint = "its Error property says why" if state is JobState.FAILED else None
    raise Vm2kvmError(ErrorCode.NO_REPORT, message, hint=hint)


_SIGNATURES: dict[type, dict[str, str]] = {}


def property_signatures(job: Job) -> dict[str, str]:
    """Property name → D-Bus signature, from the class's introspection (computed once)."""
    cls = type(job)
    if cls not in _SIGNATURES:
        _SIGNATURES[cls] = {prop.name: prop.signature for prop in job.introspect().properties}
    return _SIGNATURES[cls]


ENDED = asyncio.Event()  # the "ended" event of every job loaded finished from the store
ENDED.set()
