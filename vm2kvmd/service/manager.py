"""``org.vm2kvm.Manager1`` at ``/org/vm2kvm/Daemon1``: inspect, start and list jobs.

The manager owns every job: it creates, exports and starts them, and on
shutdown cancels and awaits them.  The pipeline functions are injected
(``runner``, ``inspector``) and default to ``vm2kvmd.pipeline``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import dbus_method, dbus_property

from vm2kvmd import __version__
from vm2kvmd.constants import JOBS_PATH, MANAGER_IFACE, MANAGER_PATH
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.errors import to_dbus_error
from vm2kvmd.service.interface import BusInterface
from vm2kvmd.service.job import Job
from vm2kvmd.service.runner import (
    Inspector,
    Preflight,
    Runner,
    pipeline_inspector,
    pipeline_preflight,
    pipeline_runner,
)
from vm2kvmd.service.variants import unwrap_options

log = logging.getLogger(__name__)

DBusPathList = Annotated[list[str], DBusSignature("ao")]

# Calls on these interfaces of an unknown job path keep dbus-fast's answers.
_STANDARD_IFACES: Final = ("org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer")


def check_source(source: str) -> str:
    """The daemon's working directory is not the caller's: only absolute paths mean anything."""
    if not source or "\x00" in source:
        raise Vm2kvmError(ErrorCode.INVALID_OPTION, "the source path is empty or invalid")
    if not source.startswith("/"):
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"the source path {source!r} is not absolute",
            hint="vm2kvmd does not share the caller's working directory; pass an absolute path",
        )
    return source


class Manager(BusInterface):
    ARG_NAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "Inspect": ("result",),
        "Migrate": ("job",),
        "GetJobs": ("jobs",),
    }

    def __init__(
        self,
        *,
        runner: Runner | None = None,
        inspector: Inspector | None = None,
        preflight: Preflight | None = None,
        defaults: MigrateOptions | None = None,
    ) -> None:
        super().__init__(MANAGER_IFACE)
        self._runner: Runner = runner or pipeline_runner
        self._inspector: Inspector = inspector or pipeline_inspector
        # The real pipeline's checks go with the real runner; an injected runner
        # brings its own (or none).
        self._preflight: Preflight | None = preflight or (pipeline_preflight if runner is None else None)
        self._defaults = defaults or MigrateOptions()
        self._jobs: dict[str, Job] = {}
        self._next_number = 1
        self._bus: MessageBus | None = None
        self._closing = False

    # --- wiring ------------------------------------------------------------------

    def attach(self, bus: MessageBus) -> None:
        """Export the manager (and later its jobs) on ``bus``."""
        self._bus = bus
        bus.export(MANAGER_PATH, self)
        bus.add_message_handler(self._unknown_job)

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def job(self, path: str) -> Job:
        try:
            return self._jobs[path]
        except KeyError:
            number = path.rsplit("/", 1)[-1] if path.startswith(JOBS_PATH + "/") else path
            raise Vm2kvmError(ErrorCode.NO_SUCH_JOB, f"no such job {number}") from None

    async def shutdown(self, grace: float = 60.0) -> None:
        """Refuse new work, cancel running jobs and wait for them (at most ``grace`` s)."""
        self._closing = True
        for job in self._jobs.values():
            job.cancel("vm2kvmd is shutting down")
        pending = [job.wait() for job in self._jobs.values()]
        if not pending:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*pending), grace)
        except TimeoutError:
            stuck = [job.number for job in self._jobs.values() if not job.state.finished]
            log.error("jobs %s did not stop within %.0f s of being cancelled", stuck, grace)

    def _unknown_job(self, msg: Message) -> Message | bool | None:
        """``NoSuchJob`` for any call on a job path that does not exist."""
        path = msg.path or ""
        if (
            msg.message_type is not MessageType.METHOD_CALL
            or not path.startswith(JOBS_PATH + "/")
            or path in self._jobs
            or msg.interface in _STANDARD_IFACES
        ):
            return None
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        try:
            self.job(path)
        except Vm2kvmError as exc:
            err = to_dbus_error(exc)
            return Message.new_error(msg, err.type, err.text)
        return None

    # --- helpers -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise Vm2kvmError(ErrorCode.CANCELLED, "vm2kvmd is shutting down")

    def _options(self, raw: Mapping[str, Any]) -> MigrateOptions:
        return MigrateOptions.from_mapping(unwrap_options(raw), defaults=self._defaults)

    def _inspect_json(self, source: str, options: MigrateOptions) -> str:
        """Runs in a worker thread: inspection reads files and may ask libvirt."""
        result = self._inspector(source, options)
        data = result.to_json()
        data.setdefault("domain_xml", result.domain_xml)
        data.setdefault("notes", [str(note) for note in result.notes])
        return json.dumps(data)

    # --- org.vm2kvm.Manager1 -----------------------------------------------------------

    @dbus_method()
    async def Inspect(self, source: DBusStr, options: DBusDict) -> DBusStr:
        self._check_open()
        path = check_source(source)
        opts = self._options(options)
        return await asyncio.to_thread(self._inspect_json, path, opts)

    @dbus_method()
    async def Migrate(self, source: DBusStr, options: DBusDict) -> DBusObjectPath:
        self._check_open()
        path = check_source(source)
        opts = self._options(options)
        if self._preflight is not None:
            # Bad input is the answer to Migrate, not a job that fails a moment later.
            await asyncio.to_thread(self._preflight, path, opts)
            self._check_open()
        job = Job(self._next_number, path, opts, self._runner)
        self._next_number += 1
        self._jobs[job.path] = job
        if self._bus is not None:
            self._bus.export(job.path, job)
        job.start()
        log.info("job %d created for %s", job.number, path)
        return job.path

    @dbus_method()
    def GetJobs(self) -> DBusPathList:
        return list(self._jobs)

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        return __version__
