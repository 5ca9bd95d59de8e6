"""``--snapshots keep``: every VMDK layer as a qcow2 volume, every VMware snapshot as libvirt metadata.

The plan is ``core.planning.snapshots``'s: one volume per layer of each
disk's chains, created by libvirt on its parent's volume and filled by
``qemu-img convert -B`` (``adapters.qemu_img_layers``), one layer at a
time; the domain goes on the current state's volumes, then one redefined
disk-only snapshot per VMware snapshot, parents first, the current one
marked current (rolled back, newest first, like everything else).

A VM on ESXi/vCenter is kept the same way: its snapshot tree and each
snapshot's disk states come from the API (``core.vsphere.snapshots``), its
layers are read from the datastore through the run's readers
(``pipeline.vsphere``), one reader per data file however many layers share it.

Refused before the first byte is written: a file source that is not a .vmx, a
broken chain or snapshot tree, any layer's volume already present, a pool
without room for every layer.  The guest is not converted (``MigrateOptions``
refuses it); the ``before_copy`` hooks change the current state only: they
run after the copy on ``Overlay`` objects whose files are the current
state's volumes (the top of each chain, backed by the lower layers), so
what they write lands in the top layer and no snapshot's state changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vm2kvmd.adapters import libvirt_snapshots, qemu_img_layers
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.aio import in_thread
from vm2kvmd.core.domainxml.snapshots import render_snapshot_xml
from vm2kvmd.core.guest.info import Conversion
from vm2kvmd.core.hardware.model import DiskChain, Note, SourceVM
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.plan import DomainPlan, PlannedDisk
from vm2kvmd.core.planning.snapshots import ChainLoader, KeepPlan, LayerVolume, plan_keep
from vm2kvmd.core.residue import Residue
from vm2kvmd.core.vmware.vmsd import SnapshotTree, vmsd_path_for
from vm2kvmd.core.vsphere.disk_chain import RemoteChain, RemoteLayer
from vm2kvmd.core.vsphere.snapshots import disk_chain, remote_chain_of
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.blockdev import QemuSource, open_source
from vm2kvmd.pipeline.copy import FOLLOW_INTERVAL, host_slot
from vm2kvmd.pipeline.events import DiskProgress
from vm2kvmd.pipeline.overlay import BeforeCopy, Overlay
from vm2kvmd.pipeline.planning import InspectResult, inspect_with_host
from vm2kvmd.pipeline.strategies.base import Comparison, Migration, open_vsphere, refuse_broken_disks
from vm2kvmd.pipeline.targets import PoolTarget, check_pool_targets, check_volume_free
from vm2kvmd.pipeline.vsphere import RemoteSources, keep_notes, login
from vm2kvmd.sources.vmware.paths import local_resolver
from vm2kvmd.sources.vmware.vmdk import load_chain
from vm2kvmd.sources.vmware.vmsd import load_snapshot_tree
from vm2kvmd.sources.vsphere.datastore import load_for_migration, load_snapshots

__all__ = [
    "KeepSnapshots",
    "plan_keep_migration",
    "plan_remote_keep",
    "preflight_keep",
    "preflight_keep_vsphere",
]


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
    refuse_broken_disks(inspected, extracting=False)
    vm = inspected.vm
    tree = load_snapshot_tree(vm.source_path)
    return _plan(inspected, inspected.plan, tree, _chain_loader(vm.source_path, options), options, host)


def _plan(
    inspected: InspectResult,
    plan: DomainPlan,
    tree: SnapshotTree | None,
    load: ChainLoader,
    options: MigrateOptions,
    host: LibvirtHost,
    notes: tuple[Note, ...] | None = None,
) -> KeepInspection:
    keep = plan_keep(inspected.vm, plan, tree, load)
    pool = options.effective_pool
    assert pool is not None, "MigrateOptions.validate refuses keep with output-dir"
    check_pool_targets(host, pool, inspected.plan)
    for volume in keep.volumes:
        check_volume_free(host, pool, volume.volume_name, volume.target_path)
    notes = (inspected.notes if notes is None else notes) + keep.notes
    return KeepInspection(InspectResult(inspected.vm, inspected.plan, inspected.domain_xml, notes), keep)


def plan_remote_keep(
    inspected: InspectResult,
    tree: SnapshotTree,
    chains: Mapping[str, RemoteChain],
    states: Mapping[str, RemoteChain],
    options: MigrateOptions,
    host: LibvirtHost,
) -> tuple[KeepInspection, dict[str, RemoteLayer]]:
    """``plan_keep_migration`` for a VM on ESXi/vCenter (blocking): its disks' ``chains`` (by disk
    key) and the snapshots' disk ``states`` (by head) as read from the datastore; also returns
    every remote layer by descriptor, which the copy opens."""
    refuse_broken_disks(inspected, extracting=False)
    layers = {layer.descriptor: layer for c in (*chains.values(), *states.values()) for layer in c.layers}
    plan = replace(
        inspected.plan,
        disks=tuple(
            replace(d, source=replace(d.source, chain=disk_chain(chains[d.source.address.key])))
            for d in inspected.plan.disks
        ),
    )

    def load(file_name: str, key: str) -> DiskChain:
        chain = states.get(file_name)
        if chain is None:  # read_snapshots and snapshot_tree name the same backings
            raise Vm2kvmError(ErrorCode.INTERNAL, f"no chain read for {file_name}", key=key)
        return disk_chain(chain)

    return _plan(inspected, plan, tree, load, options, host, keep_notes(inspected.notes, tree)), layers


def preflight_keep_vsphere(source: VsphereSource, options: MigrateOptions) -> InspectResult:
    """``engine.preflight`` for ``--snapshots keep`` of a VM on ESXi/vCenter (blocking)."""
    with LibvirtHost(options.connect) as host, login(source) as session:
        vm, chains = load_for_migration(
            session, source.vm, source.label, refuse_running=not options.shutdown_source
        )
        tree, states = load_snapshots(session, source.vm, vm, chains)
        inspected = inspect_with_host(source.label, options, host, strict=True, loaded=vm)
        return plan_remote_keep(inspected, tree, chains, states, options, host)[0].inspected


def preflight_keep(source: str, options: MigrateOptions) -> InspectResult:
    """``engine.preflight`` for ``--snapshots keep`` (blocking)."""
    with LibvirtHost(options.connect) as host:
        return plan_keep_migration(source, options, host).inspected


def _chain_loader(vmx_path: str, options: MigrateOptions) -> ChainLoader:
    """Reads the chain a snapshot names, through the same resolver rules as the VMX's disks."""
    vmsd = vmsd_path_for(vmx_path)
    directory = os.path.dirname(vmx_path)
    resolver = local_resolver(
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


# --- the strategy -------------------------------------------------------------------------


class KeepSnapshots:
    """The ``DiskStrategy`` of ``--snapshots keep``; see the module docstring."""

    def __init__(self, migration: Migration) -> None:
        assert migration.host is not None, "MigrateOptions.validate refuses keep with output-dir"
        self.migration = migration
        self.host = migration.host
        self.pool = migration.pool
        self.keep: KeepPlan | None = None
        self.copies: tuple[LayerVolume, ...] = ()
        self.sources: list[QemuSource] = []
        self.totals: list[int] = []
        self.plan_disks: Sequence[PlannedDisk] = ()
        self.remote_layers: dict[str, RemoteLayer] = {}  # a VM on ESXi/vCenter: its layers by descriptor

    async def inspect(self) -> InspectResult:
        migration = self.migration
        if migration.vsphere is not None:
            remote, vm = await open_vsphere(migration, migration.vsphere)
            tree, states = await remote.load_snapshots(vm)
            inspected = await in_thread(
                inspect_with_host, migration.source, migration.options, self.host, strict=True, loaded=vm
            )
            planned, self.remote_layers = await in_thread(
                plan_remote_keep, inspected, tree, remote.chains, states, migration.options, self.host
            )
        else:
            planned = await in_thread(plan_keep_migration, migration.source, migration.options, self.host)
        self.keep, self.copies = planned.keep, planned.copies
        self.plan_disks = planned.inspected.plan.disks  # no conversion: the plan stays
        return planned.inspected

    async def prepare(self, inspected: InspectResult) -> None:
        if self.migration.remote is not None:
            self.sources = [await self._open_remote(self.migration.remote, v) for v in self.copies]
        else:
            views = await self.migration.source_views()
            self.sources = [await open_source(views, _source_chain(v)) for v in self.copies]
        self.totals = [await qemu_img_layers.measure_layer(s.layers[0]) for s in self.sources]
        target = PoolTarget(self.host, self.pool, self.migration.options)
        await in_thread(
            target.check_room,
            "the disks' layers",
            sum(self.totals),
            value=self.pool,
            hint="free space, choose another pool, or --snapshots flatten (the current state only)",
        )

    async def _open_remote(self, remote: RemoteSources, volume: LayerVolume) -> QemuSource:
        """A layer with its parents read from the datastore (readers shared between layers)."""
        chain = _source_chain(volume)
        area = await self.migration.work_area()
        directory = os.path.join(area.path, "remote")
        remote_chain = remote_chain_of(chain, self.remote_layers)
        nodes = await remote.layer_nodes(remote_chain, directory, views=True)
        top = remote_chain.top
        await remote.check_layer_size(nodes[0], top, volume.disk.source.address.key)
        return QemuSource(chain, tuple(nodes))

    def overlays(self) -> list[Overlay]:
        raise AssertionError("MigrateOptions.validate refuses keep with a guest conversion")

    async def create(
        self, inspected: InspectResult, before_copy: Sequence[BeforeCopy], converted: bool
    ) -> None:
        assert self.keep is not None
        for volume in self.keep.volumes:
            await in_thread(self._create, volume)

    def _create(self, volume: LayerVolume) -> None:
        residue = Residue(
            "volume", path=volume.target_path, pool=self.pool, name=volume.volume_name, uri=self.host.uri
        )
        rollback = self.migration.rollback
        with rollback.creating(residue) as rid:
            path = libvirt_snapshots.create_layer_volume(
                self.host, self.pool, volume.volume_name, volume.capacity, volume.backing
            )
        rollback.volume(self.host, self.pool, volume.volume_name, path, rid=rid)
        if os.path.realpath(path) != os.path.realpath(volume.target_path):
            # Backing files and the snapshot XML name target_path; libvirt's path must be that file.
            raise Vm2kvmError(
                ErrorCode.INTERNAL,
                f"libvirt created volume {volume.volume_name!r} at {path}, not at {volume.target_path}",
            )

    def disks(self) -> list[DiskProgress]:
        return [
            DiskProgress(v.disk.source.address.key, v.target_path, t)
            for v, t in zip(self.copies, self.totals, strict=True)
        ]

    async def copy(self) -> None:
        for index, (volume, src, total) in enumerate(
            zip(self.copies, self.sources, self.totals, strict=True)
        ):
            await self._copy(index, volume, src, total)

    async def _copy(self, index: int, volume: LayerVolume, src: QemuSource, total: int) -> None:
        events = self.migration.events
        events.log(f"copying {volume.disk.source.address.key} layer {src.label} to {volume.target_path}")
        events.disk_progress(index, 0, total)
        async with host_slot(self.migration.copy_slots):
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
        events.disk_progress(index, total, total)

    async def _follow(self, index: int, meter: _Allocation, total: int) -> None:
        last = -1
        while True:
            done = min(total, await asyncio.to_thread(meter.done))
            if done > last:
                self.migration.events.disk_progress(index, done, total)
                last = done
            await asyncio.sleep(FOLLOW_INTERVAL)

    def comparisons(self) -> list[Comparison]:
        return [
            Comparison(
                volume.disk.source.address.key,
                src.node,
                volume.target_path,
                "qcow2",
                volume.capacity,
                src.label,
                layer=os.path.basename(src.label),
            )
            for volume, src in zip(self.copies, self.sources, strict=True)
        ]

    async def after_copy(self, before_copy: Sequence[BeforeCopy]) -> None:
        if before_copy:
            overlays = self._current_states()
            for hook in before_copy:
                await hook(overlays)

    def _current_states(self) -> list[Overlay]:
        """Each disk's current-state volume as an ``Overlay`` for the ``before_copy`` hooks."""
        return [self._current_state(index, disk) for index, disk in enumerate(self.plan_disks)]

    def _current_state(self, index: int, disk: PlannedDisk) -> Overlay:
        volume, src = next(
            (v, s)
            for v, s in zip(self.copies, self.sources, strict=True)
            if v.target_path == disk.target_path
        )
        return Overlay(index, disk.source.address.key, volume.target_path, src.node, src.label)

    def define_more(self, name: str, plan: DomainPlan) -> str:
        assert self.keep is not None
        # What libvirt completed (machine type, addresses) is what each snapshot records.
        defined = libvirt_snapshots.domain_xml(self.host, name)
        for point in self.keep.snapshots:
            xml = render_snapshot_xml(point, defined, plan.disks)
            created = libvirt_snapshots.redefine_snapshot(self.host, name, xml, current=point.current)
            self.migration.rollback.add(
                f"snapshot {created!r} of domain {name}", _forget(self.host, name, created)
            )
        return f" with {len(self.keep.snapshots)} snapshots"

    def outputs(self, plan: DomainPlan) -> tuple[str, ...]:
        assert self.keep is not None
        tops = tuple(d.target_path for d in plan.disks)
        return tops + tuple(v.target_path for v in self.keep.volumes if v.target_path not in tops)

    def report(
        self, vm: SourceVM, plan: DomainPlan, conversion: Conversion, notes: tuple[Note, ...]
    ) -> dict[str, Any]:
        return {}  # no report for kept snapshots yet (``core.report`` compares one disk state)


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
