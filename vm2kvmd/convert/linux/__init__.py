"""Convert one Linux guest, in the appliance: the steps in the order they depend on each other.

1. VMware Tools go first: their initramfs hooks and modules-load entries
   must not end up in the initramfs rebuilt below.
2. NIC names are pinned to the MACs before the initramfs is rebuilt:
   initramfs-tools loads virtio_net in the initramfs, where udev already
   renames the NIC, and its udev hook copies the ``.link`` pins into the
   image only when the image is built (docs/guest-conversion.md).
3. The initramfs gets the virtio drivers of the booting kernel; if that
   fails the disks stay off virtio (``GuestContext.set_caps``), so the
   device names written afterwards match the bus the VM will really have.
4. Device names (fstab, crypttab, resume=, bootloader configs) become
   ``UUID=``/``LABEL=`` or the new names.  X and modprobe lose VMware-only
   drivers and options; SELinux guests are relabelled at first boot; the
   guest agent is installed at first boot when asked.
5. The bootloader config is regenerated with the guest's own tool, last,
   so it sees every change above.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vm2kvmd.convert.context import GuestContext
from vm2kvmd.convert.linux import agent, devices, initramfs, network, selinux, tools, xorg
from vm2kvmd.errors import ErrorCode, Vm2kvmError

Step = Callable[[GuestContext], None]

STEPS: tuple[tuple[str, Step], ...] = (
    ("vmware-tools", tools.remove_vmware_tools),
    ("network", network.pin_nic_names),
    ("initramfs", initramfs.ensure_virtio_initramfs),
    ("devices", devices.fix_device_names),
    ("xorg", xorg.fix_xorg),
    ("modprobe", xorg.fix_modprobe),
    ("selinux", selinux.relabel),
    ("agent", agent.install_guest_agent),
    ("bootloader", devices.regenerate_bootloader),
)


def convert_linux(ctx: GuestContext, *, skip: frozenset[str] = frozenset()) -> list[tuple[str, float]]:
    """Run every step not in ``skip`` on the mounted guest; returns (step, seconds) timings.

    ``skip`` exists for the tests that prove each fix is needed (the boot
    test with one fix disabled must fail); the daemon never passes it.
    """
    timings: list[tuple[str, float]] = []
    for name, step in STEPS:
        if name in skip:
            ctx.log(f"{name}: skipped")
            continue
        started = time.monotonic()
        try:
            step(ctx)
        except Vm2kvmError:
            raise
        except RuntimeError as err:  # the appliance's errors: the guest tool's own words
            raise Vm2kvmError(
                ErrorCode.CONVERSION_FAILED,
                f"guest conversion step {name} failed: {str(err).strip()}",
                hint="see the job log; migrate with --no-guest-conversion to copy the VM unchanged",
            ) from err
        timings.append((name, time.monotonic() - started))
    return timings
