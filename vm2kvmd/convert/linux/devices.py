"""Disk names inside the guest, and the bootloader config regenerated with the guest's own tool.

``fix_device_names`` rewrites every file that names a disk by its VMware-era
kernel name (``/dev/sda1``, ``/dev/hda2``, ``/dev/nvme0n1p3``) to ``UUID=``,
``LABEL=`` or the new name (the rules are in ``core.guest.linux.devices``).
``regenerate_bootloader`` runs last, so ``grub-mkconfig`` sees those edits,
and checks its output for the appliance's ``/dev/sdX`` names afterwards.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator

from vm2kvmd.convert.context import GuestContext
from vm2kvmd.core.guest.info import Filesystem
from vm2kvmd.core.guest.linux.devices import (
    DeviceResolver,
    Replacer,
    Rewritten,
    describe,
    rewrite_bls_entry,
    rewrite_cmdline,
    rewrite_crypttab,
    rewrite_default_grub,
    rewrite_device_map,
    rewrite_fstab,
    rewrite_grub_cfg,
    rewrite_grubenv,
    rewrite_initramfs_resume,
    rewrite_menu_lst,
    rewrite_sysconfig_bootloader,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError

Rewriter = Callable[[str, Callable[[str], str | None]], Rewritten]

AREA = "devices"
_GRUB_CFGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/efi/EFI/*/grub.cfg")
_GRUBENVS = ("/boot/grub/grubenv", "/boot/grub2/grubenv", "/boot/efi/EFI/*/grubenv")
_MENU_LSTS = ("/boot/grub/menu.lst", "/boot/grub/grub.conf", "/boot/efi/EFI/*/grub.conf")
_DEVICE_MAPS = ("/boot/grub/device.map", "/boot/grub2/device.map")
_DEBIAN_FAMILY = frozenset({"debian", "ubuntu", "linuxmint", "kalilinux", "pop", "elementary"})


def _files(ctx: GuestContext) -> Iterator[tuple[str, Rewriter]]:
    """(path or glob, rewriter) of every file that may name a disk."""
    yield "/etc/fstab", rewrite_fstab
    yield "/etc/crypttab", rewrite_crypttab
    yield "/etc/default/grub", rewrite_default_grub
    boot_config = ctx.guest.boot_config
    if boot_config:
        legacy = boot_config.endswith((".lst", ".conf"))
        yield boot_config, rewrite_menu_lst if legacy else rewrite_grub_cfg
    for pattern in _GRUB_CFGS:
        yield pattern, rewrite_grub_cfg
    for pattern in _MENU_LSTS:
        yield pattern, rewrite_menu_lst
    for pattern in _GRUBENVS:
        yield pattern, rewrite_grubenv
    yield "/boot/loader/entries/*.conf", rewrite_bls_entry
    yield "/etc/kernel/cmdline", rewrite_cmdline
    yield "/etc/sysconfig/bootloader", rewrite_sysconfig_bootloader
    yield "/etc/initramfs-tools/conf.d/resume", rewrite_initramfs_resume


def _expand(ctx: GuestContext, pattern: str) -> list[str]:
    """The regular files ``pattern`` names, as real paths (menu.lst and grub.conf are often one file)."""
    paths = ctx.g.glob_expand(pattern) if "*" in pattern else [pattern]
    real: list[str] = []
    for path in paths:
        if ctx.g.exists(path):
            resolved = ctx.g.realpath(path)
            if ctx.g.is_file(resolved):
                real.append(resolved)
    return real


def _facts(ctx: GuestContext) -> Callable[[str], Filesystem | None]:
    """The file system on an appliance device: from inspection, else asked of the appliance."""
    known = {fs.device: fs for fs in ctx.guest.filesystems}
    cache: dict[str, Filesystem | None] = {}

    def facts(device: str) -> Filesystem | None:
        if device in known:
            return known[device]
        if device not in cache:
            try:
                fstype = ctx.g.vfs_type(device)
                cache[device] = Filesystem(
                    device, fstype, ctx.g.vfs_uuid(device) or None, ctx.g.vfs_label(device) or None
                )
            except RuntimeError:  # no such partition, or nothing blkid recognises on it
                cache[device] = None
        return cache[device]

    return facts


def _rewrite(ctx: GuestContext, path: str, rewriter: Rewriter, replace: Callable[[str], str | None]) -> bool:
    text = ctx.read_text(path)
    if text is None:
        return False
    try:
        new, pairs = rewriter(text, replace)
    except ValueError as err:
        raise Vm2kvmError(
            ErrorCode.CONVERSION_FAILED,
            str(err),
            file=path,
            hint="shorten the variables in it (grub2-editenv) on the VMware VM and migrate again",
        ) from err
    if not pairs or new == text:
        return False
    ctx.backup(path)
    return ctx.edit(AREA, path, new, describe(path, pairs))


def fix_device_names(ctx: GuestContext) -> None:
    """Rewrite disk names in fstab, crypttab, resume= and the bootloader configs."""
    replacer = Replacer(DeviceResolver.for_guest(ctx.devices, ctx.plan), _facts(ctx), ctx.guest.filesystems)
    done: set[str] = set()
    for pattern, rewriter in _files(ctx):
        for path in _expand(ctx, pattern):
            if path in done:
                continue
            done.add(path)
            _rewrite(ctx, path, rewriter, replacer)
    _fix_device_maps(ctx, replacer)
    if replacer.unmapped:
        ctx.note(
            "left as they are (not disks of this VM, or names tied to VMware hardware): "
            + ", ".join(replacer.unmapped)
            + "; check these entries after the first boot"
        )


def _fix_device_maps(ctx: GuestContext, replacer: Replacer) -> None:
    for path in _DEVICE_MAPS:
        if not ctx.g.is_file(path):
            continue
        if ctx.guest.bootloader == "grub-legacy":
            # GRUB legacy's grub-install reads it and has no probing fallback: give it the new names.
            _rewrite(ctx, path, rewrite_device_map, replacer.with_names_only())
            continue
        # GRUB 2 probes the disks itself; a map with VMware's names makes grub-install pick wrong ones.
        ctx.backup(path)
        ctx.g.rm(path)
        ctx.change(
            AREA, f"removed {path}: it listed the VMware disk names; grub-install probes the disks", path
        )


# --- regenerating the bootloader config ----------------------------------------------


def _first_existing(ctx: GuestContext, paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if ctx.g.exists(p)), None)


def _grub2_cfg(ctx: GuestContext) -> str:
    """Where grub-mkconfig writes: the inspected config unless it is an ESP stub that loads another."""
    cfg = ctx.guest.boot_config
    if cfg and cfg.endswith("grub.cfg"):
        text = ctx.read_text(cfg) or ""
        stub = "configfile" in text and "menuentry" not in text and "blscfg" not in text
        if not stub:
            return cfg
    return (
        _first_existing(ctx, ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")) or cfg or "/boot/grub/grub.cfg"
    )


def _grub2_command(ctx: GuestContext, cfg: str) -> list[str] | None:
    if ctx.guest.distro in _DEBIAN_FAMILY:
        update_grub = _first_existing(ctx, ("/usr/sbin/update-grub", "/sbin/update-grub"))
        if update_grub:
            return [update_grub]
    names = ("grub2-mkconfig", "grub-mkconfig")
    tool = _first_existing(ctx, tuple(f"{d}/{n}" for n in names for d in ("/usr/sbin", "/sbin", "/usr/bin")))
    return [tool, "-o", cfg] if tool else None


def regenerate_bootloader(ctx: GuestContext) -> None:
    """Regenerate GRUB 2's config with the guest's own tool; other bootloaders were edited in place."""
    bootloader = ctx.guest.bootloader
    if bootloader in ("grub-legacy", "systemd-boot"):
        ctx.note(f"{bootloader}: nothing to regenerate; its config files were edited in place")
        return
    if bootloader != "grub2":
        ctx.note(
            f"bootloader not recognised ({bootloader}): no config regenerated; check the kernel command line"
        )
        return
    cfg = _grub2_cfg(ctx)
    argv = _grub2_command(ctx, cfg)
    if argv is None:
        ctx.note(f"no update-grub or grub-mkconfig in the guest: {cfg} was edited in place, not regenerated")
        return
    # os-prober would scan the appliance's other disks and add their systems as boot entries.
    command = "GRUB_DISABLE_OS_PROBER=true " + shlex.join(argv)
    try:
        ctx.g.sh(command)
    except RuntimeError as err:
        raise Vm2kvmError(
            ErrorCode.CONVERSION_FAILED,
            f"{shlex.join(argv)} failed in the guest: {str(err).strip()}",
            file=cfg,
            hint="run it on the VMware VM to see why, fix the guest and migrate again",
        ) from err
    ctx.change("bootloader", f"regenerated {cfg} with {shlex.join(argv)}", cfg)
    _recheck(ctx, cfg, argv[0].rsplit("/", 1)[-1])


def _recheck(ctx: GuestContext, cfg: str, tool: str) -> None:
    """Rewrite root=/dev/sdX the tool wrote: it names the disks as the appliance sees them.

    That happens when /etc/default/grub still disables UUIDs in a way we did
    not recognise, or /dev/disk/by-uuid is missing in the appliance.
    """
    replacer = Replacer(DeviceResolver.for_appliance(ctx.devices), _facts(ctx), ctx.guest.filesystems)
    checks: list[tuple[str, Rewriter]] = [(cfg, rewrite_grub_cfg)]
    checks += [(p, rewrite_grubenv) for pattern in _GRUBENVS for p in _expand(ctx, pattern)]
    checks += [(p, rewrite_bls_entry) for p in _expand(ctx, "/boot/loader/entries/*.conf")]
    for path, rewriter in checks:
        text = ctx.read_text(path)
        if text is None:
            continue
        new, pairs = rewriter(text, replacer)
        if pairs:
            ctx.edit(
                "bootloader",
                path,
                new,
                describe(path, pairs) + f" (the appliance's names, written by {tool})",
            )
