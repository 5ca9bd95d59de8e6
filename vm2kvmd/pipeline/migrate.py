"""One migration: inspect, prepare, copy, [verify], define.

The steps, each in its own module:

* ``inspection``: read the source, plan the domain;
* ``targets``: where the disks go (a pool of any supported type, or an
  output directory): what must not exist, the space a disk takes, how its
  volume is created and written;
* ``overlay``: the job's work area and a qcow2 overlay over every source
  disk; the ``before_copy`` hooks run on the overlays;
* ``copy``: the overlays to the targets, in parallel, progress in bytes;
* ``verify`` (``--verify``): every target against its overlay.

All-or-nothing: every refusal we can foresee (name taken, pool missing,
volumes present, networks missing, not enough space) is raised before the
first byte is written, and on any failure or cancellation afterwards every
volume, file and domain this run created is removed again (``Rollback``);
nothing that existed before is touched.  The work area (overlays, descriptor
views) goes in every case.  ``CancelledError`` stays a ``CancelledError``.
Source files are only ever opened read-only (every QEMU node says so).

With a ``ResidueRecorder`` (the job store's) everything the run creates is
also written down before it is created, so a daemon killed mid-job removes
it at its next start (``service.recovery``); the records are cleared when
the run ends, whichever way.  ``testhold.hold`` after each phase is the
tests' ``VM2KVMD_TEST_HOLD`` hook.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.aio import in_thread, settle
from vm2kvmd.core.hardware.model import DiskChain, Note
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.plan import DomainPlan, PlannedDisk
from vm2kvmd.core.report import build_report
from vm2kvmd.core.residue import Residue, ResidueRecorder
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import targets
from vm2kvmd.pipeline.blockdev import QemuSource, SourceViews, open_source
from vm2kvmd.pipeline.conversion import GuestConverter, unconverted
from vm2kvmd.pipeline.copy import DiskCopy, copy_disks
from vm2kvmd.pipeline.events import PHASES, DiskProgress, JobEvents
from vm2kvmd.pipeline.overlay import BeforeCopy, Overlay, WorkArea, create_overlays
from vm2kvmd.pipeline.planning import InspectResult, inspect_with_host
from vm2kvmd.pipeline.rollback import Rollback
from vm2kvmd.pipeline.targets import DirTarget, DiskSizes, PoolTarget, Target
from vm2kvmd.pipeline.testhold import hold
from vm2kvmd.pipeline.verify import verify_disk
from vm2kvmd.sources import extracted_at_migration, verify_source
from vm2kvmd.sources.ovf.extract import extract_package
from vm2kvmd.sources.ovf.package import load_vm

__all__ = [
    "PHASES",
    "BeforeCopy",
    "DiskProgress",
    "JobEvents",
    "MigrationResult",
    "check_output_targets",
    "check_pool_targets",
    "preflight",
    "run_migration",
    "xml_path_for",
]

# Shared with ``pipeline.snapshots``.
check_pool_targets = targets.check_pool_targets
check_output_targets = targets.check_output_targets
xml_path_for = targets.xml_path_for


@dataclass(frozen=True)
class MigrationResult:
    domain_name: str | None  # None with output_dir: nothing was defined
    domain_uuid: str
    outputs: tuple[str, ...]  # disk images written (and the XML file with output_dir)
    domain_xml: str
    notes: tuple[Note, ...]
    report: dict[str, Any] = field(default_factory=dict)  # core.report.build_report: source vs target


async def run_migration(
    source: str,
    options: MigrateOptions,
    events: JobEvents,
    *,
    before_copy: Sequence[BeforeCopy] = (),
    converter: GuestConverter | None = None,
    recorder: ResidueRecorder | None = None,
    copy_slots: asyncio.Semaphore | None = None,
) -> MigrationResult:
    """Migrate the VM at ``source`` (a .vmx) as ``options`` say; see the module docstring.

    ``before_copy``: hooks run on the overlays before the copy (``pipeline.overlay``).
    ``converter``: converts the guest on the overlays (``pipeline.conversion``) when
    ``options.guest_conversion``; without one the guest is copied as it is.
    ``recorder``: where what the run creates is written down (``pipeline.rollback``).
    ``copy_slots``: shared by every job of the daemon; each disk copy holds one
    (``pipeline.copy``).
    """
    options.validate()
    if options.snapshots == "keep":
        # One qcow2 per VMDK layer and the snapshots as libvirt metadata: its own job.
        from vm2kvmd.pipeline.snapshots import run_keep_migration

        return await run_keep_migration(
            source, options, events, before_copy=before_copy, recorder=recorder, copy_slots=copy_slots
        )
    host = None if options.output_dir else LibvirtHost(options.connect)
    rollback = Rollback(recorder)
    migration = _Migration(
        source, options, events, host, rollback, tuple(before_copy), converter, copy_slots=copy_slots
    )
    try:
        return await migration.run()
    except BaseException:
        if rollback.pending:
            events.phase("cleanup")
            for line in await settle(in_thread(rollback.run)):
                events.log(line)
        raise
    finally:
        for line in await in_thread(migration.close):
            events.log(line)
        if host is not None:
            await in_thread(host.close)


class _Migration:
    def __init__(
        self,
        source: str,
        options: MigrateOptions,
        events: JobEvents,
        host: LibvirtHost | None,
        rollback: Rollback,
        before_copy: tuple[BeforeCopy, ...],
        converter: GuestConverter | None = None,
        *,
        copy_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.converter = converter
        self.source = source
        self.options = options
        self.events = events
        self.host = host
        self.rollback = rollback
        self.succeeded = False
        self.before_copy = before_copy
        self.area: WorkArea | None = None
        self.views: SourceViews | None = None
        self.copy_slots = copy_slots

    def close(self) -> list[str]:
        """Remove the work area, whatever happened (blocking); returns log lines for leftovers.

        Last, the run's residue records go: its outputs are the result now, or the
        rollback (which runs before this) has removed them.
        """
        if self.views is not None:
            self.views.close()
        lines = self.area.remove() if self.area is not None else []
        # A successful run's records stay until its job is stored as completed (the store
        # clears them in that same write); a failed run's rollback has run by now.
        return lines if self.succeeded else lines + self.rollback.forget_all()

    def _target(self) -> Target:
        if self.host is None:
            return DirTarget(self.options)
        pool = self.options.effective_pool
        assert pool is not None
        return PoolTarget(self.host, pool, self.options)

    async def run(self) -> MigrationResult:
        self.events.phase("inspect")
        await hold("inspect")
        inspected = await in_thread(inspect_with_host, self.source, self.options, self.host, strict=True)
        _refuse_broken_disks(inspected, extracting=True)
        if await in_thread(extracted_at_migration, self.source, inspected.vm):
            # A compressed OVA: extracted into the work area, its manifest checked on the way.
            inspected = await self._extract(inspected)
        else:
            # An OVF package's manifest, hashed once per job and before the first byte is converted.
            await verify_source(
                self.source,
                self.events.log,
                datastores=dict(self.options.datastores) or None,
                allow_external=self.options.allow_external_paths,
            )
        plan = inspected.plan
        disks = list(plan.disks)

        self.events.phase("prepare")
        await hold("prepare")
        target = self._target()
        await in_thread(target.check, plan)
        overlays = await self._overlays(disks)
        sizes = await self._sizes(disks, overlays)
        free = await in_thread(target.check_space, disks, sizes)  # before hours of guest conversion
        conversion = unconverted()
        if self.options.guest_conversion and self.converter is not None:
            self.events.phase("convert")
            await hold("convert")
            conversion = await self.converter(
                overlays, inspected.vm, inspected.replan, self.options, self.events
            )
            # The converted guest drives other devices (virtio): the same disks, other buses and names.
            inspected = inspected.with_caps(conversion.caps)
            plan = inspected.plan
            disks = list(plan.disks)
        if self.before_copy:
            for hook in self.before_copy:
                await hook(overlays)
        if self.before_copy or conversion.guest is not None:
            sizes = await self._sizes(disks, overlays)
            free = await in_thread(target.check_space, disks, sizes)
        await in_thread(target.prepare, self.rollback)
        paths = [await in_thread(target.create, disk, self.rollback) for disk in disks]

        self.events.phase("copy")
        await hold("copy")
        await self._copy(target, disks, overlays, sizes, paths, free)

        notes = inspected.notes + conversion.notes
        if self.options.verify:
            self.events.phase("verify")
            await hold("verify")
            for disk, overlay, path in zip(disks, overlays, paths, strict=True):
                notes += (await self._verify(disk, overlay, path),)

        self.events.phase("define")
        await hold("define")
        if self.host is not None:
            await in_thread(self.host.refresh_pool, self._pool)
            name: str | None = await in_thread(self._define, plan, inspected.domain_xml)
            outputs = tuple(paths)
            self.events.log(f"defined domain {name} ({plan.uuid})")
        else:
            assert isinstance(target, DirTarget)
            name = None
            xml_path = target.xml_path(plan)
            await in_thread(self._write_xml, xml_path, inspected.domain_xml)
            outputs = (*paths, xml_path)
            self.events.log(f"wrote {xml_path}")
        report = build_report(inspected.vm, plan, conversion, notes)
        self.succeeded = True
        return MigrationResult(name, plan.uuid, outputs, inspected.domain_xml, notes, report)

    @property
    def _pool(self) -> str:
        pool = self.options.effective_pool
        assert pool is not None
        return pool

    async def _extract(self, inspected: InspectResult) -> InspectResult:
        """Decompress a compressed OVA into the work area and read the VM again from there."""
        self.area = await in_thread(WorkArea.create, self.options.work_dir, self.rollback.recorder)
        dest = os.path.join(self.area.path, "source")
        await in_thread(self._make_extract_dir, dest)
        members = [d.file_name for d in inspected.vm.disks if d.extracted_at_migration]
        package = await extract_package(self.source, dest, members, self.events.log)
        vm = await in_thread(load_vm, package)
        inspected = await in_thread(
            inspect_with_host, self.source, self.options, self.host, strict=True, loaded=vm
        )
        _refuse_broken_disks(inspected, extracting=False)
        return inspected

    def _make_extract_dir(self, dest: str) -> None:
        with self.rollback.creating(Residue("tree", path=dest)) as rid:
            os.mkdir(dest, 0o700)
        # Removed with the work area in any case; on failure the cleanup says so first.
        self.rollback.tree(dest, f"extracted source files in {dest}", rid=rid)

    # --- prepare ------------------------------------------------------------------

    async def _overlays(self, disks: list[PlannedDisk]) -> list[Overlay]:
        """The job's work area, the sources as QEMU opens them, and an overlay over each."""
        if self.area is None:
            self.area = await in_thread(WorkArea.create, self.options.work_dir, self.rollback.recorder)
        self.views = SourceViews(self.area.path)  # descriptor views live in the work area too
        sources: list[tuple[str, QemuSource]] = []
        for disk in disks:
            sources.append((disk.source.address.key, await open_source(self.views, _chain(disk))))
        overlays = await create_overlays(sources, self.area)
        self.events.log(f"overlays in {self.area.path}")
        return overlays

    async def _sizes(self, disks: list[PlannedDisk], overlays: list[Overlay]) -> list[DiskSizes]:
        sizes = []
        for disk, overlay in zip(disks, overlays, strict=True):
            node = overlay.node()
            measured = await qemu_img.measure_sizes(node, disk.format, label=overlay.label)
            data = await qemu_img.data_bytes(node, label=overlay.label)
            sizes.append(DiskSizes(disk.capacity, measured.required, measured.fully_allocated, data))
        return sizes

    # --- copy, verify and define -------------------------------------------------------------

    async def _copy(
        self,
        target: Target,
        disks: list[PlannedDisk],
        overlays: list[Overlay],
        sizes: list[DiskSizes],
        paths: list[str],
        free: int,
    ) -> None:
        """Every overlay to its target (``pipeline.copy``); ``free``: the bytes free at the check."""
        copies = [
            DiskCopy(
                index=i,
                key=overlay.key,
                source=overlay.node(),
                label=overlay.label,
                target=path,
                format=disk.format,
                total=target.written(disk, size),
                mode=target.copy_mode(disk),
            )
            for i, (disk, overlay, path, size) in enumerate(zip(disks, overlays, paths, sizes, strict=True))
        ]
        self.events.disks([DiskProgress(c.key, c.target, c.total) for c in copies])
        needed = sum(target.needed(d, s) for d, s in zip(disks, sizes, strict=True))

        async def no_space(copy: DiskCopy) -> Vm2kvmError:
            return await in_thread(target.ran_out, disks[copy.index], copy.total, needed, free)

        await copy_disks(
            copies, self.events, no_space, limit=self.options.disk_parallelism, copy_slots=self.copy_slots
        )

    async def _verify(self, disk: PlannedDisk, overlay: Overlay, target: str) -> Note:
        """Compare the written ``target`` with the overlay it was copied from; a difference fails the job."""
        key = disk.source.address.key
        self.events.log(f"verifying {key}: comparing {target} with {overlay.label}")
        note = await verify_disk(
            overlay.node(), target, disk.format, size=disk.capacity, key=key, label=overlay.label
        )
        self.events.log(f"{key}: {note.message}")
        return note

    def _define(self, plan: DomainPlan, xml: str) -> str:
        host = self.host
        assert host is not None
        # Again: the copy took time, and defining over an existing name with our UUID would
        # silently replace that domain's configuration.
        if host.domain_exists(plan.name):
            raise targets.domain_exists(plan.name)
        residue = Residue("domain", name=plan.name, uri=host.uri, uuid=plan.uuid)
        with self.rollback.creating(residue) as rid:
            name = host.define_domain(xml)
        self.rollback.domain(host, name, uuid=plan.uuid, rid=rid)
        return name

    def _write_xml(self, path: str, xml: str) -> None:
        with self.rollback.creating(Residue("file", path=path)) as rid:
            fd = targets.create_exclusive(path)
        self.rollback.file(path, rid=rid)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(xml)
        except OSError as err:
            raise targets.output_error(path, err) from err


def preflight(source: str, options: MigrateOptions) -> InspectResult:
    """The checks of a migration that need no copy: run before a job is created.

    Blocking (call it in a thread).  Raises the ``Vm2kvmError`` the job would
    fail with (unreadable source or disks, name or volume taken, pool or
    network missing), so a caller gets it as the answer to ``Migrate`` instead
    of a job that fails a moment later.  The job repeats the checks: the host
    may change in between.
    """
    options.validate()
    if options.snapshots == "keep":
        from vm2kvmd.pipeline.snapshots import preflight_keep

        return preflight_keep(source, options)
    if options.output_dir:
        inspected = inspect_with_host(source, options, None, strict=True)
        _refuse_broken_disks(inspected)
        check_output_targets(
            options.output_dir, inspected.plan, xml_path_for(options.output_dir, inspected.plan)
        )
        return inspected
    with LibvirtHost(options.connect) as host:
        inspected = inspect_with_host(source, options, host, strict=True)
        _refuse_broken_disks(inspected)
        pool = options.effective_pool
        assert pool is not None
        check_pool_targets(host, pool, inspected.plan)
        return inspected


def _refuse_broken_disks(inspected: InspectResult, *, extracting: bool = True) -> None:
    """``extracting``: a compressed disk is fine (the job extracts it before it is read)."""
    for disk in inspected.vm.disks:
        if extracting and disk.extracted_at_migration and disk.problem_code is None:
            continue
        if disk.chain is None or disk.problem_code is not None:
            # ``problem`` already names the file and key it is about; say which disk it is.
            raise Vm2kvmError(
                disk.problem_code or ErrorCode.DISK_MISSING,
                f"disk {disk.address.key}: {disk.problem or f'{disk.file_name!r} cannot be read'}",
            )


def _chain(disk: PlannedDisk) -> DiskChain:
    chain = disk.source.chain
    assert chain is not None  # _refuse_broken_disks ran
    return chain
