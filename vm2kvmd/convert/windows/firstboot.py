"""VMware Tools disabled offline, and the first boot scheduled (``core.guest.windows.firstboot``).

VMware's services and drivers are set to ``Start`` 4 here, in the hive, so
none of them runs on KVM even when the Tools' own uninstaller fails at first
boot.  The first boot then installs the staged drivers and the guest agent,
runs that uninstaller, re-applies static IPs and brings the disks online.
"""

from __future__ import annotations

import posixpath
import struct

from vm2kvmd.convert.windows.context import WindowsContext
from vm2kvmd.convert.windows.drivers import Injected
from vm2kvmd.convert.windows.virtio_win import VirtioWinTree
from vm2kvmd.core.guest.windows import firstboot as fb
from vm2kvmd.core.guest.windows.caps import is_legacy
from vm2kvmd.core.guest.windows.network import plan_static_ips
from vm2kvmd.core.guest.windows.registry import RegKey, dword
from vm2kvmd.core.guest.windows.tools import plan_tools_removal
from vm2kvmd.core.planning.plan import DomainPlan

TOOLS = "vmware-tools"
FIRST_BOOT = "first-boot"


def disable_vmware_services(ctx: WindowsContext) -> tuple[tuple[str, str], ...]:
    """Set every VMware service and driver to disabled; returns the uninstalls for the first boot."""
    info = ctx.info
    removal = plan_tools_removal(info)
    if removal.disable:
        ccs = info.current_control_set
        ctx.set_values(
            RegKey("SYSTEM", (ccs, "Services", s.name), (dword("Start", 4),)) for s in removal.disable
        )
        for service in removal.disable:
            ctx.change(
                TOOLS,
                f"{service.name} disabled (Start {service.start} -> 4)",
                f"HKLM\\SYSTEM\\{ccs}\\Services\\{service.name}",
            )
    for product in removal.not_uninstallable:
        ctx.note(f"{product} has no quiet uninstall; its services are disabled, remove it in the guest")
    return removal.uninstall


def schedule_first_boot(
    ctx: WindowsContext,
    tree: VirtioWinTree,
    injected: Injected,
    uninstall: tuple[tuple[str, str], ...],
    plan: DomainPlan,
) -> None:
    info = ctx.info
    legacy = is_legacy(info)
    setup_type = ctx.read_value("SYSTEM", ("Setup",), "SetupType")
    if setup_type and setup_type[0] == 4 and struct.unpack("<I", setup_type[1][:4])[0] != 0:
        # Windows is between setup phases (a sysprepped template): its own CmdLine must run.
        ctx.note(
            "the guest is in the middle of Windows Setup (SetupType is set); no first-boot actions scheduled"
        )
        return
    static_ips, notes = plan_static_ips(info.nics, [n.mac for n in plan.nics])
    for note in notes:
        ctx.note(note.message)
    msi = (
        injected.selection.guest_agent_msi
        if ctx.options.install_guest_agent and ctx.caps.guest_agent
        else None
    )
    msi_name = posixpath.basename(msi).lower() if msi else None
    plan_fb = fb.FirstBoot(
        pnputil=not legacy,
        drivers=injected.staged_infs,
        guest_agent_msi=msi_name,
        uninstall=uninstall,
        static_ips=tuple(static_ips),
        disks=len(plan.disks) if not legacy else 1,
        remove_drivers=info.vmware_infs,
        windows10=info.major >= 10,
    )
    actions = fb.summary(plan_fb)
    if not actions:
        return
    if msi is not None and msi_name is not None:
        ctx.write_file(f"{fb.GUEST_DIR}/{msi_name}", tree.read(msi))
    for name, text in fb.files(plan_fb).items():
        ctx.write_file(f"{fb.GUEST_DIR}/{name}", text.encode("utf-8"))
    keys = [fb.setup_hook(enable=True)]
    if plan_fb.disks > 1:
        keys.append(fb.san_policy_key(info.current_control_set))
    ctx.set_values(keys)
    script = ctx.path(f"{fb.GUEST_DIR}/{fb.SCRIPT}")
    ctx.change(FIRST_BOOT, f"runs once at the first boot, as SYSTEM before logon: {fb.CMDLINE}", script)
    for action in actions:
        ctx.change(FIRST_BOOT, action, script)
    if plan_fb.disks > 1:
        where = f"HKLM\\SYSTEM\\{info.current_control_set}\\Services\\partmgr\\Parameters"
        ctx.change(FIRST_BOOT, "SAN policy OnlineAll: the other disks come up online", where)
    log = posixpath.join(info.systemroot, fb.GUEST_DIR, fb.LOG)
    ctx.log(f"first boot: its log will be {log} in the guest")
