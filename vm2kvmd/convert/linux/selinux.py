"""SELinux guests: relabel at first boot.

The edits of the other steps create files (units, configs, the initramfs)
without the right security contexts.  ``/.autorelabel`` makes the guest's
own init relabel every file system at its first boot (and reboot once);
running setfiles here would cost minutes of emulated appliance time on a big
file system for the same result.
"""

from __future__ import annotations

from vm2kvmd.convert.context import GuestContext

AUTORELABEL = "/.autorelabel"


def relabel(ctx: GuestContext) -> None:
    if ctx.guest.selinux not in ("enforcing", "permissive"):
        return
    if ctx.g.exists(AUTORELABEL):
        ctx.log("selinux: /.autorelabel already present")
        return
    ctx.g.touch(AUTORELABEL)
    ctx.change(
        "selinux",
        f"created {AUTORELABEL}: SELinux ({ctx.guest.selinux}) relabels the file systems at first boot",
        AUTORELABEL,
    )
