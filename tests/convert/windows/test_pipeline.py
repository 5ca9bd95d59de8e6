"""The conversion dispatch on a phony Server 2019: inspection, the Windows steps, trim, the report.

Goes through ``pipeline.conversion._convert`` (what ``LibguestfsConverter``
runs in its worker thread) with its own appliance over qcow2 overlays, so
the Windows branch is exercised as a migration runs it, with the options a
migration with ``--disk-bus virtio-scsi`` passes down.  Its time is the
"Windows conversion of a phony Server 2019" figure in docs/windows-conversion.md.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from testbed.guests.windows.build import build_windows_images
from testbed.guests.windows.layout import win2019
from testbed.virtio_win import CURRENT_ISO, build_virtio_win
from vm2kvmd.adapters.appliance import Appliance
from vm2kvmd.core.guest.windows.firstboot import CMDLINE
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions
from vm2kvmd.core.report import build_report
from vm2kvmd.pipeline.conversion import _conversion_options, _convert
from vm2kvmd.sources.vmware.vm import load_source_vm

pytestmark = pytest.mark.slow
VMX = Path(__file__).resolve().parents[2] / "data" / "vmx" / "esxi-win2019-efi.vmx"


def test_dispatch_converts_windows(tmp_path: Path) -> None:
    image = build_windows_images([win2019])["win2019"]
    tree = build_virtio_win(tmp_path / "virtio-win", CURRENT_ISO)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in image.disks}
    overlays = []
    for n, disk in enumerate(image.disks):
        overlay = tmp_path / f"d{n}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(disk), str(overlay)],
            check=True,
        )
        overlays.append(str(overlay))
    vm = load_source_vm(str(VMX))

    def replan(caps: GuestCaps) -> DomainPlan:
        return plan_domain(
            vm, PlanOptions(target_dir="/images", new_uuid="00000000-0000-4000-8000-000000000001"), caps
        )

    log: list[str] = []
    started = time.monotonic()
    # The disk-bus option as a migration passes it down (MigrateOptions -> ConversionOptions).
    options = _conversion_options(MigrateOptions(virtio_win=str(tree), disk_bus="virtio-scsi"), ())
    assert (options.virtio_win, options.disk_bus) == (str(tree), "virtio-scsi")
    conversion = _convert(Appliance(overlays), vm, replan, options, log.append, frozenset())
    seconds = time.monotonic() - started
    print(f"phony Server 2019 converted in {seconds:.1f} s: {conversion.timings}")
    assert conversion.guest is not None and conversion.guest.windows is not None
    assert conversion.guest.windows.product_name == "Windows Server 2019 Standard"
    caps = conversion.caps
    assert (caps.machine, caps.disk_bus, caps.nic_model, caps.hyperv) == ("q35", "scsi", "virtio", "full")
    assert {d.bus for d in replan(caps).disks} == {"scsi"}
    # The libosinfo id comes from the inspected product name, as for Linux guests.
    assert caps.os_id == "http://microsoft.com/win/2k19"
    areas = [c.area for c in conversion.changes]
    assert {"drivers", "vmware-tools", "first-boot"} <= set(areas)
    assert any(c.summary.startswith("vioscsi registered as a boot-start driver") for c in conversion.changes)
    assert any(
        c.summary == f"runs once at the first boot, as SYSTEM before logon: {CMDLINE}"
        for c in conversion.changes
    )
    assert [name for name, _ in conversion.timings][:5] == [
        "launch",
        "inspect",
        "drivers",
        "vmware-tools",
        "first-boot",
    ]
    report = build_report(vm, replan(caps), conversion, list(conversion.notes))
    facts = {f["key"]: f["value"] for f in report["guest"]["facts"]}
    assert facts["version"] == "10.0 build 17763" and facts["vmware-tools"].startswith("VMware Tools")
    assert "first-boot" in [g["area"] for g in report["changes"]]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in image.disks} == before
