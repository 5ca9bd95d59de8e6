"""Helpers shared by the service and CLI tests (no tests here).

* ``ScriptedRunner``: a small *real* runner injected into the manager (the
  pipeline is replaced by dependency injection, not mocked): it goes through
  the pipeline's phases, announces disks, sleeps and reports progress, and can
  fail or wait to be cancelled; it reports phases as the pipeline does
  (``test_scripted_runner`` compares the two).
* ``serve_daemon``: the daemon in-process on a private bus, stopped (jobs
  cancelled and awaited, name released) on exit.
* ``BusClient``: a plain dbus-fast client with signal recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from vm2kvmd.constants import BUS_NAME, JOB_IFACE, JOBS_PATH, MANAGER_IFACE, MANAGER_PATH
from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.daemon import Daemon
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import PHASES
from vm2kvmd.service.manager import Manager
from vm2kvmd.service.runner import Inspector, JobEvents, Preflight, Runner
from vm2kvmd.service.store import JobStore


@dataclass(frozen=True)
class Disk:
    key: str
    target: str
    total: int


@dataclass(frozen=True)
class Result:
    domain_name: str | None
    domain_uuid: str
    outputs: tuple[str, ...]
    domain_xml: str
    notes: tuple[Note, ...]
    report: dict[str, Any] = field(default_factory=dict)


ROLLBACK_PHASE = PHASES[-1]  # "cleanup": reported only while a failed or cancelled run is undone
# The volumes are created at the end of prepare (or convert): from copy on, a failed or
# cancelled run has something to undo, so it reports the rollback phase; before, it has not.
FIRST_PHASE_WITH_VOLUMES = "copy"


def pipeline_phases(options: MigrateOptions) -> tuple[str, ...]:
    """The phases the pipeline goes through for ``options`` when nothing goes wrong, in order.

    ``pipeline.PHASES`` without ``cleanup``: "convert" only when the guest is converted (the
    daemon's runner always has a converter; the keep-snapshots migration converts nothing),
    "verify" only with ``--verify``.
    """
    skipped = {ROLLBACK_PHASE}
    if not options.guest_conversion or options.snapshots == "keep":
        skipped.add("convert")
    if not options.verify:
        skipped.add("verify")
    return tuple(phase for phase in PHASES if phase not in skipped)


def rolls_back(phase: str) -> bool:
    """Whether a run that fails or is cancelled in ``phase`` rolls back (reports ``cleanup``)."""
    return PHASES.index(phase) >= PHASES.index(FIRST_PHASE_WITH_VOLUMES)


@dataclass
class ScriptedRunner:
    """The pipeline's phases for the job's options (``pipeline_phases``), with real sleeps.

    ``fail`` is raised on entering ``fail_phase``; ``hold`` makes the copy phase wait
    until the event is set (or the job is cancelled).  Like the pipeline, a run that
    fails or is cancelled after its volumes were created reports ``cleanup`` (and sets
    ``cleaned_up``); a successful one never does.  ``test_scripted_runner`` checks that
    the pipeline and this runner report the same phases.
    """

    disks: Sequence[Disk] = (Disk("scsi0:0", "/pool/vm-sda.qcow2", 4 << 20),)
    steps: int = 10
    step_delay: float = 0.01
    fail: BaseException | None = None
    fail_phase: str = "copy"
    hold: asyncio.Event | None = None
    domain: str | None = "vm"
    notes: tuple[Note, ...] = (Note("sound card es1371 mapped to ich9", "sound.virtualDev"),)
    report: dict[str, Any] = field(default_factory=dict)  # MigrationResult.report
    calls: list[tuple[str, MigrateOptions]] = field(default_factory=list)
    cleaned_up: bool = False
    copying: asyncio.Event = field(default_factory=asyncio.Event)  # set when copying starts

    async def __call__(self, source: str, options: MigrateOptions, events: JobEvents) -> Result:
        self.calls.append((source, options))
        phases = pipeline_phases(options)
        if self.fail is not None and self.fail_phase not in phases:
            raise AssertionError(f"fail_phase {self.fail_phase!r} is not one of this run's phases {phases}")
        current = ""
        try:
            for current in phases:
                events.phase(current)
                if current == self.fail_phase and self.fail is not None:
                    raise self.fail
                if current == "copy":
                    await self._copy(events)
                else:
                    await asyncio.sleep(self.step_delay)
        except BaseException:
            if current and rolls_back(current):
                events.phase(ROLLBACK_PHASE)
                self.cleaned_up = True
            raise
        return Result(
            domain_name=self.domain,
            domain_uuid="6f1c2a8e-0000-4000-8000-000000000001",
            outputs=tuple(d.target for d in self.disks),
            domain_xml="<domain type='kvm'/>",
            notes=self.notes,
            report=self.report,
        )

    async def _copy(self, events: JobEvents) -> None:
        events.disks(self.disks)
        events.log("copying")
        self.copying.set()
        if self.hold is not None:
            await self.hold.wait()
        for index, disk in enumerate(self.disks):
            for step in range(1, self.steps + 1):
                await asyncio.sleep(self.step_delay)
                events.disk_progress(index, disk.total * step // self.steps, disk.total)


@dataclass
class StaticInspector:
    """Returns a fixed inspection (or raises ``fail``); blocking, like the real one."""

    data: dict[str, Any] = field(default_factory=dict)
    fail: BaseException | None = None
    calls: list[tuple[str, MigrateOptions]] = field(default_factory=list)

    def __call__(self, source: str, options: MigrateOptions) -> InspectData:
        self.calls.append((source, options))
        if self.fail is not None:
            raise self.fail
        time.sleep(0.01)  # runs in a worker thread; a blocking call is fine here
        return InspectData(self.data)


@dataclass
class InspectData:
    data: dict[str, Any]
    domain_xml: str = "<domain type='kvm'><name>vm</name></domain>"
    notes: tuple[Note, ...] = (Note("guest not converted", None),)

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)


def missing_source(source: str, _options: MigrateOptions) -> InspectData:
    raise Vm2kvmError(ErrorCode.SOURCE_NOT_FOUND, "no such file", file=source)


@contextlib.asynccontextmanager
async def serve_daemon(
    address: str,
    *,
    runner: Runner | None = None,
    inspector: Inspector | None = None,
    defaults: MigrateOptions | None = None,
    store: JobStore | None = None,
    max_parallel_jobs: int = 2,
    job_retention: int = 1000,
    preflight: Preflight | None = None,
) -> AsyncIterator[Daemon]:
    """vm2kvmd in this process on the bus at ``address``.

    Without ``store`` the manager has its own in-memory job store; pass one to
    see the same jobs through a restart (a second ``serve_daemon`` on it).
    """
    manager = Manager(
        runner=runner or ScriptedRunner(),
        inspector=inspector or StaticInspector(),
        preflight=preflight,
        defaults=defaults,
        store=store,
        max_parallel_jobs=max_parallel_jobs,
        job_retention=job_retention,
    )
    await manager.load()
    daemon = Daemon(manager, bus="session", address=address)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop(grace=10)


@dataclass
class Signal:
    at: float  # loop time of arrival
    path: str
    interface: str
    member: str
    body: list[Any]


class BusClient:
    """A client connection that records the daemon's signals."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.signals: list[Signal] = []
        self._arrived = asyncio.Event()
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(cls, address: str) -> BusClient:
        return cls(await MessageBus(bus_address=address).connect())

    async def close(self) -> None:
        self.bus.disconnect()
        await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.sender != "org.freedesktop.DBus":
            loop = asyncio.get_running_loop()
            self.signals.append(
                Signal(loop.time(), msg.path or "", msg.interface or "", msg.member or "", msg.body)
            )
            self._arrived.set()

    async def subscribe(self) -> None:
        """Job and ObjectManager signals of vm2kvmd, as vm2kvmctl subscribes."""
        for rule in (
            f"type='signal',sender='{BUS_NAME}',path_namespace='{JOBS_PATH}'",
            f"type='signal',sender='{BUS_NAME}',path='{MANAGER_PATH}'",
        ):
            await self.call_ok(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "AddMatch",
                "s",
                [rule],
            )

    async def call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
    ) -> Message:
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        return reply

    async def call_ok(self, *args: Any) -> list[Any]:
        reply = await self.call(*args)
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
        return list(reply.body)

    async def manager(self, member: str, signature: str = "", body: Sequence[Any] = ()) -> Message:
        return await self.call(BUS_NAME, MANAGER_PATH, MANAGER_IFACE, member, signature, body)

    async def migrate(self, source: str, options: dict[str, Variant] | None = None) -> str:
        reply = await self.manager("Migrate", "sa{sv}", [source, options or {}])
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
        return str(reply.body[0])

    async def job_call(self, path: str, member: str) -> Message:
        """A ``Job1`` method without arguments; the reply (maybe an error)."""
        return await self.call(BUS_NAME, path, JOB_IFACE, member)

    async def job_props(self, path: str) -> dict[str, Any]:
        (props,) = await self.call_ok(
            BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", "s", [JOB_IFACE]
        )
        return {name: value.value for name, value in props.items()}

    def job_signals(self, path: str, member: str) -> list[Signal]:
        return [s for s in self.signals if s.path == path and s.member == member]

    async def wait_for(self, path: str, member: str, count: int = 1, within: float = 10.0) -> list[Signal]:
        async with asyncio.timeout(within):
            while len(found := self.job_signals(path, member)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return found

    async def wait_property(self, path: str, name: str, value: object, within: float = 10.0) -> None:
        """Until a PropertiesChanged of ``path`` announced ``name`` = ``value``."""
        async with asyncio.timeout(within):
            while not any(
                name in s.body[1] and s.body[1][name].value == value
                for s in self.job_signals(path, "PropertiesChanged")
            ):
                self._arrived.clear()
                await self._arrived.wait()
