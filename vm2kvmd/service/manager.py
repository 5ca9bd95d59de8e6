"""``org.vm2kvm.Manager1`` at ``/org/vm2kvm/Daemon1``: inspect, start and list jobs; list the
VMs of a vSphere host.

The manager owns every job: it creates them (numbers come from the job
store), exports them, queues them -- at most ``max_parallel_jobs`` run at
once, first come first served -- and on shutdown cancels and awaits them.
At start it exports every job of the store (finished ones as read-only
views) after pruning to ``job_retention`` finished jobs, and prunes again
whenever a job finishes.  The pipeline functions are injected (``runner``,
``inspector``) and default to ``vm2kvmd.pipeline``; only the default runner
gets the job's residue recorder and the host-wide copy slots.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Final

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusDict,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUnixFd,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import dbus_property

from vm2kvmd import __version__
from vm2kvmd.adapters.password_fd import read_password_fd
from vm2kvmd.adapters.remote_disk import HostLimiter
from vm2kvmd.constants import (
    DEFAULT_CONNECTIONS_PER_HOST,
    DEFAULT_HOST_DISK_PARALLELISM,
    DEFAULT_JOB_RETENTION,
    DEFAULT_MAX_PARALLEL_JOBS,
    JOBS_PATH,
    MANAGER_IFACE,
    MANAGER_PATH,
    error_name,
    job_path,
)
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.secret import Secret
from vm2kvmd.core.vsphere.source import VsphereSource, split_job_source
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.access import check_readable, read_checked
from vm2kvmd.service.bus import ServiceBus
from vm2kvmd.service.caller import Caller, current_caller
from vm2kvmd.service.dispatch import PassedFd
from vm2kvmd.service.errors import to_dbus_error
from vm2kvmd.service.interface import BusInterface, bus_method
from vm2kvmd.service.jobs.dbus_object import JobObject
from vm2kvmd.service.jobs.job import Job
from vm2kvmd.service.jobs.state import JobState
from vm2kvmd.service.recovery import sweep_leftovers
from vm2kvmd.service.runner import (
    Inspector,
    InspectOutcome,
    Preflight,
    Runner,
    pipeline_inspector,
    pipeline_inspector_vsphere,
    pipeline_preflight,
    pipeline_preflight_vsphere,
    pipeline_runner,
)
from vm2kvmd.service.store import JobRecord, JobStore, now_us
from vm2kvmd.service.storeio import StoreIO
from vm2kvmd.service.targets import listing_options, pools_and_networks_json
from vm2kvmd.service.variants import unwrap_options
from vm2kvmd.service.vsphere import (
    TLS_OPTIONS,
    list_vms_json,
    remote_source,
    split_tls,
    tls_mapping,
    tls_policy,
)

log = logging.getLogger(__name__)

DBusPathList = Annotated[list[str], DBusSignature("ao")]

SHUTDOWN_REASON: Final = "vm2kvmd is shutting down"
# Migrate's option holding the BitLocker key as a file descriptor (``h``); never a MigrateOption.
BITLOCKER_KEY: Final = "bitlocker-key"

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


def inspect_json(result: InspectOutcome) -> str:
    data = result.to_json()
    data.setdefault("domain_xml", result.domain_xml)
    data.setdefault("notes", [str(note) for note in result.notes])
    return json.dumps(data)


class Manager(BusInterface):
    ARG_NAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "Inspect": ("result",),
        "Migrate": ("job",),
        "GetJobs": ("jobs",),
        "ListJobs": ("jobs",),
        "ListVms": ("vms",),
        "ListPoolsAndNetworks": ("targets",),
        "InspectRemote": ("result",),
        "MigrateRemote": ("job",),
    }

    def __init__(
        self,
        *,
        runner: Runner | None = None,
        inspector: Inspector | None = None,
        preflight: Preflight | None = None,
        defaults: MigrateOptions | None = None,
        store: JobStore | None = None,
        max_parallel_jobs: int = DEFAULT_MAX_PARALLEL_JOBS,
        host_disk_parallelism: int = DEFAULT_HOST_DISK_PARALLELISM,
        job_retention: int = DEFAULT_JOB_RETENTION,
        connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST,
    ) -> None:
        super().__init__(MANAGER_IFACE)
        self._runner = runner  # None: the pipeline, bound per job in job_runner
        self._inspector: Inspector = inspector or pipeline_inspector
        # The real pipeline's checks go with the real runner; an injected runner
        # brings its own (or none).
        self._preflight: Preflight | None = preflight or (pipeline_preflight if runner is None else None)
        self._defaults = defaults or MigrateOptions()
        # A store we open is ours to close; a given one outlives us (tests restart on it).
        # Every store call runs in the store's own thread: never SQLite on the event loop.
        self._owns_store = store is None
        self._io = StoreIO(store)
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._max_parallel = max(1, max_parallel_jobs)
        # Held by every disk copy of every job (pipeline.run_migration's copy_slots).
        self._copy_slots = asyncio.Semaphore(max(1, host_disk_parallelism))
        # Held by the disk readers of every vSphere job (adapters.remote_disk.HostLimiter).
        self._readers = HostLimiter(connections_per_host)
        self._retention = max(1, job_retention)
        self._objects: dict[str, JobObject] = {}  # every job's, by path
        self._queue: deque[Job] = deque()  # created, not started; FIFO
        self._running: set[Job] = set()  # started, not finished
        self._listeners: list[Callable[[], None]] = []
        self._bus: MessageBus | None = None
        self._closing = False

    # --- wiring ------------------------------------------------------------------

    def attach(self, bus: MessageBus) -> None:
        """Export the manager and its jobs on ``bus``; its authorizer learns the jobs' owners."""
        self._bus = bus
        if isinstance(bus, ServiceBus) and bus.owner_of is None:
            bus.owner_of = self.job_owner
        bus.export(MANAGER_PATH, self)
        for obj in self._objects.values():
            bus.export(obj.path, obj)
        bus.add_message_handler(self._unknown_job)

    @property
    def jobs(self) -> list[Job]:
        return [obj.job for obj in self._objects.values()]

    def job(self, path: str) -> Job:
        return self.job_object(path).job

    def job_object(self, path: str) -> JobObject:
        try:
            return self._objects[path]
        except KeyError:
            number = path.rsplit("/", 1)[-1] if path.startswith(JOBS_PATH + "/") else path
            raise Vm2kvmError(ErrorCode.NO_SUCH_JOB, f"no such job {number}") from None

    def job_owner(self, path: str) -> int | None:
        """The uid that started the job at ``path``; None when there is no such job."""
        obj = self._objects.get(path)
        return None if obj is None else obj.job.user

    def counts(self) -> tuple[int, int]:
        """(running, queued) jobs."""
        return len(self._running), len(self._queue)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` on the event loop whenever a job is created, starts, finishes,
        is dismissed or pruned (sd_notify STATUS, the logind inhibitor)."""
        self._listeners.append(callback)

    async def shutdown(self, grace: float = 60.0) -> None:
        """Refuse new work, cancel queued and running jobs and wait for them (at most ``grace`` s)."""
        self._closing = True
        # The queued ones first, so no running job's end starts one of them.
        for job in list(self._queue):
            job.cancel(SHUTDOWN_REASON)
        for job in self.jobs:
            job.cancel(SHUTDOWN_REASON)
        pending = [job.wait() for job in self.jobs if not job.state.finished]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), grace)
            except TimeoutError:
                stuck = [job.number for job in self.jobs if not job.state.finished]
                log.error("jobs %s did not stop within %.0f s of being cancelled", stuck, grace)
        await self._io.close(close_store=self._owns_store)

    def _unknown_job(self, msg: Message) -> Message | bool | None:
        """``NoSuchJob`` for any call on a job path that does not exist."""
        path = msg.path or ""
        if (
            msg.message_type is not MessageType.METHOD_CALL
            or not path.startswith(JOBS_PATH + "/")
            or path in self._objects
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

    # --- the jobs ------------------------------------------------------------------

    async def load(self) -> None:
        """Export every stored job, finished ones as read-only views, after pruning the store
        to the retention limit.  vm2kvmd calls it before it owns its name; Migrate makes sure."""
        async with self._load_lock:
            if self._loaded:
                return
            await self._io.call(JobStore.prune, self._retention)
            for record in await self._io.call(JobStore.load):
                if record.state in (JobState.QUEUED, JobState.RUNNING):
                    log.warning("job %d was left %s; marked failed", record.number, record.state)
                    record = await self._io.call(_mark_interrupted, record)
                self._adopt(Job.from_record(record, self._io))
            self._loaded = True
            if self._objects:
                log.info("%d jobs loaded from the job store", len(self._objects))

    def _adopt(self, job: Job) -> None:
        job.on_finished = self._finished
        job.on_dismissed = lambda _job: self._notify()
        obj = JobObject(job, retry=self._retry, retry_remote=self._retry_remote)
        self._objects[obj.path] = obj
        if self._bus is not None:
            self._bus.export(obj.path, obj)

    def job_runner(
        self,
        number: int,
        store: JobStore,
        vsphere: VsphereSource | None = None,
        bitlocker_key: Secret | None = None,
    ) -> Runner:
        """The runner of job ``number``: the injected one, or the pipeline bound to the job's
        residue records in ``store``, to the host-wide copy slots and, for a VM on vSphere, to
        its source (with the password, which only this runner holds), and the caller's
        BitLocker key, likewise."""
        if self._runner is not None:
            return self._runner
        runner: Runner = functools.partial(
            pipeline_runner,
            recorder=store.recorder(number),
            copy_slots=self._copy_slots,
            vsphere=vsphere,
            readers=self._readers,
            bitlocker_key=bitlocker_key,
        )
        return runner

    async def _create(
        self,
        caller: Caller,
        source: str,
        options: MigrateOptions,
        retry_of: int = 0,
        vsphere: VsphereSource | None = None,
        bitlocker_key: Secret | None = None,
    ) -> str:
        """Checks, then a new queued job; its path."""
        await self.load()
        if vsphere is not None:
            if self._runner is None:
                # Login, the VM's power state, its disks: the answer to MigrateRemote.
                await asyncio.to_thread(pipeline_preflight_vsphere, vsphere, options)
            if options.virtio_win:
                await check_readable(caller, [options.virtio_win])
        else:
            # The Windows drivers are read for the caller too (a directory opens read-only like a file).
            await check_readable(caller, [source, *([options.virtio_win] if options.virtio_win else [])])
        if self._preflight is not None and vsphere is None:
            # Bad input is the answer to Migrate, not a job that fails a moment later.
            await read_checked(caller, asyncio.to_thread(self._preflight, source, options))
            # libvirtd answered: what failed jobs left while it was away can go now.
            for line in await self._io.call(sweep_leftovers):
                log.info("%s", line)
        self._check_open()
        store = await self._io.store()
        # A vSphere job keeps how it trusts the server (CA file path, thumbprint, no-verify) for
        # its retry; the password never (the source holds it, the store does not see it).
        trust = tls_mapping(vsphere.tls) if vsphere is not None else {}
        record = await self._io.call(
            JobStore.create,
            source,
            {**options.to_mapping(), **trust},
            caller.uid,
            retry_of=retry_of,
            now_us=now_us(),
        )
        job = Job(
            record.number,
            source,
            options,
            self.job_runner(record.number, store, vsphere, bitlocker_key),
            io=self._io,
            user=caller.uid,
            create_time=record.create_time,
            retry_of=retry_of,
            stored=trust,
        )
        self._queue.append(job)
        # Started or numbered in the queue before it is exported: InterfacesAdded shows that.
        self._pump()
        self._adopt(job)
        log.info(
            "job %d created for %s by uid %d%s",
            job.number,
            source,
            caller.uid,
            f" (retry of job {retry_of})" if retry_of else "",
        )
        self._notify()
        if self._closing:
            # Shutdown began while the record was written: the job must not outlive it queued.
            job.cancel(SHUTDOWN_REASON)
        return job_path(job.number)

    def _pump(self) -> None:
        """Start queued jobs while there is room; renumber the rest."""
        started = False
        while self._queue and len(self._running) < self._max_parallel and not self._closing:
            job = self._queue.popleft()
            if job.state.finished:
                continue
            self._running.add(job)
            job.start()
            started = True
        for position, job in enumerate(self._queue, 1):
            job.set_queue_position(position)
        if started:
            self._notify()

    def _finished(self, job: Job) -> None:
        self._running.discard(job)
        if job in self._queue:
            self._queue.remove(job)
        self._pump()
        self._io.submit(JobStore.prune, self._retention, on_done=self._pruned)
        self._notify()

    async def _retry(self, job: Job) -> str:
        caller = current_caller()
        self._check_open()
        if split_job_source(job.source) is not None:
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                f"job {job.number} migrates a VM on vSphere: a retry needs the password again",
                hint=f"vm2kvmctl retry {job.number} asks for it (Job1.RetryRemote with the password fd)",
            )
        options = MigrateOptions.from_mapping(job.status.options, defaults=self._defaults)
        return await self._create(caller, job.source, options, retry_of=job.number)

    async def _retry_remote(self, job: Job, tls: Mapping[str, Any], secret: str) -> str:
        """``Job1.RetryRemote``: the vSphere job again, logging in with a password given now.

        TLS as the caller gives it now, or (given none) as the job stored it; a stored CA file is
        checked again (it may be gone or unreadable for the caller by now)."""
        caller = current_caller()
        self._check_open()
        parts = split_job_source(job.source)
        if parts is None:
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                f"job {job.number} migrates a local source: retry it with Retry, no password needed",
            )
        stored, rest = split_tls(job.status.options)
        source = remote_source(*parts, tls or stored, secret)
        if source.tls.ca_file is not None:
            await check_readable(caller, [source.tls.ca_file])
        options = MigrateOptions.from_mapping(rest, defaults=self._defaults)
        return await self._create(caller, source.label, options, retry_of=job.number, vsphere=source)

    def _pruned(self, removed: list[int]) -> None:
        """Unexport the jobs ``JobStore.prune`` removed (``InterfacesRemoved``)."""
        for number in removed:
            obj = self._objects.pop(job_path(number), None)
            if obj is not None and self._bus is not None:
                self._bus.unexport(obj.path)
        if removed:
            log.info("removed %d old jobs (job_retention %d)", len(removed), self._retention)
            self._notify()

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:
                log.exception("a job listener failed")

    # --- helpers -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise Vm2kvmError(ErrorCode.CANCELLED, SHUTDOWN_REASON)

    def _options(self, raw: Mapping[str, Any]) -> MigrateOptions:
        return MigrateOptions.from_mapping(unwrap_options(raw), defaults=self._defaults)

    @staticmethod
    async def _bitlocker_key(raw: Mapping[str, Any]) -> tuple[dict[str, Any], Secret | None]:
        """The options without ``bitlocker-key``, and the key read from its fd (closed here).

        The key is no ``MigrateOptions`` field: options go to the job store and the
        ``Options`` property, the key only to this job's runner."""
        options = dict(raw)
        passed = options.pop(BITLOCKER_KEY, None)
        if passed is None:
            return options, None
        if not isinstance(passed, PassedFd):
            # Whatever was sent instead (the key itself?) is not repeated.
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                "option bitlocker-key must be a file descriptor (D-Bus type h) to read the key from",
                key=BITLOCKER_KEY,
                hint="vm2kvmctl migrate --key-file FILE passes it so; never put the key itself in an option",
            )
        text = await asyncio.to_thread(read_password_fd, passed.take(), what="BitLocker key")
        return options, Secret(text)

    # --- org.vm2kvm.Manager1 -----------------------------------------------------------

    @bus_method()
    async def Inspect(self, source: DBusStr, options: DBusDict) -> DBusStr:
        caller = current_caller()
        self._check_open()
        path = check_source(source)
        opts = self._options(options)
        await check_readable(caller, [path])
        # Inspection reads files and may ask libvirt: a worker thread.
        result = await read_checked(caller, asyncio.to_thread(self._inspector, path, opts))
        return inspect_json(result)

    @bus_method()
    async def Migrate(self, source: DBusStr, options: DBusDict) -> DBusObjectPath:
        caller = current_caller()
        self._check_open()
        path = check_source(source)
        rest, key = await self._bitlocker_key(options)
        return await self._create(caller, path, self._options(rest), bitlocker_key=key)

    @bus_method()
    def GetJobs(self) -> DBusPathList:
        return list(self._objects)

    @bus_method()
    def ListJobs(self) -> DBusStr:
        # One JSON string instead of GetManagedObjects' a{sv} per job: the variants of a
        # thousand jobs cost 100 ms to marshal and unmarshal, this a tenth of it.
        return "[" + ", ".join(obj.json_text() for obj in self._objects.values()) + "]"

    @bus_method()
    async def ListVms(self, uri: DBusStr, options: DBusDict, password: DBusUnixFd) -> DBusStr:
        # The fd first: it is read and closed whatever else is wrong with the call.  Reading
        # waits for the caller to close its end (with a deadline): a worker thread.
        secret = await asyncio.to_thread(read_password_fd, password)
        caller = current_caller()
        self._check_open()
        tls = tls_policy(unwrap_options(options))
        if tls.ca_file is not None:
            await check_readable(caller, [tls.ca_file])  # absolute: tls_policy checks it
        # Login and the inventory read block on the network: a worker thread.
        return await asyncio.to_thread(list_vms_json, uri, secret, tls)

    @bus_method()
    async def ListPoolsAndNetworks(self, options: DBusDict) -> DBusStr:
        self._check_open()
        opts = self._options(listing_options(options))
        # libvirt calls block: a worker thread.
        return await asyncio.to_thread(pools_and_networks_json, opts)

    async def _remote(
        self, uri: str, vm: str, raw: Mapping[str, Any], secret: str
    ) -> tuple[VsphereSource, MigrateOptions]:
        """The vSphere source and the options of an ``*Remote`` call (TLS options split off)."""
        caller = current_caller()
        self._check_open()
        plain = unwrap_options(raw)
        source = remote_source(uri, vm, plain, secret)
        if source.tls.ca_file is not None:
            await check_readable(caller, [source.tls.ca_file])
        rest = {k: v for k, v in plain.items() if k not in TLS_OPTIONS}
        return source, MigrateOptions.from_mapping(rest, defaults=self._defaults)

    @bus_method()
    async def InspectRemote(
        self, uri: DBusStr, vm: DBusStr, options: DBusDict, password: DBusUnixFd
    ) -> DBusStr:
        # The fd first: it is read and closed whatever else is wrong with the call.
        secret = await asyncio.to_thread(read_password_fd, password)
        source, opts = await self._remote(uri, vm, options, secret)
        # Login, the inventory and the descriptors block on the network: a worker thread.
        return inspect_json(await asyncio.to_thread(pipeline_inspector_vsphere, source, opts))

    @bus_method()
    async def MigrateRemote(
        self, uri: DBusStr, vm: DBusStr, options: DBusDict, password: DBusUnixFd
    ) -> DBusObjectPath:
        secret = await asyncio.to_thread(read_password_fd, password)
        rest, key = await self._bitlocker_key(options)
        source, opts = await self._remote(uri, vm, rest, secret)
        return await self._create(current_caller(), source.label, opts, vsphere=source, bitlocker_key=key)

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        return __version__

    @dbus_property(access=PropertyAccess.READ)
    def MaxParallelJobs(self) -> DBusUInt32:
        return self._max_parallel


def _mark_interrupted(store: JobStore, record: JobRecord) -> JobRecord:
    """Fail an unfinished record that recovery did not handle (vm2kvmd runs it before us;
    an in-process manager may not have).  Runs in the store's thread."""
    where = f"in phase {record.work_phase or record.phase}" if record.phase else "before it started"
    message = (
        f"interrupted: vm2kvmd stopped while the job was {where}; "
        f"vm2kvmctl retry {record.number} starts it again"
    )
    store.update(
        record.number,
        state=JobState.FAILED.value,
        error=(error_name(ErrorCode.INTERRUPTED), message),
        end_time=now_us(),
    )
    return store.get(record.number) or record
