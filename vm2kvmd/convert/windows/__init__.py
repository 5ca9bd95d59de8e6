"""Convert one Windows guest, in the appliance, with its system volume mounted at ``/``.

1. Drivers first: what was injected decides the disk bus and NIC model
   (``ctx.caps``), and the domain plan the later steps read follows it.
2. VMware services and drivers are disabled in the hive (Start 4).
3. The first boot is scheduled: staged drivers, guest agent, the Tools'
   own uninstall, static IPs onto the NICs with the planned MACs, disks
   online.
4. On UEFI, ``\\EFI\\Boot\\bootx64.efi`` (the path firmware boots when it
   has no boot entry, as on a new domain's empty NVRAM) is given Windows'
   boot manager when it is missing; this unmounts the system volume.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vm2kvmd.convert.windows import drivers, efi, firstboot
from vm2kvmd.convert.windows.context import WindowsContext
from vm2kvmd.convert.windows.virtio_win import open_virtio_win
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.plan import DomainPlan


def convert_windows(
    ctx: WindowsContext, replan: Callable[[GuestCaps], DomainPlan]
) -> list[tuple[str, float]]:
    """Run the steps; returns (step, seconds) timings.  ``ctx.caps`` holds the final devices after."""
    timings: list[tuple[str, float]] = []
    started = time.monotonic()
    tree = open_virtio_win(ctx.options.virtio_win)
    try:
        if tree.root is None:
            ctx.log(f"drivers: no virtio-win tree at {ctx.options.virtio_win}")
        injected = drivers.inject_drivers(ctx, tree)
        timings.append(("drivers", time.monotonic() - started))
        step = time.monotonic()
        uninstall = firstboot.disable_vmware_services(ctx)
        timings.append(("vmware-tools", time.monotonic() - step))
        step = time.monotonic()
        firstboot.schedule_first_boot(ctx, tree, injected, uninstall, replan(ctx.caps))
        timings.append(("first-boot", time.monotonic() - step))
    finally:
        tree.close()
    step = time.monotonic()
    efi.ensure_fallback_boot(ctx)
    timings.append(("efi", time.monotonic() - step))
    return timings
