"""X11 and modprobe configuration without VMware-only drivers (see ``vm2kvmd.core.guest.linux.xorg``)."""

from __future__ import annotations

from vm2kvmd.convert.context import GuestContext
from vm2kvmd.core.guest.linux import xorg as lx


def fix_xorg(ctx: GuestContext) -> None:
    paths = ["/etc/X11/xorg.conf"]
    if ctx.g.is_dir("/etc/X11/xorg.conf.d"):
        paths += sorted(ctx.g.glob_expand("/etc/X11/xorg.conf.d/*.conf"))
    for path in paths:
        text = ctx.read_text(path)
        if text is None:
            continue
        edit = lx.fix_xorg_conf(text)
        if edit.changed:
            ctx.backup(path)
            ctx.edit("xorg", path, edit.text, f"{path}: {'; '.join(edit.summaries)}")


def fix_modprobe(ctx: GuestContext) -> None:
    disk = lx.DISK_DRIVER.get(ctx.caps.disk_bus)
    nic = lx.NIC_DRIVER.get(ctx.caps.nic_model)
    paths = ["/etc/modprobe.conf"]
    if ctx.g.is_dir("/etc/modprobe.d"):
        paths += sorted(ctx.g.glob_expand("/etc/modprobe.d/*.conf"))
    for path in paths:
        text = ctx.read_text(path)
        if text is None:
            continue
        edit = lx.fix_modprobe_conf(text, disk, nic)
        if edit.changed:
            ctx.backup(path)
            ctx.edit("modprobe", path, edit.text, f"{path}: {'; '.join(edit.summaries)}")
