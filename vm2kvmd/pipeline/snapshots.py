"""``--snapshots keep``: every VMDK layer as a qcow2 volume, every VMware snapshot as libvirt metadata.

The same job as ``pipeline.migrate`` (inspect, prepare, copy, [verify],
define), with the plan of ``core.planning.snapshots``: one volume per layer of
each disk's chains, created by libvirt on its parent's volume and filled
by ``qemu-img convert -B`` (``adapters.qemu_img_layers``), the domain on
the current state's volumes, then one redefined disk-only snapshot per
VMware snapshot, parents first, the current one marked current.

All or nothing, as ``migrate``: every refusal we can foresee (name taken,
a volume of any layer present, a broken chain or snapshot tree, not enough
space) comes before the first byte is written, and on failure or
cancellation ``Rollback`` removes the snapshot metadata, the domain and
every volume this run created, newest first.  Sources are only opened
read-only (every QEMU node says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vm2kvmd.adapters import libvirt_snapshots, qemu_img_layers
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.aio import in_thread, settle
from vm2kvmd.core.domainxml.snapshots import render_snapshot_xml
from vm2kvmd.core.hardware.model import DiskChain, Note
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.plan import PlannedDisk
from vm2kvmd.core.planning.snapshots import ChainLoader, KeepPlan, LayerVolume, plan_keep
from vm2kvmd.core.residue import Residue, ResidueRecorder
from vm2kvmd.core.units import size_text
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.core.vmware.vmdk import load_chain
from vm2kvmd.core.vmware.vmsd import load_snapshot_tree, vmsd_path_for
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.blockdev import QemuSource, SourceViews, open_source
from vm2kvmd.pipeline.copy import host_slot
from vm2kvmd.pipeline.events import DiskProgress, JobEvents
from vm2kvmd.pipeline.migrate import MigrationResult
from vm2kvmd.pipeline.overlay import BeforeCopy, Overlay, WorkArea
from vm2kvmd.pipeline.planning import InspectResult, inspect_with_host
from vm2kvmd.pipeline.rollback import Rollback
from vm2kvmd.pipeline.targets import check_pool_targets, domain_exists
from vm2kvmd.pipeline.testhold import hold
from vm2kvmd.pipeline.verify import verify_disk

__all__ = ["plan_keep_migration", "preflight_keep", "run_keep_migration"]

_FOLLOW_INTERVAL = 0.2  # the job batches property changes to 10 a second


@dataclass(frozen=True)
class KeepInspection:
    inspected: InspectResult
    keep: KeepPlan

    @property
    def copies(self) -> tuple[LayerVolume, ...]:
        """The volumes that get data (every VMware layer; not the empty overlays)."""
        return tuple(v for v in self.keep.volumes if v.layer is not None)


# --- checks that need no copy ----------------------------------------------------------


def plan_keep_migration(source: str, options: MigrateOptions, host: LibvirtHost) -> KeepInspection:
    """Inspect ``source``, plan its kept chains and snapshots, check the host (blocking).

    Raises the ``Vm2kvmError`` the job would fail with: unreadable source,
    disk or ``.vmsd``; a chain or snapshot tree that does not hold together;
    name, pool, any layer's volume or a network taken or missing.
    """
    if not source.lower().endswith(".vmx"):
        # Snapshots live in a VMX's .vmsd; an OVF package exports one disk state only.
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            "--snapshots keep needs a .vmx source: OVF and OVA packages carry no snapshots",
            key="snapshots",
            value=options.snapshots,
            hint="leave --snapshots at its default (flatten)",
        )
    inspected = inspect_with_host(source, options, host, strict=True)
    vm = inspected.vm
    for disk in vm.disks:
        if disk.chain is None or disk.problem_code is not None:
            raise Vm2kvmError(
                disk.problem_code or ErrorCode.DISK_MISSING,
                f"disk {disk.address.key}: {disk.problem or f'{disk.file_name!r} cannot be read'}",
            )
    tree = load_snapshot_tree(vm.source_path)
    keep = plan_keep(vm, inspected.plan, tree, _chain_loader(vm.source_path, options))
    pool = options.effective_pool
    assert pool is not None, "MigrateOptions.validate refuses keep with output-dir"
    check_pool_targets(host, pool, inspected.plan)
    for volume in keep.volumes:
        if host.volume_exists(pool, volume.volume_name) or os.path.lexists(volume.target_path):
            raise Vm2kvmError(
                ErrorCode.VOLUME_EXISTS,
                f"volume {volume.volume_name!r} already exists in pool {pool!r}",
                file=volume.target_path,
                hint="choose another domain name with --name, or delete the volume",
            )
    notes = inspected.notes + keep.notes
    return KeepInspection(InspectResult(vm, inspected.plan, inspected.domain_xml, notes), keep)


def preflight_keep(source: str, options: MigrateOptions) -> InspectResult:
    """``migrate.preflight`` for ``--snapshots keep`` (blocking)."""
    options.validate()
    with LibvirtHost(options.connect) as host:
        return plan_keep_migration(source, options, host).inspected


def _chain_loader(vmx_path: str, options: MigrateOptions) -> ChainLoader:
    """Reads the chain a snapshot names, through the same resolver rules as the VMX's disks."""
    vmsd = vmsd_path_for(vmx_path)
    directory = os.path.dirname(vmx_path)
    resolver = PathResolver(
        directory, datastores=dict(options.datastores) or None, allow_external=options.allow_external_paths
    )

    def load(file_name: str, key: str) -> DiskChain:
        path = resolver.resolve(file_name, relative_to=directory, key=key, file=vmsd).path
        if not os.path.lexists(path):
            raise Vm2kvmError(
                ErrorCode.DISK_MISSING,
                f"{key} names {path} as a disk's state at a snapshot, but it does not exist",
                file=vmsd,
                key=key,
                value=file_name,
                hint="copy every file of the VM (each -00000N.vmdk with its extents), delete that "
                "snapshot in VMware, or migrate the current state only with --snapshots flatten",
            )
        return load_chain(path, resolver, key=key)

    return load


# --- the job ------------------------------------------------------------------------------


async def run_keep_migration(
    source: str,
    options: MigrateOptions,
    events: JobEvents,
    *,
    before_copy: Sequence[BeforeCopy] = (),
    recorder: ResidueRecorder | None = None,
    copy_slots: asyncio.Semaphore | None = None,
) -> MigrationResult:
    """Migrate the VM at ``source`` keeping its snapshot chains; see the module docstring.

    ``recorder`` and ``copy_slots`` as for ``migrate.run_migration``: what the run
    creates is written down before it is created; each layer's copy holds a slot.

    ``before_copy`` hooks (``pipeline.overlay``) change the guest's current
    state only: they run after the copy on ``Overlay`` objects whose files
    are the current state's volumes (the top of each chain, a qcow2 in the
    pool backed by the lower layers), so what they write lands in the top
    layer and no snapshot's state changes.
    """
    options.validate()
    host = LibvirtHost(options.connect)
    rollback = Rollback(recorder)
    job = _Keep(source, options, events, host, rollback, tuple(before_copy), copy_slots)
    try:
        return await job.run()
    except BaseException:
        if rollback.pending:
            events.phase("cleanup")
            for line in await settle(asyncio.to_thread(rollback.run)):
                events.log(line)
        raise
    finally:
        for line in await in_thread(job.close):
            events.log(line)
        await in_thread(host.close)


class _Keep:
    def __init__(
        self,
        source: str,
        options: MigrateOptions,
        events: JobEvents,
        host: LibvirtHost,
        rollback: Rollback,
        before_copy: tuple[BeforeCopy, ...],
        copy_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.copy_slots = copy_slots
        self.source = source
        self.options = options
        self.events = events
        self.host = host
        self.rollback = rollback
        self.succeeded = False
        self.area: WorkArea | None = None  # descriptor views, if a layer needs one
        self.before_copy = before_copy
        pool = options.effective_pool
        assert pool is not None
        self.pool = pool

    def close(self) -> list[str]:
        """Remove the work area (blocking); returns log lines for what could not be removed.

        Then the residue records go, as in ``migrate``.
        """
        lines = self.area.remove() if self.area is not None else []
        # A successful run's records stay until its job is stored as completed (the store
        # clears them in that same write); a failed run's rollback has run by now.
        return lines if self.succeeded else lines + self.rollback.forget_all()

    async def run(self) -> MigrationResult:
        self.events.phase("inspect")
        await hold("inspect")
        planned = await in_thread(plan_keep_migration, self.source, self.options, self.host)
        inspected, keep = planned.inspected, planned.keep
        plan = inspected.plan

        self.events.phase("prepare")
        await hold("prepare")
        copies = planned.copies
        self.area = await in_thread(WorkArea.create, self.options.work_dir, self.rollback.recorder)
        views = SourceViews(self.area.path)
        sources = [await open_source(views, _source_chain(v)) for v in copies]
        totals = [await qemu_img_layers.measure_layer(s.layers[0]) for s in sources]
        await in_thread(self._check_space, sum(totals))
        for volume in keep.volumes:
            await in_thread(self._create, volume)

        self.events.phase("copy")
        await hold("copy")
        self.events.disks(
            [
                DiskProgress(v.disk.source.address.key, v.target_path, t)
                for v, t in zip(copies, totals, strict=True)
            ]
        )
        for index, (volume, src, total) in enumerate(zip(copies, sources, totals, strict=True)):
            await self._copy(index, volume, src, total)

        notes = inspected.notes
        if self.options.verify:
            self.events.phase("verify")
            await hold("verify")
            for volume, src in zip(copies, sources, strict=True):
                note = await verify_disk(
                    src.node,
                    volume.target_path,
                    "qcow2",
                    size=volume.capacity,
                    key=volume.disk.source.address.key,
                    label=src.label,
                )
                notes += (Note(f"{note.message} ({os.path.basename(src.label)})", note.key),)
        if self.before_copy:
            overlays = _current_states(plan.disks, copies, sources)
            for hook in self.before_copy:
                await hook(overlays)

        self.events.phase("define")
        await hold("define")
        await in_thread(self.host.refresh_pool, self.pool)
        name = await in_thread(self._define, inspected, keep)
        self.events.log(f"defined domain {name} ({plan.uuid}) with {len(keep.snapshots)} snapshots")
        tops = tuple(d.target_path for d in plan.disks)
        outputs = tops + tuple(v.target_path for v in keep.volumes if v.target_path not in tops)
        self.succeeded = True
        return MigrationResult(name, plan.uuid, outputs, inspected.domain_xml, notes)

    def _check_space(self, needed: int) -> None:
        self.host.refresh_pool(self.pool)
        available = self.host.pool(self.pool).available
        if needed > available:
            raise Vm2kvmError(
                ErrorCode.NO_SPACE,
                f"the disks' layers need {size_text(needed)} ({needed} bytes) but pool {self.pool!r} has "
                f"{size_text(available)} ({available} bytes) free",
                value=self.pool,
                hint="free space, choose another pool, or --snapshots flatten (the current state only)",
            )

    def _create(self, volume: LayerVolume) -> None:
        residue = Residue(
            "volume", path=volume.target_path, pool=self.pool, name=volume.volume_name, uri=self.host.uri
        )
        with self.rollback.creating(residue) as rid:
            path = libvirt_snapshots.create_layer_volume(
                self.host, self.pool, volume.volume_name, volume.capacity, volume.backing
            )
        self.rollback.volume(self.host, self.pool, volume.volume_name, path, rid=rid)
        if os.path.realpath(path) != os.path.realpath(volume.target_path):
            # Backing files and the snapshot XML name target_path; libvirt's path must be that file.
            raise Vm2kvmError(
                ErrorCode.INTERNAL,
                f"libvirt created volume {volume.volume_name!r} at {path}, not at {volume.target_path}",
            )

    async def _copy(self, index: int, volume: LayerVolume, src: QemuSource, total: int) -> None:
        self.events.log(f"copying {volume.disk.source.address.key} layer {src.label} to {volume.target_path}")
        self.events.disk_progress(index, 0, total)
        async with host_slot(self.copy_slots):
            meter = _Allocation(volume.target_path)
            await in_thread(meter.start)
            follower = asyncio.create_task(self._follow(index, meter, total))
            try:
                await qemu_img_layers.convert_layer(
                    src.node, volume.target_path, backing=volume.backing, on_progress=lambda _p: None
                )
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
        self.events.disk_progress(index, total, total)

    async def _follow(self, index: int, meter: _Allocation, total: int) -> None:
        last = -1
        while True:
            done = min(total, await asyncio.to_thread(meter.done))
            if done > last:
                self.events.disk_progress(index, done, total)
                last = done
            await asyncio.sleep(_FOLLOW_INTERVAL)

    def _define(self, inspected: InspectResult, keep: KeepPlan) -> str:
        plan = inspected.plan
        if self.host.domain_exists(plan.name):
            raise domain_exists(plan.name)
        residue = Residue("domain", name=plan.name, uri=self.host.uri, uuid=plan.uuid)
        with self.rollback.creating(residue) as rid:
            name = self.host.define_domain(inspected.domain_xml)
        self.rollback.domain(self.host, name, uuid=plan.uuid, rid=rid)
        # What libvirt completed (machine type, addresses) is what each snapshot records.
        defined = libvirt_snapshots.domain_xml(self.host, name)
        for point in keep.snapshots:
            xml = render_snapshot_xml(point, defined, plan.disks)
            created = libvirt_snapshots.redefine_snapshot(self.host, name, xml, current=point.current)
            self.rollback.add(f"snapshot {created!r} of domain {name}", _forget(self.host, name, created))
        return name


def _current_states(
    disks: Sequence[PlannedDisk], copies: tuple[LayerVolume, ...], sources: list[QemuSource]
) -> list[Overlay]:
    """Each disk's current-state volume as an ``Overlay`` for the ``before_copy`` hooks."""
    overlays = []
    for index, disk in enumerate(disks):
        volume, src = next(
            (v, s) for v, s in zip(copies, sources, strict=True) if v.target_path == disk.target_path
        )
        overlays.append(Overlay(index, disk.source.address.key, volume.target_path, src.node, src.label))
    return overlays


def _forget(host: LibvirtHost, domain: str, snapshot: str) -> Callable[[], None]:
    return lambda: libvirt_snapshots.delete_snapshot_metadata(host, domain, snapshot)


def _source_chain(volume: LayerVolume) -> DiskChain:
    assert volume.source is not None
    return volume.source


class _Allocation:
    """Bytes qemu-img has written into a volume: the growth of its allocation (blocking ``stat``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.base = 0

    def _allocated(self) -> int:
        try:
            st = os.stat(self.path)
        except OSError:
            return 0
        return st.st_blocks * 512 if stat.S_ISREG(st.st_mode) else 0

    def start(self) -> None:
        self.base = self._allocated()

    def done(self) -> int:
        return max(0, self._allocated() - self.base)
