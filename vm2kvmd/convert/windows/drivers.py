"""Inject virtio-win drivers offline: the boot-critical storage driver registered, the rest staged.

The storage driver is made to start at boot (``core.guest.windows.registry``):
its ``.sys`` in ``System32\\drivers``, its service key, and either the
CriticalDeviceDatabase (up to 7/2008 R2) or a DriverDatabase package whose
files really are in the DriverStore and whose INF is published as
``INF\\oemN.inf``, as ``pnputil`` would leave them.  Every selected driver is
also copied to ``%SystemRoot%\\Drivers\\VirtIO\\<driver>`` and that directory
added to ``DevicePath``, so Plug and Play finds the others by itself; the
first boot installs them with ``pnputil`` where Windows has it (Vista on).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from vm2kvmd.convert.windows.context import WindowsContext
from vm2kvmd.convert.windows.virtio_win import VirtioWinTree
from vm2kvmd.core.guest.windows import registry as reg
from vm2kvmd.core.guest.windows.caps import caps_for_windows, storage_driver
from vm2kvmd.core.guest.windows.firstboot import staged_dirs, staged_inf
from vm2kvmd.core.guest.windows.inf import parse_inf
from vm2kvmd.core.guest.windows.virtio_win import DriverFiles, DriverSelection, WindowsRelease, select_drivers

AREA = "drivers"
_CURRENT_VERSION = ("Microsoft", "Windows", "CurrentVersion")


@dataclass(frozen=True)
class Injected:
    selection: DriverSelection
    storage: str | None  # the registered storage driver
    staged_infs: tuple[str, ...]  # relative to %SystemRoot%, for pnputil at first boot


def inject_drivers(ctx: WindowsContext, tree: VirtioWinTree) -> Injected:
    info = ctx.info
    release = WindowsRelease(info.major, info.minor, info.build, info.server, info.arch)
    selection = select_drivers(tree.files, release)
    caps, notes = caps_for_windows(
        info,
        selection,
        source=ctx.options.virtio_win,
        disk_bus=ctx.options.disk_bus,
        secure_boot=ctx.vm.secure_boot,
    )
    ctx.caps = caps
    for note in notes:
        ctx.note(note.message, note.key)
    staged: list[str] = []
    for driver in selection.drivers:
        staged.append(_stage(ctx, tree, driver))
    storage = storage_driver(caps.disk_bus)
    boot = selection.get(storage) if storage is not None else None
    if boot is not None:
        _register_storage(ctx, tree, boot)
        if info.driver_database:
            # Already a complete DriverStore package: pnputil would publish a second copy.
            staged = [s for s in staged if not s.endswith(f"\\{boot.inf_stem}.inf")]
    if selection.drivers:
        _extend_device_path(ctx, [d.name for d in selection.drivers])
    if caps.disk_bus == "sata":
        _ahci_at_boot(ctx)
    return Injected(selection, storage, tuple(staged))


def _ahci_at_boot(ctx: WindowsContext) -> None:
    """Windows starts its AHCI driver at boot only if it was installed on AHCI hardware.

    VMware's disks sat on LSI/PVSCSI, so a guest falling back to SATA would
    stop with INACCESSIBLE_BOOT_DEVICE unless storahci (8 and later) or
    msahci (Vista/7) is made a boot-start driver.
    """
    info = ctx.info
    name = "storahci" if (info.major, info.minor) >= (6, 2) else "msahci"
    service = info.service(name)
    if service is None:
        ctx.note(f"the guest has no {name} driver for the SATA disks; it may not boot from them")
        return
    if service.start != 0:
        key = reg.RegKey(
            "SYSTEM", (info.current_control_set, "Services", service.name), (reg.dword("Start", 0),)
        )
        ctx.set_values([key])
        ctx.change(
            AREA,
            f"{service.name} (AHCI) starts at boot, for the SATA disks",
            f"HKLM\\SYSTEM\\{info.current_control_set}\\Services\\{service.name}",
        )


def _stage(ctx: WindowsContext, tree: VirtioWinTree, driver: DriverFiles) -> str:
    directory = f"Drivers/VirtIO/{driver.name}"
    for relative in driver.files:
        ctx.write_file(f"{directory}/{posixpath.basename(relative).lower()}", tree.read(relative))
    ctx.change(AREA, f"staged {driver.name} ({driver.os_dir}) for Plug and Play", ctx.path(directory))
    return staged_inf(driver.name, f"{driver.inf_stem}.inf")


def _register_storage(ctx: WindowsContext, tree: VirtioWinTree, driver: DriverFiles) -> None:
    info = ctx.info
    inf_path, sys_path = driver.file(".inf"), driver.file(".sys")
    assert inf_path is not None and sys_path is not None
    inf_bytes = tree.read(inf_path)
    inf = parse_inf(posixpath.basename(inf_path), inf_bytes.decode("utf-8", "replace"))
    sys_target = ctx.write_file(f"System32/drivers/{driver.inf_stem}.sys", tree.read(sys_path))
    ctx.change(AREA, f"{driver.inf_stem}.sys copied for the boot disk", sys_target)
    existing = ctx.g.ls(ctx.path("INF")) if ctx.g.is_dir(ctx.path("INF")) else []
    storage = reg.StorageDriver(
        service=driver.inf_stem,
        inf=inf,
        inf_bytes_sha256=reg.sha256_hex(inf_bytes),
        arch=info.arch,
        published_inf=reg.published_inf_name(existing),
    )
    if info.driver_database:
        package = reg.driver_package(storage)
        repository = f"System32/DriverStore/FileRepository/{package}"
        for relative in driver.files:
            ctx.write_file(f"{repository}/{posixpath.basename(relative).lower()}", tree.read(relative))
        published = ctx.write_file(f"INF/{storage.published_inf}", inf_bytes)
        ctx.change(AREA, f"driver package {package} added to the DriverStore", ctx.path(repository))
        ctx.change(AREA, f"{inf.name} published as {storage.published_inf}", published)
    keys = reg.storage_driver_keys(info.current_control_set, storage, driver_database=info.driver_database)
    ctx.set_values(keys)
    where = "DriverDatabase" if info.driver_database else "CriticalDeviceDatabase"
    ids = ", ".join(m.hardware_id for m in inf.models)
    ctx.change(
        AREA,
        f"{driver.inf_stem} registered as a boot-start driver (service, {where}: {ids})",
        f"HKLM\\SYSTEM\\{info.current_control_set}\\Services\\{driver.inf_stem}",
    )


def _extend_device_path(ctx: WindowsContext, drivers: list[str]) -> None:
    current = ctx.read_value("SOFTWARE", _CURRENT_VERSION, "DevicePath")
    text = current[1].decode("utf-16-le", "replace").rstrip("\0") if current else None
    new = reg.extend_device_path(text, staged_dirs(drivers))
    if new != text:
        ctx.set_values([reg.RegKey("SOFTWARE", _CURRENT_VERSION, (reg.expand_sz("DevicePath", new),))])
        ctx.change(AREA, f"DevicePath is now {new}", "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion")
