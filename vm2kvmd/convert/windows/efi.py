"""UEFI Windows: make the removable-media path boot Windows' boot manager.

A new domain starts with empty UEFI variables, so the "Windows Boot Manager"
entry VMware's NVRAM held is gone and OVMF boots ``\\EFI\\Boot\\bootx64.efi``
(``bootia32.efi`` for 32-bit) from the ESP.  Windows' installer usually
puts a copy there, but not always (and some tools remove it): when it is
missing, ``\\EFI\\Microsoft\\Boot\\bootmgfw.efi`` is copied to it.  The
system volume is unmounted meanwhile and mounted back at ``/`` afterwards.
"""

from __future__ import annotations

import contextlib

from vm2kvmd.convert.windows.context import WindowsContext

AREA = "bootloader"
_BOOTMGFW = "/EFI/Microsoft/Boot/bootmgfw.efi"


def ensure_fallback_boot(ctx: WindowsContext) -> None:
    if ctx.info.firmware != "uefi":
        return
    g = ctx.g
    fallback = "/EFI/Boot/bootx64.efi" if ctx.info.arch == "x86_64" else "/EFI/Boot/bootia32.efi"
    g.umount_all()
    try:
        for partition in g.list_partitions():
            with contextlib.suppress(RuntimeError):
                if g.vfs_type(partition) != "vfat":
                    continue
            try:
                g.mount(partition, "/")
            except RuntimeError:
                continue
            try:
                try:
                    manager = g.case_sensitive_path(_BOOTMGFW)
                except RuntimeError:  # an OEM or data FAT partition: no \EFI\Microsoft
                    continue
                if not g.is_file(manager):
                    continue
                # case_sensitive_path fails when more than the last component is missing, and a
                # missing \EFI\Boot folder is the case this step is for: make it first.
                g.mkdir_p(g.case_sensitive_path(fallback.rsplit("/", 1)[0]))
                target = g.case_sensitive_path(fallback)
                if g.is_file(target):
                    ctx.log(f"efi: {partition} already has {fallback}")
                    return
                g.cp_a(manager, target)
                ctx.change(AREA, f"{fallback} on the EFI system partition {partition} boots Windows", target)
                return
            finally:
                g.umount_all()
        ctx.note(
            "no EFI system partition with \\EFI\\Microsoft\\Boot\\bootmgfw.efi found; the VM may not boot"
        )
    finally:
        g.mount(ctx.info.root, "/")
