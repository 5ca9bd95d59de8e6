# ruff: noqa: E501  (the base specs hold real-world config lines, which are long)
"""Phony Linux guests: disk images that look like a distribution to libguestfs, built in one appliance run.

A phony guest is a real disk (MBR, partitions, ext4/vfat/swap, optionally
LVM) holding only the files a converter reads or edits: package databases,
release files, fstab, bootloader configs, kernels (empty files) with their
module lists, network configs.  It does not boot.  What it can run is
busybox (``/bin/busybox``, ``/bin/sh`` and the common applets) and the stub
tools below, because ``g.command``/``g.sh`` run the guest's own binaries.

Specs are declarative (``PhonyGuest``); the base specs are functions
(``debian11()``, ``rhel8()``, ...) so a test extends one with
``dataclasses.replace(debian11(), files={**debian11().files, path: text})``.

Build-time mount points (``Part.mount``) are only where the builder mounts a
file system to write ``files``; what the guest mounts is what its
``/etc/fstab`` (part of ``files``) says.  ``dual_boot()`` uses that to put a
second root at ``/alt``.

Stubs: each of ``STUBS`` is a ``/bin/sh`` script that appends one line
``<tool> <args...>`` to ``/var/log/vm2kvm-stub.log`` and exits 0
(``stub_calls(g)`` reads them back).  A few print what a converter reads:

- ``dpkg-query -W [-f=FMT] [NAME...]``: ``name<TAB>version`` of every installed
  package of ``/var/lib/dpkg/status`` (or only the NAMEs; exit 1 when one is
  not installed, like dpkg-query); the format is ignored.
- ``rpm -q[a] [NAME...]``: ``name-version-release.arch`` lines from
  ``/var/lib/vm2kvm-phony/rpms`` (one NVRA per line, written from
  ``PhonyGuest.rpms``), ``package NAME is not installed`` and exit 1 otherwise.
- ``systemctl is-enabled X``: prints ``enabled``.
Every other call only logs; in particular ``dpkg --purge``/``rpm -e`` do not
change the package database.

Images are cached in ``cache_dir/<name>-<hash>.img`` (hash of the spec, the
builder part of this file and busybox), built in one appliance launch for everything missing,
under an ``flock``, renamed into place and made read-only.  Use them through
qcow2 overlays (``tests/guests/phony_fixtures.py``).

    python -m testbed.guests.phony [--out DIR]     # build every base guest, print the paths
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shlex
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR = REPO / "build" / "guests" / "phony"
BUSYBOX = Path("/bin/busybox")  # Debian package busybox-static: a static x86_64 binary
STUB_LOG = "/var/log/vm2kvm-stub.log"
RPM_LIST = "/var/lib/vm2kvm-phony/rpms"

# Applets linked to busybox in /bin: enough for shell scripts a converter runs in the guest.
APPLETS = (
    "sh", "ash", "ls", "cat", "cp", "mv", "rm", "ln", "mkdir", "rmdir", "chmod", "chown", "touch",
    "echo", "printf", "test", "true", "false", "grep", "egrep", "sed", "awk", "cut", "tr", "sort",
    "uniq", "head", "tail", "wc", "find", "xargs", "readlink", "realpath", "basename", "dirname",
    "uname", "env", "sleep", "stat", "gzip", "gunzip", "zcat", "cpio", "tar", "mount", "umount",
    "id", "date", "cmp", "diff", "md5sum", "sha256sum", "mktemp", "which", "hostname", "sync",
)  # fmt: skip

_STUB_BODY = f"""\
#!/bin/sh
# vm2kvm phony stub: logs its call, prints what a converter reads, exits 0.
tool=${{0##*/}}
echo "$tool $*" >> {STUB_LOG}
"""
_DPKG_QUERY = r"""
case " $* " in
  *" -W "*|*" --show "*|*" -W"*) ;;
  *) exit 0 ;;
esac
names=""
for a in "$@"; do case "$a" in -*) ;; *) names="$names $a" ;; esac; done
awk -v names="$names" '
  BEGIN { n = split(names, want, " "); for (i = 1; i <= n; i++) wanted[want[i]] = 1 }
  /^Package:/ { p = $2 } /^Version:/ { v = $2 }
  /^Status:/ { s = ($4 == "installed") }
  /^$/ { if (p != "" && s && (n == 0 || p in wanted)) { print p "\t" v; found[p] = 1 } p = ""; s = 0 }
  END { if (p != "" && s && (n == 0 || p in wanted)) { print p "\t" v; found[p] = 1 }
        rc = 0
        for (w in wanted) if (!(w in found)) {
          print "dpkg-query: no packages found matching " w > "/dev/stderr"; rc = 1
        }
        exit rc }' /var/lib/dpkg/status
"""
_RPM = rf"""
query=0; all=0; names=""
for a in "$@"; do
  case "$a" in -qa|-aq) query=1; all=1 ;; -q*) query=1 ;; -a) all=1 ;; -*) ;; *) names="$names $a" ;; esac
done
[ "$query" = 1 ] || exit 0
[ -f {RPM_LIST} ] || touch /dev/null
if [ "$all" = 1 ]; then cat {RPM_LIST} 2>/dev/null; exit 0; fi
rc=0
for n in $names; do
  line=$(grep "^$n-[0-9]" {RPM_LIST} 2>/dev/null | head -n 1)
  if [ -n "$line" ]; then echo "$line"; else echo "package $n is not installed"; rc=1; fi
done
exit $rc
"""
_SYSTEMCTL = r"""
[ "$1" = is-enabled ] && echo enabled
exit 0
"""
# What each stub prints besides logging (by tool name; "" = nothing).
STUB_OUTPUT: Mapping[str, str] = {"dpkg-query": _DPKG_QUERY, "rpm": _RPM, "systemctl": _SYSTEMCTL}
# Where each family keeps the tools a converter runs (no merged /usr: /bin and /sbin are directories).
DEB_STUBS = (
    "/usr/bin/dpkg", "/usr/bin/dpkg-query", "/usr/bin/apt-get", "/usr/sbin/update-initramfs",
    "/usr/sbin/mkinitramfs", "/usr/sbin/update-grub", "/usr/sbin/grub-mkconfig", "/usr/sbin/grub-install",
    "/bin/systemctl", "/usr/bin/perl",
)  # fmt: skip
RHEL8_STUBS = (
    "/usr/bin/rpm", "/usr/bin/dnf", "/usr/bin/yum", "/usr/bin/dracut", "/usr/sbin/grub2-mkconfig",
    "/usr/sbin/grub2-install", "/usr/sbin/setfiles", "/usr/sbin/restorecon", "/usr/bin/systemctl",
    "/usr/bin/perl",
)  # fmt: skip
SLES12_STUBS = (
    "/usr/bin/rpm", "/usr/bin/zypper", "/usr/bin/dracut", "/sbin/mkinitrd", "/usr/sbin/grub2-mkconfig",
    "/usr/sbin/grub2-install", "/usr/bin/systemctl", "/usr/bin/perl",
)  # fmt: skip
CENTOS6_STUBS = (
    "/bin/rpm", "/usr/bin/yum", "/sbin/dracut", "/sbin/mkinitrd", "/sbin/grub-install", "/sbin/setfiles",
    "/sbin/restorecon", "/sbin/initctl", "/usr/bin/perl", "/usr/bin/vmware-uninstall-tools.pl",
)  # fmt: skip


@dataclass(frozen=True)
class Part:
    """One file system of the phony disk, in disk order.

    ``mount``: where the builder mounts it to write ``files`` ("/" is the
    guest root; "" for swap or a file system nobody writes to).
    ``size_mib=None`` takes the rest of the disk (or of the volume group).
    ``lv="vg/lv"`` puts the file system on that logical volume; all LVs share
    one physical-volume partition, created where the first LV is listed.
    ``logical=True`` puts the partition in an extended partition (sda5, ...).
    """

    mount: str
    fstype: str = "ext4"  # ext4, ext3, ext2, vfat, swap
    size_mib: int | None = None
    label: str | None = None
    uuid: str | None = None  # fixed, so fstab and grub configs can name it
    lv: str | None = None
    logical: bool = False
    esp: bool = False  # MBR type 0xef (an EFI system partition)


@dataclass(frozen=True)
class PhonyGuest:
    name: str
    files: Mapping[str, str | bytes]
    symlinks: Mapping[str, str] = field(default_factory=dict)  # link -> target
    dirs: tuple[str, ...] = ()
    partitions: tuple[Part, ...] = (Part("/"),)
    modes: Mapping[str, int] = field(default_factory=dict)  # path -> mode (default 0o644, dirs 0o755)
    rpms: tuple[str, ...] = ()  # NVRAs the rpm stub reports installed
    busybox: bool = True  # /bin/busybox, /bin/sh and APPLETS (data_only() has none)
    busybox_roots: tuple[str, ...] = ("/",)  # where (build-time paths) each OS root has its /bin
    stubs: tuple[str, ...] = ()  # paths of stub tools (DEB_STUBS, ...)
    disk_mib: int = 768

    def spec_json(self) -> str:
        """A stable text of the spec (the cache key)."""

        def enc(v: str | bytes) -> str:
            return v if isinstance(v, str) else "b64:" + v.hex()

        data: dict[str, Any] = {
            "name": self.name,
            "files": {k: enc(v) for k, v in sorted(self.files.items())},
            "symlinks": dict(sorted(self.symlinks.items())),
            "dirs": sorted(self.dirs),
            "partitions": [p.__dict__ for p in self.partitions],
            "modes": dict(sorted(self.modes.items())),
            "rpms": list(self.rpms),
            "busybox": self.busybox,
            "busybox_roots": list(self.busybox_roots),
            "stubs": list(self.stubs),
            "disk_mib": self.disk_mib,
        }
        return json.dumps(data, sort_keys=True)


# --- building ----------------------------------------------------------------------------


def _source_hash() -> str:
    # The builder only: editing a base spec below rebuilds that spec's image (its spec_json), not all.
    source = Path(__file__).read_bytes()
    h = hashlib.sha256(source[: source.rindex(b"\n# --- base specs")])
    if BUSYBOX.exists():
        h.update(hashlib.sha256(BUSYBOX.read_bytes()).digest())
    return h.hexdigest()


def image_path(spec: PhonyGuest, cache_dir: Path, source_hash: str | None = None) -> Path:
    h = hashlib.sha256((source_hash or _source_hash()).encode() + spec.spec_json().encode())
    return cache_dir / f"{spec.name}-{h.hexdigest()[:16]}.img"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_images(specs: Sequence[PhonyGuest], cache_dir: Path = DEFAULT_CACHE_DIR) -> dict[str, Path]:
    """The image of every spec (name -> read-only raw file), building the missing ones in one appliance."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"phony guest names must be unique: {names}")
    if any(s.busybox for s in specs) and not BUSYBOX.exists():
        raise RuntimeError(f"{BUSYBOX} is missing: apt-get install busybox-static (scripts/setup.sh does)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    source_hash = _source_hash()
    paths = {s.name: image_path(s, cache_dir, source_hash) for s in specs}
    with _locked(cache_dir / ".lock"):
        missing = [s for s in specs if not paths[s.name].exists()]
        if missing:
            _build(missing, {s.name: paths[s.name] for s in missing})
    return paths


def _build(specs: Sequence[PhonyGuest], finals: Mapping[str, Path]) -> None:
    import guestfs

    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    started = time.monotonic()
    temps = {s.name: finals[s.name].with_name(f".{finals[s.name].name}.{os.getpid()}.tmp") for s in specs}
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        for spec in specs:
            tmp = temps[spec.name]
            with open(tmp, "wb") as f:
                f.truncate(spec.disk_mib << 20)  # sparse
            g.add_drive_opts(str(tmp), format="raw", readonly=False)
        g.launch()
        devices = g.list_devices()
        for spec, device in zip(specs, devices, strict=True):
            _populate(g, spec, device)
        g.shutdown()
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    finally:
        g.close()
    for spec in specs:
        temps[spec.name].chmod(0o444)
        os.replace(temps[spec.name], finals[spec.name])
    print(f"phony: built {[s.name for s in specs]} in {time.monotonic() - started:.1f} s", file=sys.stderr)


def _partition(g: Any, spec: PhonyGuest, device: str) -> list[tuple[Part, str]]:
    """Partition ``device``; returns each Part with the device its file system goes on."""
    g.part_init(device, "mbr")
    last_sector = (spec.disk_mib << 20) // 512 - 1
    lv_parts = [p for p in spec.partitions if p.lv]
    # Disk order: a Part, or None for the one LVM physical volume (where the first LV is listed).
    items: list[Part | None] = []
    for p in spec.partitions:
        if not p.lv:
            items.append(p)
        elif None not in items:
            items.append(None)
    start, number, logical, extended = 2048, 0, 4, False
    placed: list[tuple[Part, str]] = []
    pv: str | None = None
    for i, item in enumerate(items):
        if item is None:
            sizes = [p.size_mib for p in lv_parts]
            size = None if None in sizes else sum(s or 0 for s in sizes) + 8 * len(sizes) + 8
        else:
            size = item.size_mib
        end = last_sector if (size is None or i == len(items) - 1) else start + (size << 11) - 1
        if item is not None and item.logical:
            if not extended:
                g.part_add(device, "e", start, last_sector)
                number += 1
                extended = True
                start += 2048
                end = last_sector if (size is None or i == len(items) - 1) else start + (size << 11) - 1
            g.part_add(device, "l", start, end)
            logical += 1
            num = logical
            start = end + 2048
        else:
            g.part_add(device, "p", start, end)
            number += 1
            num = number
            start = end + 1
        dev = f"{device}{num}"
        if item is None:
            pv = dev
            g.part_set_mbr_id(device, num, 0x8E)
            continue
        if item.esp:
            g.part_set_mbr_id(device, num, 0xEF)
        elif item.fstype == "swap":
            g.part_set_mbr_id(device, num, 0x82)
        placed.append((item, dev))
    if lv_parts:
        assert pv is not None
        vgs = sorted({(p.lv or "").split("/")[0] for p in lv_parts})
        if len(vgs) != 1:
            raise ValueError(f"{spec.name}: all LVs must be in one VG, got {vgs}")
        g.pvcreate(pv)
        g.vgcreate(vgs[0], [pv])
        # Sized volumes first: the one taking the rest must come last.
        for p in sorted(lv_parts, key=lambda p: p.size_mib is None):
            vg, lv = (p.lv or "").split("/")
            if p.size_mib is None:
                g.lvcreate_free(lv, vg, 100)
            else:
                g.lvcreate(lv, vg, p.size_mib)
            placed.append((p, f"/dev/{vg}/{lv}"))
    return placed


def _mkfs(g: Any, part: Part, dev: str) -> None:
    if part.fstype == "swap":
        kw: dict[str, str] = {}
        if part.label:
            kw["label"] = part.label
        if part.uuid:
            kw["uuid"] = part.uuid
        g.mkswap(dev, **kw)
        return
    if part.label:
        g.mkfs(part.fstype, dev, label=part.label)
    else:
        g.mkfs(part.fstype, dev)
    if part.uuid:
        g.set_uuid(dev, part.uuid)


def _populate(g: Any, spec: PhonyGuest, device: str) -> None:
    placed = _partition(g, spec, device)
    for part, dev in placed:
        _mkfs(g, part, dev)
    mounted = [(p.mount, d) for p, d in placed if p.mount and p.fstype != "swap"]
    mounted.sort(key=lambda x: len(x[0]))
    for mount, dev in mounted:
        if mount != "/":
            g.mkdir_p(mount)
        g.mount(dev, mount)
    # One tar_in instead of thousands of small calls: each call is a round trip to a TCG appliance.
    with tempfile.NamedTemporaryFile(suffix=".tar") as tar:
        _tarball(spec, tar.name)
        g.tar_in(tar.name, "/")
    g.sync()
    g.umount_all()
    if any(p.lv for p in spec.partitions):
        g.vg_activate_all(False)


def _tarball(spec: PhonyGuest, path: str) -> None:
    """Everything the spec puts in the guest, as a tar with root ownership and the spec's modes."""
    entries: dict[str, tuple[str, bytes | str, int]] = {}  # path -> (kind, content or target, mode)
    for d in spec.dirs:
        entries[d] = ("dir", b"", 0o755)
    for root in spec.busybox_roots if spec.busybox else ():
        top = root.rstrip("/")
        for d in ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/var/log", "/tmp"):
            entries[top + d] = ("dir", b"", 0o1777 if d == "/tmp" else 0o755)
        entries[f"{top}/bin/busybox"] = ("file", BUSYBOX.read_bytes(), 0o755)
        for applet in APPLETS:
            entries[f"{top}/bin/{applet}"] = ("link", "busybox", 0o777)
        entries[f"{top}/usr/bin/env"] = ("link", "/bin/env", 0o777)
    for stub in spec.stubs:
        body = STUB_OUTPUT.get(os.path.basename(stub), "") or "exit 0\n"
        entries[stub] = ("file", (_STUB_BODY + body).encode(), 0o755)
    if spec.rpms:
        entries[RPM_LIST] = ("file", "".join(f"{n}\n" for n in spec.rpms).encode(), 0o644)
    for name, content in spec.files.items():
        data = content.encode() if isinstance(content, str) else content
        entries[name] = ("file", data, spec.modes.get(name, 0o644))
    for link, target in spec.symlinks.items():
        entries[link] = ("link", target, 0o777)
    # Parents first, with directory entries of their own (mode 0755).
    for name in list(entries):
        parent = os.path.dirname(name)
        while parent not in ("/", "") and parent not in entries:
            entries[parent] = ("dir", b"", 0o755)
            parent = os.path.dirname(parent)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name in sorted(entries, key=lambda n: (n.count("/"), n)):
            kind, content, mode = entries[name]
            info = tarfile.TarInfo("." + name)
            info.mode = spec.modes.get(name, mode)
            info.mtime = 1700000000
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = str(content)
                tf.addfile(info)
            else:
                data = content if isinstance(content, bytes) else content.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def stub_calls(g: Any) -> list[list[str]]:
    """The stub calls logged in the mounted guest, each as argv (tool name first)."""
    if not g.is_file(STUB_LOG):
        return []
    text = g.read_file(STUB_LOG).decode("utf-8", "replace")
    return [shlex.split(line) for line in text.splitlines() if line.strip()]


# --- base specs ----------------------------------------------------------------------------

# Fixed file-system UUIDs, so fstab, grub configs and tests can name them.
DEBIAN11_ROOT_UUID = "3f6a1c2e-5b1d-4c1e-9a51-0d1e2f3a4b01"
UBUNTU_ROOT_UUID = "7b1e2d3c-4a5b-4c6d-8e7f-1a2b3c4d5e02"
RHEL8_BOOT_UUID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c03"
SLES12_ROOT_UUID = "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e04"
SLES12_SWAP_UUID = "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e05"
CENTOS6_BOOT_UUID = "c6c6c6c6-0001-4b2c-9d3e-4f5a6b7c8d06"
CENTOS6_ROOT_UUID = "c6c6c6c6-0002-4b2c-9d3e-4f5a6b7c8d07"
DATA_UUID = "da7ada7a-0001-4e2f-8a9b-0c1d2e3f4a08"
DUAL_DEBIAN_UUID = "d0a1d0a1-0001-4e2f-8a9b-0c1d2e3f4a09"
DUAL_RHEL_UUID = "d0a1d0a1-0002-4e2f-8a9b-0c1d2e3f4a10"
RHEL8_MACHINE_ID = "6b1f0e0c4a2d4c1f9e3b5a7d8c9e0f12"

# Kernel modules a converter looks for, by (relative path under /lib/modules/V/, dependencies).
_VIRTIO = {
    "virtio": "kernel/drivers/virtio/virtio.ko",
    "virtio_ring": "kernel/drivers/virtio/virtio_ring.ko",
    "virtio_pci": "kernel/drivers/virtio/virtio_pci.ko",
    "virtio_balloon": "kernel/drivers/virtio/virtio_balloon.ko",
    "virtio_blk": "kernel/drivers/block/virtio_blk.ko",
    "virtio_net": "kernel/drivers/net/virtio_net.ko",
    "virtio_scsi": "kernel/drivers/scsi/virtio_scsi.ko",
    "virtio_rng": "kernel/drivers/char/hw_random/virtio-rng.ko",
    "virtio_console": "kernel/drivers/char/virtio_console.ko",
}
_OTHER = {
    "ahci": "kernel/drivers/ata/ahci.ko",
    "libahci": "kernel/drivers/ata/libahci.ko",
    "ata_piix": "kernel/drivers/ata/ata_piix.ko",
    "e1000": "kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
    "vmxnet3": "kernel/drivers/net/vmxnet3/vmxnet3.ko",
    "vmw_pvscsi": "kernel/drivers/scsi/vmw_pvscsi.ko",
    "vmw_balloon": "kernel/drivers/misc/vmw_balloon.ko",
    "ext4": "kernel/fs/ext4/ext4.ko",
}


def kernel_files(
    version: str,
    modules: Sequence[str],
    builtins: Sequence[str] = (),
    *,
    suffix: str = "",
    vmlinuz: str | None = None,
    initrd: str | None = None,
) -> dict[str, str | bytes]:
    """/boot files and a /lib/modules/VERSION tree: empty .ko files, modules.dep and modules.builtin.

    ``suffix`` is the compression (".xz" on RHEL 8); ``modules``/``builtins``
    are names from the tables above.
    """
    table = {**_VIRTIO, **_OTHER}
    files: dict[str, str | bytes] = {}
    deps = {
        "virtio_pci": ["virtio_ring", "virtio"],
        "virtio_blk": ["virtio_ring", "virtio"],
        "virtio_net": ["virtio_ring", "virtio"],
        "virtio_scsi": ["virtio_ring", "virtio"],
        "virtio_balloon": ["virtio_ring", "virtio"],
        "virtio_rng": ["virtio_ring", "virtio"],
        "virtio_console": ["virtio_ring", "virtio"],
        "ahci": ["libahci"],
    }
    dep_lines = []
    for name in modules:
        rel = table[name] + suffix
        files[f"/lib/modules/{version}/{rel}"] = b""
        needed = [table[d] + suffix for d in deps.get(name, []) if d in modules]
        dep_lines.append(f"{rel}:{''.join(' ' + n for n in needed)}\n")
    files[f"/lib/modules/{version}/modules.dep"] = "".join(dep_lines)
    files[f"/lib/modules/{version}/modules.builtin"] = "".join(f"{table[n]}\n" for n in builtins)
    files[vmlinuz or f"/boot/vmlinuz-{version}"] = b"phony kernel\n"
    if initrd:
        files[initrd] = b"phony initramfs\n"
    return files


def _dpkg_status(packages: Sequence[tuple[str, str]]) -> str:
    return "".join(
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: admin\n"
        f"Architecture: amd64\nVersion: {version}\nDescription: {name}\n\n"
        for name, version in packages
    )


_DEBIAN_APPS = [
    ("base-files", "11.1+deb11u9"),
    ("libc6", "2.31-13+deb11u8"),
    ("systemd", "247.3-7+deb11u4"),
    ("initramfs-tools", "0.140"),
    ("grub-pc", "2.06-3~deb11u6"),
    ("linux-image-5.10.0-28-amd64", "5.10.209-2"),
    ("linux-image-5.10.0-26-amd64", "5.10.197-1"),
    ("open-vm-tools", "2:11.2.5-2+deb11u3"),
]
_DEBIAN_MODULES = [
    *_VIRTIO,
    "ahci",
    "libahci",
    "ata_piix",
    "e1000",
    "vmxnet3",
    "vmw_pvscsi",
    "vmw_balloon",
    "ext4",
]


def debian11() -> PhonyGuest:
    """Debian 11 as VMware left it: /dev/sda1 root, /dev/sda5 swap, ens33, open-vm-tools."""
    k, old = "5.10.0-28-amd64", "5.10.0-26-amd64"
    grub_cfg = f"""\
### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-{DEBIAN11_ROOT_UUID}' {{
	load_video
	insmod gzio
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	echo	'Loading Linux {k} ...'
	linux	/boot/vmlinuz-{k} root=/dev/sda1 ro quiet resume=/dev/sda5
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-{k}
}}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-{DEBIAN11_ROOT_UUID}' {{
	menuentry 'Debian GNU/Linux, with Linux {k}' --class debian $menuentry_id_option 'gnulinux-{k}-advanced-{DEBIAN11_ROOT_UUID}' {{
		linux	/boot/vmlinuz-{k} root=/dev/sda1 ro quiet resume=/dev/sda5
		initrd	/boot/initrd.img-{k}
	}}
	menuentry 'Debian GNU/Linux, with Linux {old}' --class debian $menuentry_id_option 'gnulinux-{old}-advanced-{DEBIAN11_ROOT_UUID}' {{
		linux	/boot/vmlinuz-{old} root=/dev/sda1 ro quiet resume=/dev/sda5
	}}
}}
### END /etc/grub.d/10_linux ###
"""
    files: dict[str, str | bytes] = {
        "/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="11"\nVERSION="11 (bullseye)"\nVERSION_CODENAME=bullseye\nID=debian\n',
        "/etc/debian_version": "11.9\n",
        "/etc/hostname": "deb11-vmw\n",
        "/etc/fstab": "# /etc/fstab: static file system information.\n"
        "# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n"
        "/dev/sda1       /               ext4    errors=remount-ro 0       1\n"
        "/dev/sda5       none            swap    sw              0       0\n"
        "/dev/sdb1       /data           ext4    defaults        0       2\n"
        "/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto 0       0\n",
        "/var/lib/dpkg/status": _dpkg_status(_DEBIAN_APPS),
        "/etc/initramfs-tools/initramfs.conf": "MODULES=most\nBUSYBOX=auto\nCOMPRESS=zstd\n",
        "/etc/initramfs-tools/modules": "# List of modules that you want to include in your initramfs.\n"
        "# Syntax:  module_name [args ...]\nvmw_pvscsi\n",
        "/etc/default/grub": "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n"
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet resume=/dev/sda5"\nGRUB_CMDLINE_LINUX=""\n',
        "/boot/grub/grub.cfg": grub_cfg,
        "/etc/network/interfaces": "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
        "allow-hotplug ens33\niface ens33 inet dhcp\n",
        "/lib/systemd/systemd": b"",
        "/lib/systemd/system/open-vm-tools.service": "[Unit]\nDescription=Service for virtual machines hosted on VMware\n"
        "[Service]\nExecStart=/usr/bin/vmtoolsd\n[Install]\nWantedBy=multi-user.target\n",
        "/usr/bin/vmtoolsd": b"",
        **kernel_files(k, _DEBIAN_MODULES, initrd=f"/boot/initrd.img-{k}"),
        **kernel_files(old, _DEBIAN_MODULES),
    }
    return PhonyGuest(
        name="debian11",
        files=files,
        symlinks={
            "/sbin/init": "/lib/systemd/systemd",
            "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service": "/lib/systemd/system/open-vm-tools.service",
            "/vmlinuz": f"boot/vmlinuz-{k}",
            "/initrd.img": f"boot/initrd.img-{k}",
        },
        dirs=("/etc/network/interfaces.d", "/data", "/proc", "/sys", "/dev", "/run"),
        partitions=(
            Part("/", "ext4", 640, label="debroot", uuid=DEBIAN11_ROOT_UUID),
            Part("", "swap", None, logical=True),
        ),
        stubs=DEB_STUBS,
    )


_UBUNTU_BUILTIN = [
    "virtio",
    "virtio_ring",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
]


def ubuntu2004() -> PhonyGuest:
    """Ubuntu 20.04: virtio built into the kernel, netplan on ens160, an ESP (UEFI)."""
    k = "5.4.0-150-generic"
    files: dict[str, str | bytes] = {
        "/etc/os-release": 'NAME="Ubuntu"\nVERSION="20.04.6 LTS (Focal Fossa)"\nID=ubuntu\nID_LIKE=debian\n'
        'PRETTY_NAME="Ubuntu 20.04.6 LTS"\nVERSION_ID="20.04"\nVERSION_CODENAME=focal\n',
        "/etc/lsb-release": "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=20.04\nDISTRIB_CODENAME=focal\n"
        'DISTRIB_DESCRIPTION="Ubuntu 20.04.6 LTS"\n',
        "/etc/debian_version": "bullseye/sid\n",
        "/etc/hostname": "focal-vmw\n",
        "/etc/fstab": "LABEL=cloudimg-rootfs\t/\t ext4\tdefaults\t0 1\nLABEL=UEFI\t/boot/efi\tvfat\tumask=0077\t0 1\n",
        "/var/lib/dpkg/status": _dpkg_status(
            [
                ("base-files", "11ubuntu5.8"),
                ("systemd", "245.4-4ubuntu3.23"),
                ("netplan.io", "0.106-0ubuntu3~20.04.1"),
                ("initramfs-tools", "0.136ubuntu6.7"),
                ("grub-efi-amd64", "2.06-2ubuntu14.4"),
                ("linux-image-5.4.0-150-generic", "5.4.0-150.167"),
                ("open-vm-tools", "2:11.3.0-2ubuntu0~ubuntu20.04.7"),
                ("open-vm-tools-desktop", "2:11.3.0-2ubuntu0~ubuntu20.04.7"),
            ]
        ),
        "/etc/initramfs-tools/initramfs.conf": "MODULES=most\nBUSYBOX=auto\nCOMPRESS=lz4\n",
        "/etc/initramfs-tools/modules": "# List of modules that you want to include in your initramfs.\n",
        "/etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_TIMEOUT_STYLE=hidden\nGRUB_TIMEOUT=0\n'
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n',
        "/boot/grub/grub.cfg": f"""\
menuentry 'Ubuntu' --class ubuntu --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-{UBUNTU_ROOT_UUID}' {{
	search --no-floppy --fs-uuid --set=root {UBUNTU_ROOT_UUID}
	linux	/boot/vmlinuz-{k} root=UUID={UBUNTU_ROOT_UUID} ro  quiet splash
	initrd	/boot/initrd.img-{k}
}}
""",
        "/boot/efi/EFI/ubuntu/grub.cfg": f"search.fs_uuid {UBUNTU_ROOT_UUID} root\nset prefix=($root)'/boot/grub'\n"
        "configfile $prefix/grub.cfg\n",
        "/boot/efi/EFI/ubuntu/shimx64.efi": b"",
        "/etc/netplan/50-cloud-init.yaml": "network:\n    ethernets:\n        ens160:\n            dhcp4: true\n"
        "            match:\n                macaddress: 00:50:56:a1:b2:c3\n            set-name: ens160\n"
        "    version: 2\n",
        "/lib/systemd/systemd": b"",
        "/usr/bin/vmtoolsd": b"",
        **kernel_files(k, ["virtio_balloon", "virtio_rng", "ahci", "libahci", "e1000", "vmxnet3", "vmw_pvscsi"],
                       _UBUNTU_BUILTIN, initrd=f"/boot/initrd.img-{k}"),
    }  # fmt: skip
    return PhonyGuest(
        name="ubuntu2004",
        files=files,
        symlinks={
            "/sbin/init": "/lib/systemd/systemd",
            "/boot/vmlinuz": f"vmlinuz-{k}",
            "/boot/initrd.img": f"initrd.img-{k}",
        },
        dirs=("/proc", "/sys", "/dev", "/run"),
        partitions=(
            Part("/boot/efi", "vfat", 64, label="UEFI", esp=True),
            Part("/", "ext4", None, label="cloudimg-rootfs", uuid=UBUNTU_ROOT_UUID),
        ),
        stubs=DEB_STUBS,
    )


def _bls(version: str, title: str, machine_id: str = RHEL8_MACHINE_ID) -> tuple[str, str]:
    return (
        f"/boot/loader/entries/{machine_id}-{version}.conf",
        f"title {title} ({version}) 8.9 (Ootpa)\nversion {version}\nlinux /vmlinuz-{version}\n"
        f"initrd /initramfs-{version}.img $tuned_initrd\n"
        "options root=/dev/mapper/rhel-root ro crashkernel=auto resume=/dev/mapper/rhel-swap "
        "rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet\n"
        f"id rhel-20231115000000-{version}\ngrub_users $grub_users\ngrub_arg --unrestricted\ngrub_class kernel\n",
    )


_RHEL_MODULES = [*_VIRTIO, "ahci", "libahci", "ata_piix", "e1000", "vmxnet3", "vmw_pvscsi", "vmw_balloon"]


def rhel_files(title: str = "Red Hat Enterprise Linux") -> dict[str, str | bytes]:
    """The RHEL 8 files minus fstab (shared with dual_boot())."""
    k, old = "4.18.0-513.5.1.el8_9.x86_64", "4.18.0-477.10.1.el8_8.x86_64"
    entries = dict([_bls(k, title), _bls(old, title)])
    return {
        "/etc/os-release": 'NAME="Red Hat Enterprise Linux"\nVERSION="8.9 (Ootpa)"\nID="rhel"\n'
        'ID_LIKE="fedora"\nVERSION_ID="8.9"\nPLATFORM_ID="platform:el8"\n'
        'PRETTY_NAME="Red Hat Enterprise Linux 8.9 (Ootpa)"\n',
        "/etc/redhat-release": "Red Hat Enterprise Linux release 8.9 (Ootpa)\n",
        "/etc/hostname": "rhel8-vmw.example.com\n",
        "/etc/machine-id": RHEL8_MACHINE_ID + "\n",
        "/etc/selinux/config": "# This file controls the state of SELinux on the system.\nSELINUX=enforcing\n"
        "SELINUXTYPE=targeted\n",
        "/etc/selinux/targeted/contexts/files/file_contexts": "/.*\tsystem_u:object_r:default_t:s0\n",
        "/etc/dracut.conf": "# PUT YOUR CONFIG IN separate files\n",
        "/etc/dracut.conf.d/.keep": "",
        "/etc/default/grub": "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\n"
        'GRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT="console"\n'
        'GRUB_CMDLINE_LINUX="crashkernel=auto resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root '
        'rd.lvm.lv=rhel/swap rhgb quiet"\nGRUB_DISABLE_RECOVERY="true"\nGRUB_ENABLE_BLSCFG=true\n',
        "/boot/grub2/grub.cfg": "### BEGIN /etc/grub.d/10_linux ###\ninsmod part_msdos\ninsmod ext2\n"
        "set root='hd0,msdos1'\ninsmod blscfg\nblscfg\n### END /etc/grub.d/10_linux ###\n",
        "/boot/grub2/grubenv": (
            f"# GRUB Environment Block\nsaved_entry={RHEL8_MACHINE_ID}-{k}\nboot_success=0\n"
            "kernelopts=root=/dev/mapper/rhel-root ro crashkernel=auto rhgb quiet\n"
        ).ljust(1024, "#"),
        "/etc/sysconfig/network-scripts/ifcfg-ens192": "TYPE=Ethernet\nBOOTPROTO=none\nNAME=ens192\nDEVICE=ens192\n"
        "ONBOOT=yes\nHWADDR=00:50:56:8a:3c:01\nIPADDR=192.168.10.21\nPREFIX=24\nGATEWAY=192.168.10.1\nDNS1=192.168.10.1\n",
        "/etc/X11/xorg.conf": 'Section "ServerLayout"\n\tIdentifier "Default Layout"\n\tScreen 0 "Screen0" 0 0\n'
        '\tInputDevice "Mouse0" "CorePointer"\nEndSection\n\nSection "InputDevice"\n\tIdentifier "Mouse0"\n'
        '\tDriver "vmmouse"\n\tOption "Device" "/dev/input/mice"\nEndSection\n\nSection "Device"\n'
        '\tIdentifier "Videocard0"\n\tDriver "vmware"\nEndSection\n\nSection "Screen"\n\tIdentifier "Screen0"\n'
        '\tDevice "Videocard0"\nEndSection\n',
        "/usr/lib/systemd/systemd": b"",
        "/usr/lib/systemd/system/vmtoolsd.service": "[Unit]\nDescription=Service for virtual machines hosted on VMware\n"
        "[Service]\nExecStart=/usr/bin/vmtoolsd\n[Install]\nWantedBy=multi-user.target\n",
        "/usr/bin/vmtoolsd": b"",
        "/var/lib/rpm/.phony": "no real rpmdb: rpm -qa answers from /var/lib/vm2kvm-phony/rpms\n",
        **entries,
        **kernel_files(k, _RHEL_MODULES, suffix=".xz", initrd=f"/boot/initramfs-{k}.img"),
        **kernel_files(old, _RHEL_MODULES, suffix=".xz", initrd=f"/boot/initramfs-{old}.img"),
    }


RHEL8_RPMS = (
    "redhat-release-8.9-0.5.el8.x86_64",
    "kernel-core-4.18.0-513.5.1.el8_9.x86_64",
    "kernel-core-4.18.0-477.10.1.el8_8.x86_64",
    "dracut-049-228.git20230802.el8.x86_64",
    "grub2-pc-2.02-150.el8.x86_64",
    "open-vm-tools-12.2.5-3.el8.x86_64",
    "xorg-x11-drv-vmware-13.2.1-8.el8.x86_64",
)


def rhel8() -> PhonyGuest:
    """RHEL 8.9 on LVM (rhel/root, rhel/swap), BLS entries, SELinux enforcing, ifcfg-ens192, xorg vmware."""
    files = {
        **rhel_files(),
        "/etc/fstab": "#\n# /etc/fstab\n#\n/dev/mapper/rhel-root   /                       ext4    defaults        0 0\n"
        f"UUID={RHEL8_BOOT_UUID} /boot                   ext4    defaults        1 2\n"
        "/dev/mapper/rhel-swap   none                    swap    defaults        0 0\n",
    }
    return PhonyGuest(
        name="rhel8",
        files=files,
        symlinks={
            "/sbin/init": "../usr/lib/systemd/systemd",
            "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service": "/usr/lib/systemd/system/vmtoolsd.service",
        },
        dirs=("/proc", "/sys", "/dev", "/run"),
        partitions=(
            Part("/boot", "ext4", 192, uuid=RHEL8_BOOT_UUID),
            Part("/", "ext4", None, lv="rhel/root"),
            Part("", "swap", 64, lv="rhel/swap"),
        ),
        rpms=RHEL8_RPMS,
        stubs=RHEL8_STUBS,
    )


def sles12() -> PhonyGuest:
    """SLES 12 SP5: swap on sda1, root on sda2 (root=/dev/sda2), wicked ifcfg-eth0, dracut+mkinitrd."""
    k = "4.12.14-122.183-default"
    files: dict[str, str | bytes] = {
        "/etc/os-release": 'NAME="SLES"\nVERSION="12-SP5"\nVERSION_ID="12.5"\nPRETTY_NAME="SUSE Linux Enterprise Server 12 SP5"\n'
        'ID="sles"\nANSI_COLOR="0;32"\nCPE_NAME="cpe:/o:suse:sles:12:sp5"\n',
        "/etc/SuSE-release": "SUSE Linux Enterprise Server 12 (x86_64)\nVERSION = 12\nPATCHLEVEL = 5\n",
        "/etc/HOSTNAME": "sles12-vmw\n",
        "/etc/fstab": f"UUID={SLES12_SWAP_UUID} swap swap defaults 0 0\nUUID={SLES12_ROOT_UUID} / ext4 acl,user_xattr 1 1\n",
        "/etc/zypp/zypp.conf": "[main]\n",
        "/etc/zypp/repos.d/SLES12-SP5-Pool.repo": "[SLES12-SP5-Pool]\nname=SLES12-SP5-Pool\nenabled=1\n"
        "baseurl=http://smt.example.com/repo/SUSE/Products/SLE-SERVER/12-SP5/x86_64/product/\n",
        "/etc/sysconfig/network/ifcfg-eth0": "BOOTPROTO='dhcp'\nSTARTMODE='auto'\nNAME='VMXNET3 Ethernet Controller'\n",
        "/etc/sysconfig/network/config": 'NETCONFIG_MODULES_ORDER="dns-resolver dns-bind ntp-runtime"\n',
        "/etc/sysconfig/bootloader": 'LOADER_TYPE="grub2"\nSECURE_BOOT="no"\nDEFAULT_APPEND="resume=/dev/sda1 splash=silent quiet showopts"\n',
        "/etc/sysconfig/kernel": 'INITRD_MODULES="vmw_pvscsi"\nMODULES_LOADED_ON_BOOT=""\n',
        "/etc/dracut.conf": "# dracut configuration\n",
        "/etc/dracut.conf.d/01-dist.conf": 'hostonly="yes"\n',
        "/etc/default/grub": 'GRUB_DISTRIBUTOR="SLES12"\nGRUB_DEFAULT=saved\nGRUB_TIMEOUT=8\n'
        'GRUB_CMDLINE_LINUX_DEFAULT="resume=/dev/sda1 splash=silent quiet showopts"\nGRUB_CMDLINE_LINUX=""\n',
        "/boot/grub2/grub.cfg": f"""\
### BEGIN /etc/grub.d/10_linux ###
menuentry 'SLES12-SP5' --class sles --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-{SLES12_ROOT_UUID}' {{
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos2'
	echo	'Loading Linux {k} ...'
	linux	/boot/vmlinuz-{k} root=/dev/sda2  resume=/dev/sda1 splash=silent quiet showopts
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd-{k}
}}
### END /etc/grub.d/10_linux ###
""",
        "/usr/lib/systemd/systemd": b"",
        "/usr/bin/vmtoolsd": b"",
        **kernel_files(k, [*_VIRTIO, "ahci", "libahci", "ata_piix", "e1000", "vmxnet3", "vmw_pvscsi"],
                       initrd=f"/boot/initrd-{k}"),
    }  # fmt: skip
    return PhonyGuest(
        name="sles12",
        files=files,
        symlinks={
            "/sbin/init": "../usr/lib/systemd/systemd",
            "/boot/vmlinuz": f"vmlinuz-{k}",
            "/boot/initrd": f"initrd-{k}",
        },
        dirs=("/proc", "/sys", "/dev", "/run"),
        partitions=(
            Part("", "swap", 64, uuid=SLES12_SWAP_UUID),
            Part("/", "ext4", None, uuid=SLES12_ROOT_UUID),
        ),
        rpms=(
            "sles-release-12.5-1.48.x86_64",
            "kernel-default-4.12.14-122.183.1.x86_64",
            "dracut-044.2-114.x86_64",
            "grub2-2.02-12.56.1.x86_64",
            "open-vm-tools-11.3.5-1.43.1.x86_64",
            "libvmtools0-11.3.5-1.43.1.x86_64",
        ),
        stubs=SLES12_STUBS,
    )


def centos6() -> PhonyGuest:
    """CentOS 6.10: GRUB legacy, upstart, a tarball VMware Tools install, vmw_pvscsi options."""
    k = "2.6.32-754.35.1.el6.x86_64"
    menu = f"""\
# grub.conf generated by anaconda
default=0
timeout=5
splashimage=(hd0,0)/grub/splash.xpm.gz
hiddenmenu
title CentOS 6 ({k})
	root (hd0,0)
	kernel /vmlinuz-{k} ro root=/dev/sda2 rd_NO_LUKS LANG=en_US.UTF-8 rd_NO_MD SYSFONT=latarcyrheb-sun16 KEYTABLE=us rd_NO_LVM rd_NO_DM rhgb quiet
	initrd /initramfs-{k}.img
"""
    files: dict[str, str | bytes] = {
        "/etc/redhat-release": "CentOS release 6.10 (Final)\n",
        "/etc/centos-release": "CentOS release 6.10 (Final)\n",
        "/etc/sysconfig/network": "NETWORKING=yes\nHOSTNAME=centos6-vmw.example.com\n",
        "/etc/fstab": f"UUID={CENTOS6_ROOT_UUID} /                       ext4    defaults        1 1\n"
        f"UUID={CENTOS6_BOOT_UUID} /boot                   ext4    defaults        1 2\n"
        "tmpfs                   /dev/shm                tmpfs   defaults        0 0\n"
        "proc                    /proc                   proc    defaults        0 0\n",
        "/boot/grub/menu.lst": menu,
        "/etc/sysconfig/grub": "boot=/dev/sda\nforcelba=0\n",
        "/etc/selinux/config": "SELINUX=permissive\nSELINUXTYPE=targeted\n",
        "/etc/sysconfig/network-scripts/ifcfg-eth0": 'DEVICE=eth0\nHWADDR=00:0C:29:5A:6B:7C\nTYPE=Ethernet\nONBOOT=yes\nBOOTPROTO=dhcp\n',
        "/etc/udev/rules.d/70-persistent-net.rules": '# PCI device 0x15ad:0x07b0 (vmxnet3)\nSUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", '
        'ATTR{address}=="00:0c:29:5a:6b:7c", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"\n',
        "/etc/modprobe.d/vmware-tools.conf": "# Added by VMware Tools\noptions vmw_pvscsi cmd_per_lun=254 ring_pages=32\n",
        "/etc/vmware-tools/locations": "answer BINDIR /usr/bin\nanswer LIBDIR /usr/lib/vmware-tools\n"
        "file /etc/vmware-tools/tools.conf\nanswer INITSCRIPTSDIR /etc/init.d\n",
        "/etc/init.d/vmware-tools": "#!/bin/sh\n# chkconfig: 235 03 99\nexit 0\n",
        "/etc/dracut.conf": "# dracut configuration\n",
        "/etc/inittab": "id:3:initdefault:\n",
        "/etc/init/rc.conf": "start on runlevel [0123456]\nexec /etc/rc.d/rc $RUNLEVEL\n",
        "/sbin/init": b"",
        **kernel_files(k, [*_VIRTIO, "ahci", "libahci", "ata_piix", "e1000", "vmxnet3", "vmw_pvscsi"],
                       initrd=f"/boot/initramfs-{k}.img"),
    }  # fmt: skip
    return PhonyGuest(
        name="centos6",
        files=files,
        symlinks={"/etc/grub.conf": "../boot/grub/grub.conf", "/boot/grub/grub.conf": "menu.lst",
                  "/etc/rc3.d/S03vmware-tools": "../init.d/vmware-tools"},
        modes={"/etc/init.d/vmware-tools": 0o755, "/sbin/init": 0o755},
        dirs=("/proc", "/sys", "/dev"),
        partitions=(
            Part("/boot", "ext4", 128, uuid=CENTOS6_BOOT_UUID),
            Part("/", "ext4", None, uuid=CENTOS6_ROOT_UUID),
        ),
        rpms=("centos-release-6-10.el6.centos.12.3.x86_64", "kernel-2.6.32-754.35.1.el6.x86_64",
              "dracut-004-411.el6.noarch", "grub-0.97-99.el6.x86_64"),
        stubs=CENTOS6_STUBS,
    )  # fmt: skip


def data_only() -> PhonyGuest:
    """A data disk: one ext4 with files, no operating system."""
    return PhonyGuest(
        name="data_only",
        files={"/projects/README.txt": "quarterly data\n", "/projects/2023/q4.csv": "a,b\n1,2\n"},
        partitions=(Part("/", "ext4", None, label="data", uuid=DATA_UUID),),
        busybox=False,
        disk_mib=256,
    )


def dual_boot() -> PhonyGuest:
    """Two roots on one disk: Debian 11 on sda1 and RHEL 8 on sda2 (built under /alt)."""
    deb = {k: v for k, v in debian11().files.items()}
    deb["/etc/fstab"] = f"UUID={DUAL_DEBIAN_UUID} / ext4 errors=remount-ro 0 1\n"
    deb["/etc/hostname"] = "dual-debian\n"
    rhel = rhel_files()
    rhel["/etc/fstab"] = f"UUID={DUAL_RHEL_UUID} / ext4 defaults 0 0\n"
    rhel["/etc/hostname"] = "dual-rhel\n"
    files = {**deb, **{f"/alt{p}": c for p, c in rhel.items()}}
    files["/alt/var/lib/vm2kvm-phony/rpms"] = "".join(f"{n}\n" for n in RHEL8_RPMS)
    symlinks = {"/sbin/init": "/lib/systemd/systemd", "/alt/sbin/init": "../usr/lib/systemd/systemd"}
    stubs = tuple(DEB_STUBS) + tuple(f"/alt{p}" for p in RHEL8_STUBS)
    return PhonyGuest(
        name="dual_boot",
        files=files,
        symlinks=symlinks,
        dirs=tuple(f"{top}{d}" for top in ("", "/alt") for d in ("/proc", "/sys", "/dev", "/run")),
        partitions=(
            Part("/", "ext4", 400, uuid=DUAL_DEBIAN_UUID),
            Part("/alt", "ext4", None, uuid=DUAL_RHEL_UUID),
        ),
        stubs=stubs,
        busybox_roots=("/", "/alt"),
        disk_mib=900,
    )


BASE_SPECS: tuple[Callable[[], PhonyGuest], ...] = (
    debian11,
    data_only,
    ubuntu2004,
    rhel8,
    sles12,
    centos6,
    dual_boot,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    for name, path in build_images([f() for f in BASE_SPECS], args.out).items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
