"""Install qemu-guest-agent at the converted guest's first boot (``--install-guest-agent``).

The domain XML always gets the agent channel; this only puts the agent in
the guest.  See ``vm2kvmd.core.guest.linux.agent`` for why it is a first-boot job.
"""

from __future__ import annotations

from vm2kvmd.convert.context import GuestContext
from vm2kvmd.core.guest.linux import agent as la

AREA = "agent"
_RC_LOCAL = ("/etc/rc.d/rc.local", "/etc/rc.local")  # RHEL's real file first; /etc/rc.local links to it


def install_guest_agent(ctx: GuestContext) -> None:
    if not ctx.options.install_guest_agent:
        return
    systemd = ctx.guest.init_system == "systemd"
    rc_local = _rc_local(ctx) if not systemd else None
    job = la.first_boot(ctx.guest.package_manager, systemd, rc_local)
    if job is None:
        ctx.note(
            f"qemu-guest-agent not installed: no known package manager in the guest "
            f"({ctx.guest.package_manager}); install it after migration"
        )
        return
    ctx.g.mkdir_p("/usr/local/sbin")
    ctx.write_text(la.SCRIPT, job.script)
    ctx.g.chmod(0o755, la.SCRIPT)
    if job.unit is not None:
        ctx.g.mkdir_p("/etc/systemd/system/multi-user.target.wants")
        ctx.write_text(la.UNIT, job.unit)
        ctx.g.ln_sf(la.UNIT, la.WANTS_LINK)
        where = f"systemd unit {la.UNIT_NAME}"
    else:
        assert rc_local is not None
        ctx.backup(rc_local)
        ctx.write_text(rc_local, la.add_to_rc_local(ctx.read_text(rc_local)))
        ctx.g.chmod(0o755, rc_local)
        where = rc_local
    ctx.change(
        AREA,
        f"qemu-guest-agent will be installed at first boot ({ctx.guest.package_manager}, from {where})",
        la.SCRIPT,
    )


def _rc_local(ctx: GuestContext) -> str:
    for path in _RC_LOCAL:
        if ctx.g.is_file(path):
            return path
    return "/etc/rc.d/rc.local" if ctx.g.is_dir("/etc/rc.d") else "/etc/rc.local"
