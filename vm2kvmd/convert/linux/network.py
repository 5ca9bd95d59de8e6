"""Keep the guest on the network: pin each NIC's VMware-era name to its MAC (see core.guest.linux.network)."""

from __future__ import annotations

from vm2kvmd.convert.context import GuestContext
from vm2kvmd.core.guest.linux.network import (
    CONFIG_GLOBS,
    PERSISTENT_RULES,
    UDEV_RULES,
    NicPin,
    configured_names,
    link_file,
    plan_pins,
    udev_rules,
)

AREA = "network"


def read_network_configs(ctx: GuestContext) -> dict[str, str]:
    """path -> text of every file in the guest that may name an interface."""
    files: dict[str, str] = {}
    for pattern in CONFIG_GLOBS:
        for path in ctx.g.glob_expand(pattern):
            text = ctx.read_text(path)
            if text is not None:
                files[path] = text
    return files


def pin_nic_names(ctx: GuestContext) -> None:
    files = read_network_configs(ctx)
    systemd = ctx.guest.init_system == "systemd"
    plan = plan_pins(configured_names(files), ctx.plan.nics, systemd=systemd)
    for message in plan.notes:
        ctx.note(message)
    if PERSISTENT_RULES in files:
        # Its MAC lines still match (the MACs are kept), so it is left as it is.
        ctx.note(f"{PERSISTENT_RULES} kept: its MAC-to-name rules still match on KVM")
    if systemd:
        for pin in plan.pins:
            _write(ctx, pin.path, link_file(pin), [pin])
    elif plan.pins:
        _write(ctx, UDEV_RULES, udev_rules(plan.pins), list(plan.pins))


def _write(ctx: GuestContext, path: str, text: str, pins: list[NicPin]) -> None:
    """Write one pin file, one Change per pinned NIC; a file already there is ours or kept as a backup."""
    if ctx.read_text(path) == text:
        return
    ctx.backup(path)
    ctx.g.mkdir_p(path.rsplit("/", 1)[0])
    ctx.write_text(path, text)
    for pin in pins:
        ctx.change(AREA, f"{pin.nic} {pin.mac} keeps its name {pin.name} ({path})", path)
