"""The UEFI fallback boot file on a disk the test lays out: FAT partitions that are not the ESP,
and an ESP whose ``\\EFI\\Boot`` folder is missing altogether (one appliance, a few seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vm2kvmd.convert.windows.context import WindowsContext, WindowsOptions
from vm2kvmd.convert.windows.efi import ensure_fallback_boot
from vm2kvmd.core.guest.windows.info import DiskFacts, RegKey, windows_info
from vm2kvmd.sources.vmware.vm import load_source_vm

pytestmark = pytest.mark.slow

VMX = Path(__file__).resolve().parents[2] / "data" / "vmx" / "esxi-win2019-efi.vmx"
MANAGER = b"bootmgfw.efi of the test"


@pytest.fixture(scope="module")
def g(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import guestfs

    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    disk = tmp_path_factory.mktemp("efi") / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.add_drive_opts(str(disk), format="raw", readonly=False)
        g.launch()
        g.part_init("/dev/sda", "gpt")
        for n in range(3):
            g.part_add("/dev/sda", "p", 2048 + n * 40960, 2048 + (n + 1) * 40960 - 1)
            g.mkfs("vfat", f"/dev/sda{n + 1}")
        # sda1: an OEM data partition without \EFI; sda2: \EFI but no \EFI\Microsoft.
        g.mount("/dev/sda2", "/")
        g.mkdir_p("/EFI/Dell")
        g.umount_all()
        # sda3: the ESP, spelled as some installers do, and without \EFI\Boot.
        g.mount("/dev/sda3", "/")
        g.mkdir_p("/efi/microsoft/boot")
        g.write("/efi/microsoft/boot/bootmgfw.efi", MANAGER)
        g.umount_all()
        yield g
    finally:
        g.close()


def test_fallback_made_in_a_missing_boot_folder_past_other_fat_partitions(g: Any) -> None:
    info = windows_info(
        root="/dev/sda1",
        arch="x86_64",
        systemroot="/Windows",
        system=RegKey("SYSTEM"),
        software=RegKey("SOFTWARE"),
        disks=DiskFacts(firmware="uefi"),
    )
    vm = load_source_vm(str(VMX))
    ctx = WindowsContext(g, info, vm, WindowsOptions(virtio_win=""), log=lambda _m: None)
    g.mount("/dev/sda1", "/")
    ensure_fallback_boot(ctx)
    assert g.mountpoints() == {"/dev/sda1": "/"}  # the system volume is back
    assert [(c.area, c.path) for c in ctx.changes] == [("bootloader", "/efi/Boot/bootx64.efi")]
    assert ctx.notes == []
    g.umount_all()
    g.mount("/dev/sda3", "/")
    assert g.read_file("/efi/Boot/bootx64.efi") == MANAGER
    g.umount_all()
