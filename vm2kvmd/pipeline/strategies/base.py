"""What the engine and its disk strategies share: one run's context and the strategy protocol.

``pipeline.engine`` runs the phases (inspect, prepare, [convert], copy,
[verify], define) and everything around them (rollback, residue records,
``testhold``, the work area's removal); a ``DiskStrategy`` says what the
disks become: which volumes are planned and created, how each is copied and
compared, and what is defined after the domain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.adapters.remote_disk import HostLimiter
from vm2kvmd.aio import in_thread
from vm2kvmd.core.guest.info import Conversion
from vm2kvmd.core.hardware.model import Note, SourceVM
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.blockdev import Node
from vm2kvmd.core.planning.plan import DomainPlan
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.blockdev import SourceViews
from vm2kvmd.pipeline.events import DiskProgress, JobEvents
from vm2kvmd.pipeline.overlay import BeforeCopy, Overlay, WorkArea
from vm2kvmd.pipeline.planning import InspectResult
from vm2kvmd.pipeline.rollback import Rollback
from vm2kvmd.pipeline.vsphere import RemoteSources, no_verify_warning


@dataclass
class Migration:
    """One migration's context: what it was asked, where it reports, what it must undo.

    The engine creates it and, at the end, ``close``s it; strategies get the
    work area (and the descriptor views in it) from here, so there is one of each.
    """

    source: str
    options: MigrateOptions
    events: JobEvents
    host: LibvirtHost | None  # None with output_dir
    rollback: Rollback
    copy_slots: asyncio.Semaphore | None = None
    readers: HostLimiter | None = None  # connections per vSphere host, shared by every job
    area: WorkArea | None = None
    views: SourceViews | None = None
    vsphere: VsphereSource | None = None  # the source is a VM on ESXi/vCenter (``source`` its label)
    remote: RemoteSources | None = None  # its session and disk readers, once logged in

    @property
    def pool(self) -> str:
        pool = self.options.effective_pool
        assert pool is not None
        return pool

    async def work_area(self) -> WorkArea:
        """The job's work area, created (and recorded) on first use."""
        if self.area is None:
            self.area = await in_thread(WorkArea.create, self.options.work_dir, self.rollback.recorder)
        return self.area

    async def source_views(self) -> SourceViews:
        """Where the sources' descriptor views go: inside the work area."""
        area = await self.work_area()
        if self.views is None:
            self.views = SourceViews(area.path)
        return self.views

    def close(self) -> list[str]:
        """Remove the views and the work area (blocking); returns log lines for leftovers."""
        if self.views is not None:
            self.views.close()
        return self.area.remove() if self.area is not None else []


@dataclass(frozen=True)
class Comparison:
    """One written image and what it must read as, for ``--verify``."""

    key: str  # the source device, "scsi0:0"
    expected: Node  # what the image must equal (read-only)
    target: str  # the image written
    format: str
    size: int  # the virtual size it must have
    label: str  # the source file, for messages
    layer: str | None = None  # with several images per disk: which layer, added to the note


class DiskStrategy(Protocol):
    """What the disks become; the engine calls these once each, in this order.

    ``overlays`` only with a guest conversion, between ``prepare`` and ``create``.
    Blocking work is done in threads by the strategy itself.
    """

    async def inspect(self) -> InspectResult:
        """Read the source and plan it, refusing what cannot be migrated (phase inspect)."""
        ...

    async def prepare(self, inspected: InspectResult) -> None:
        """Check the targets, open the sources, check the space (phase prepare, before convert)."""
        ...

    def overlays(self) -> list[Overlay]:
        """The writable overlays the guest conversion works on."""
        ...

    async def create(
        self, inspected: InspectResult, before_copy: Sequence[BeforeCopy], converted: bool
    ) -> None:
        """Create the volumes (phase prepare, after convert); the hooks may run here."""
        ...

    def disks(self) -> list[DiskProgress]:
        """What the copy will write, announced when the copy starts."""
        ...

    async def copy(self) -> None:
        """Write every volume (phase copy)."""
        ...

    def comparisons(self) -> list[Comparison]:
        """What ``--verify`` compares (phase verify)."""
        ...

    async def after_copy(self, before_copy: Sequence[BeforeCopy]) -> None:
        """Work on the written volumes before the domain is defined (the hooks may run here)."""
        ...

    def define_more(self, name: str, plan: DomainPlan) -> str:
        """What goes with the defined domain (blocking); returns words for the log line."""
        ...

    def outputs(self, plan: DomainPlan) -> tuple[str, ...]:
        """The images written, the domain's own first."""
        ...

    def report(
        self, vm: SourceVM, plan: DomainPlan, conversion: Conversion, notes: tuple[Note, ...]
    ) -> dict[str, Any]:
        """The job's report (``core.report``)."""
        ...


async def open_vsphere(migration: Migration, source: VsphereSource) -> tuple[RemoteSources, SourceVM]:
    """Log in for the run (the session stays until the engine closes it) and read the VM."""
    warning = no_verify_warning(source)
    if warning:
        migration.events.log(warning)
    remote = migration.remote = RemoteSources(source, migration.events.log, migration.readers)
    vm = await remote.load(migration.options)
    migration.events.log(f"read VM {source.vm!r} from {source.uri}")
    return remote, vm


def refuse_broken_disks(inspected: InspectResult, *, extracting: bool = True) -> None:
    """``extracting``: a compressed disk is fine (the job extracts it before it is read)."""
    for disk in inspected.vm.disks:
        if extracting and disk.extracted_at_migration and disk.problem_code is None:
            continue
        if disk.remote is not None and disk.problem_code is None:
            continue  # read over HTTPS by the job (pipeline.vsphere)
        if disk.chain is None or disk.problem_code is not None:
            # ``problem`` already names the file and key it is about; say which disk it is.
            raise Vm2kvmError(
                disk.problem_code or ErrorCode.DISK_MISSING,
                f"disk {disk.address.key}: {disk.problem or f'{disk.file_name!r} cannot be read'}",
            )
