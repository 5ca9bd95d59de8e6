"""One migration: inspect, prepare, [convert], copy, [verify], define; the one engine for every disk strategy.

``Engine.run`` is the phase sequence; what the disks become is its
``DiskStrategy`` (``pipeline.strategies``): ``FlattenDisks`` for
``--snapshots flatten`` (one volume per disk, through an overlay),
``KeepSnapshots`` for ``--snapshots keep`` (one volume per VMDK layer,
the snapshots as libvirt metadata).  Both emit the same phases, in the
order of ``events.PHASES``.

All-or-nothing: every refusal we can foresee (name taken, pool missing,
volumes present, networks missing, not enough space) is raised before the
first byte is written, and on any failure or cancellation afterwards every
volume, file, domain and snapshot this run created is removed again
(``Rollback``); nothing that existed before is touched.  The work area
(overlays, descriptor views, an extracted OVA) goes in every case.
``CancelledError`` stays a ``CancelledError``.  Source files are only ever
opened read-only (every QEMU node says so).

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

from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.adapters.remote_disk import HostLimiter
from vm2kvmd.aio import in_thread, settle
from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.plan import DomainPlan
from vm2kvmd.core.residue import Residue, ResidueRecorder
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.conversion import GuestConverter, unconverted
from vm2kvmd.pipeline.events import PHASES, DiskProgress, JobEvents
from vm2kvmd.pipeline.overlay import BeforeCopy
from vm2kvmd.pipeline.planning import InspectResult
from vm2kvmd.pipeline.rollback import Rollback
from vm2kvmd.pipeline.strategies.base import Comparison, DiskStrategy, Migration
from vm2kvmd.pipeline.strategies.flatten import FlattenDisks, preflight_flatten
from vm2kvmd.pipeline.strategies.keep import KeepSnapshots, preflight_keep, preflight_keep_vsphere
from vm2kvmd.pipeline.targets import (
    create_exclusive,
    domain_exists,
    output_error,
    pool_still_there,
    xml_path_for,
)
from vm2kvmd.pipeline.testhold import hold
from vm2kvmd.pipeline.verify import verify_disk

__all__ = [
    "PHASES",
    "BeforeCopy",
    "DiskProgress",
    "Engine",
    "JobEvents",
    "MigrationResult",
    "preflight",
    "run_migration",
    "strategy_for",
]


@dataclass(frozen=True)
class MigrationResult:
    domain_name: str | None  # None with output_dir: nothing was defined
    domain_uuid: str
    outputs: tuple[str, ...]  # disk images written (and the XML file with output_dir)
    domain_xml: str
    notes: tuple[Note, ...]
    report: dict[str, Any] = field(default_factory=dict)  # core.report.build_report: source vs target


def strategy_for(migration: Migration) -> DiskStrategy:
    """The disk strategy ``--snapshots`` asks for."""
    return KeepSnapshots(migration) if migration.options.snapshots == "keep" else FlattenDisks(migration)


async def run_migration(
    source: str,
    options: MigrateOptions,
    events: JobEvents,
    *,
    before_copy: Sequence[BeforeCopy] = (),
    converter: GuestConverter | None = None,
    recorder: ResidueRecorder | None = None,
    copy_slots: asyncio.Semaphore | None = None,
    vsphere: VsphereSource | None = None,
    readers: HostLimiter | None = None,
) -> MigrationResult:
    """Migrate the VM at ``source`` (a .vmx, .ovf or .ova) as ``options`` say; see the module docstring.

    ``vsphere``: the VM is on ESXi/vCenter (``source`` is then its label, ``job_source``).

    ``before_copy``: hooks run on the overlays before the copy (``pipeline.overlay``);
    with ``--snapshots keep`` on the current state's volumes after it (``strategies.keep``).
    ``converter``: converts the guest on the overlays (``pipeline.conversion``) when
    ``options.guest_conversion``; without one the guest is copied as it is.
    ``recorder``: where what the run creates is written down (``pipeline.rollback``).
    ``copy_slots``: shared by every job of the daemon; each disk copy holds one
    (``pipeline.copy``).
    ``readers``: shared by every job of the daemon; bounds the connections to a vSphere host.
    """
    options.validate()
    check_vsphere_options(vsphere, options)
    # The job waits for a libvirtd that went away (pipeline.targets: the pool checked again).
    host = (
        None
        if options.output_dir
        else LibvirtHost(options.connect, patience=options.libvirt_retry_seconds, log=events.log)
    )
    migration = Migration(
        source, options, events, host, Rollback(recorder), copy_slots, vsphere=vsphere, readers=readers
    )
    engine = Engine(migration, strategy_for(migration), tuple(before_copy), converter)
    try:
        return await engine.run()
    except BaseException as exc:
        if migration.remote is not None:
            remote, migration.remote = migration.remote, None
            try:
                await settle(remote.aclose(exc))
            except Vm2kvmError as named:
                # A remote disk's reader says why the copy failed (its host stopped answering).
                if isinstance(exc, Vm2kvmError) and named is not exc:
                    await _roll_back(migration, events)
                    raise named from exc
            except Exception as failed:
                # Stopping the readers or logging out failed too: the run's own error is the one to
                # report, and what it created is still rolled back.
                events.log(f"closing the vSphere session failed: {failed!r}")
        await _roll_back(migration, events)
        raise
    finally:
        if migration.remote is not None:
            # The readers serve the overlays' backing: stopped before the work area goes.
            await settle(migration.remote.aclose())
        for line in await in_thread(engine.close):
            events.log(line)
        if host is not None:
            await in_thread(host.close)


async def _roll_back(migration: Migration, events: JobEvents) -> None:
    if migration.rollback.pending:
        events.phase("cleanup")
        for line in await settle(in_thread(migration.rollback.run)):
            events.log(line)


class Engine:
    """Runs the phases of one migration with its disk strategy; see the module docstring."""

    def __init__(
        self,
        migration: Migration,
        strategy: DiskStrategy,
        before_copy: tuple[BeforeCopy, ...] = (),
        converter: GuestConverter | None = None,
    ) -> None:
        self.migration = migration
        self.strategy = strategy
        self.before_copy = before_copy
        self.converter = converter
        self.succeeded = False

    def close(self) -> list[str]:
        """Remove the work area, whatever happened (blocking); returns log lines for leftovers.

        Last, the run's residue records go: its outputs are the result now, or the
        rollback (which runs before this) has removed them.
        """
        lines = self.migration.close()
        # A successful run's records stay until its job is stored as completed (the store
        # clears them in that same write); a failed run's rollback has run by now.
        return lines if self.succeeded else lines + self.migration.rollback.forget_all()

    async def _phase(self, name: str) -> None:
        self.migration.events.phase(name)
        await hold(name)

    async def run(self) -> MigrationResult:
        migration, strategy, events = self.migration, self.strategy, self.migration.events
        await self._phase("inspect")
        inspected = await strategy.inspect()

        await self._phase("prepare")
        await strategy.prepare(inspected)
        conversion = unconverted()
        if migration.options.guest_conversion and self.converter is not None:
            await self._phase("convert")
            conversion = await self.converter(
                strategy.overlays(), inspected.vm, inspected.replan, migration.options, events
            )
            # The converted guest drives other devices (virtio): the same disks, other buses and names.
            inspected = inspected.with_caps(conversion.caps)
        await strategy.create(inspected, self.before_copy, conversion.guest is not None)

        await self._phase("copy")
        events.disks(strategy.disks())
        await strategy.copy()
        if migration.remote is not None:
            # vSphere does not stop anyone starting or reconfiguring the VM while it is read.
            await migration.remote.check_unchanged()

        notes = inspected.notes + conversion.notes
        if migration.options.verify:
            await self._phase("verify")
            for comparison in strategy.comparisons():
                notes += (await self._verify(comparison),)
        await strategy.after_copy(self.before_copy)

        await self._phase("define")
        plan = inspected.plan
        if migration.host is not None:
            await in_thread(pool_still_there, migration.host, migration.pool)
            name, more = await in_thread(self._define, migration.host, inspected)
            outputs = strategy.outputs(plan)
            events.log(f"defined domain {name} ({plan.uuid}){more}")
        else:
            assert migration.options.output_dir is not None
            name = None
            xml_path = xml_path_for(migration.options.output_dir, plan)
            await in_thread(self._write_xml, xml_path, inspected.domain_xml)
            outputs = (*strategy.outputs(plan), xml_path)
            events.log(f"wrote {xml_path}")
        report = strategy.report(inspected.vm, plan, conversion, notes)
        self.succeeded = True
        return MigrationResult(name, plan.uuid, outputs, inspected.domain_xml, notes, report)

    async def _verify(self, c: Comparison) -> Note:
        """Compare a written image with what it was copied from; a difference fails the job."""
        events = self.migration.events
        events.log(f"verifying {c.key}: comparing {c.target} with {c.label}")
        note = await verify_disk(c.expected, c.target, c.format, size=c.size, key=c.key, label=c.label)
        if c.layer is not None:
            note = Note(f"{note.message} ({c.layer})", note.key)
        events.log(f"{c.key}: {note.message}")
        return note

    def _define(self, host: LibvirtHost, inspected: InspectResult) -> tuple[str, str]:
        """Define the domain and what goes with it (blocking); returns its name and words for the log."""
        plan: DomainPlan = inspected.plan
        rollback = self.migration.rollback
        # Again: the copy took time, and defining over an existing name with our UUID would
        # silently replace that domain's configuration.
        if host.domain_exists(plan.name):
            raise domain_exists(plan.name)
        residue = Residue("domain", name=plan.name, uri=host.uri, uuid=plan.uuid)
        with rollback.creating(residue) as rid:
            name = host.define_domain(inspected.domain_xml)
        rollback.domain(host, name, uuid=plan.uuid, rid=rid)
        return name, self.strategy.define_more(name, plan)

    def _write_xml(self, path: str, xml: str) -> None:
        rollback = self.migration.rollback
        with rollback.creating(Residue("file", path=path)) as rid:
            fd = create_exclusive(path)
        rollback.file(path, rid=rid)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(xml)
        except OSError as err:
            raise output_error(path, err) from err


def check_vsphere_options(vsphere: VsphereSource | None, options: MigrateOptions) -> None:
    if vsphere is None and options.shutdown_source:
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            "shutdown-source powers off a VM on ESXi/vCenter; a local source is not running here",
            key="shutdown-source",
        )


def preflight(source: str, options: MigrateOptions, vsphere: VsphereSource | None = None) -> InspectResult:
    """The checks of a migration that need no copy: run before a job is created.

    Blocking (call it in a thread).  Raises the ``Vm2kvmError`` the job would
    fail with (unreadable source or disks, name or volume taken, pool or
    network missing), so a caller gets it as the answer to ``Migrate`` instead
    of a job that fails a moment later.  The job repeats the checks: the host
    may change in between.
    """
    options.validate()
    check_vsphere_options(vsphere, options)
    if options.snapshots == "keep":
        if vsphere is not None:
            return preflight_keep_vsphere(vsphere, options)
        return preflight_keep(source, options)
    if vsphere is not None:
        return preflight_flatten(source, options, vsphere)
    return preflight_flatten(source, options)
