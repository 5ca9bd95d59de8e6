"""One migration: inspect, check, create the volumes, copy the disks, define the domain.

All-or-nothing: every refusal we can foresee (name taken, pool missing,
volumes present, networks missing, not enough space) is raised before the
first byte is written, and on any failure or cancellation afterwards every
volume, file and domain this run created is removed again (``Rollback``);
nothing that existed before is touched.  ``CancelledError`` stays a
``CancelledError``.  Source files are only ever opened read-only (see
``adapters.qemu_img``).

Progress is reported in bytes.  A disk's total is ``qemu-img measure``'s
"required" size of its copy (allocated data plus format metadata, the same
number the space check uses); ``done`` is how much the target file's
allocation has grown, polled five times a second: the bytes really
written.  qemu-img's own percentage walks the whole virtual disk and counts
skipped zero areas as done, so on a mostly empty disk it races ahead and
then stalls.  Targets that are not regular files (block devices) fall back
to that percentage times the total.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.libvirt_host import LibvirtHost, PoolInfo
from vm2kvmd.aio import in_thread, settle
from vm2kvmd.core.model import Note
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.plan import DomainPlan, PlannedDisk
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.inspection import InspectResult, inspect_with_host
from vm2kvmd.pipeline.rollback import Rollback

PHASES = ("inspect", "prepare", "copy", "define", "cleanup")


@dataclass(frozen=True)
class DiskProgress:
    """A disk announced before copying."""

    key: str  # the source device, "scsi0:0"
    target: str  # the volume path / file written
    total: int  # bytes (qemu-img measure's "required")


class JobEvents(Protocol):
    """How a migration reports; called from the event loop, never from a thread."""

    def phase(self, name: str) -> None: ...  # one of PHASES; "cleanup" only when rolling back
    def disks(self, items: Sequence[DiskProgress]) -> None: ...
    def disk_progress(self, index: int, done: int, total: int) -> None: ...
    def log(self, message: str) -> None: ...


@dataclass(frozen=True)
class MigrationResult:
    domain_name: str | None  # None with output_dir: nothing was defined
    domain_uuid: str
    outputs: tuple[str, ...]  # disk images written (and the XML file with output_dir)
    domain_xml: str
    notes: tuple[Note, ...]


async def run_migration(source: str, options: MigrateOptions, events: JobEvents) -> MigrationResult:
    """Migrate the VM at ``source`` (a .vmx) as ``options`` say; see the module docstring."""
    options.validate()
    host = None if options.output_dir else LibvirtHost(options.connect)
    rollback = Rollback()
    try:
        return await _Migration(source, options, events, host, rollback).run()
    except BaseException:
        if rollback.pending:
            events.phase("cleanup")
            for line in await settle(asyncio.to_thread(rollback.run)):
                events.log(line)
        raise
    finally:
        if host is not None:
            await in_thread(host.close)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    raise AssertionError("unreachable")


class _Migration:
    def __init__(
        self,
        source: str,
        options: MigrateOptions,
        events: JobEvents,
        host: LibvirtHost | None,
        rollback: Rollback,
    ) -> None:
        self.source = source
        self.options = options
        self.events = events
        self.host = host
        self.rollback = rollback

    @property
    def pool(self) -> str:
        pool = self.options.effective_pool
        assert pool is not None
        return pool

    async def run(self) -> MigrationResult:
        self.events.phase("inspect")
        inspected = await in_thread(inspect_with_host, self.source, self.options, self.host, strict=True)
        _refuse_broken_disks(inspected)
        plan = inspected.plan

        self.events.phase("prepare")
        totals = [await self._measure(disk) for disk in plan.disks]
        needed = sum(totals)
        if self.host is not None:
            await in_thread(self._check_host, plan, needed)
            targets = [await in_thread(self._create_volume, disk) for disk in plan.disks]
        else:
            xml_path = self._xml_path(plan)
            await in_thread(self._check_dir, plan, xml_path, needed)
            await in_thread(self._create_files, plan)
            targets = [disk.target_path for disk in plan.disks]

        self.events.phase("copy")
        self.events.disks(
            [
                DiskProgress(d.source.address.key, t, total)
                for d, t, total in zip(plan.disks, targets, totals, strict=True)
            ]
        )
        for index, (disk, target, total) in enumerate(zip(plan.disks, targets, totals, strict=True)):
            await self._copy(index, disk, target, total)

        self.events.phase("define")
        if self.host is not None:
            await in_thread(self.host.refresh_pool, self.pool)
            name: str | None = await in_thread(self._define, plan, inspected.domain_xml)
            outputs = tuple(targets)
            self.events.log(f"defined domain {name} ({plan.uuid})")
        else:
            name = None
            await in_thread(self._write_xml, xml_path, inspected.domain_xml)
            outputs = (*targets, xml_path)
            self.events.log(f"wrote {xml_path}")
        return MigrationResult(name, plan.uuid, outputs, inspected.domain_xml, inspected.notes)

    # --- prepare ------------------------------------------------------------------

    async def _measure(self, disk: PlannedDisk) -> int:
        src, backing = _chain_paths(disk)
        return await qemu_img.measure(src, disk.format, backing=backing)

    def _check_host(self, plan: DomainPlan, needed: int) -> None:
        """Everything ``virsh define`` and the copy would trip over, before writing anything."""
        host = self.host
        assert host is not None
        pool = check_pool_targets(host, self.pool, plan)
        if needed > pool.available:
            raise Vm2kvmError(
                ErrorCode.NO_SPACE,
                f"the disks need {_human(needed)} but pool {self.pool!r} has {_human(pool.available)} free",
                value=self.pool,
            )

    def _create_volume(self, disk: PlannedDisk) -> str:
        host = self.host
        assert host is not None
        path = host.create_volume(self.pool, disk.volume_name, disk.capacity, disk.format)
        self.rollback.volume(host, self.pool, disk.volume_name, path)
        if os.path.realpath(path) != os.path.realpath(disk.target_path):
            # The domain XML names target_path; libvirt's path must be the same file.
            raise Vm2kvmError(
                ErrorCode.INTERNAL,
                f"libvirt created volume {disk.volume_name!r} at {path}, not at {disk.target_path}",
            )
        return path

    def _xml_path(self, plan: DomainPlan) -> str:
        assert self.options.output_dir is not None
        return xml_path_for(self.options.output_dir, plan)

    def _check_dir(self, plan: DomainPlan, xml_path: str, needed: int) -> None:
        out = self.options.output_dir
        assert out is not None
        existing = check_output_targets(out, plan, xml_path)
        fs = os.statvfs(existing)
        available = fs.f_bavail * fs.f_frsize
        if needed > available:
            raise Vm2kvmError(
                ErrorCode.NO_SPACE,
                f"the disks need {_human(needed)} but {existing} has {_human(available)} free",
                value=existing,
            )

    def _create_files(self, plan: DomainPlan) -> None:
        out = self.options.output_dir
        assert out is not None
        if not os.path.isdir(out):
            try:
                os.mkdir(out)
            except OSError as err:
                raise _output_error(out, err) from err
            self.rollback.directory(out)
        for disk in plan.disks:
            # O_EXCL claims the name; qemu-img then writes the image into it.
            os.close(_create_exclusive(disk.target_path))
            self.rollback.file(disk.target_path)

    # --- copy and define -------------------------------------------------------------

    async def _copy(self, index: int, disk: PlannedDisk, target: str, total: int) -> None:
        src, backing = _chain_paths(disk)
        self.events.log(f"copying {disk.source.address.key} ({src}) to {target}")
        self.events.disk_progress(index, 0, total)
        written = _WrittenBytes(target)
        by_allocation = await in_thread(written.start)

        def on_percent(percent: float) -> None:
            if not by_allocation:
                self.events.disk_progress(index, min(total, int(total * percent / 100)), total)

        follower = asyncio.create_task(self._follow(index, written, total)) if by_allocation else None
        try:
            await qemu_img.convert(
                src,
                target,
                dst_format=disk.format,
                on_progress=on_percent,
                target_exists=self.host is not None,
                backing=backing,
            )
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
        self.events.disk_progress(index, total, total)

    async def _follow(self, index: int, written: _WrittenBytes, total: int) -> None:
        """Report the target's allocation growth while qemu-img writes it."""
        last = -1
        while True:
            done = min(total, await asyncio.to_thread(written.done))
            if done > last:
                self.events.disk_progress(index, done, total)
                last = done
            await asyncio.sleep(_FOLLOW_INTERVAL)

    def _define(self, plan: DomainPlan, xml: str) -> str:
        host = self.host
        assert host is not None
        # Again: the copy took time, and defining over an existing name with our UUID would
        # silently replace that domain's configuration.
        if host.domain_exists(plan.name):
            raise _domain_exists(plan.name)
        name = host.define_domain(xml)
        self.rollback.domain(host, name)
        return name

    def _write_xml(self, path: str, xml: str) -> None:
        fd = _create_exclusive(path)
        self.rollback.file(path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(xml)
        except OSError as err:
            raise _output_error(path, err) from err


def preflight(source: str, options: MigrateOptions) -> InspectResult:
    """The checks of a migration that need no copy: run before a job is created.

    Blocking (call it in a thread).  Raises the ``Vm2kvmError`` the job would
    fail with (unreadable source or disks, name or volume taken, pool or
    network missing), so a caller gets it as the answer to ``Migrate`` instead
    of a job that fails a moment later.  The job repeats the checks: the host
    may change in between.
    """
    options.validate()
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


def xml_path_for(output_dir: str, plan: DomainPlan) -> str:
    return os.path.join(output_dir, f"{plan.name}.xml")


def check_pool_targets(host: LibvirtHost, pool_name: str, plan: DomainPlan) -> PoolInfo:
    """Name free, pool usable, volumes free, networks defined; returns the pool."""
    if host.domain_exists(plan.name):
        raise _domain_exists(plan.name)
    host.refresh_pool(pool_name)  # also sees files written behind libvirt's back
    pool = host.pool(pool_name)
    for disk in plan.disks:
        if host.volume_exists(pool_name, disk.volume_name) or os.path.lexists(disk.target_path):
            raise Vm2kvmError(
                ErrorCode.VOLUME_EXISTS,
                f"volume {disk.volume_name!r} already exists in pool {pool_name!r}",
                file=disk.target_path,
                hint="choose another domain name with --name, or delete the volume",
            )
    for nic in plan.nics:
        if nic.kind == "network" and not host.network_exists(nic.target):
            raise Vm2kvmError(
                ErrorCode.NETWORK_NOT_FOUND,
                f"libvirt network {nic.target!r} (for VMware network {nic.source.source_network!r}) "
                "does not exist",
                key=f"ethernet{nic.source.index}",
                value=nic.target,
                hint=f"map it with --network '{nic.source.source_network}=NAME' or define the network",
            )
    return pool


def check_output_targets(out: str, plan: DomainPlan, xml_path: str) -> str:
    """The output directory (or its parent) exists and no output file does; returns the existing dir."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION, f"{out} exists and is not a directory", key="output-dir", value=out
        )
    existing = out if os.path.isdir(out) else os.path.dirname(out.rstrip("/"))
    if not os.path.isdir(existing):
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"output directory {out} does not exist, nor does its parent",
            key="output-dir",
            value=out,
        )
    for path in [*(d.target_path for d in plan.disks), xml_path]:
        if os.path.lexists(path):
            raise Vm2kvmError(
                ErrorCode.VOLUME_EXISTS,
                "the output file already exists",
                file=path,
                hint="choose another domain name with --name or another --output-dir",
            )
    return existing


def _create_exclusive(path: str) -> int:
    """Create ``path``, which must not exist; returns the open descriptor."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError as err:
        raise Vm2kvmError(ErrorCode.VOLUME_EXISTS, "the output file already exists", file=path) from err
    except OSError as err:
        raise _output_error(path, err) from err


def _output_error(path: str, err: OSError) -> Vm2kvmError:
    if err.errno == errno.ENOSPC:
        return Vm2kvmError(ErrorCode.NO_SPACE, "no space left on the device", file=path)
    return Vm2kvmError(ErrorCode.INVALID_OPTION, f"cannot write: {err.strerror}", file=path, key="output-dir")


def _refuse_broken_disks(inspected: InspectResult) -> None:
    for disk in inspected.vm.disks:
        if disk.chain is None or disk.problem_code is not None:
            # ``problem`` already names the file and key it is about; say which disk it is.
            raise Vm2kvmError(
                disk.problem_code or ErrorCode.DISK_MISSING,
                f"disk {disk.address.key}: {disk.problem or f'{disk.file_name!r} cannot be read'}",
            )


def _chain_paths(disk: PlannedDisk) -> tuple[str, list[str]]:
    """The top VMDK and its parents (nearest first), as our resolver found them."""
    chain = disk.source.chain
    assert chain is not None  # _refuse_broken_disks ran
    return chain.top.path, [layer.path for layer in chain.layers[1:]]


# The job batches property changes to 10 a second; polling faster gains nothing.
_FOLLOW_INTERVAL = 0.2


class _WrittenBytes:
    """What qemu-img has really written to a file target: the growth of its allocation.

    qemu-img's ``-p`` percentage walks the virtual disk, so unallocated and zero
    areas (skipped, never written) count as done.  The target's allocated
    blocks are the bytes actually copied.  Block-device targets (LVM) have no
    such measure.  Both methods block (``stat``): call them in a thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.base = 0

    def _allocated(self) -> int | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_blocks * 512 if stat.S_ISREG(st.st_mode) else None

    def start(self) -> bool:
        """Take the baseline; False when the target is not a regular file."""
        base = self._allocated()
        self.base = base or 0
        return base is not None

    def done(self) -> int:
        now = self._allocated()
        return 0 if now is None else max(0, now - self.base)


def _domain_exists(name: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.DOMAIN_EXISTS,
        f"a domain named {name!r} already exists",
        value=name,
        hint="choose another name with --name",
    )
