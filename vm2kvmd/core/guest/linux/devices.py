"""Disk names inside a Linux guest before and after migration, and the text edits that fix them.

On VMware a guest calls its disks ``sda``/``hda``/``nvme0n1``; on KVM the
same disks are ``vda`` (virtio-blk) or ``sda`` in a different order, and in
the libguestfs appliance they are ``sda, sdb, ...`` in plan order.  Every
configuration file that names a disk by its kernel name must therefore be
rewritten, preferably to ``UUID=``/``LABEL=`` (which survive any bus change).

Everything here is pure: ``device_map`` from the hardware model, a
``DeviceResolver`` for guest (or appliance) device paths, ``choose_spec`` (the
replacement policy) and one rewriter per file format.  A rewriter takes the
text and a ``replace(old) -> new | None`` callback and returns the new text
and the ``(old, new)`` pairs it changed; it touches nothing but the device
fields of its format, so comments, spacing and options stay byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from vm2kvmd.core.guest.info import DeviceMap, DiskName, Filesystem
from vm2kvmd.core.hardware.model import Bus, SourceDisk, SourceVM
from vm2kvmd.core.planning.plan import DomainPlan

Replace = Callable[[str], str | None]
Rewritten = tuple[str, list[tuple[str, str]]]

# Probe order of the kernel on VMware: the SCSI HBAs (mptspi, vmw_pvscsi) are loaded before ahci,
# and the libata IDE driver (ata_piix) comes with or after ahci.  This is the order a stock
# initramfs loads them in; a guest that loads ahci first swapped its names already on VMware.
_SD_ORDER = {Bus.SCSI: 0, Bus.SATA: 1, Bus.IDE: 2}


def disk_letters(index: int) -> str:
    """The kernel's suffix for the ``index``-th disk: a..z, aa..az, ... (sd_format_disk_name)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


def _source_names(disk: SourceDisk, sd_index: dict[tuple[Bus, int, int], int]) -> tuple[str, ...]:
    addr = disk.address
    key = (addr.bus, addr.controller, addr.unit)
    if addr.bus is Bus.NVME:
        return (f"nvme{addr.controller}n{addr.unit + 1}",)
    if key not in sd_index:
        return ()
    letters = disk_letters(sd_index[key])
    names = [f"sd{letters}", f"xvd{letters}"]  # xvd: a guest once moved from Xen keeps its names
    if addr.bus is Bus.IDE:
        # The old IDE driver named by position (hda = ide0:0 ... hdd = ide1:1); libata uses sdX.
        names.insert(0, f"hd{disk_letters(addr.controller * 2 + addr.unit)}")
    return tuple(names)


def device_map(vm: SourceVM, plan: DomainPlan) -> DeviceMap:
    """For each planned disk (appliance order): the names the guest used on VMware and the new one."""
    sources = [d for d in vm.disks] + [p.source for p in plan.disks if p.source not in vm.disks]
    sd_disks = sorted(
        (d.address for d in sources if d.address.bus in _SD_ORDER),
        key=lambda a: (_SD_ORDER[a.bus], a.controller, a.unit),
    )
    sd_index = {(a.bus, a.controller, a.unit): i for i, a in enumerate(sd_disks)}
    return DeviceMap(
        tuple(
            DiskName(
                index=i,
                source_names=_source_names(planned.source, sd_index),
                appliance=f"sd{disk_letters(i)}",
                target=planned.target_dev,
            )
            for i, planned in enumerate(plan.disks)
        )
    )


# --- resolving a device path ---------------------------------------------------------

_KERNEL_NAME = re.compile(r"/dev/(?P<disk>(?:sd|hd|xvd)[a-z]+)(?P<part>[0-9]*)")
_NVME_NAME = re.compile(r"/dev/(?P<disk>nvme[0-9]+n[0-9]+)(?:p(?P<part>[0-9]+))?")
# udev's by-path names: ...-scsi-HOST:CHANNEL:TARGET:LUN[-partN], ...-nvme-NSID[-partN]
_BY_PATH_SCSI = re.compile(
    r"/dev/disk/by-path/\S+-scsi-[0-9]+:(?P<bus>[0-9]+):(?P<target>[0-9]+):0(?:-part(?P<part>[0-9]+))?"
)
_BY_PATH_NVME = re.compile(r"/dev/disk/by-path/\S+-nvme-(?P<ns>[0-9]+)(?:-part(?P<part>[0-9]+))?")
# Names tied to the VMware hardware that we cannot map (serials, VMware's model strings).
_UNMAPPABLE = re.compile(r"/dev/disk/by-(?:id|path)/\S+")


def _with_partition(disk: str, part: str) -> str:
    if not part:
        return f"/dev/{disk}"
    # The kernel puts a "p" between a disk name ending in a digit and the partition number.
    return f"/dev/{disk}p{part}" if disk[-1].isdigit() else f"/dev/{disk}{part}"


@dataclass(frozen=True)
class Resolved:
    """One disk or partition reference: the appliance's name for it and its name after migration."""

    reference: str  # as written in the guest: /dev/sda1, /dev/disk/by-path/...-part1
    appliance: str  # /dev/sda1
    target: str  # /dev/vda1


@dataclass(frozen=True)
class DeviceResolver:
    """Maps a kernel disk name (as the guest or the appliance uses it) to the appliance and target names.

    ``resolve`` returns None for everything that is not a plain disk name:
    ``UUID=``, ``LABEL=``, ``/dev/mapper/*``, ``/dev/<vg>/<lv>``,
    ``/dev/disk/by-uuid|by-label/*`` name the file system or volume, not the
    bus, and survive the migration.  ``is_disk_name`` tells a disk name that
    is simply not in the map (a disk that was removed, a USB stick) from those.
    """

    names: dict[str, DiskName] = field(default_factory=dict)  # kernel disk name -> disk
    scsi_units: dict[int, DiskName] = field(default_factory=dict)  # by-path SCSI target -> disk
    nvme_units: dict[int, DiskName] = field(default_factory=dict)  # by-path NVMe namespace -> disk

    @classmethod
    def for_guest(cls, devices: DeviceMap, plan: DomainPlan | None = None) -> DeviceResolver:
        """Names as the guest used them on VMware; ``plan`` adds by-path names (one controller only)."""
        names = {name: disk for disk in devices.disks for name in disk.source_names}
        scsi: dict[int, DiskName] = {}
        nvme: dict[int, DiskName] = {}
        if plan is not None:
            addresses = [
                (d, plan.disks[d.index].source.address) for d in devices.disks if d.index < len(plan.disks)
            ]
            # by-path carries the controller's PCI address, which the VMX does not give reliably
            # (PCI bridges), so it is only resolved when the VM has one controller of the kind.
            for bus, units, first in ((Bus.SCSI, scsi, 0), (Bus.NVME, nvme, 1)):
                if len({a.controller for _, a in addresses if a.bus is bus}) == 1:
                    units.update({a.unit + first: d for d, a in addresses if a.bus is bus})
        return cls(names, scsi, nvme)

    @classmethod
    def for_appliance(cls, devices: DeviceMap) -> DeviceResolver:
        """Names as the appliance sees the disks: what a bootloader tool run in it writes."""
        return cls({disk.appliance: disk for disk in devices.disks})

    def resolve(self, reference: str) -> Resolved | None:
        match = _KERNEL_NAME.fullmatch(reference) or _NVME_NAME.fullmatch(reference)
        if match:
            disk = self.names.get(match["disk"])
            part = match["part"] or ""
        elif match := _BY_PATH_SCSI.fullmatch(reference):
            disk = self.scsi_units.get(int(match["target"])) if match["bus"] == "0" else None
            part = match["part"] or ""
        elif match := _BY_PATH_NVME.fullmatch(reference):
            disk = self.nvme_units.get(int(match["ns"]))
            part = match["part"] or ""
        else:
            return None
        if disk is None:
            return None
        return Resolved(reference, _with_partition(disk.appliance, part), _with_partition(disk.target, part))


def is_disk_name(reference: str) -> bool:
    """A name tied to the disk's bus or hardware: it changes with the migration."""
    return bool(
        _KERNEL_NAME.fullmatch(reference)
        or _NVME_NAME.fullmatch(reference)
        or _UNMAPPABLE.fullmatch(reference)
    )


# --- the replacement policy ----------------------------------------------------------

# A label goes into fstab and onto the kernel command line unquoted: only plain ones qualify.
_PLAIN_LABEL = re.compile(r"[A-Za-z0-9._+@:-]+")


def choose_spec(target: str, fs: Filesystem | None, others: Iterable[Filesystem] = ()) -> str:
    """What to write for a disk reference: ``UUID=``, else ``LABEL=``, else the new device name.

    ``others`` are the guest's other file systems: a UUID or label that two
    of them share (a cloned disk attached to its original) would make the
    guest pick either, so it is not used.
    """
    if fs is None:
        return target
    rest = [o for o in others if o.device != fs.device]
    if fs.uuid and not any(o.uuid == fs.uuid for o in rest):
        return f"UUID={fs.uuid}"
    if fs.label and _PLAIN_LABEL.fullmatch(fs.label) and not any(o.label == fs.label for o in rest):
        return f"LABEL={fs.label}"
    return target


def as_path(spec: str) -> str:
    """``UUID=x`` as a device path (for settings that want a path, not a spec)."""
    if spec.startswith("UUID="):
        return "/dev/disk/by-uuid/" + spec[5:]
    if spec.startswith("LABEL="):
        return "/dev/disk/by-label/" + spec[6:]
    return spec


# --- rewriters ---------------------------------------------------------------------


def _replace_field(line: str, index: int, replace: Replace, pairs: list[tuple[str, str]]) -> str:
    """Replace the ``index``-th whitespace-separated field of ``line``, keeping all whitespace."""
    parts = re.split(r"(\s+)", line)
    lead = 2 if parts and parts[0] == "" else 0  # a line starting with blanks: ["", "  ", first, ...]
    pos = lead + 2 * index
    if pos >= len(parts) or not parts[pos]:
        return line
    new = replace(parts[pos])
    if new is None or new == parts[pos]:
        return line
    pairs.append((parts[pos], new))
    parts[pos] = new
    return "".join(parts)


def _by_line(text: str, edit: Callable[[str], str]) -> str:
    return "".join(edit(line) for line in text.splitlines(keepends=True))


def _is_comment(line: str) -> bool:
    stripped = line.lstrip()
    return not stripped or stripped.startswith("#")


def rewrite_fstab(text: str, replace: Replace) -> Rewritten:
    """``/etc/fstab``: the first field (the device) of every entry."""
    pairs: list[tuple[str, str]] = []
    new = _by_line(text, lambda line: line if _is_comment(line) else _replace_field(line, 0, replace, pairs))
    return new, pairs


def rewrite_crypttab(text: str, replace: Replace) -> Rewritten:
    """``/etc/crypttab``: the second field (the encrypted device)."""
    pairs: list[tuple[str, str]] = []
    new = _by_line(text, lambda line: line if _is_comment(line) else _replace_field(line, 1, replace, pairs))
    return new, pairs


# root=, resume=, real_root= (Gentoo's genkernel) as whole arguments: not nfsroot=, not rootfstype=.
_CMDLINE_ARG = re.compile(r"(?<![\w.-])(?P<key>root|resume|real_root)=(?P<value>[^\s\"';]+)")


def rewrite_cmdline(text: str, replace: Replace) -> Rewritten:
    """A kernel command line (``/etc/kernel/cmdline``, or the part of a line that is one)."""
    pairs: list[tuple[str, str]] = []

    def sub(match: re.Match[str]) -> str:
        old = match["value"]
        new = replace(old)
        if new is None or new == old:
            return match[0]
        pairs.append((old, new))
        return f"{match['key']}={new}"

    return _CMDLINE_ARG.sub(sub, text), pairs


def _rewrite_lines(text: str, wanted: Callable[[str], bool], replace: Replace) -> Rewritten:
    pairs: list[tuple[str, str]] = []

    def edit(line: str) -> str:
        if not wanted(line):
            return line
        new, found = rewrite_cmdline(line, replace)
        pairs.extend(found)
        return new

    return _by_line(text, edit), pairs


_GRUB_CFG_KERNEL = re.compile(r"\s*(linux|linux16|linuxefi|kernel)\s")


def rewrite_grub_cfg(text: str, replace: Replace) -> Rewritten:
    """GRUB 2 ``grub.cfg``: ``root=``/``resume=`` on ``linux``/``linux16``/``linuxefi`` lines.

    GRUB's own names (``(hd0,msdos1)``, ``set root=...``) count disks in
    BIOS order, which the migration keeps (the boot disk stays first), and
    ``search --fs-uuid`` lines are bus-independent: both are left alone.
    """
    return _rewrite_lines(text, lambda line: bool(_GRUB_CFG_KERNEL.match(line)), replace)


# GRUB legacy: "kernel" lines, and Debian's "# kopt=" magic comments that its update-grub reads.
_MENU_LST_KERNEL = re.compile(r"\s*(kernel\s|#\s*kopt(_[0-9_]+)?=)")


def rewrite_menu_lst(text: str, replace: Replace) -> Rewritten:
    """GRUB legacy ``menu.lst``/``grub.conf``: ``kernel`` lines and Debian's ``# kopt=`` line."""
    return _rewrite_lines(text, lambda line: bool(_MENU_LST_KERNEL.match(line)), replace)


def rewrite_bls_entry(text: str, replace: Replace) -> Rewritten:
    """A Boot Loader Specification entry (``/boot/loader/entries/*.conf``): its ``options`` line."""
    return _rewrite_lines(text, lambda line: line.lstrip().startswith("options"), replace)


def _assignment(line: str) -> bool:
    return not _is_comment(line) and re.match(r"\s*(export\s+)?[A-Za-z_][A-Za-z0-9_]*=", line) is not None


def rewrite_sysconfig_bootloader(text: str, replace: Replace) -> Rewritten:
    """SUSE ``/etc/sysconfig/bootloader``: ``DEFAULT_APPEND``, ``FAILSAFE_APPEND``, ... assignments."""
    return _rewrite_lines(text, _assignment, replace)


_GRUB_DEVICE = re.compile(r"(?P<lead>\s*GRUB_DEVICE=)(?P<quote>[\"']?)(?P<value>[^\s\"']+)")
_DISABLE_UUID = re.compile(r"\s*GRUB_DISABLE_LINUX_UUID=[\"']?true[\"']?\s*$")
DISABLE_UUID_NOTE = (
    "# vm2kvm: GRUB_DISABLE_LINUX_UUID=true made grub-mkconfig write root=/dev/sdX; "
    "commented out for the migration to KVM"
)


def rewrite_default_grub(text: str, replace: Replace) -> Rewritten:
    """``/etc/default/grub``: kernel arguments in its assignments, ``GRUB_DEVICE``, UUID roots back on.

    ``GRUB_DISABLE_LINUX_UUID=true`` makes ``grub-mkconfig`` write the root
    device's kernel name, which is the appliance's ``/dev/sdX`` when it runs
    in the appliance and a VMware name in the guest: it is commented out so
    the regenerated ``grub.cfg`` says ``root=UUID=``.
    """
    pairs: list[tuple[str, str]] = []

    def edit(line: str) -> str:
        if _DISABLE_UUID.match(line):
            body = line.rstrip("\n")
            pairs.append((body.strip(), "#" + body.strip()))
            return f"{DISABLE_UUID_NOTE}\n#{body.lstrip()}" + line[len(body) :]
        if not _assignment(line):
            return line
        if match := _GRUB_DEVICE.match(line):
            old = match["value"]
            new = replace(old)
            if new is not None and new != old:
                new = as_path(new)  # grub-mkconfig runs grub-probe on it: it must be a path
                pairs.append((old, new))
                line = line[: match.start("value")] + new + line[match.end("value") :]
            return line
        new_line, found = rewrite_cmdline(line, replace)
        pairs.extend(found)
        return new_line

    return _by_line(text, edit), pairs


_RESUME = re.compile(r"(?P<lead>\s*RESUME=)(?P<quote>[\"']?)(?P<value>[^\s\"'#]+)")


def rewrite_initramfs_resume(text: str, replace: Replace) -> Rewritten:
    """initramfs-tools ``conf.d/resume``: ``RESUME=/dev/sdX`` (``RESUME=UUID=...`` is accepted)."""
    pairs: list[tuple[str, str]] = []

    def edit(line: str) -> str:
        match = _RESUME.match(line)
        if not match:
            return line
        old = match["value"]
        new = replace(old)
        if new is None or new == old:
            return line
        pairs.append((old, new))
        return line[: match.start("value")] + new + line[match.end("value") :]

    return _by_line(text, edit), pairs


def rewrite_grubenv(text: str, replace: Replace) -> Rewritten:
    """GRUB 2's ``grubenv``: RHEL 8's ``kernelopts=`` (what BLS entries' ``$kernelopts`` expands to).

    The block keeps its size: the padding shrinks by what the line grew.
    Raises ValueError when the new variables do not fit.
    """
    lines = text.rstrip("#").splitlines(keepends=True)
    padding_start = len("".join(lines))
    new, pairs = _rewrite_lines(
        text[:padding_start],
        lambda line: re.match(r"\w+=", line) is not None and not line.startswith("#"),
        replace,
    )
    if not pairs:
        return text, pairs
    size = len(text)
    if len(new) > size:
        raise ValueError(f"grubenv: the new variables need {len(new)} bytes, the block has {size}")
    return new + "#" * (size - len(new)), pairs


_DEVICE_MAP = re.compile(r"(?P<lead>\s*\([a-z]+[0-9]+\)\s+)(?P<value>\S+)")


def rewrite_device_map(text: str, replace: Replace) -> Rewritten:
    """GRUB legacy ``device.map``: ``(hd0) /dev/sda`` -> ``(hd0) /dev/vda`` (whole disks, no UUIDs)."""
    pairs: list[tuple[str, str]] = []

    def edit(line: str) -> str:
        match = _DEVICE_MAP.match(line)
        if not match or _is_comment(line):
            return line
        new = replace(match["value"])
        if new is None or new == match["value"]:
            return line
        pairs.append((match["value"], new))
        return line[: match.start("value")] + new + line[match.end("value") :]

    return _by_line(text, edit), pairs


# --- one replacer for a whole conversion --------------------------------------------


@dataclass
class Replacer:
    """``replace`` for the rewriters: resolves a reference and applies ``choose_spec``.

    ``facts`` gives the file system of an appliance device (None when there
    is none, e.g. an unformatted partition).  ``unmapped`` collects the disk
    names it met but could not map; the step reports them.  With
    ``names_only`` it writes new device names, never ``UUID=`` (device.map).
    """

    resolver: DeviceResolver
    facts: Callable[[str], Filesystem | None]
    filesystems: Sequence[Filesystem] = ()
    names_only: bool = False
    unmapped: list[str] = field(default_factory=list)

    def __call__(self, reference: str) -> str | None:
        resolved = self.resolver.resolve(reference)
        if resolved is None:
            if is_disk_name(reference) and reference not in self.unmapped:
                self.unmapped.append(reference)
            return None
        if self.names_only:
            return resolved.target
        return choose_spec(resolved.target, self.facts(resolved.appliance), self.filesystems)

    def with_names_only(self) -> Replacer:
        return Replacer(self.resolver, self.facts, self.filesystems, True, self.unmapped)


def describe(path: str, pairs: Sequence[tuple[str, str]]) -> str:
    """The report line for one edited file: ``/etc/fstab: /dev/sda1 -> UUID=...``."""
    unique = list(dict.fromkeys(pairs))
    return f"{path}: " + ", ".join(f"{old} -> {new}" for old, new in unique)
