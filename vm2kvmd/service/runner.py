"""What the service needs from the pipeline, as structural types.

The manager is given a *runner* (``run_migration``) and an *inspector*
(``inspect_source``); by default both come from ``vm2kvmd.pipeline``,
imported on first use so the daemon starts (and answers ``GetJobs``) even
when the pipeline's own imports (libvirt, guestfs) are slow or broken.
Tests inject small real runners of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.options import MigrateOptions

if TYPE_CHECKING:
    from vm2kvmd.adapters.remote_disk import HostLimiter
    from vm2kvmd.core.residue import ResidueRecorder
    from vm2kvmd.core.secret import Secret
    from vm2kvmd.core.vsphere.source import VsphereSource


class DiskInfo(Protocol):
    """A disk announced before copying (``pipeline.DiskProgress``)."""

    @property
    def key(self) -> str: ...  # the source device, e.g. "scsi0:0"
    @property
    def target(self) -> str: ...  # the volume / file written
    @property
    def total(self) -> int: ...  # bytes to copy


class JobEvents(Protocol):
    """How a runner reports; matches ``pipeline.JobEvents``."""

    def phase(self, name: str) -> None: ...
    def disks(self, items: Sequence[DiskInfo]) -> None: ...
    def disk_progress(self, index: int, done: int, total: int) -> None: ...
    def log(self, message: str) -> None: ...


class MigrationOutcome(Protocol):
    """``pipeline.MigrationResult`` as far as the service reads it."""

    @property
    def domain_name(self) -> str | None: ...
    @property
    def domain_uuid(self) -> str: ...
    @property
    def outputs(self) -> Sequence[str]: ...
    @property
    def notes(self) -> Sequence[Note]: ...
    @property
    def report(self) -> Mapping[str, Any]: ...  # core.report.build_report; {} when none was made


class InspectOutcome(Protocol):
    """``pipeline.InspectResult`` as far as the service reads it."""

    @property
    def domain_xml(self) -> str: ...
    @property
    def notes(self) -> Sequence[Note]: ...
    def to_json(self) -> dict[str, Any]: ...


Runner = Callable[[str, MigrateOptions, JobEvents], Awaitable[MigrationOutcome]]
Inspector = Callable[[str, MigrateOptions], InspectOutcome]  # blocking; run in a thread
Preflight = Callable[[str, MigrateOptions], object]  # blocking; raises what the job would fail with


async def pipeline_runner(
    source: str,
    options: MigrateOptions,
    events: JobEvents,
    *,
    recorder: ResidueRecorder | None = None,
    copy_slots: asyncio.Semaphore | None = None,
    vsphere: VsphereSource | None = None,
    readers: HostLimiter | None = None,
    bitlocker_key: Secret | None = None,
) -> MigrationOutcome:
    """``pipeline.run_migration``; the manager binds ``recorder`` (the job's residues in the
    job store), ``copy_slots`` (the host-wide disk copy limit), ``readers`` (connections per
    vSphere host) and the caller's BitLocker key (held in memory for this job only) with
    ``functools.partial``."""
    from vm2kvmd import pipeline
    from vm2kvmd.pipeline.conversion import LibguestfsConverter

    return await pipeline.run_migration(
        source,
        options,
        events,
        converter=LibguestfsConverter(bitlocker_key=bitlocker_key),
        recorder=recorder,
        copy_slots=copy_slots,
        vsphere=vsphere,
        readers=readers,
    )


def pipeline_inspector(source: str, options: MigrateOptions) -> InspectOutcome:
    from vm2kvmd import pipeline
    from vm2kvmd.adapters.libvirt_host import LibvirtHost

    # The host lets inspection show what Migrate would do (pool paths, names and
    # UUIDs in use); an unreachable libvirt only adds notes.
    with LibvirtHost(options.connect) as host:
        return pipeline.inspect_source(source, options, host)


def pipeline_preflight(source: str, options: MigrateOptions) -> object:
    from vm2kvmd import pipeline

    return pipeline.preflight(source, options)


def pipeline_inspector_vsphere(source: VsphereSource, options: MigrateOptions) -> InspectOutcome:
    """``Inspect`` of a VM on ESXi/vCenter (blocking): logs in, reads it and its descriptors."""
    from vm2kvmd.adapters.libvirt_host import LibvirtHost
    from vm2kvmd.pipeline.vsphere import inspect_vsphere

    with LibvirtHost(options.connect) as host:
        return inspect_vsphere(source, options, host, strict=False)


def pipeline_preflight_vsphere(source: VsphereSource, options: MigrateOptions) -> object:
    from vm2kvmd import pipeline

    return pipeline.preflight(source.label, options, source)
