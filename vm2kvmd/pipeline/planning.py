"""Inspection: read the source, plan the domain, render its XML; nothing is written.

``inspect_source`` is what ``Inspect`` on the bus and ``vm2kvmctl inspect``
show, and the first step of every migration.  It works with missing disks
(they are planned with size 0 and reported) and without a reachable libvirt
(UUID and pool checks become notes), so a user can always see what was found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.core.domainxml import render_domain_xml
from vm2kvmd.core.hardware.model import (
    EXTRACTED_AT_MIGRATION,
    CharPort,
    Note,
    RemovableDrive,
    SourceDisk,
    SourceVM,
)
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import DomainPlan, PlannedCharPort, PlannedDisk, PlannedRemovable, PlanOptions
from vm2kvmd.core.planning.snapshots import snapshot_notes
from vm2kvmd.errors import Vm2kvmError
from vm2kvmd.pipeline.targets import pool_layout
from vm2kvmd.sources import load_source
from vm2kvmd.sources.vmware.vmsd import load_snapshot_tree

# Where disk paths point in an inspection whose pool cannot be looked up.
PLACEHOLDER_DIR = "/var/lib/libvirt/images"


@dataclass(frozen=True)
class InspectResult:
    vm: SourceVM
    plan: DomainPlan
    domain_xml: str
    notes: tuple[Note, ...]  # the plan's notes (source + mapping) and the host checks'
    plan_options: PlanOptions | None = None  # what the plan was made with (``with_caps`` reuses it)
    host_notes: tuple[Note, ...] = ()  # the notes not from the plan (kept by ``with_caps``)

    def replan(self, caps: GuestCaps) -> DomainPlan:
        """The plan for the same VM and host with other guest caps (pure)."""
        assert self.plan_options is not None
        return plan_domain(self.vm, self.plan_options, caps)

    def with_caps(self, caps: GuestCaps) -> InspectResult:
        """This result re-planned for what the converted guest can drive (pure)."""
        plan = self.replan(caps)
        xml = render_domain_xml(plan)
        return replace(self, plan=plan, domain_xml=xml, notes=plan.notes + self.host_notes)

    def to_json(self) -> dict[str, Any]:
        """Everything found and decided, as JSON-ready data (the bus returns it as a string)."""
        vm, plan = self.vm, self.plan
        disks = {d.source.address.key: d for d in plan.disks}
        cdroms = {d.source.address.key: d for d in plan.cdroms}
        floppies = {d.source.address.key: d for d in plan.floppies}
        serials = {p.source.index: p for p in plan.serials}
        parallels = {p.source.index: p for p in plan.parallels}
        nics = {n.source.index: n for n in plan.nics}
        return {
            "source": vm.source_path,
            "name": plan.name,
            "display_name": vm.display_name,
            "uuid": plan.uuid,
            "source_uuid": vm.uuid_bios,
            "vc_uuid": vm.vc_uuid,
            "genid": vm.genid,
            "annotation": vm.annotation,
            "guest_os": vm.guest_os,
            "osinfo": plan.os_id,
            "hw_version": vm.hw_version,
            "firmware": vm.firmware.value,
            "secure_boot": plan.secure_boot,
            "domain_type": plan.domain_type,
            "machine": plan.machine,
            "cpu": {
                "vcpus": vm.cpu.vcpus,
                "cores_per_socket": vm.cpu.cores_per_socket,
                "sockets": plan.sockets,
                "cores": plan.cores,
                "threads": plan.threads,
            },
            "memory": {
                "size_mib": vm.memory.size_mib,
                "reservation_mib": vm.memory.reservation_mib,
                "limit_mib": vm.memory.limit_mib,
                "pinned": vm.memory.pinned,
                "shares": vm.memory.shares,
            },
            "controllers": [
                {"key": f"{c.bus.value}{c.index}", "bus": c.bus.value, "model": c.model}
                for c in vm.controllers
            ],
            "disks": [_disk_json(d, disks.get(d.address.key)) for d in vm.disks],
            "cdroms": [_removable_json(d, cdroms.get(d.address.key)) for d in vm.cdroms],
            "floppies": [_removable_json(d, floppies.get(d.address.key)) for d in vm.floppies],
            "nics": [
                {
                    "key": f"ethernet{n.index}",
                    "mac": n.mac,
                    "model": n.model,
                    "address_type": n.address_type,
                    "connection_type": n.connection_type,
                    "network": n.source_network,
                    "connected": n.start_connected,
                    "target": (
                        {
                            "kind": p.kind,
                            "name": p.target,
                            "model": p.model,
                            "mac": p.mac,
                            "link_up": p.link_up,
                        }
                        if (p := nics.get(n.index))
                        else None
                    ),
                }
                for n in vm.nics
            ],
            "serials": [_port_json(s, "serial", serials.get(s.index)) for s in vm.serials],
            "parallels": [_port_json(s, "parallel", parallels.get(s.index)) for s in vm.parallels],
            "video": (
                {
                    "vram_kib": vm.video.vram_kib,
                    "displays": vm.video.num_displays,
                    "accel_3d": vm.video.accel_3d,
                    "target_model": plan.video_model,
                }
                if vm.video
                else None
            ),
            "sound": ({"model": vm.sound.model, "target_model": plan.sound_model} if vm.sound else None),
            "usb": {
                "uhci": vm.usb.uhci,
                "ehci": vm.usb.ehci,
                "xhci": vm.usb.xhci,
                "target_model": plan.usb_model,
            },
            "graphics": {"kind": plan.graphics, "vnc_port": plan.vnc_port},
            "notes": [str(n) for n in self.notes],
            "domain_xml": self.domain_xml,
        }


def _disk_json(disk: SourceDisk, planned: PlannedDisk | None) -> dict[str, Any]:
    chain = disk.chain
    return {
        "key": disk.address.key,
        "file": disk.file_name,
        "path": disk.path,
        "mode": disk.mode,
        "missing": disk.missing,
        "problem": disk.problem,
        "problem_code": disk.problem_code.value if disk.problem_code else None,
        "virtual_size": None if disk.missing else disk.capacity,
        "compressed": EXTRACTED_AT_MIGRATION if disk.extracted_at_migration else None,
        # On a vSphere datastore: the files of its snapshot chain, newest first.
        "remote": (
            {"datastore": disk.remote.datastore, "layers": list(disk.remote.layers), "thin": disk.remote.thin}
            if disk.remote
            else None
        ),
        "create_type": chain.top.create_type if chain else None,
        "chain": [layer.path for layer in chain.layers] if chain else [],
        "files": list(chain.files) if chain else [],
        "target": (
            {
                "dev": planned.target_dev,
                "bus": planned.bus,
                "path": planned.target_path,
                "volume": planned.volume_name,
                "format": planned.format,
                "capacity": planned.capacity,
                "boot_order": planned.boot_order,
            }
            if planned
            else None
        ),
    }


def _removable_json(drive: RemovableDrive, planned: PlannedRemovable | None) -> dict[str, Any]:
    return {
        "key": drive.address.key,
        "kind": drive.kind.value,
        "file": drive.file_name,
        "path": drive.path,
        "missing": drive.missing,
        "connected": drive.start_connected,
        "target": (
            {"dev": planned.target_dev, "bus": planned.bus, "path": planned.path} if planned else None
        ),
    }


def _port_json(port: CharPort, device: str, planned: PlannedCharPort | None) -> dict[str, Any]:
    return {
        "key": f"{device}{port.index}",
        "kind": port.kind.value,
        "target": port.target,
        "connected": port.start_connected,
        "mapped": (
            {
                "type": planned.kind,
                "path": planned.path,
                "host": planned.host,
                "port": planned.port,
                "mode": planned.mode,
            }
            if planned
            else None
        ),
    }


# --- inspection -------------------------------------------------------------------


def inspect_source(source: str, options: MigrateOptions, host: LibvirtHost | None) -> InspectResult:
    """Read ``source`` and plan its domain (blocking).  Host problems become notes."""
    return inspect_with_host(source, options, host, strict=False)


def inspect_with_host(
    source: str,
    options: MigrateOptions,
    host: LibvirtHost | None,
    *,
    strict: bool,
    loaded: SourceVM | None = None,
) -> InspectResult:
    """``inspect_source``; with ``strict`` (migration) a missing pool or libvirt error raises.

    With ``output_dir`` the host is not asked anything: the XML is written
    for the user to define, maybe elsewhere, and the disks go to a directory.
    ``loaded``: the VM already read (a compressed package extracted by the job).
    """
    vm = loaded or load_source(
        source,
        datastores=dict(options.datastores) or None,
        allow_external=options.allow_external_paths,
    )
    # The .vmsd next to the VMX: how many snapshots are flattened or kept.
    # A vSphere VM has no .vmsd to read: its snapshots are the API's (core.vsphere notes them).
    on_vsphere = any(d.remote is not None for d in vm.disks)
    notes: list[Note] = (
        []
        if on_vsphere
        else list(snapshot_notes(vm, options.snapshots, strict=strict, read_tree=load_snapshot_tree))
    )
    if host is not None and not options.output_dir and not strict:
        try:
            host.connection()
        except Vm2kvmError as err:
            notes.append(Note(f"{err}; pool, name and UUID checks skipped"))
            host = None
    disk_format, block = options.format, False
    if options.output_dir or host is None:
        host = None
        target_dir = options.output_dir or PLACEHOLDER_DIR
        if not options.output_dir:
            notes.append(Note(f"disk paths use {PLACEHOLDER_DIR} as a placeholder (no libvirt host)"))
    else:
        target_dir, disk_format, block = _pool_dir(host, options, notes, strict=strict)

    plan_options = PlanOptions(
        target_dir=target_dir,
        disk_format=disk_format,
        block_volumes=block,
        name=options.name,
        domain_type=options.domain_type,
        networks=options.networks,
        bridges=options.bridges,
        other_networks=options.other_networks,
        default_network=options.default_network,
        # The domain's description says when the migration started (a preview: when it was asked).
        started=datetime.now(UTC),
    )
    caps = GuestCaps.unconverted()
    plan = plan_domain(vm, plan_options, caps)
    if host is not None and vm.uuid_bios and _ask(host.uuid_in_use, plan.uuid, notes, strict=strict):
        plan_options = replace(plan_options, uuid_taken=True)
        plan = plan_domain(vm, plan_options, caps)
    if host is not None and not strict:
        _host_notes(host, plan, notes)
    # A re-plan (``with_caps``) must keep a UUID that was made up here.
    plan_options = replace(plan_options, new_uuid=plan.uuid)
    return InspectResult(
        vm, plan, render_domain_xml(plan), plan.notes + tuple(notes), plan_options, tuple(notes)
    )


def _ask(check: Callable[[str], bool], arg: str, notes: list[Note], *, strict: bool) -> bool:
    """``check(arg)``; a libvirt failure raises when strict, else becomes a note and False."""
    try:
        return bool(check(arg))
    except Vm2kvmError as err:
        if strict:
            raise
        notes.append(Note(f"could not ask libvirt: {err}"))
        return False


def _pool_dir(
    host: LibvirtHost, options: MigrateOptions, notes: list[Note], *, strict: bool
) -> tuple[str, str, bool]:
    """The pool's directory, the disk format and whether its volumes are block devices."""
    pool_name = options.effective_pool
    assert pool_name is not None  # no output_dir
    try:
        pool = host.pool(pool_name)
        disk_format, block, note = pool_layout(pool, options)
    except Vm2kvmError as err:
        if strict:
            raise
        notes.append(Note(f"{err}; disk paths use {PLACEHOLDER_DIR} as a placeholder", "pool"))
        return PLACEHOLDER_DIR, options.format, False
    if note:
        notes.append(Note(note, "pool"))
    return pool.path, disk_format, block


def _host_notes(host: LibvirtHost, plan: DomainPlan, notes: list[Note]) -> None:
    """What ``Migrate`` would refuse, said in advance."""
    if _ask(host.domain_exists, plan.name, notes, strict=False):
        notes.append(Note(f"a domain named {plan.name!r} already exists; migrating needs --name"))
    for nic in plan.nics:
        if nic.kind == "network" and not _ask(host.network_exists, nic.target, notes, strict=False):
            notes.append(
                Note(f"libvirt network {nic.target!r} does not exist", f"ethernet{nic.source.index}")
            )
