"""The guest conversion step of a migration: one appliance over the overlays.

Runs between creating the overlays and measuring them for the copy, so
everything it writes (converted files, a rebuilt initramfs, blocks freed by
``fstrim``) lands in the overlays and is what gets copied; the VMware files
stay as they were (the overlays' backing is opened read-only).

The appliance calls block, so the work runs in one worker thread; log lines
come back to the event loop with ``call_soon_threadsafe``.  A cancelled job
kills the appliance's QEMU (the blocked call then fails), waits for the
thread to end and re-raises the cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from vm2kvmd.adapters.appliance import Appliance
from vm2kvmd.adapters.guestfs_api import GuestFS
from vm2kvmd.aio import settle
from vm2kvmd.convert.context import ConversionOptions, GuestContext
from vm2kvmd.convert.inspect import choose_root, find_roots, inspect_guest, mount_guest, refuse_unconvertible
from vm2kvmd.convert.linux import convert_linux
from vm2kvmd.convert.windows import convert_windows
from vm2kvmd.convert.windows.context import WindowsContext, WindowsOptions
from vm2kvmd.core.guest.info import Conversion, GuestInfo
from vm2kvmd.core.guest.linux.caps import caps_for_linux
from vm2kvmd.core.guest.linux.devices import device_map
from vm2kvmd.core.guest.windows.info import refuse_windows
from vm2kvmd.core.guest.windows.virtio_win import virtio_win_path
from vm2kvmd.core.hardware.model import Note, SourceVM
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.plan import DomainPlan
from vm2kvmd.core.secret import Secret
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.events import JobEvents
from vm2kvmd.pipeline.overlay import Overlay, WorkAreaWatch, check_conversion_space

NOT_CONVERTED = Note(
    "guest not converted (--no-guest-conversion): the VM keeps devices every OS drives "
    "(SATA disks, e1000 NICs); its VMware Tools, device names and NIC names are unchanged"
)


def unconverted() -> Conversion:
    return Conversion(caps=GuestCaps.unconverted(), guest=None, notes=(NOT_CONVERTED,))


class GuestConverter(Protocol):
    """Converts the guest on the job's overlays; returns what the domain may use and what changed."""

    async def __call__(
        self,
        overlays: Sequence[Overlay],
        vm: SourceVM,
        replan: Callable[[GuestCaps], DomainPlan],
        options: MigrateOptions,
        events: JobEvents,
    ) -> Conversion: ...


@dataclass(frozen=True)
class LibguestfsConverter:
    """Converts the guest on the overlays (``pipeline.engine`` calls it once per job).

    ``skip``: conversion steps left out (``convert.linux.STEPS`` names).  Only
    the tests that prove each fix is needed use it; the daemon never does.
    """

    skip: frozenset[str] = frozenset()
    # The caller's BitLocker key (Manager1's bitlocker-key fd), for this job only; never shown.
    bitlocker_key: Secret | None = field(default=None, repr=False)

    async def __call__(
        self,
        overlays: Sequence[Overlay],
        vm: SourceVM,
        replan: Callable[[GuestCaps], DomainPlan],
        options: MigrateOptions,
        events: JobEvents,
    ) -> Conversion:
        loop = asyncio.get_running_loop()

        def log(message: str) -> None:
            loop.call_soon_threadsafe(events.log, message)

        # Again (the preflight checked it): hours of conversion may be lost to a full work area.
        await asyncio.to_thread(check_conversion_space, options.work_dir)
        appliance = Appliance([o.path for o in overlays])
        work = asyncio.ensure_future(
            asyncio.to_thread(
                _convert,
                appliance,
                vm,
                replan,
                _conversion_options(options, overlays, self.bitlocker_key),
                log,
                self.skip,
            )
        )
        # A full work area pauses the appliance for good (pipeline.overlay.FULL_BELOW).
        full = WorkAreaWatch(options.work_dir, overlays)
        watch = asyncio.create_task(full.watch(appliance.kill), name="work area watch")
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            appliance.kill()
            # The thread ends as soon as the appliance call it is blocked in fails.
            await settle(_quietly(work))
            raise
        except Vm2kvmError as err:
            if full.error is not None:
                raise full.error from err
            raise
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


async def _quietly(work: asyncio.Future[Conversion]) -> None:
    # The killed appliance's error: the cancellation is what the job reports.
    with contextlib.suppress(Exception):
        await work


def _conversion_options(
    options: MigrateOptions, overlays: Sequence[Overlay], key: Secret | None = None
) -> ConversionOptions:
    return ConversionOptions(
        root=options.root,
        install_guest_agent=options.install_guest_agent,
        virtio_win=virtio_win_path(options.virtio_win, os.environ.get("VIRTIO_WIN")),
        bitlocker_key=key,
        # Beside the first overlay, in the job's recorded work area: removed with it, even after a
        # killed daemon, and a full work area is told as such.
        scratch_dir=os.path.dirname(overlays[0].path) if overlays else None,
        disk_bus=options.disk_bus,
    )


def _convert(
    appliance: Appliance,
    vm: SourceVM,
    replan: Callable[[GuestCaps], DomainPlan],
    options: ConversionOptions,
    log: Callable[[str], None],
    skip: frozenset[str],
) -> Conversion:
    """Blocking, in the worker thread: launch, inspect, convert, trim, shut down."""
    timings: list[tuple[str, float]] = []
    started = time.monotonic()
    log("starting the libguestfs appliance")
    try:
        g = appliance.launch()
        timings.append(("launch", time.monotonic() - started))
        try:
            step = time.monotonic()
            roots = find_roots(g, options.bitlocker_key, log)
            root, notes = choose_root(roots, options.root)
            notes += mount_guest(g, root, options.scratch_dir)
            guest = inspect_guest(g, root, options.scratch_dir)
            if guest.windows is not None:
                refuse_windows(guest.windows)
            else:
                refuse_unconvertible(guest)
            version = f"{guest.distro} {guest.major}.{guest.minor} {guest.arch}"
            log(f"guest: {guest.product_name} ({version}), root {root}")
            timings.append(("inspect", time.monotonic() - step))
            ctx: GuestContext | WindowsContext
            if guest.windows is not None:
                ctx = WindowsContext(
                    g,
                    guest.windows,
                    vm,
                    WindowsOptions(options.virtio_win, disk_bus=options.disk_bus),
                    log,
                    notes=notes,
                )
                timings += convert_windows(ctx, replan)
            else:
                ctx = _convert_linux(g, guest, vm, replan, options, log, notes, skip, timings)
            step = time.monotonic()
            _trim(g, guest.mountpoints, ctx)
            g.umount_all()
            g.sync()
            timings.append(("trim", time.monotonic() - step))
        except RuntimeError as err:
            if appliance.killed:
                raise Vm2kvmError(ErrorCode.CANCELLED, "the job was cancelled") from err
            raise Vm2kvmError(
                ErrorCode.CONVERSION_FAILED,
                f"guest conversion failed: {str(err).strip()}",
                hint="see the job log; migrate with --no-guest-conversion to copy the VM unchanged",
            ) from err
    finally:
        step = time.monotonic()
        appliance.close()
        timings.append(("shutdown", time.monotonic() - step))
    log(f"guest converted in {time.monotonic() - started:.1f} s")
    return Conversion(
        # The libosinfo id comes from inspection for every OS (Windows caps are made from WindowsInfo).
        caps=replace(ctx.caps, os_id=ctx.caps.os_id or guest.os_id),
        guest=guest,
        changes=tuple(ctx.changes),
        notes=tuple(ctx.notes),
        timings=tuple(timings),
    )


def _convert_linux(
    g: GuestFS,
    guest: GuestInfo,
    vm: SourceVM,
    replan: Callable[[GuestCaps], DomainPlan],
    options: ConversionOptions,
    log: Callable[[str], None],
    notes: list[Note],
    skip: frozenset[str],
    timings: list[tuple[str, float]],
) -> GuestContext:
    caps, cap_notes = caps_for_linux(guest, options.disk_bus)
    ctx = GuestContext(
        g=g,
        guest=guest,
        vm=vm,
        caps=caps,
        replan=replan,
        device_map=device_map,
        options=options,
        log=log,
        notes=[*notes, *cap_notes],
    )
    timings += convert_linux(ctx, skip=skip)
    return ctx


def _trim(g: GuestFS, mountpoints: Sequence[tuple[str, str]], ctx: GuestContext | WindowsContext) -> None:
    """Discard free blocks so they read as zeros in the overlays and are not copied."""
    trimmed = []
    for mountpoint, _device in mountpoints:
        try:
            g.fstrim(mountpoint)
            trimmed.append(mountpoint)
        except RuntimeError as err:
            # A file system without discard support (ext2 without it, vfat, ...) is copied whole.
            ctx.log(f"fstrim {mountpoint}: {str(err).strip()}; its free space is copied")
    if trimmed:
        ctx.change("trim", f"trimmed free space on {', '.join(trimmed)} before the copy")
