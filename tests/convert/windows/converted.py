"""Every good phony Windows layout inspected and converted as a migration does, in the shared appliance.

For each case: its root from the session's ``inspect_os``, ``mount_guest``
(read-write, on the overlay), ``inspect_guest`` (the ``GuestInfo`` the
inspection golden files are compared with), the refusal checks, then
``convert_windows`` with the case's options; afterwards the hives are
downloaded (read on the host with hivex by the tests) and every file under
the Windows directory and the ESP is read back.  No Windows boots here (none
may be downloaded): the tests are as strict as a boot would be about paths,
value types and data.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.guests.windows.build import WindowsImage
from testbed.guests.windows.layout import WindowsLayout
from testbed.virtio_win import CURRENT_ISO, build_virtio_win
from tests.convert.windows.test_virtio_win_iso import make_iso
from vm2kvmd.convert.inspect import inspect_guest, mount_guest
from vm2kvmd.convert.windows import convert_windows
from vm2kvmd.convert.windows.context import WindowsContext, WindowsOptions
from vm2kvmd.core.guest.info import Change, GuestInfo
from vm2kvmd.core.guest.windows.info import WindowsInfo, refuse_windows
from vm2kvmd.core.hardware.model import Note, SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions
from vm2kvmd.sources.vmware.vm import load_source_vm

VMX = Path(__file__).resolve().parents[2] / "data" / "vmx"
OPTS = PlanOptions(target_dir="/images", new_uuid="00000000-0000-4000-8000-000000000001")


@dataclass(frozen=True)
class Case:
    vmx: str
    disk_bus: str | None = None  # the disk-bus option
    iso: bool = False  # drivers read from virtio-win.iso in place, not the unpacked tree


# Every good layout: Server 2019 (DriverDatabase, two disks, static IP, drivers from the ISO file),
# 2008 R2 (CriticalDeviceDatabase), 7 32-bit, XP against a current ISO (no drivers: IDE, rtl8139,
# pc), 11 UEFI (its fallback boot file removed first) and Server 2022 with --disk-bus virtio-scsi
# (vioscsi from 2k22 in the DriverDatabase; the one-disk, one-NIC VMX of the 2008 R2 VM).
CASES: dict[str, Case] = {
    "win2019": Case("esxi-win2019-efi.vmx", iso=True),
    "win2008r2": Case("player-win2008r2.vmx"),
    "win7-x86": Case("esxi-win7-32.vmx"),
    "winxp-sp3-x86": Case("esxi-winxp-sp3.vmx"),
    "win11-uefi": Case("esxi-win2019-efi.vmx"),
    "win2022": Case("player-win2008r2.vmx", disk_bus="virtio-scsi"),
}


class SharedAppliance:
    """One launched appliance on overlays of every layout's disks, in ``ALL_LAYOUTS`` order."""

    def __init__(self, g: Any, images: dict[str, WindowsImage]) -> None:
        self.g = g
        self.disk_names: dict[str, str] = {}  # appliance disk (/dev/sdc) -> "win2008r2:disk1"
        self.disks: dict[str, list[str]] = {}  # layout -> its appliance disks, system disk first
        self.layouts = {name: image.layout for name, image in images.items()}
        devices = iter(g.list_devices())
        for name, image in images.items():
            for n, _ in enumerate(image.disks):
                device = next(devices)
                self.disk_names[device] = f"{name}:disk{n}"
                self.disks.setdefault(name, []).append(device)

    def named(self, text: str) -> str:
        """``text`` with appliance devices written as ``<layout>:disk<N>[p<partition>]``."""

        def name(m: re.Match[str]) -> str:
            disk = self.disk_names["/dev/" + m.group(1)]
            return disk + (f"p{m.group(2)}" if m.group(2) else "")

        return re.sub(r"/dev/(sd[a-z]+)(\d*)", name, text)

    def system_root(self, roots: list[str], layout: str) -> str:
        (root,) = [r for r in roots if r.rstrip("0123456789") == self.disks[layout][0]]
        return root


@dataclass
class Result:
    layout: WindowsLayout
    guest: GuestInfo  # inspect_guest before the conversion
    vm: SourceVM
    caps: GuestCaps
    changes: list[Change]
    notes: list[Note]
    plan: DomainPlan
    system: Path  # the converted SYSTEM hive, downloaded
    software: Path
    files: dict[str, bytes]  # every file under the Windows directory and the ESP we wrote, by guest path
    seconds: float

    @property
    def info(self) -> WindowsInfo:
        assert self.guest.windows is not None
        return self.guest.windows


def _walk(g: Any, top: str) -> dict[str, bytes]:
    """Every file under ``top``, by lower-case path (Windows paths are case-insensitive)."""
    out = {}
    if g.exists(top) and g.is_dir(top):
        for rel in g.find(top):
            path = top.rstrip("/") + "/" + rel.lstrip("/")  # find's names start with "/"
            if g.is_file(path):
                out[path.lower()] = g.read_file(path)
    return out


def _files(g: Any, systemroot: str) -> dict[str, bytes]:
    """Every file under the Windows directory, with it spelled /windows (hives left out)."""
    root = g.case_sensitive_path(systemroot)
    prefix = root.lower()
    return {"/windows" + k[len(prefix) :]: v for k, v in _walk(g, root).items() if "/config/" not in k}


def convert_all(shared: SharedAppliance, roots: list[str], work: Path) -> dict[str, Result]:
    tree = build_virtio_win(work / "virtio-win", CURRENT_ISO)
    iso = make_iso(tree, work / "virtio-win.iso", "-R", "-J")
    g = shared.g
    results: dict[str, Result] = {}
    for name, case in CASES.items():
        layout = shared.layouts[name]
        root = shared.system_root(roots, name)
        g.umount_all()
        if layout.firmware == "uefi":
            # Take the fallback boot file's folder away, as some installs lack it.
            g.mount(f"{shared.disks[name][0]}1", "/")
            g.rm_rf(g.case_sensitive_path("/EFI/Boot"))
            g.umount_all()
        assert mount_guest(g, root) == []
        guest = inspect_guest(g, root)
        assert guest.windows is not None
        refuse_windows(guest.windows)
        vm = load_source_vm(str(VMX / case.vmx))

        def replan(caps: GuestCaps, vm: SourceVM = vm) -> DomainPlan:
            return plan_domain(vm, OPTS, caps)

        options = WindowsOptions(virtio_win=str(iso if case.iso else tree), disk_bus=case.disk_bus)
        ctx = WindowsContext(g, guest.windows, vm, options, log=lambda _m: None)
        started = time.monotonic()
        convert_windows(ctx, replan)
        seconds = time.monotonic() - started
        g.umount_all()
        g.mount(root, "/")
        system, software = work / f"{name}-SYSTEM", work / f"{name}-SOFTWARE"
        g.download(g.case_sensitive_path("/Windows/System32/config/SYSTEM"), str(system))
        g.download(g.case_sensitive_path("/Windows/System32/config/SOFTWARE"), str(software))
        files = _files(g, layout.systemroot)
        g.umount_all()
        if layout.firmware == "uefi":
            g.mount(f"{shared.disks[name][0]}1", "/")
            files.update({f"esp:{k}": v for k, v in _walk(g, g.case_sensitive_path("/EFI")).items()})
            g.umount_all()
        results[name] = Result(
            layout,
            guest,
            vm,
            ctx.caps,
            ctx.changes,
            ctx.notes,
            replan(ctx.caps),
            system,
            software,
            files,
            seconds,
        )
    return results
