"""Make the booting kernel's initramfs carry the virtio drivers of the root disk.

Only when the disks go on virtio (``caps.disk_bus`` virtio or scsi).  The
drivers are added to the guest's own configuration (so later kernel updates
keep them) and the initramfs is rebuilt with the guest's own tool.  If that
is impossible the disks stay on SATA/IDE (``without_virtio_disk``): a slower
VM that boots beats a failed job; unless the ``disk-bus`` option named the
bus, which is then refused (``DiskBusUnsupported``).
"""

from __future__ import annotations

from vm2kvmd.convert.context import GuestContext
from vm2kvmd.convert.linux.tools import guest_tool
from vm2kvmd.core.guest.info import Kernel
from vm2kvmd.core.guest.linux import initramfs as li
from vm2kvmd.core.guest.linux.caps import without_virtio_disk
from vm2kvmd.core.guest.linux.tools import folded
from vm2kvmd.core.planning.diskbus import unsupported_bus

AREA = "initramfs"
_SUSE = ("sles", "suse-based", "opensuse", "opensuse-leap", "opensuse-tumbleweed")


class _Unusable(Exception):
    """The initramfs cannot be given the drivers; the message says why (for the note)."""


def ensure_virtio_initramfs(ctx: GuestContext) -> None:
    if ctx.caps.disk_bus not in ("virtio", "scsi"):
        return
    kernel = ctx.guest.booting_kernel
    if kernel is None:
        return  # caps_for_linux never picks virtio without a kernel
    plan = li.plan_modules(kernel, ctx.caps.disk_bus, ctx.caps.nic_model)
    try:
        if plan.disk_missing:
            raise _Unusable(f"kernel {kernel.version} has no {', '.join(plan.missing)} driver")
        if not plan.add:
            ctx.log(
                f"initramfs: {', '.join(plan.builtin)} built into kernel {kernel.version}; nothing to add"
            )
            return
        if kernel.initrd is None:
            raise _Unusable(f"kernel {kernel.version} has no initramfs to put {', '.join(plan.add)} in")
        _rebuild(ctx, kernel, kernel.initrd, plan.add)
    except _Unusable as why:
        if ctx.options.disk_bus is not None:
            # Asked for by name: another bus would not be what the caller wanted.
            hint = "make the guest's initramfs tool work in the VM first"
            raise unsupported_bus(ctx.options.disk_bus, str(why), hint) from why
        caps, note = without_virtio_disk(ctx.caps, kernel, str(why))
        ctx.set_caps(caps)
        ctx.note(note.message)


def _rebuild(ctx: GuestContext, kernel: Kernel, initrd: str, modules: tuple[str, ...]) -> None:
    tool = ctx.guest.initramfs_tool
    if tool == "initramfs-tools":
        _configure_initramfs_tools(ctx, modules)
        argv = li.update_initramfs_command(kernel.version)
    elif tool == "dracut":
        ctx.g.mkdir_p("/etc/dracut.conf.d")
        summary = f"{li.DRACUT_CONF}: add_drivers {' '.join(modules)}"
        ctx.edit(AREA, li.DRACUT_CONF, li.dracut_conf_text(modules), summary)
        argv = li.dracut_command(initrd, kernel.version, modules)
    elif tool == "mkinitrd" and ctx.guest.distro in _SUSE:
        _configure_suse_kernel(ctx, modules)
        argv = li.suse_mkinitrd_command(kernel.vmlinuz, initrd)
    elif tool == "mkinitrd":
        argv = li.redhat_mkinitrd_command(initrd, kernel.version, modules)
    else:
        raise _Unusable(f"no known initramfs tool in the guest ({tool}) to add {', '.join(modules)}")

    name = argv[0]
    path = guest_tool(ctx, name)
    if path is None:
        raise _Unusable(f"{name} not found in the guest")
    argv = [path, *argv[1:]]
    backup = ctx.backup(initrd, li.BACKUP_SUFFIX)
    try:
        output = ctx.g.sh(folded(li.shell_line(argv)))
    except RuntimeError as err:
        if backup is not None:
            ctx.g.cp_a(backup, initrd)  # a half-written image must not be what boots
        ctx.log(f"initramfs: {name} failed: {str(err).strip()}")
        raise _Unusable(f"{name} failed to rebuild {initrd}: {str(err).strip()[:300]}") from err
    if output.strip():
        ctx.log(f"{name}: {output.strip()}")
    ctx.change(
        AREA, f"rebuilt {initrd} with {', '.join(modules)} ({name}); old image kept as {backup}", initrd
    )
    try:
        _verify(ctx, initrd, modules)
    except _Unusable:
        if backup is not None:
            ctx.g.cp_a(backup, initrd)
            ctx.change(AREA, f"restored {initrd} from {backup} (the rebuilt image lacks the drivers)", initrd)
        raise


def _configure_initramfs_tools(ctx: GuestContext, modules: tuple[str, ...]) -> None:
    text = ctx.read_text(li.INITRAMFS_TOOLS_MODULES) or ""
    new, added = li.add_to_modules_file(text, modules)
    if added:
        ctx.backup(li.INITRAMFS_TOOLS_MODULES)
        ctx.g.mkdir_p("/etc/initramfs-tools")
        ctx.edit(
            AREA, li.INITRAMFS_TOOLS_MODULES, new, f"{li.INITRAMFS_TOOLS_MODULES}: added {', '.join(added)}"
        )
    conf = ctx.read_text(li.INITRAMFS_TOOLS_CONF)
    most = li.modules_dep_to_most(conf) if conf is not None else None
    if most is not None:
        ctx.backup(li.INITRAMFS_TOOLS_CONF)
        ctx.edit(
            AREA,
            li.INITRAMFS_TOOLS_CONF,
            most,
            f"{li.INITRAMFS_TOOLS_CONF}: MODULES=dep -> MODULES=most (dep picks the appliance's drivers)",
        )


def _configure_suse_kernel(ctx: GuestContext, modules: tuple[str, ...]) -> None:
    text = ctx.read_text(li.SUSE_SYSCONFIG_KERNEL) or ""
    new, added = li.add_initrd_modules(text, modules)
    if added:
        ctx.backup(li.SUSE_SYSCONFIG_KERNEL)
        ctx.edit(
            AREA,
            li.SUSE_SYSCONFIG_KERNEL,
            new,
            f"{li.SUSE_SYSCONFIG_KERNEL}: INITRD_MODULES += {' '.join(added)}",
        )


def _verify(ctx: GuestContext, initrd: str, modules: tuple[str, ...]) -> None:
    """List the new image when the guest has a lister; a listing without the driver means no virtio."""
    for lister in ("lsinitramfs", "lsinitrd"):
        lister_path = guest_tool(ctx, lister)
        if lister_path is None:
            continue
        try:
            lines = ctx.g.sh_lines(li.shell_line([lister_path, initrd]))
        except RuntimeError as err:
            ctx.log(f"initramfs: could not verify {initrd} with {lister}: {str(err).strip()}")
            return
        found = li.modules_in_listing(lines)
        if not found:
            ctx.log(f"initramfs: {lister} listed no modules in {initrd}; not verified")
            return
        missing = [m for m in modules if m.replace("-", "_") not in found]
        if missing:
            raise _Unusable(f"{initrd} was rebuilt but lacks {', '.join(missing)} ({lister})")
        ctx.log(f"initramfs: verified with {lister}: {initrd} contains {', '.join(modules)}")
        return
    ctx.log(f"initramfs: no lsinitramfs/lsinitrd in the guest; {initrd} not verified")
