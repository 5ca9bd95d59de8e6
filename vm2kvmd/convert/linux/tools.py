"""Remove VMware Tools from the mounted Linux guest (packages, tarball installs, leftovers).

Runs first: the tools' initramfs hooks and modules-load entries must be gone
before the initramfs is rebuilt.  Packages are removed with the guest's own
dpkg/rpm (offline, no repositories needed); a tarball install with VMware's
uninstaller when perl is there, else from the installer's own file database.
Leftovers (units, SysV links, module lists, hooks) go whatever the method,
because a package removal can leave enabled-unit symlinks and admins often
copied units by hand.
"""

from __future__ import annotations

from vm2kvmd.convert.context import GuestContext
from vm2kvmd.core.guest.linux import tools as lt
from vm2kvmd.errors import ErrorCode, Vm2kvmError

AREA = "vmware-tools"
_PERL = ("/usr/bin/perl", "/bin/perl")
_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def guest_tool(ctx: GuestContext, name: str) -> str | None:
    """The absolute path of the guest's ``name``, None when it has none.

    Called by path, never by bare name: a busybox /bin/sh (minimal and
    embedded guests) runs its own applets (dpkg, rpm, ...) before anything on PATH.
    """
    for directory in _BIN_DIRS:
        path = f"{directory}/{name}"
        if ctx.g.is_file(path):
            return path
    return None


def remove_vmware_tools(ctx: GuestContext) -> None:
    packages = lt.packages_of(ctx.guest.vmware_tools)
    if packages:
        _remove_packages(ctx, packages)
    if lt.TARBALL in ctx.guest.vmware_tools or ctx.g.is_file(lt.LOCATIONS):
        _remove_tarball_install(ctx)
    _remove_leftovers(ctx)


def _remove_packages(ctx: GuestContext, packages: tuple[str, ...]) -> None:
    tool = guest_tool(ctx, "dpkg" if ctx.guest.package_format == "deb" else "rpm")
    command = lt.removal_command(ctx.guest.package_format, packages, tool) if tool else None
    if command is None:
        ctx.note(
            f"VMware Tools packages {', '.join(packages)} not removed: no package tool for format "
            f"{ctx.guest.package_format!r} in the guest; remove them after migration"
        )
        return
    policy_written = False
    if ctx.guest.package_format == "deb" and not _exists(ctx, lt.POLICY_RC_D):
        ctx.g.mkdir_p("/usr/sbin")
        ctx.g.write(lt.POLICY_RC_D, lt.POLICY_RC_D_TEXT)
        ctx.g.chmod(0o755, lt.POLICY_RC_D)
        policy_written = True
    elif ctx.guest.package_format == "rpm":
        # Stale Berkeley DB environment files of the running VM can make rpm hang (RHBZ#1143866).
        for stale in ctx.g.glob_expand("/var/lib/rpm/__db.00?"):
            ctx.g.rm_f(stale)
    try:
        output = ctx.g.sh(lt.folded(command.shell))
    except RuntimeError as err:
        raise Vm2kvmError(
            ErrorCode.CONVERSION_FAILED,
            f"could not remove VMware Tools packages {', '.join(packages)} with {command.method}: "
            f"{str(err).strip()}",
            hint="fix the guest's package database or remove the packages in the VM before migrating",
        ) from err
    finally:
        if policy_written:
            ctx.g.rm_f(lt.POLICY_RC_D)
    if output.strip():
        ctx.log(f"{command.method}: {output.strip()}")
    for name in packages:
        ctx.change(AREA, f"removed package {name} ({command.method})")


def _remove_tarball_install(ctx: GuestContext) -> None:
    has_perl = any(ctx.g.is_file(p) for p in _PERL)
    if has_perl and ctx.g.is_file(lt.UNINSTALLER):
        if ctx.g.is_file(lt.LOCATIONS):
            ctx.g.write_append(lt.LOCATIONS, lt.LOCATIONS_NO_RAMDISK_RESTORE)
        try:
            output = ctx.g.sh(lt.folded(lt.UNINSTALLER))
            if output.strip():
                ctx.log(f"{lt.UNINSTALLER}: {output.strip()}")
            ctx.change(AREA, f"ran {lt.UNINSTALLER} (VMware Tools tarball install)")
        except RuntimeError as err:
            # Not fatal: what it left behind is removed from its database below.
            ctx.log(f"{lt.UNINSTALLER} failed, removing its files from {lt.LOCATIONS}: {str(err).strip()}")
    # A successful uninstaller deletes its database; if it is still there, finish the job.
    text = ctx.read_text(lt.LOCATIONS)
    if text is None:
        return
    install = lt.parse_locations(text)
    removed = 0
    for path in install.files:
        original = path + lt.TARBALL_BACKUP_SUFFIX
        if ctx.g.is_file(original):
            ctx.g.mv(original, path)
            ctx.change(AREA, f"restored {path} from {original}", path)
            continue
        if _exists(ctx, path) and not ctx.g.is_dir(path):
            ctx.g.rm_f(path)
            removed += 1
    for directory in install.directories:
        if ctx.g.is_dir(directory) and not ctx.g.is_symlink(directory) and not ctx.g.ls(directory):
            ctx.g.rm_rf(directory)  # only empty ones: a directory may hold the admin's files too
    if removed:
        ctx.change(
            AREA, f"removed {removed} files of the VMware Tools tarball install (listed in {lt.LOCATIONS})"
        )


def _remove_leftovers(ctx: GuestContext) -> None:
    for path in _leftover_units(ctx):
        _remove(ctx, path)
    for pattern in lt.LEFTOVER_GLOBS:
        for path in ctx.g.glob_expand(pattern):
            _remove(ctx, path)
    text = ctx.read_text("/etc/modules")
    if text is not None:
        new, modules = lt.comment_vmware_modules(text)
        if modules:
            ctx.backup("/etc/modules")
            ctx.edit(AREA, "/etc/modules", new, f"/etc/modules: commented out {', '.join(modules)}")
    if ctx.g.is_dir("/etc/vmware-tools"):
        ctx.g.rm_rf("/etc/vmware-tools")
        ctx.change(AREA, "removed /etc/vmware-tools", "/etc/vmware-tools")


def _leftover_units(ctx: GuestContext) -> list[str]:
    """VMware units in /etc/systemd/system and the symlinks that enable them (*.wants, *.requires)."""
    base = "/etc/systemd/system"
    if not ctx.g.is_dir(base):
        return []
    paths = [f"{base}/{unit}" for unit in lt.VMWARE_UNITS]
    for pattern in (f"{base}/*.wants/*", f"{base}/*.requires/*"):
        paths.extend(lt.units_in(ctx.g.glob_expand(pattern)))
    return [p for p in paths if _exists(ctx, p)]


def _exists(ctx: GuestContext, path: str) -> bool:
    # exists() follows symlinks: a dangling link to a purged unit is still something to remove.
    return ctx.g.is_symlink(path) or ctx.g.exists(path)


def _remove(ctx: GuestContext, path: str) -> None:
    if not _exists(ctx, path):
        return  # already gone: /etc/init.d and /etc/rc.d/init.d are the same directory on RHEL
    if ctx.g.is_dir(path) and not ctx.g.is_symlink(path):
        ctx.g.rm_rf(path)
    else:
        ctx.g.rm_f(path)
    ctx.change(AREA, f"removed {path}", path)
