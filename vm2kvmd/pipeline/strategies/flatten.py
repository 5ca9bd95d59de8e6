"""``--snapshots flatten``: each disk's current state as one volume (or file), through an overlay.

* the source: read, planned (``pipeline.planning``); a compressed OVA is
  extracted into the work area, an OVF package's manifest checked;
* ``targets``: where the disks go (a pool of any supported type, or an
  output directory): what must not exist, the space a disk takes, how its
  volume is created and written;
* ``overlay``: a qcow2 overlay over every source disk; the guest
  conversion and the ``before_copy`` hooks write into the overlays, so the
  sources stay untouched;
* ``copy``: the overlays to the targets, in parallel, progress in bytes;
* ``--verify``: every target against its overlay.

The space is checked twice: before the guest conversion (hours may go
into it) and again after it and the hooks, when their writes are known.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.adapters.remote_disk import COPY_REQUESTS as REMOTE_COPY_REQUESTS
from vm2kvmd.aio import in_thread
from vm2kvmd.core.guest.info import Conversion
from vm2kvmd.core.hardware.model import DiskChain, Note, SourceVM
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.plan import DomainPlan, PlannedDisk
from vm2kvmd.core.report import build_report
from vm2kvmd.core.residue import Residue
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.errors import Vm2kvmError
from vm2kvmd.pipeline.blockdev import OpenedSource, open_source
from vm2kvmd.pipeline.copy import DiskCopy, copy_disks, file_sizes
from vm2kvmd.pipeline.events import DiskProgress
from vm2kvmd.pipeline.overlay import BeforeCopy, Overlay, check_conversion_space, create_overlays
from vm2kvmd.pipeline.planning import InspectResult, inspect_with_host
from vm2kvmd.pipeline.strategies.base import Comparison, Migration, open_vsphere, refuse_broken_disks
from vm2kvmd.pipeline.targets import (
    DirTarget,
    DiskSizes,
    PoolTarget,
    Target,
    check_output_targets,
    check_pool_targets,
    xml_path_for,
)
from vm2kvmd.pipeline.vsphere import inspect_vsphere
from vm2kvmd.sources import extracted_at_migration, verify_source
from vm2kvmd.sources.ovf.extract import extract_package
from vm2kvmd.sources.ovf.package import load_vm

__all__ = ["FlattenDisks", "preflight_flatten"]


def preflight_flatten(
    source: str, options: MigrateOptions, vsphere: VsphereSource | None = None
) -> InspectResult:
    """``engine.preflight`` for ``--snapshots flatten`` (blocking).  ``vsphere``: the VM is on
    ESXi/vCenter (logs in, refuses a powered-on VM)."""
    if options.guest_conversion:
        check_conversion_space(options.work_dir)

    def inspect(host: LibvirtHost | None) -> InspectResult:
        if vsphere is not None:
            inspected = inspect_vsphere(vsphere, options, host, strict=True)
        else:
            inspected = inspect_with_host(source, options, host, strict=True)
        refuse_broken_disks(inspected)
        return inspected

    if options.output_dir:
        inspected = inspect(None)
        check_output_targets(
            options.output_dir, inspected.plan, xml_path_for(options.output_dir, inspected.plan)
        )
        return inspected
    with LibvirtHost(options.connect) as host:
        inspected = inspect(host)
        pool = options.effective_pool
        assert pool is not None
        check_pool_targets(host, pool, inspected.plan)
        return inspected


class FlattenDisks:
    """The ``DiskStrategy`` of ``--snapshots flatten``; see the module docstring."""

    def __init__(self, migration: Migration) -> None:
        self.migration = migration
        self.target: Target = (
            DirTarget(migration.options)
            if migration.host is None
            else PoolTarget(migration.host, migration.pool, migration.options)
        )
        self.disks_: list[PlannedDisk] = []
        self.overlays_: list[Overlay] = []
        self.sizes: list[DiskSizes] = []
        self.paths: list[str] = []
        self.free = 0
        self.source_files: list[tuple[tuple[str, int], ...]] = []  # per disk, when opened

    # --- inspect ------------------------------------------------------------------

    async def inspect(self) -> InspectResult:
        migration = self.migration
        if migration.vsphere is not None:
            return await self._inspect_vsphere(migration.vsphere)
        inspected = await in_thread(
            inspect_with_host, migration.source, migration.options, migration.host, strict=True
        )
        refuse_broken_disks(inspected, extracting=True)
        if await in_thread(extracted_at_migration, migration.source, inspected.vm):
            # A compressed OVA: extracted into the work area, its manifest checked on the way.
            return await self._extract(inspected)
        # An OVF package's manifest, hashed once per job and before the first byte is converted.
        await verify_source(
            migration.source,
            migration.events.log,
            datastores=dict(migration.options.datastores) or None,
            allow_external=migration.options.allow_external_paths,
        )
        return inspected

    async def _inspect_vsphere(self, source: VsphereSource) -> InspectResult:
        """Log in (the session stays for the run), read the VM and its descriptors, plan."""
        migration = self.migration
        _remote, vm = await open_vsphere(migration, source)
        inspected = await in_thread(
            inspect_with_host, migration.source, migration.options, migration.host, strict=True, loaded=vm
        )
        refuse_broken_disks(inspected, extracting=False)
        return inspected

    async def _extract(self, inspected: InspectResult) -> InspectResult:
        """Decompress a compressed OVA into the work area and read the VM again from there."""
        migration = self.migration
        area = await migration.work_area()
        dest = os.path.join(area.path, "source")
        await in_thread(self._make_extract_dir, dest)
        members = [d.file_name for d in inspected.vm.disks if d.extracted_at_migration]
        package = await extract_package(migration.source, dest, members, migration.events.log)
        vm = await in_thread(load_vm, package)
        inspected = await in_thread(
            inspect_with_host, migration.source, migration.options, migration.host, strict=True, loaded=vm
        )
        refuse_broken_disks(inspected, extracting=False)
        return inspected

    def _make_extract_dir(self, dest: str) -> None:
        rollback = self.migration.rollback
        with rollback.creating(Residue("tree", path=dest)) as rid:
            os.mkdir(dest, 0o700)
        # Removed with the work area in any case; on failure the cleanup says so first.
        rollback.tree(dest, f"extracted source files in {dest}", rid=rid)

    # --- prepare ------------------------------------------------------------------

    async def prepare(self, inspected: InspectResult) -> None:
        plan = inspected.plan
        self.disks_ = list(plan.disks)
        await in_thread(self.target.check, plan)
        self.overlays_ = await self._overlays(self.disks_)
        await self._measure()  # before hours of guest conversion

    def overlays(self) -> list[Overlay]:
        return self.overlays_

    async def create(
        self, inspected: InspectResult, before_copy: Sequence[BeforeCopy], converted: bool
    ) -> None:
        # The converted guest drives other devices (virtio): the same disks, other buses and names.
        self.disks_ = list(inspected.plan.disks)
        for hook in before_copy:
            await hook(self.overlays_)
        if before_copy or converted:
            await self._measure()
        rollback = self.migration.rollback
        await in_thread(self.target.prepare, rollback)
        self.paths = [await in_thread(self.target.create, disk, rollback) for disk in self.disks_]

    async def _overlays(self, disks: list[PlannedDisk]) -> list[Overlay]:
        """The sources as QEMU opens them, and an overlay over each, in the work area."""
        views = await self.migration.source_views()  # descriptor views live in the work area too
        area = await self.migration.work_area()
        sources: list[tuple[str, OpenedSource]] = []
        self.source_files = []
        remote = self.migration.remote
        for index, disk in enumerate(disks):
            key = disk.source.address.key
            if disk.source.remote is not None:
                assert remote is not None
                directory = os.path.join(await in_thread(area.disk_dir, index), "remote")
                sources.append((key, await remote.open(key, directory)))
                # A remote file vanishing is the reader's to report (HostUnreachable, TransferFailed).
                self.source_files.append(())
            else:
                sources.append((key, await open_source(views, _chain(disk))))
                self.source_files.append(await in_thread(file_sizes, _chain(disk).files))
        overlays = await create_overlays(sources, area)
        self.migration.events.log(f"overlays in {area.path}")
        return overlays

    async def _measure(self) -> None:
        """What each copy reads, then the space check (``Target.check_space``)."""
        sizes = []
        for disk, overlay in zip(self.disks_, self.overlays_, strict=True):
            node = overlay.node()
            measured = await qemu_img.measure_sizes(node, disk.format, label=overlay.label)
            data = await qemu_img.data_bytes(node, label=overlay.label)
            sizes.append(DiskSizes(disk.capacity, measured.required, measured.fully_allocated, data))
        self.sizes = sizes
        self.free = await in_thread(self.target.check_space, self.disks_, sizes)

    # --- copy, verify, define -----------------------------------------------------

    def _copies(self) -> list[DiskCopy]:
        target = self.target
        return [
            DiskCopy(
                index=i,
                key=overlay.key,
                source=overlay.node(),
                label=overlay.label,
                target=path,
                format=disk.format,
                total=target.written(disk, size),
                mode=target.copy_mode(disk),
                files=files,
                requests=qemu_img.COPY_REQUESTS if disk.source.remote is None else REMOTE_COPY_REQUESTS,
            )
            for i, (disk, overlay, path, size, files) in enumerate(
                zip(self.disks_, self.overlays_, self.paths, self.sizes, self.source_files, strict=True)
            )
        ]

    def disks(self) -> list[DiskProgress]:
        return [DiskProgress(c.key, c.target, c.total) for c in self._copies()]

    async def copy(self) -> None:
        """Every overlay to its target (``pipeline.copy``)."""
        target, disks, free = self.target, self.disks_, self.free
        needed = sum(target.needed(d, s) for d, s in zip(disks, self.sizes, strict=True))

        async def no_space(copy: DiskCopy) -> Vm2kvmError:
            return await in_thread(target.ran_out, disks[copy.index], copy.total, needed, free)

        await copy_disks(
            self._copies(),
            self.migration.events,
            no_space,
            limit=self.migration.options.disk_parallelism,
            copy_slots=self.migration.copy_slots,
        )

    def comparisons(self) -> list[Comparison]:
        return [
            Comparison(
                disk.source.address.key, overlay.node(), path, disk.format, disk.capacity, overlay.label
            )
            for disk, overlay, path in zip(self.disks_, self.overlays_, self.paths, strict=True)
        ]

    async def after_copy(self, before_copy: Sequence[BeforeCopy]) -> None:
        return None  # the hooks ran on the overlays, before the copy

    def define_more(self, name: str, plan: DomainPlan) -> str:
        return ""

    def outputs(self, plan: DomainPlan) -> tuple[str, ...]:
        return tuple(self.paths)

    def report(
        self, vm: SourceVM, plan: DomainPlan, conversion: Conversion, notes: tuple[Note, ...]
    ) -> dict[str, Any]:
        return build_report(vm, plan, conversion, notes)


def _chain(disk: PlannedDisk) -> DiskChain:
    chain = disk.source.chain
    assert chain is not None  # refuse_broken_disks ran
    return chain
