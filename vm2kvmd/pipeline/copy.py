"""The copy engine: every disk's overlay to its target, a few at a time, with progress in bytes.

One ``qemu-img convert -W -m 8`` per disk reads the overlay (and through
it the read-only source) and writes the target once; areas that read as
zeros (unallocated, discarded in the overlay) are skipped.  qemu-img beat
``nbdcopy`` (qemu-nbd on both ends) by three to four times on the
benchmark (``bench/copy_bench.py``), so it stays.

Disks of one VM are copied in parallel, at most ``limit`` at a time (the
daemon's ``disk_parallelism``, default 2): enough to overlap one disk's reads with another's writes without
making every disk crawl.  ``copy_slots``, shared by every job of the daemon
(``host_disk_parallelism``), bounds the copies of all jobs together: a copy
holds one of its slots as well while it runs.  When one copy fails, the others are cancelled
(their qemu-img killed and reaped) before the error propagates; a
cancelled job does the same.  The caller rolls back.

Progress is in bytes written, per disk (``JobEvents.disk_progress`` with
the disk's index; the job sums them, so ``Rate`` and ``ExpectedEndTime``
stay right with copies in parallel).  A disk's total is what its copy
writes: qemu-img measure's "required" for qcow2 (data and metadata), the
data bytes for raw.  ``done`` is polled five times a second: for a sparse
file, the growth of its allocation; for anything else (a preallocated
file, a logical volume) the bytes qemu-img has written so far
(``wchar`` in ``/proc/<pid>/io``).  qemu-img's own percentage walks the
whole virtual disk and counts skipped zero areas as done, so it is not
used.  A copy that hits ENOSPC becomes ``NO_SPACE`` naming the target and
the sizes.

A source file that goes away during the copy (deleted, its NFS share or
file system unmounted, truncated) is ``SOURCE_VANISHED`` naming the file,
whether qemu-img failed or not: QEMU reads an unlinked file it still holds
open, and reads past the end of a truncated one as zeros, so a copy can
"succeed" with data the source no longer has.  Each file's size when the
job opened it (``DiskCopy.files``) is checked against it after every copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from vm2kvmd.adapters import qemu_img
from vm2kvmd.aio import settle
from vm2kvmd.constants import DEFAULT_DISK_PARALLELISM
from vm2kvmd.core.planning import blockdev as qemu_source
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.events import JobEvents
from vm2kvmd.pipeline.targets import CopyMode

# The job batches property changes to 10 a second; polling faster gains nothing.
FOLLOW_INTERVAL = 0.2

_ENOSPC_TEXT = os.strerror(28)  # "No space left on device", as qemu-img prints it


@dataclass(frozen=True)
class DiskCopy:
    """One disk to copy."""

    index: int  # the disk's index in the job's progress
    key: str  # the source device, for messages
    source: qemu_source.Node  # what qemu-img reads (the overlay), read-only
    label: str  # the source file named in errors
    target: str  # the volume or file written
    format: str  # qcow2 or raw
    total: int  # bytes the copy writes
    mode: CopyMode
    files: tuple[tuple[str, int], ...] = ()  # the source's files and their sizes when opened
    requests: int = qemu_img.COPY_REQUESTS  # in flight (fewer for a remote disk's reader)


NoSpace = Callable[[DiskCopy], Awaitable[Vm2kvmError]]


async def copy_disks(
    disks: Sequence[DiskCopy],
    events: JobEvents,
    no_space: NoSpace,
    *,
    limit: int = DEFAULT_DISK_PARALLELISM,
    copy_slots: asyncio.Semaphore | None = None,
) -> None:
    """Copy ``disks``, ``limit`` at a time (and each holding one of ``copy_slots``, if given).

    The first failure cancels the rest and is raised.  ``no_space(disk)``
    makes the error of a copy that ran out of space.
    """
    slots = asyncio.Semaphore(max(1, limit))
    failures: list[BaseException] = []

    async def one(disk: DiskCopy) -> None:
        # The job's slot first, then the host's: a copy never holds a host slot while it
        # waits for its own job, so one job cannot starve the others of host slots.
        async with slots, host_slot(copy_slots):
            try:
                await _copy(disk, events, no_space)
            except asyncio.CancelledError:
                raise
            except BaseException as err:
                failures.append(err)
                raise

    tasks = [asyncio.create_task(one(d), name=f"copy {d.key}") for d in disks]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        # After a failure, or when the job is cancelled: stop the others and wait for
        # their qemu-img to be gone before anyone rolls back.
        for task in tasks:
            task.cancel()
        await settle(asyncio.gather(*tasks, return_exceptions=True))
    if failures:
        raise failures[0]


def host_slot(copy_slots: asyncio.Semaphore | None) -> contextlib.AbstractAsyncContextManager[object]:
    """One of the daemon's copy slots, held while a copy runs; nothing when there are none."""
    return copy_slots if copy_slots is not None else contextlib.nullcontext()


async def _copy(disk: DiskCopy, events: JobEvents, no_space: NoSpace) -> None:
    events.log(f"copying {disk.key} ({disk.label}) to {disk.target}")
    events.disk_progress(disk.index, 0, disk.total)
    meter: _Meter = _AllocationMeter(disk.target) if disk.mode.sparse_file else _WriteMeter()
    if isinstance(meter, _AllocationMeter) and not await asyncio.to_thread(meter.start):
        meter = _WriteMeter()
    follower = asyncio.create_task(_follow(disk, meter, events), name=f"progress {disk.key}")
    try:
        await qemu_img.convert(
            disk.source,
            disk.target,
            dst_format=disk.format,
            on_progress=lambda _percent: None,
            target_exists=disk.mode.target_exists,
            target_is_zero=disk.mode.target_is_zero,
            preallocation=disk.mode.preallocation,
            on_start=meter.started,
            label=disk.label,
            requests=disk.requests,
        )
    except Vm2kvmError as err:
        if err.code is ErrorCode.COPY_FAILED and _ENOSPC_TEXT in err.message:
            raise await no_space(disk) from err
        vanished = await asyncio.to_thread(source_vanished, disk)
        if vanished is not None:
            raise vanished from err
        raise
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    vanished = await asyncio.to_thread(source_vanished, disk)
    if vanished is not None:
        raise vanished
    events.disk_progress(disk.index, disk.total, disk.total)


def file_sizes(files: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """(file, size) of each of ``files`` now (blocking): what ``source_vanished`` compares with."""
    return tuple((f, os.stat(f).st_size) for f in files)


def source_vanished(disk: DiskCopy) -> Vm2kvmError | None:
    """``SOURCE_VANISHED`` for the first source file of ``disk`` that is gone or shorter (blocking)."""
    for path, size in disk.files:
        try:
            now = os.stat(path).st_size
            with open(path, "rb") as f:  # a dead NFS mount answers stat from its cache
                f.read(1)
        except FileNotFoundError:
            why = "it was deleted, or the file system holding it was unmounted, while the job read it"
        except OSError as err:
            why = f"it cannot be read any more ({err.strerror}): its storage went away while the job read it"
        else:
            if now >= size:
                continue
            why = f"it shrank from {size} to {now} bytes while the job read it (truncated)"
        return Vm2kvmError(
            ErrorCode.SOURCE_VANISHED,
            f"source file of disk {disk.key} vanished: {why}",
            file=path,
            hint="nothing was kept of this copy; make the VM's files available again and migrate again",
        )
    return None


async def _follow(disk: DiskCopy, meter: _Meter, events: JobEvents) -> None:
    """Report the bytes written while qemu-img runs; never more than the total, never less than before."""
    last = 0
    while True:
        await asyncio.sleep(FOLLOW_INTERVAL)
        done = min(disk.total, await asyncio.to_thread(meter.done))
        if done > last:
            events.disk_progress(disk.index, done, disk.total)
            last = done


class _Meter:
    """Bytes a copy has written so far; ``done`` blocks (call it in a thread)."""

    def started(self, pid: int) -> None:
        return None

    def done(self) -> int:
        raise NotImplementedError


class _AllocationMeter(_Meter):
    """A sparse file target: the growth of its allocated blocks is the data written."""

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
        """Take the baseline (blocking); False when the target is not a regular file."""
        base = self._allocated()
        self.base = base or 0
        return base is not None

    def done(self) -> int:
        now = self._allocated()
        return 0 if now is None else max(0, now - self.base)


class _WriteMeter(_Meter):
    """Anything else: the bytes qemu-img passed to write calls (``wchar``; all its threads)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.last = 0

    def started(self, pid: int) -> None:
        self.pid = pid

    def done(self) -> int:
        if self.pid is None:
            return self.last
        try:
            with open(f"/proc/{self.pid}/io", encoding="ascii") as f:
                for line in f:
                    if line.startswith("wchar:"):
                        self.last = max(self.last, int(line.split()[1]))
                        break
        except (OSError, ValueError):
            pass  # gone, or not ours to read: keep the last value
        return self.last
