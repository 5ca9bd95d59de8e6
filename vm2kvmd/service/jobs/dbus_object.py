"""``JobObject``: a job's ``org.vm2kvm.Job1`` object, a thin view of its ``Job``.

Modelled on the udisks2 ``Job`` interface: read-only properties a client can
poll or follow through ``PropertiesChanged``, ``Cancel()``, and one
``Completed(success, message)`` at the end.  Progress changes are batched
(at most ``BATCH_INTERVAL`` apart, as PackageKit does); state and phase
changes go out at once, and everything pending is flushed before
``Completed`` so a client that saw ``Completed`` has seen the final values.
The properties are read from the job's ``JobStatus``; the methods forward to the
``Job`` (``Retry`` to the manager, which makes the new job).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ClassVar, Final

from dbus_fast.annotations import (
    DBusBool,
    DBusDict,
    DBusDouble,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
    DBusUnixFd,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import dbus_property, dbus_signal
from dbus_fast.signature import Variant

from vm2kvmd.adapters.password_fd import read_password_fd
from vm2kvmd.constants import JOB_IFACE, job_path
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.interface import BusInterface, bus_method
from vm2kvmd.service.jobs.job import Job
from vm2kvmd.service.jobs.progress import PropertyBatcher
from vm2kvmd.service.store import now_us
from vm2kvmd.service.variants import unwrap_options, wrap_mapping

# Job1's D-Bus types that dbus-fast's annotations do not name.
DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusErrorPair = Annotated[tuple[str, str], DBusSignature("(ss)")]
DBusDiskList = Annotated[list[tuple[str, str, int, int]], DBusSignature("a(sstt)")]
DBusLogLines = Annotated[list[tuple[int, str, str]], DBusSignature("a(tss)")]
DBusCompleted = Annotated[tuple[bool, str], DBusSignature("bs")]
# A bare ``-> None`` reaches dbus-fast as the string "None" (PEP 563) and is
# taken for a signature; an explicit empty signature says "no reply values".
DBusNoValue = Annotated[None, DBusSignature("")]

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

RetryHook = Callable[[Job], Awaitable[str]]  # the manager's: a new job like this one; its path
# The manager's for a vSphere job: with the caller's TLS options and the password read from its fd.
RemoteRetryHook = Callable[[Job, dict[str, Any], str], Awaitable[str]]


class JobObject(BusInterface):
    """See the module docstring; ``retry`` None: ``Retry`` is an internal error (an unmanaged job)."""

    ARG_NAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "Completed": ("success", "message"),
        "GetReport": ("report",),
        "Retry": ("job",),
        "RetryRemote": ("job",),
        "GetLog": ("log",),
    }

    def __init__(
        self, job: Job, retry: RetryHook | None = None, retry_remote: RemoteRetryHook | None = None
    ) -> None:
        super().__init__(JOB_IFACE)
        self.job = job
        self.status = job.status
        self.path = job_path(job.number)
        self._retry = retry
        self._retry_remote = retry_remote
        self._batcher = PropertyBatcher(self._emit_changed)
        self._json: str | None = None  # a finished job's json_text()
        if self.status.finished:
            self._batcher.close()
        job.observer = self

    # --- what the job tells (JobObserver) -------------------------------------------

    def started(self) -> None:
        self._batcher.changed("State", "StartTime", "QueuePosition", now=True)

    def phase_changed(self) -> None:
        self._batcher.changed("Phase", now=True)

    def progress_changed(self) -> None:
        self._batcher.changed(*PROGRESS_PROPS)

    def queue_position_changed(self) -> None:
        self._batcher.changed("QueuePosition", now=True)

    def finished(self, success: bool, message: str, *, left_queue: bool) -> None:
        left = ("QueuePosition",) if left_queue else ()
        self._batcher.changed(*END_PROPS, *left, *PROGRESS_PROPS, now=True)
        self._batcher.close()
        self.Completed(success, message)

    def dismissed(self) -> None:
        self._json = None
        # The batcher is closed once the job has finished: this one change goes out directly.
        self.emit_properties_changed({"Dismissed": True})

    # --- property values -------------------------------------------------------------

    def properties(self) -> dict[str, Any]:
        """Every Job1 property, by D-Bus name, as the bus sends it."""
        status = self.status
        return {
            "State": status.state.value,
            "Phase": status.phase,
            "Progress": status.progress,
            "ProgressValid": status.progress_valid,
            "Bytes": status.bytes,
            "BytesDone": status.bytes_done,
            "Rate": status.rate,
            "StartTime": status.start_time,
            "ExpectedEndTime": status.expected_end(now_us()),
            "Source": status.source,
            "Outputs": list(status.outputs),
            "Error": list(status.error),
            "Cancelable": not status.finished,
            "Disks": [[d.key, d.target, d.total, d.done] for d in status.disks],
            "Domain": status.domain,
            "Notes": list(status.notes),
            "Options": wrap_mapping(status.options),
            "User": status.user,
            "QueuePosition": status.queue_position,
            "CreateTime": status.create_time,
            "EndTime": status.end_time,
            "Dismissed": status.dismissed,
            "RetryOf": status.retry_of,
        }

    def json_text(self) -> str:
        """``{"job": PATH, "properties": {NAME: VALUE}}`` as JSON (``Manager1.ListJobs``).

        A finished job's is made once: it changes only when the job is dismissed, and
        a listing of a thousand finished jobs should not build them all again.
        """
        if self._json is not None:
            return self._json
        values = self.properties()
        values["Options"] = dict(self.status.options)
        text = json.dumps({"job": self.path, "properties": values})
        if self.status.finished:
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
        self.job.cancel()

    @bus_method()
    def Dismiss(self) -> DBusNoValue:
        self.job.dismiss()

    @bus_method()
    async def Retry(self) -> DBusObjectPath:
        self.status.check_retryable()
        if self._retry is None:
            raise Vm2kvmError(ErrorCode.INTERNAL, f"job {self.job.number} is not managed")
        return await self._retry(self.job)

    @bus_method()
    async def RetryRemote(self, options: DBusDict, password: DBusUnixFd) -> DBusObjectPath:
        # The fd first: it is read and closed whatever else is wrong with the call.
        secret = await asyncio.to_thread(read_password_fd, password)
        self.status.check_retryable()
        if self._retry_remote is None:
            raise Vm2kvmError(ErrorCode.INTERNAL, f"job {self.job.number} is not managed")
        return await self._retry_remote(self.job, unwrap_options(options), secret)

    @bus_method()
    def GetReport(self) -> DBusStr:
        return self.status.report_json()

    @bus_method()
    async def GetLog(self) -> DBusLogLines:
        return await self.job.log_lines()

    @dbus_signal()
    def Completed(self, success: bool, message: str) -> DBusCompleted:
        return success, message

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self.status.state.value

    @dbus_property(access=PropertyAccess.READ)
    def Phase(self) -> DBusStr:
        return self.status.phase

    @dbus_property(access=PropertyAccess.READ)
    def Progress(self) -> DBusDouble:
        return self.status.progress

    @dbus_property(access=PropertyAccess.READ)
    def ProgressValid(self) -> DBusBool:
        return self.status.progress_valid

    @dbus_property(access=PropertyAccess.READ)
    def Bytes(self) -> DBusUInt64:
        return self.status.bytes

    @dbus_property(access=PropertyAccess.READ)
    def BytesDone(self) -> DBusUInt64:
        return self.status.bytes_done

    @dbus_property(access=PropertyAccess.READ)
    def Rate(self) -> DBusUInt64:
        return self.status.rate

    @dbus_property(access=PropertyAccess.READ)
    def StartTime(self) -> DBusUInt64:
        return self.status.start_time

    @dbus_property(access=PropertyAccess.READ)
    def ExpectedEndTime(self) -> DBusUInt64:
        return self.status.expected_end(now_us())

    @dbus_property(access=PropertyAccess.READ)
    def Source(self) -> DBusStr:
        return self.status.source

    @dbus_property(access=PropertyAccess.READ)
    def Outputs(self) -> DBusStrList:
        return list(self.status.outputs)

    @dbus_property(access=PropertyAccess.READ)
    def Error(self) -> DBusErrorPair:
        return self.status.error

    @dbus_property(access=PropertyAccess.READ)
    def Cancelable(self) -> DBusBool:
        return not self.status.finished

    @dbus_property(access=PropertyAccess.READ)
    def Disks(self) -> DBusDiskList:
        return [(d.key, d.target, d.total, d.done) for d in self.status.disks]

    @dbus_property(access=PropertyAccess.READ)
    def Domain(self) -> DBusStr:
        return self.status.domain

    @dbus_property(access=PropertyAccess.READ)
    def Notes(self) -> DBusStrList:
        return list(self.status.notes)

    @dbus_property(access=PropertyAccess.READ)
    def Options(self) -> DBusDict:
        opts: dict[str, Variant] = wrap_mapping(self.status.options)
        return opts

    @dbus_property(access=PropertyAccess.READ)
    def User(self) -> DBusUInt32:
        return self.status.user

    @dbus_property(access=PropertyAccess.READ)
    def QueuePosition(self) -> DBusUInt32:
        return self.status.queue_position

    @dbus_property(access=PropertyAccess.READ)
    def CreateTime(self) -> DBusUInt64:
        return self.status.create_time

    @dbus_property(access=PropertyAccess.READ)
    def EndTime(self) -> DBusUInt64:
        return self.status.end_time

    @dbus_property(access=PropertyAccess.READ)
    def Dismissed(self) -> DBusBool:
        return self.status.dismissed

    @dbus_property(access=PropertyAccess.READ)
    def RetryOf(self) -> DBusUInt32:
        return self.status.retry_of


_SIGNATURES: dict[type, dict[str, str]] = {}


def property_signatures(interface: BusInterface) -> dict[str, str]:
    """Property name → D-Bus signature, from the class's introspection (computed once)."""
    cls = type(interface)
    if cls not in _SIGNATURES:
        _SIGNATURES[cls] = {prop.name: prop.signature for prop in interface.introspect().properties}
    return _SIGNATURES[cls]
