"""Shared set-up for the appliance-level tests of the tools/initramfs/xorg/selinux/agent steps.

Each test module launches one appliance holding fresh qcow2 overlays of the
phony guests it names (one overlay per scenario, so scenarios never see each
other's edits); a test mounts its scenario's disk and gets a GuestContext.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testbed.guests.phony import PhonyGuest, build_images
from tests.core.vmware.vmx_support import BASE, build, good_disk
from vm2kvmd.convert.context import ConversionOptions, GuestContext
from vm2kvmd.core.guest.info import DeviceMap, GuestInfo, Kernel
from vm2kvmd.core.hardware.model import SourceVM
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import DomainPlan, PlanOptions

VIRTIO = frozenset({"virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi"})
OTHERS = frozenset({"ahci", "libahci", "ata_piix", "e1000", "vmxnet3", "vmw_pvscsi"})


class Appliance:
    """One launched handle; ``disk(name)`` is the appliance device of scenario ``name``."""

    def __init__(self, g: Any, names: list[str]) -> None:
        self.g = g
        self.names = names

    def disk(self, name: str) -> str:
        devices: list[str] = self.g.list_devices()
        return devices[self.names.index(name)]


def launch(scenarios: dict[str, Callable[[], PhonyGuest]], work: Path) -> Iterator[Appliance]:
    import guestfs

    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    specs = {name: spec() for name, spec in scenarios.items()}
    images = build_images(list({s.name: s for s in specs.values()}.values()))
    g = guestfs.GuestFS(python_return_dict=True)
    for name, spec in specs.items():
        overlay = work / f"{name}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(images[spec.name]), overlay],
            check=True,
        )
        g.add_drive_opts(str(overlay), format="qcow2", readonly=False)
    g.launch()
    try:
        yield Appliance(g, list(specs))
    finally:
        g.close()


def context(
    g: Any,
    tmp_path: Path,
    guest: GuestInfo,
    mounts: list[tuple[str, str]],
    caps: GuestCaps | None = None,
    options: ConversionOptions | None = None,
) -> GuestContext:
    g.umount_all()
    for mountpoint, device in mounts:
        g.mount(device, mountpoint)
    vm = build(
        tmp_path,
        BASE + 'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "d.vmdk"\n',
        good_disk(),
    )

    def replan(caps: GuestCaps) -> DomainPlan:
        options = PlanOptions(target_dir="/pool", new_uuid="11111111-2222-3333-4444-555555555555")
        return plan_domain(vm, options, caps)

    def no_devices(_vm: SourceVM, _plan: DomainPlan) -> DeviceMap:
        return DeviceMap()

    return GuestContext(
        g=g,
        guest=guest,
        vm=vm,
        caps=caps or GuestCaps(disk_bus="virtio", nic_model="virtio"),
        replan=replan,
        device_map=no_devices,
        options=options or ConversionOptions(),
        log=lambda _m: None,
    )


def guest(root: str, distro: str, **fields: Any) -> GuestInfo:
    base = GuestInfo(
        root=root, os_type="linux", distro=distro, product_name=distro, major=1, minor=0, arch="x86_64"
    )
    return dataclasses.replace(base, **fields)


def kernel(
    version: str, vmlinuz: str, initrd: str | None, modules: frozenset[str] = VIRTIO | OTHERS
) -> Kernel:
    return Kernel(version, vmlinuz, initrd, modules=modules)


def text(g: Any, path: str) -> str:
    return str(g.read_file(path).decode())
