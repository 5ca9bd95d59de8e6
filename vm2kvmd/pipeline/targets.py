"""Where a migration's disks go: a libvirt storage pool or an output directory.

A ``Target`` answers, for one migration, everything that depends on the kind
of storage: what must not exist yet, how much space a disk takes there, how
many bytes its copy writes, how its volume is created and how qemu-img
writes into it.  Blocking methods (libvirt, ``statvfs``) are called in a
worker thread.

Pools:

* file pools (``dir``, ``fs``, ``netfs``): qcow2 or raw files made by
  libvirt with the disk's capacity.  Sparse by default: a sparse volume
  reads as zeros, so qemu-img skips zero areas (``--target-is-zero``) and
  the file only takes the data.  ``allocation=preallocated``: libvirt
  allocates every block (raw) or every cluster (qcow2, ``falloc``) up front.
* ``logical`` pools (LVM): a volume is a block device with old data on it,
  so it is written raw (a qcow2 request becomes raw, with a note), takes its
  whole capacity, and qemu-img must write the zeros too (never
  ``--target-is-zero``).

An output directory is a file pool without libvirt: qemu-img creates the
files (``-o preallocation=falloc`` when preallocated).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from vm2kvmd.adapters.free_space import free_space
from vm2kvmd.adapters.libvirt_host import BLOCK_POOL_TYPES, FILE_POOL_TYPES, LibvirtHost, PoolInfo
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.plan import DomainPlan, PlannedDisk
from vm2kvmd.core.residue import Residue
from vm2kvmd.core.units import size_text
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.rollback import Rollback


@dataclass(frozen=True)
class DiskSizes:
    """What ``qemu-img`` says about the data a disk's copy reads (after the overlay hooks)."""

    capacity: int  # the virtual size
    required: int  # qemu-img measure "required" for the target format (sparse copy)
    fully_allocated: int  # qemu-img measure "fully-allocated"
    data: int  # bytes that hold data (qemu-img map): what a sparse raw copy writes


@dataclass(frozen=True)
class CopyMode:
    """How qemu-img writes one target."""

    target_exists: bool  # a volume libvirt made (``-n``); else qemu-img creates the file
    target_is_zero: bool  # the existing target reads as zeros: skip writing zeros
    preallocation: str | None  # ``-o preallocation=`` when qemu-img creates the file
    sparse_file: bool  # a file whose allocation grows with the bytes written (progress by allocation)


class Target:
    """The storage of one migration; see the module docstring."""

    where: str  # "pool 'images'" / "directory /srv/out", for messages
    preallocate: bool

    def check(self, plan: DomainPlan) -> None:
        """Refuse what the copy or the definition would trip over (blocking)."""
        raise NotImplementedError

    def available(self) -> int:
        """Bytes free now (blocking)."""
        raise NotImplementedError

    def needed(self, disk: PlannedDisk, sizes: DiskSizes) -> int:
        """The space ``disk`` takes in this target once copied."""
        if disk.block:
            return sizes.capacity  # a logical volume is allocated in full
        if self.preallocate:
            return sizes.fully_allocated
        return sizes.required if disk.format == "qcow2" else sizes.data

    @staticmethod
    def written(disk: PlannedDisk, sizes: DiskSizes) -> int:
        """Bytes the copy of ``disk`` writes: its data (and qcow2 metadata); zeros are skipped."""
        return sizes.required if disk.format == "qcow2" else sizes.data

    def check_space(self, disks: list[PlannedDisk], sizes: list[DiskSizes]) -> int:
        """Raise ``NO_SPACE`` if the disks do not fit (blocking); returns the bytes free."""
        needed = sum(self.needed(d, s) for d, s in zip(disks, sizes, strict=True))
        hint = "free some space or choose another target"
        if self.preallocate and any(not d.block for d in disks):
            hint += "; --allocation sparse needs only the data"
        return self.check_room("the disks", needed, value=self.where, hint=hint)

    def check_room(self, what: str, needed: int, *, value: str, hint: str) -> int:
        """Raise ``NO_SPACE`` if ``needed`` bytes for ``what`` do not fit (blocking); returns bytes free."""
        available = self.available()
        if needed > available:
            raise Vm2kvmError(
                ErrorCode.NO_SPACE,
                f"{what} need {size_text(needed)} ({needed} bytes) but {self.where} has "
                f"{size_text(available)} ({available} bytes) free",
                value=value,
                hint=hint,
            )
        return available

    def prepare(self, rollback: Rollback) -> None:
        """What the volumes need first, recorded in ``rollback`` (blocking); nothing for a pool."""
        return None

    def create(self, disk: PlannedDisk, rollback: Rollback) -> str:
        """Create the disk's volume or file, record it in ``rollback``; returns its path (blocking)."""
        raise NotImplementedError

    def copy_mode(self, disk: PlannedDisk) -> CopyMode:
        raise NotImplementedError

    def ran_out(self, disk: PlannedDisk, written: int, needed: int, free_before: int) -> Vm2kvmError:
        """The error of a copy that hit ENOSPC (blocking: says how much is free now)."""
        try:
            now = f"; {size_text(self.available())} free now"
        except (OSError, Vm2kvmError):
            now = ""
        return Vm2kvmError(
            ErrorCode.NO_SPACE,
            f"{self.where} ran out of space while copying disk {disk.source.address.key} "
            f"({size_text(written)} to write, {size_text(needed)} for all disks, "
            f"{size_text(free_before)} ({free_before} bytes) were free before the copy{now})",
            file=disk.target_path,
            value=self.where,
            hint="it filled up during the copy (another writer, or less room than it reported); "
            "free some space and migrate again",
        )


class PoolTarget(Target):
    """A libvirt storage pool (file or logical)."""

    def __init__(self, host: LibvirtHost, pool: str, options: MigrateOptions) -> None:
        self.host = host
        self.pool = pool
        self.where = f"pool {pool!r}"
        self.preallocate = options.allocation == "preallocated"

    def check(self, plan: DomainPlan) -> None:
        check_pool_targets(self.host, self.pool, plan)

    def available(self) -> int:
        self.host.refresh_pool(self.pool)
        return self.host.pool(self.pool).available

    def create(self, disk: PlannedDisk, rollback: Rollback) -> str:
        fmt = None if disk.block else disk.format
        residue = Residue(
            "volume", path=disk.target_path, pool=self.pool, name=disk.volume_name, uri=self.host.uri
        )
        with rollback.creating(residue) as rid:
            path = self.host.create_volume(
                self.pool, disk.volume_name, disk.capacity, fmt, preallocate=self.preallocate
            )
        rollback.volume(self.host, self.pool, disk.volume_name, path, rid=rid)
        if os.path.realpath(path) != os.path.realpath(disk.target_path):
            # The domain XML names target_path; libvirt's path must be the same file.
            raise Vm2kvmError(
                ErrorCode.INTERNAL,
                f"libvirt created volume {disk.volume_name!r} at {path}, not at {disk.target_path}",
            )
        return path

    def copy_mode(self, disk: PlannedDisk) -> CopyMode:
        if disk.block:
            return CopyMode(target_exists=True, target_is_zero=False, preallocation=None, sparse_file=False)
        return CopyMode(
            target_exists=True, target_is_zero=True, preallocation=None, sparse_file=not self.preallocate
        )


class DirTarget(Target):
    """An output directory: files qemu-img creates, and the domain XML next to them."""

    def __init__(self, options: MigrateOptions) -> None:
        assert options.output_dir is not None
        self.out = options.output_dir
        self.where = f"directory {self.out}"
        self.preallocate = options.allocation == "preallocated"

    def xml_path(self, plan: DomainPlan) -> str:
        return xml_path_for(self.out, plan)

    def check(self, plan: DomainPlan) -> None:
        check_output_targets(self.out, plan, self.xml_path(plan))

    def available(self) -> int:
        return free_space(self.out)  # before prepare(): its parent's file system

    def prepare(self, rollback: Rollback) -> None:
        """Create the output directory if needed (blocking)."""
        if not os.path.isdir(self.out):
            with rollback.creating(Residue("directory", path=self.out)) as rid:
                try:
                    os.mkdir(self.out)
                except OSError as err:
                    raise output_error(self.out, err) from err
            rollback.directory(self.out, rid=rid)

    def create(self, disk: PlannedDisk, rollback: Rollback) -> str:
        # O_EXCL claims the name; qemu-img then writes the image into it.
        with rollback.creating(Residue("file", path=disk.target_path)) as rid:
            os.close(create_exclusive(disk.target_path))
        rollback.file(disk.target_path, rid=rid)
        return disk.target_path

    def copy_mode(self, disk: PlannedDisk) -> CopyMode:
        return CopyMode(
            target_exists=False,
            target_is_zero=True,
            preallocation="falloc" if self.preallocate else None,
            sparse_file=not self.preallocate,
        )


# --- checks shared with the preflight ------------------------------------------------------


def pool_layout(pool: PoolInfo, options: MigrateOptions) -> tuple[str, bool, str | None]:
    """(disk format, block volumes, note) for disks in ``pool``; raises for pools vm2kvm cannot write."""
    if not pool.usable:
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"storage pool {pool.name!r} is of type {pool.type!r}; vm2kvm writes disk images "
            f"into pools of type {', '.join(FILE_POOL_TYPES + BLOCK_POOL_TYPES)}",
            key="pool",
            value=pool.name,
        )
    if not pool.block:
        return options.format, False, None
    if options.snapshots == "keep":
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"snapshots keep needs qcow2 files, but pool {pool.name!r} is a {pool.type} (LVM) pool",
            key="pool",
            value=pool.name,
            hint="choose a dir, fs or netfs pool, or use --snapshots flatten",
        )
    note = None
    if options.format != "raw":
        # A logical volume is a block device: no qcow2 inside it (libvirt would not know it is one).
        note = (
            f"pool {pool.name!r} is a {pool.type} (LVM) pool: its volumes are block devices, "
            f"so the disks are written as raw, not {options.format}"
        )
    return "raw", True, note


def xml_path_for(output_dir: str, plan: DomainPlan) -> str:
    return os.path.join(output_dir, f"{plan.name}.xml")


def check_pool_targets(host: LibvirtHost, pool_name: str, plan: DomainPlan) -> PoolInfo:
    """Name free, pool usable, volumes free, networks defined; returns the pool."""
    if host.domain_exists(plan.name):
        raise domain_exists(plan.name)
    host.refresh_pool(pool_name)  # also sees files written behind libvirt's back
    pool = host.pool(pool_name)
    for disk in plan.disks:
        check_volume_free(host, pool_name, disk.volume_name, disk.target_path)
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


def pool_still_there(host: LibvirtHost, pool: str) -> None:
    """Refresh ``pool`` before the domain is defined; ``PoolVanished`` if it went away during the job.

    A stopped ``dir`` pool keeps its files, so a copy into it succeeds: only
    libvirt can tell that the disks are no longer in a pool.
    """
    try:
        host.refresh_pool(pool)
    except Vm2kvmError as err:
        if err.code is not ErrorCode.POOL_NOT_FOUND:
            raise
        raise pool_vanished(pool, err) from err


def pool_vanished(pool: str, err: Vm2kvmError) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.POOL_VANISHED,
        f"storage pool {pool!r} was removed or stopped while the job ran ({err.message})",
        value=pool,
        hint=err.hint or "start the pool again and migrate again",
    )


def check_volume_free(host: LibvirtHost, pool_name: str, volume_name: str, path: str) -> None:
    """Refuse a volume name (or its file) that is taken in the pool."""
    if host.volume_exists(pool_name, volume_name) or os.path.lexists(path):
        raise Vm2kvmError(
            ErrorCode.VOLUME_EXISTS,
            f"volume {volume_name!r} already exists in pool {pool_name!r}",
            file=path,
            hint="choose another domain name with --name, or delete the volume",
        )


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


def create_exclusive(path: str) -> int:
    """Create ``path``, which must not exist; returns the open descriptor."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError as err:
        raise Vm2kvmError(ErrorCode.VOLUME_EXISTS, "the output file already exists", file=path) from err
    except OSError as err:
        raise output_error(path, err) from err


def output_error(path: str, err: OSError) -> Vm2kvmError:
    if err.errno == errno.ENOSPC:
        return Vm2kvmError(ErrorCode.NO_SPACE, "no space left on the device", file=path)
    return Vm2kvmError(ErrorCode.INVALID_OPTION, f"cannot write: {err.strerror}", file=path, key="output-dir")


def domain_exists(name: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.DOMAIN_EXISTS,
        f"a domain named {name!r} already exists",
        value=name,
        hint="choose another name with --name",
    )
