"""Windows conversion on the phony images: every registry value and file read back after the steps.

One appliance launch converts four layouts (qcow2 overlays over win-image's
phony disks): Server 2019 (DriverDatabase, two disks, static IP), Server
2008 R2 (CriticalDeviceDatabase), XP SP3 32-bit against a current ISO (no
drivers: IDE, rtl8139, pc) and Windows 11 UEFI (its fallback boot folder
removed first).  The hives are then read on the host with hivex and
compared with the pure plans; the source images must be unchanged.  No
Windows boots here (none may be downloaded): the checks are as strict as a
boot would be about paths, value types and data.
"""

from __future__ import annotations

import hashlib
import posixpath
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed.guests.windows.build import build_windows_images
from testbed.guests.windows.layout import WindowsLayout, win7_x86, win11_uefi, win2008r2, win2019, xp_sp3
from testbed.virtio_win import CURRENT_ISO, build_virtio_win
from tests.convert.windows.test_virtio_win_iso import make_iso
from vm2kvmd.adapters.appliance import Appliance
from vm2kvmd.convert.windows import convert_windows
from vm2kvmd.convert.windows.context import WindowsContext, WindowsOptions
from vm2kvmd.core.guest.info import Change
from vm2kvmd.core.guest.windows import firstboot as fb
from vm2kvmd.core.guest.windows import registry as reg
from vm2kvmd.core.guest.windows.inf import parse_inf
from vm2kvmd.core.guest.windows.info import DiskFacts, RegKey, WindowsInfo, windows_info
from vm2kvmd.core.guest.windows.network import plan_static_ips
from vm2kvmd.core.guest.windows.tools import plan_tools_removal
from vm2kvmd.core.hardware.model import Note, SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions
from vm2kvmd.sources.vmware.vm import load_source_vm

pytestmark = pytest.mark.slow

VMX = Path(__file__).resolve().parents[2] / "data" / "vmx"
OPTS = PlanOptions(target_dir="/images", new_uuid="00000000-0000-4000-8000-000000000001")
CASES: dict[str, tuple[Any, str]] = {
    "win2019": (win2019, "esxi-win2019-efi.vmx"),
    "win2008r2": (win2008r2, "player-win2008r2.vmx"),
    "win7-x86": (win7_x86, "esxi-win7-32.vmx"),
    "winxp-sp3-x86": (xp_sp3, "esxi-winxp-sp3.vmx"),
    "win11-uefi": (win11_uefi, "esxi-win2019-efi.vmx"),
}


@dataclass
class Result:
    layout: WindowsLayout
    info: WindowsInfo
    vm: SourceVM
    caps: GuestCaps
    changes: list[Change]
    notes: list[Note]
    plan: DomainPlan
    system: Path  # the converted SYSTEM hive, downloaded
    software: Path
    files: dict[str, bytes]  # every file under the Windows directory and the ESP we wrote, by guest path
    seconds: float


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reg_tree(h: Any, node: int, name: str) -> RegKey:
    values: dict[str, Any] = {}
    for v in h.node_values(node):
        kind, data = h.value_value(v)
        if kind in (1, 2):
            values[h.value_key(v)] = data.decode("utf-16-le").rstrip("\0")
        elif kind == 4:
            values[h.value_key(v)] = int.from_bytes(data[:4], "little")
        elif kind == 7:
            values[h.value_key(v)] = tuple(s for s in data.decode("utf-16-le").split("\0") if s)
        else:
            values[h.value_key(v)] = data
    return RegKey(name, values, tuple(_reg_tree(h, c, h.node_name(c)) for c in h.node_children(node)))


def _read_info(system: Path, software: Path, root: str, layout: WindowsLayout) -> WindowsInfo:
    import hivex

    s, w = hivex.Hivex(str(system)), hivex.Hivex(str(software))
    return windows_info(
        root=root,
        arch=layout.arch,
        systemroot=layout.systemroot,
        system=_reg_tree(s, s.root(), "SYSTEM"),
        software=_reg_tree(w, w.root(), "SOFTWARE"),
        disks=DiskFacts(firmware=layout.firmware),
    )


def _root_device(device: str, layout: WindowsLayout) -> str:
    number = next(n for n, p in enumerate(layout.partitions, start=1) if p.role == "c")
    return f"{device}{number}"


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


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    work = tmp_path_factory.mktemp("winconv")
    images = build_windows_images([spec for spec, _ in CASES.values()])
    tree = build_virtio_win(work / "virtio-win", CURRENT_ISO)
    # Server 2019 takes its drivers from the ISO file itself, read in place; its expectations are
    # the same as from the unpacked tree.
    iso = make_iso(tree, work / "virtio-win.iso", "-R", "-J")
    before = {p: _sha(p) for image in images.values() for p in image.disks}
    overlays: list[str] = []
    first_device: dict[str, int] = {}
    for name in CASES:
        first_device[name] = len(overlays)
        for n, disk in enumerate(images[name].disks):
            overlay = work / f"{name}-{n}.qcow2"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(disk), str(overlay)],
                check=True,
            )
            overlays.append(str(overlay))
    appliance = Appliance(overlays)
    results: dict[str, Result] = {}
    try:
        g = appliance.launch()
        devices = g.list_devices()
        for name, (_spec, vmx) in CASES.items():
            layout = images[name].layout
            root = _root_device(devices[first_device[name]], layout)
            if layout.firmware == "uefi":
                # Take the fallback boot file's folder away, as some installs lack it.
                esp = f"{devices[first_device[name]]}1"
                g.mount(esp, "/")
                g.rm_rf(g.case_sensitive_path("/EFI/Boot"))
                g.umount_all()
            g.mount(root, "/")
            g.download(
                g.case_sensitive_path("/Windows/System32/config/SYSTEM"), str(work / f"{name}-SYSTEM-before")
            )
            g.download(
                g.case_sensitive_path("/Windows/System32/config/SOFTWARE"),
                str(work / f"{name}-SOFTWARE-before"),
            )
            info = _read_info(work / f"{name}-SYSTEM-before", work / f"{name}-SOFTWARE-before", root, layout)
            vm = load_source_vm(str(VMX / vmx))

            def replan(caps: GuestCaps, vm: SourceVM = vm) -> DomainPlan:
                return plan_domain(vm, OPTS, caps)

            source = iso if name == "win2019" else tree
            ctx = WindowsContext(g, info, vm, WindowsOptions(virtio_win=str(source)), log=lambda _m: None)
            started = time.monotonic()
            convert_windows(ctx, replan)
            seconds = time.monotonic() - started
            system, software = work / f"{name}-SYSTEM", work / f"{name}-SOFTWARE"
            g.download(g.case_sensitive_path("/Windows/System32/config/SYSTEM"), str(system))
            g.download(g.case_sensitive_path("/Windows/System32/config/SOFTWARE"), str(software))
            files = _files(g, layout.systemroot)
            g.umount_all()
            if layout.firmware == "uefi":
                g.mount(f"{devices[first_device[name]]}1", "/")
                files.update({f"esp:{k}": v for k, v in _walk(g, g.case_sensitive_path("/EFI")).items()})
                g.umount_all()
            results[name] = Result(
                layout,
                info,
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
    finally:
        appliance.close()
    assert {p: _sha(p) for p in before} == before, "a source image changed"
    yield results


def _value(hive: Path, path: tuple[str, ...], name: str) -> tuple[int, bytes] | None:
    import hivex

    h = hivex.Hivex(str(hive))
    node = h.root()
    for part in path:
        node = h.node_get_child(node, part)
        if node is None:
            return None
    value = h.node_get_value(node, name)
    return h.value_value(value) if value is not None else None


def _assert_keys(result: Result, keys: list[reg.RegKey]) -> None:
    hives = {"SYSTEM": result.system, "SOFTWARE": result.software}
    for key in keys:
        for value in key.values:
            got = _value(hives[key.hive], key.path, value.name)
            where = "\\".join((key.hive, *key.path))
            assert got == (int(value.type), value.data), f"{where} {value.name!r}: {got}"


def _storage(result: Result, service: str) -> reg.StorageDriver:
    """The StorageDriver the conversion must have registered, from the files it wrote."""
    inf_path = next(p for p in result.files if p.endswith(f"/drivers/virtio/{service}/{service}.inf"))
    inf_bytes = result.files[inf_path]
    published = (
        next(p for p, data in result.files.items() if "/inf/oem" in p and data == inf_bytes)
        if (result.info.driver_database)
        else "/windows/inf/oem0.inf"
    )
    return reg.StorageDriver(
        service=service,
        inf=parse_inf(f"{service}.inf", inf_bytes.decode()),
        inf_bytes_sha256=reg.sha256_hex(inf_bytes),
        arch=result.info.arch,
        published_inf=posixpath.basename(published),
    )


def _expected_first_boot(
    result: Result, drivers: tuple[str, ...], msi: str | None, legacy: bool = False
) -> str:
    ips, _ = plan_static_ips(result.info.nics, [n.mac for n in result.plan.nics])
    removal = plan_tools_removal(result.info)
    return fb.script(
        fb.FirstBoot(
            pnputil=not legacy,
            drivers=tuple(fb.staged_inf(d, f"{'vioser' if d == 'vioserial' else d}.inf") for d in drivers),
            guest_agent_msi=msi,
            uninstall=removal.uninstall,
            static_ips=tuple(ips),
            disks=1 if legacy else len(result.plan.disks),
        )
    )


def _vmware_disabled(result: Result) -> None:
    ccs = result.info.current_control_set
    disabled = [s for s in plan_tools_removal(result.info).disable]
    assert disabled, "the phony image has VMware services"
    _assert_keys(
        result, [reg.RegKey("SYSTEM", (ccs, "Services", s.name), (reg.dword("Start", 4),)) for s in disabled]
    )
    for s in disabled:
        assert (
            Change(
                "vmware-tools",
                f"{s.name} disabled (Start {s.start} -> 4)",
                f"HKLM\\SYSTEM\\{ccs}\\Services\\{s.name}",
            )
            in result.changes
        )


def test_server_2019_driver_database(converted: dict[str, Result]) -> None:
    r = converted["win2019"]
    assert (r.caps.machine, r.caps.disk_bus, r.caps.nic_model) == ("q35", "virtio", "virtio")
    assert r.caps.balloon and r.caps.virtio_rng and r.caps.guest_agent and r.caps.hyperv == "full"
    assert [d.bus for d in r.plan.disks] == ["virtio"] * len(r.plan.disks)
    assert {n.model for n in r.plan.nics} == {"virtio"}
    storage = _storage(r, "viostor")
    package = reg.driver_package(storage)
    # The boot driver, the DriverStore package and its published INF: real files, same bytes.
    inf = r.files["/windows/drivers/virtio/viostor/viostor.inf"]
    sys_bytes = r.files["/windows/drivers/virtio/viostor/viostor.sys"]
    assert r.files["/windows/system32/drivers/viostor.sys"] == sys_bytes
    assert sys_bytes[:2] == b"MZ" and b"PE\0\0\x64\x86" in sys_bytes
    repository = f"/windows/system32/driverstore/filerepository/{package}"
    for name in ("viostor.inf", "viostor.sys", "viostor.cat"):
        assert r.files[f"{repository}/{name}"] == r.files[f"/windows/drivers/virtio/viostor/{name}"]
    assert r.files[f"/windows/inf/{storage.published_inf}"] == inf
    keys = reg.storage_driver_keys(r.info.current_control_set, storage, driver_database=True)
    _assert_keys(r, keys)
    # Nothing in the CriticalDeviceDatabase on 8 and later.
    assert (
        _value(
            r.system,
            (
                r.info.current_control_set,
                "Control",
                "CriticalDeviceDatabase",
                "pci#ven_1af4&dev_1001&subsys_00021af4&rev_00",
            ),
            "Service",
        )
        is None
    )
    staged = ("viostor", "vioscsi", "netkvm", "balloon", "vioserial", "viorng")
    for driver in staged:
        assert any(p.startswith(f"/windows/drivers/virtio/{driver}/") for p in r.files), driver
    device_path = _value(r.software, ("Microsoft", "Windows", "CurrentVersion"), "DevicePath")
    assert device_path is not None and device_path[0] == 2
    text = device_path[1].decode("utf-16-le").rstrip("\0")
    assert text.split(";")[-6:] == [f"%SystemRoot%\\Drivers\\VirtIO\\{d}" for d in staged]
    _vmware_disabled(r)
    # First boot: hook, SAN policy, the script and its files.
    _assert_keys(r, [fb.setup_hook(enable=True), fb.san_policy_key(r.info.current_control_set)])
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    assert script == _expected_first_boot(r, staged[1:], "qemu-ga-x86_64.msi")
    assert (
        'pnputil -i -a "%SystemRoot%\\Drivers\\VirtIO\\viostor' not in script
    )  # already a DriverStore package
    assert "msiexec.exe /x {" in script and "/qn /norestart" in script
    assert "static 192.0.2.10 255.255.255.0 192.0.2.1 1" in script
    assert r.files["/windows/vm2kvm/qemu-ga-x86_64.msi"][:8] == bytes.fromhex("d0cf11e0a1b11ae1")
    assert r.files["/windows/vm2kvm/disks.txt"].decode().startswith("san policy=OnlineAll\r\n")
    assert [c.area for c in r.changes if c.area == "first-boot"]
    # The VMX has secure boot on and two NICs for the guest's one adapter.
    assert [n.key for n in r.notes] == ["uefi.secureBoot.enabled", None]
    assert (
        r.notes[1].message == "the guest has one network adapter, the VM 2 NICs: its static IP goes to NIC 1"
    )


def test_server_2008r2_critical_device_database(converted: dict[str, Result]) -> None:
    r = converted["win2008r2"]
    assert (r.caps.disk_bus, r.caps.nic_model, r.caps.hyperv) == ("virtio", "virtio", "full")
    storage = _storage(r, "viostor")
    _assert_keys(r, reg.storage_driver_keys(r.info.current_control_set, storage, driver_database=False))
    assert not any("DriverStore" in p for p in r.files)
    assert _value(r.system, ("DriverDatabase",), "") is None
    _vmware_disabled(r)
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    staged = ("viostor", "vioscsi", "netkvm", "balloon", "vioserial", "viorng")
    assert script == _expected_first_boot(r, staged, "qemu-ga-x86_64.msi")


def test_windows_7_32bit_takes_x86_drivers(converted: dict[str, Result]) -> None:
    r = converted["win7-x86"]
    assert (r.caps.disk_bus, r.caps.nic_model, r.caps.guest_agent) == ("virtio", "virtio", True)
    sys_bytes = r.files["/windows/system32/drivers/viostor.sys"]
    assert sys_bytes[0x40:0x46] == b"PE\0\0\x4c\x01"  # i386 machine
    assert r.files["/windows/drivers/virtio/viostor/viostor.inf"].decode().count("[RHEL.NTx86]") == 1
    _assert_keys(
        r, reg.storage_driver_keys(r.info.current_control_set, _storage(r, "viostor"), driver_database=False)
    )
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    assert 'msiexec.exe /i "%V%\\qemu-ga-i386.msi"' in script
    assert "/windows/vm2kvm/qemu-ga-i386.msi" in r.files


def test_xp_without_drivers_falls_back(converted: dict[str, Result]) -> None:
    r = converted["winxp-sp3-x86"]
    assert (r.caps.machine, r.caps.disk_bus, r.caps.cdrom_bus, r.caps.nic_model) == (
        "pc",
        "ide",
        "ide",
        "rtl8139",
    )
    assert [d.bus for d in r.plan.disks] == ["ide"] * len(r.plan.disks) and {
        n.model for n in r.plan.nics
    } == {"rtl8139"}
    assert (
        len(r.notes) == 2
        and "disks on IDE" in r.notes[0].message
        and "NICs are rtl8139" in r.notes[1].message
    )
    assert not any(p.startswith("/windows/drivers/") for p in r.files)
    assert "/windows/system32/drivers/viostor.sys" not in r.files
    assert _value(r.system, (r.info.current_control_set, "Services", "viostor"), "Start") is None
    _vmware_disabled(r)
    script = r.files["/windows/vm2kvm/firstboot.cmd"].decode()
    assert script == _expected_first_boot(r, (), None, legacy=True)
    assert "pnputil" not in script and "diskpart" not in script


def test_windows_11_uefi_fallback_boot_file(converted: dict[str, Result]) -> None:
    r = converted["win11-uefi"]
    manager = next(v for k, v in r.files.items() if k == "esp:/efi/microsoft/boot/bootmgfw.efi")
    fallback = [k for k in r.files if k == "esp:/efi/boot/bootx64.efi"]
    assert len(fallback) == 1 and r.files[fallback[0]] == manager
    assert any(c.area == "bootloader" and "bootx64.efi" in c.summary for c in r.changes)
    assert r.caps.clock_offset == "localtime" and r.caps.disk_bus == "virtio"


def test_conversion_time(converted: dict[str, Result]) -> None:
    # Registry and file edits only: no guest tool runs, so this is seconds, not minutes.
    for r in converted.values():
        assert r.seconds < 60, (r.layout.name, r.seconds)
