"""Phony Windows disk images, every missing layout built in one libguestfs appliance launch.

    images = build_windows_images()                  # all layouts (layout.ALL_LAYOUTS)
    images["win2019"].disks                          # (system disk, data disk), read-only raw files

A phony Windows guest does not boot.  Its system disk has the partitions
Windows' installer makes (``layout.py``), an NTFS C: holding the SYSTEM
and SOFTWARE hives (``hives.py``), a PE header as ``cmd.exe`` (so
libguestfs inspection finds the architecture), the boot files, VMware
Tools' driver files, and for the broken layouts a hibernation file or a
BitLocker boot sector.  A second disk, when the layout has one, holds an
NTFS D:.

Images are cached in ``cache_dir/<name>-<hash>[-dN].img``; the hash covers
the three modules of this package and the layout, so editing any of them
rebuilds.  The build runs under an ``flock`` and renames finished images
into place read-only; use them through qcow2 overlays.

    python -m testbed.guests.windows.build [--out DIR]   # build every layout, print the paths
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import struct
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.guests.windows.hives import software_hive, system_hive, write_hive
from testbed.guests.windows.layout import ALL_LAYOUTS, SECTOR, Partition, WindowsLayout

REPO = Path(__file__).resolve().parents[3]
DEFAULT_CACHE_DIR = REPO / "build" / "guests" / "windows"
_GPT_NAMES = {
    "esp": "EFI system partition",
    "msr": "Microsoft reserved partition",
    "c": "Basic data partition",
}


@dataclass(frozen=True)
class WindowsImage:
    layout: WindowsLayout
    disks: tuple[Path, ...]  # system disk first, then the data disk when there is one


def pe_header(arch: str) -> bytes:
    """The headers of a console PE executable for ``arch`` (what `file` and libguestfs read)."""
    machine, magic, optional_size = {"i386": (0x14C, 0x10B, 0xE0), "x86_64": (0x8664, 0x20B, 0xF0)}[arch]
    dos = bytearray(0x80)
    dos[0:2] = b"MZ"
    struct.pack_into("<H", dos, 2, 0x90)
    struct.pack_into("<I", dos, 0x3C, 0x80)  # e_lfanew: where the PE header starts
    characteristics = 0x0102 if arch == "i386" else 0x0022  # executable, 32-bit / large-address aware
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", machine, 0, 0x4A000000, 0, 0, optional_size, characteristics)
    optional = bytearray(optional_size)
    struct.pack_into("<H", optional, 0, magic)
    struct.pack_into("<H", optional, 68, 3)  # subsystem: Windows console
    return bytes(dos) + coff + bytes(optional)


def bitlocker_boot_sector() -> bytes:
    """A BitLocker volume's first sector: its OEM id ``-FVE-FS-`` where NTFS says ``NTFS    ``."""
    sector = bytearray(SECTOR)
    sector[0:3] = b"\xeb\x58\x90"
    sector[3:11] = b"-FVE-FS-"
    struct.pack_into("<HB", sector, 11, SECTOR, 8)  # bytes per sector, sectors per cluster
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _source_hash() -> str:
    h = hashlib.sha256()
    for module in ("layout.py", "hives.py", "build.py"):
        h.update((Path(__file__).parent / module).read_bytes())
    return h.hexdigest()


def image_paths(layout: WindowsLayout, cache_dir: Path, source_hash: str | None = None) -> tuple[Path, ...]:
    key = hashlib.sha256((source_hash or _source_hash()).encode() + repr(layout).encode()).hexdigest()[:16]
    base = cache_dir / f"{layout.name}-{key}"
    return (base.with_suffix(".img"),) + (
        (base.with_name(base.name + "-d1.img"),) if layout.data_disk else ()
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_windows_images(
    layouts: Sequence[Callable[[], WindowsLayout]] | Sequence[WindowsLayout] = ALL_LAYOUTS,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> dict[str, WindowsImage]:
    """The images of every layout (name -> ``WindowsImage``), building the missing ones in one appliance."""
    specs = [layout if isinstance(layout, WindowsLayout) else layout() for layout in layouts]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"phony Windows layout names must be unique: {names}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    source_hash = _source_hash()
    images = {s.name: WindowsImage(s, image_paths(s, cache_dir, source_hash)) for s in specs}
    with _locked(cache_dir / ".lock"):
        missing = [i for i in images.values() if not all(p.exists() for p in i.disks)]
        if missing:
            _build(missing)
    return images


def _build(images: Sequence[WindowsImage]) -> None:
    import guestfs

    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    started = time.monotonic()
    temps = [
        (final, final.with_name(f".{final.name}.{os.getpid()}.tmp")) for i in images for final in i.disks
    ]
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        sizes = [(i.layout.disk_mib if n == 0 else 32) for i in images for n in range(len(i.disks))]
        disks = [(i.layout, n) for i in images for n in range(len(i.disks))]
        for (_, tmp), mib, (layout, n) in zip(temps, sizes, disks, strict=True):
            with open(tmp, "wb") as f:
                f.truncate(mib << 20)  # sparse
            _write_tables(tmp, layout, n)
            g.add_drive_opts(str(tmp), format="raw", readonly=False)
        g.launch()
        devices = iter(g.list_devices())
        with tempfile.TemporaryDirectory(prefix="vm2kvm-winphony-") as scratch:
            for image in images:
                _system_disk(g, image.layout, next(devices), Path(scratch))
                if image.layout.data_disk:
                    _data_disk(g, next(devices))
        g.shutdown()
    except BaseException:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        g.close()
    for final, tmp in temps:
        tmp.chmod(0o444)
        os.replace(tmp, final)
    took = time.monotonic() - started
    print(f"phony windows: built {[i.layout.name for i in images]} in {took:.1f} s", file=sys.stderr)


def mbr(signature: int, parts: Sequence[Partition], bootable: int = 1) -> bytes:
    """A master boot record: the disk signature (bytes 440-443) and up to four primary partitions."""
    sector = bytearray(SECTOR)
    struct.pack_into("<I", sector, 440, signature)
    for n, part in enumerate(parts):
        status = 0x80 if n + 1 == bootable else 0
        # CHS fields say "use LBA" (0xFEFFFF), as every tool writes them for disks this size.
        entry = struct.pack(
            "<B3sB3sII", status, b"\xfe\xff\xff", part.mbr_id, b"\xfe\xff\xff", part.start, part.sectors
        )
        sector[446 + 16 * n : 462 + 16 * n] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def gpt(total_sectors: int, disk_guid: str, parts: Sequence[Partition]) -> tuple[bytes, bytes]:
    """(the first 34 sectors, the last 33): protective MBR, GPT header and entries, and their backup."""
    entries = bytearray(128 * 128)
    for n, part in enumerate(parts):
        name = _GPT_NAMES.get(part.role, "Basic data partition").encode("utf-16-le")
        struct.pack_into(
            "<16s16sQQQ72s",
            entries,
            128 * n,
            uuid.UUID(part.gpt_type).bytes_le,
            uuid.UUID(part.gpt_guid).bytes_le,
            part.start,
            part.start + part.sectors - 1,
            0,
            name,
        )
    entries_crc = zlib.crc32(entries)
    last = total_sectors - 1

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = (b"EFI PART", 0x00010000, 92, 0, 0, current, backup, 34, last - 33)
        head = struct.pack("<8sIIIIQQQQ", *fields) + uuid.UUID(disk_guid).bytes_le
        head += struct.pack("<QIII", entries_lba, 128, 128, entries_crc)
        head = head[:16] + struct.pack("<I", zlib.crc32(head)) + head[20:]
        return head.ljust(SECTOR, b"\0")

    protective = Partition("gpt", 1, min(last, 0xFFFFFFFF), "", 0xEE)
    first = mbr(0, [protective], bootable=0) + header(1, last, 2) + bytes(entries)
    return first, bytes(entries) + header(last, 1, last - 32)


def _write_tables(path: Path, layout: WindowsLayout, disk: int) -> None:
    """Partition table, disk signature and BitLocker boot sector, written into the raw file directly.

    Partitioning inside the appliance costs a udev settle per call (1-2 s under
    TCG); on the host it is a few writes, and the appliance sees the
    partitions at launch.
    """
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if disk > 0:
            f.write(mbr(layout.data_disk_signature, [layout.data_partition], bootable=0))
            return
        parts = layout.partitions
        if layout.firmware == "uefi":
            first, last = gpt(size // SECTOR, layout.disk_guid, parts)
            f.write(first)
            f.seek(size - len(last))
            f.write(last)
        else:
            f.write(mbr(layout.disk_signature, parts))
        for part in parts:
            if part.fstype == "bitlocker":
                f.seek(part.start * SECTOR)
                f.write(bitlocker_boot_sector())


def _system_disk(g: Any, layout: WindowsLayout, device: str, scratch: Path) -> None:
    parts = layout.partitions
    for n, part in enumerate(parts, start=1):
        dev = f"{device}{n}"
        if part.fstype == "ntfs":
            g.mkfs("ntfs", dev, label="System Reserved" if part.role == "system-reserved" else "")
        elif part.fstype == "vfat":
            g.mkfs("vfat", dev, label="SYSTEM")
    roles = {part.role: f"{device}{n}" for n, part in enumerate(parts, start=1)}
    boot = roles.get("system-reserved", roles["c"])
    if layout.firmware == "uefi":
        g.mount(roles["esp"], "/")
        _put(g, "/EFI/Microsoft/Boot/bootmgfw.efi", pe_header("x86_64"))
        _put(g, "/EFI/Microsoft/Boot/BCD", b"regf")
        _put(g, "/EFI/Boot/bootx64.efi", pe_header("x86_64"))
        g.umount_all()
    elif layout.bitlocker or boot != roles["c"]:
        g.mount(boot, "/")
        _put(g, "/bootmgr", b"BOOTMGR")
        _put(g, "/Boot/BCD", b"regf")
        g.umount_all()
    if layout.bitlocker:
        return
    g.mount(roles["c"], "/")
    _windows_files(g, layout, scratch)
    g.umount_all()


def _windows_files(g: Any, layout: WindowsLayout, scratch: Path) -> None:
    root = layout.systemroot
    system32 = f"{root}/system32" if layout.major < 6 else f"{root}/System32"
    config = f"{system32}/config"
    hive_names = ("system", "software") if layout.major < 6 else ("SYSTEM", "SOFTWARE")
    for hive_name, content in zip(hive_names, (system_hive(layout), software_hive(layout)), strict=True):
        local = scratch / f"{layout.name}-{hive_name}"
        write_hive(local, hive_name.upper(), content)
        g.mkdir_p(config)
        g.upload(str(local), f"{config}/{hive_name}")
    exe = pe_header(layout.arch)
    _put(g, f"{system32}/cmd.exe", exe)
    _put(g, f"{system32}/drivers/disk.sys", exe)
    if layout.major < 6:
        _put(g, "/boot.ini", "[boot loader]\r\ndefault=multi(0)disk(0)rdisk(0)partition(1)\\WINDOWS\r\n")
        _put(g, "/ntldr", b"NTLDR")
    if layout.vmware_tools:
        tools = "/Program Files/VMware/VMware Tools"
        _put(g, f"{tools}/vmtoolsd.exe", exe)
        for name in (
            "vmci",
            "vmhgfs",
            "vmmouse",
            "vmmemctl",
            "vmxnet3" if layout.major >= 6 else "vmxnet3n51x86",
        ):
            _put(g, f"{system32}/drivers/{name}.sys", exe)
        if layout.major >= 6:
            for name in ("vm3dmp", "pvscsi", "vmusbmouse", "vmrawdsk", "vsock"):
                _put(g, f"{system32}/drivers/{name}.sys", exe)
    if layout.hiberfil:
        _put(g, "/hiberfil.sys", layout.hiberfil)


def _data_disk(g: Any, device: str) -> None:
    g.mkfs("ntfs", f"{device}1", label="Data")
    g.mount(f"{device}1", "/")
    _put(g, "/Shares/readme.txt", "data disk of the phony Windows guest\r\n")
    g.umount_all()


def _put(g: Any, path: str, content: bytes | str) -> None:
    g.mkdir_p(path.rsplit("/", 1)[0] or "/")
    g.write(path, content.encode() if isinstance(content, str) else content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    for name, image in build_windows_images(ALL_LAYOUTS, args.out).items():
        print(name, *image.disks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
