"""Real VMDK disks for tests, made with qemu-img or written by hand.

Typical use::

    base = make_vmdk(tmp_path, "web", "monolithicSparse", 16 * MiB)
    top = make_delta(tmp_path, "web-000001", base)        # a snapshot with its own data
    before = sha256_tree(tmp_path)
    ...  # migrate
    assert sha256_tree(tmp_path) == before                # the source was not touched
    assert images_equal(top, converted, fmt_b="qcow2")    # the whole chain arrived

Subformats (``SUBFORMATS``) and what they leave in the directory; qemu-img 7.2
reads all of them (checked in ``tests/core/vmware/test_vmdk.py``):

=======================  =================================================  ===============
subformat                files                                              made by
=======================  =================================================  ===============
monolithicSparse         ``name.vmdk`` (KDMV, descriptor embedded)           qemu-img
twoGbMaxExtentSparse     ``name.vmdk`` + ``name-s001.vmdk``... (2 GiB each)  qemu-img
monolithicFlat           ``name.vmdk`` + ``name-flat.vmdk``                  qemu-img
twoGbMaxExtentFlat       ``name.vmdk`` + ``name-f001.vmdk``...               qemu-img
streamOptimized          ``name.vmdk`` (compressed grains, embedded)         qemu-img
vmfs                     ESXi descriptor + ``name-flat.vmdk`` (sparse file)  by hand
vmfsSparse               descriptor + ``name-delta.vmdk`` (COWD redo log)    by hand
seSparse                 descriptor + ``name-sesparse.vmdk``                 by hand
=======================  =================================================  ===============

qemu-img cannot create the last three.  ``vmfs`` is exactly what ESXi
writes.  ``vmfsSparse`` and ``seSparse`` files carry only the header fields
and tables qemu's vmdk driver reads (VMware's own tools may want more); qemu
opens seSparse read-only.  On ESXi both are snapshot formats: use them
through ``make_delta(..., subformat=...)`` on top of a ``vmfs`` base; as a
``make_vmdk`` subformat they stand alone (parentCID=ffffffff).

Content: each disk holds ``REGION_SIZE`` byte regions at ``base_offsets(size)``
(a delta at ``delta_offsets(size)``; the first overwrites a base region) and
nothing else, so most of it is unallocated and sparseness can be checked.
``pattern_regions`` gives the exact bytes; ``write_reference_raw`` builds the
raw image a disk or chain must equal.  A region starts with its own offset
(``[0x0000100000]``) followed by the pattern, repeated to fill 4 KiB, so a
region copied to the wrong place is caught too.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SECTOR = 512
REGION_SIZE = 4 * KiB
_ALIGN = 64 * KiB  # qemu's VMDK grain; regions never share a grain

QEMU_SUBFORMATS = (
    "monolithicSparse",
    "twoGbMaxExtentSparse",
    "monolithicFlat",
    "twoGbMaxExtentFlat",
    "streamOptimized",
)
HAND_WRITTEN_SUBFORMATS = ("vmfs", "vmfsSparse", "seSparse")
SUBFORMATS = QEMU_SUBFORMATS + HAND_WRITTEN_SUBFORMATS
# Formats make_delta can produce: qemu-img writable sparse ones and the ESXi snapshot formats.
DELTA_SUBFORMATS = ("monolithicSparse", "twoGbMaxExtentSparse", "vmfsSparse", "seSparse")
NO_PARENT = 0xFFFFFFFF


@dataclass(frozen=True)
class Region:
    """Bytes a test disk holds at a virtual offset."""

    offset: int
    data: bytes


# --- content ---------------------------------------------------------------


def default_pattern(name: str) -> bytes:
    return f"vm2kvm test disk {name} ".encode()


def _align_down(value: int) -> int:
    return value // _ALIGN * _ALIGN


def base_offsets(size: int) -> tuple[int, ...]:
    """Where ``make_vmdk`` writes: first and last grain, 1 MiB, the middle."""
    return tuple(sorted({0, 1 * MiB, _align_down(size // 2), size - _ALIGN}))


def delta_offsets(size: int) -> tuple[int, ...]:
    """Where ``make_delta`` writes: over the base's 1 MiB region, next to it, at 3/4."""
    return tuple(sorted({1 * MiB, 1 * MiB + _ALIGN, _align_down(size * 3 // 4)}))


def pattern_regions(size: int, pattern: bytes, offsets: Iterable[int] | None = None) -> tuple[Region, ...]:
    """The regions a disk of ``size`` bytes holds for ``pattern`` (base offsets by default)."""
    if not pattern:
        raise ValueError("pattern must not be empty")
    regions = []
    for offset in base_offsets(size) if offsets is None else offsets:
        unit = f"[{offset:#012x}]".encode() + pattern
        data = (unit * (REGION_SIZE // len(unit) + 1))[:REGION_SIZE]
        regions.append(Region(offset, data))
    return tuple(regions)


def write_reference_raw(path: Path, size: int, *layers: Sequence[Region]) -> Path:
    """A sparse raw image with ``layers`` of regions applied in order (base first)."""
    with path.open("wb") as out:
        out.truncate(size)
        for regions in layers:
            for region in regions:
                out.seek(region.offset)
                out.write(region.data)
    return path


# --- qemu-img --------------------------------------------------------------


def _run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def qemu_info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of one image (not the chain)."""
    args = ["qemu-img", "info", "--output=json", "-U"]
    if fmt:
        args += ["-f", fmt]
    info: dict[str, Any] = json.loads(_run(*args, str(path)))
    return info


def images_equal(a: Path, b: Path, *, fmt_a: str | None = None, fmt_b: str | None = None) -> bool:
    """Whether two images (with their backing chains) hold the same guest-visible bytes."""
    args = ["qemu-img", "compare", "-q", "-U"]
    if fmt_a:
        args += ["-f", fmt_a]
    if fmt_b:
        args += ["-F", fmt_b]
    result = subprocess.run([*args, str(a), str(b)], capture_output=True, text=True, timeout=300)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"qemu-img compare {a} {b} failed: {result.stderr.strip()}")
    return result.returncode == 0


def read_virtual(disk: Path, offset: int, length: int, *, fmt: str | None = None) -> bytes:
    """Guest-visible bytes of ``disk`` (and its backing chain) at ``offset``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "flat.raw"
        args = ["qemu-img", "convert", "-U", "-O", "raw"]
        if fmt:
            args += ["-f", fmt]
        _run(*args, str(disk), str(raw))
        with raw.open("rb") as f:
            f.seek(offset)
            return f.read(length)


def allocated_bytes(disk: Path, *, fmt: str | None = None) -> int:
    """Bytes holding data in ``disk`` and its backing chain (``qemu-img map``)."""
    args = ["qemu-img", "map", "--output=json", "-U"]
    if fmt:
        args += ["-f", fmt]
    extents = json.loads(_run(*args, str(disk)))
    return sum(int(e["length"]) for e in extents if e["data"])


# --- descriptors -----------------------------------------------------------


def _new_cid() -> int:
    while True:
        cid = secrets.randbits(32)
        if cid not in (NO_PARENT, NO_PARENT - 1):
            return cid


def _ddb_base(sectors: int, adapter_type: str) -> list[str]:
    cylinders = max(1, min(65535, sectors // (255 * 63)))
    uuid = " ".join(f"{b:02x}" for b in secrets.token_bytes(16))
    return [
        f'ddb.adapterType = "{adapter_type}"',
        f'ddb.geometry.cylinders = "{cylinders}"',
        'ddb.geometry.heads = "255"',
        'ddb.geometry.sectors = "63"',
        f'ddb.longContentID = "{secrets.token_hex(16)}"',
        f'ddb.uuid = "{uuid}"',
        'ddb.virtualHWVersion = "14"',
    ]


def _descriptor(
    create_type: str,
    extent: str,
    ddb: list[str],
    *,
    cid: int,
    parent_cid: int = NO_PARENT,
    parent_hint: str | None = None,
) -> str:
    # Laid out as ESXi 6.x/7.x writes it.
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        'encoding="UTF-8"',
        f"CID={cid:08x}",
        f"parentCID={parent_cid:08x}",
        'isNativeSnapshot="no"',
        f'createType="{create_type}"',
    ]
    if parent_hint is not None:
        lines.append(f'parentFileNameHint="{parent_hint}"')
    lines += ["", "# Extent description", extent, "", "# The Disk Data Base", "#DDB", "", *ddb, ""]
    return "\n".join(lines)


def rewrite_descriptor(path: Path, transform: Callable[[str], str]) -> None:
    """Edit a VMDK's descriptor in place, text file or embedded in a sparse file.

    For breaking things on purpose: ``rewrite_descriptor(p, lambda t: t.replace(...))``.
    An embedded descriptor must still fit its reserved sectors.
    """
    with path.open("r+b") as f:
        head = f.read(SECTOR)
        if head.startswith(b"KDMV"):
            desc_offset, desc_size = struct.unpack_from("<QQ", head, 28)
            f.seek(desc_offset * SECTOR)
            text = f.read(desc_size * SECTOR).split(b"\0", 1)[0].decode()
            new = transform(text).encode()
            if len(new) > desc_size * SECTOR:
                raise ValueError(f"new descriptor ({len(new)} bytes) does not fit {desc_size} sectors")
            f.seek(desc_offset * SECTOR)
            f.write(new.ljust(desc_size * SECTOR, b"\0"))
            return
        f.seek(0)
        text = f.read().split(b"\0", 1)[0].decode()
        f.seek(0)
        f.truncate()
        f.write(transform(text).encode())


def descriptor_text(path: Path) -> str:
    """The descriptor of a VMDK, text file or embedded (read only)."""
    with path.open("rb") as f:
        head = f.read(SECTOR)
        if head.startswith(b"KDMV"):
            desc_offset, desc_size = struct.unpack_from("<QQ", head, 28)
            f.seek(desc_offset * SECTOR)
            return f.read(desc_size * SECTOR).split(b"\0", 1)[0].decode()
        f.seek(0)
        return f.read().split(b"\0", 1)[0].decode()


# --- hand-written extents --------------------------------------------------


def _grains(regions: Sequence[Region], grain_bytes: int) -> dict[int, bytes]:
    """Region bytes cut into grains, by grain index; bytes no region covers are zero."""
    grains: dict[int, bytearray] = {}
    for region in regions:
        for pos in range(region.offset, region.offset + len(region.data)):
            index, within = divmod(pos, grain_bytes)
            grain = grains.setdefault(index, bytearray(grain_bytes))
            grain[within] = region.data[pos - region.offset]
    return {index: bytes(data) for index, data in grains.items()}


def _cowd_image(sectors: int, regions: Sequence[Region]) -> bytes:
    """An ESX vmfsSparse redo log: COWD header, grain directory, 4096-entry grain tables."""
    grain_sectors = 1
    gt_entries = 4096
    gt_sectors = gt_entries * 4 // SECTOR
    gd_entries = -(-sectors // (gt_entries * grain_sectors))
    gd_offset = 4  # VMware's COWD header takes four sectors
    gt_base = gd_offset + -(-gd_entries * 4 // SECTOR)
    grains = _grains(regions, grain_sectors * SECTOR)
    tables = sorted({index // gt_entries for index in grains})
    gt_sector = {table: gt_base + i * gt_sectors for i, table in enumerate(tables)}
    data_base = gt_base + len(tables) * gt_sectors
    total = data_base + len(grains) * grain_sectors
    image = bytearray(total * SECTOR)
    cylinders = max(1, sectors // (255 * 63))
    struct.pack_into(
        "<4sIIIIIIIIII", image, 0, b"COWD", 1, 3, sectors, grain_sectors, gd_offset, gd_entries, total,
        cylinders, 255, 63,
    )  # fmt: skip
    for table, sector in gt_sector.items():
        struct.pack_into("<I", image, gd_offset * SECTOR + table * 4, sector)
    for i, (index, data) in enumerate(sorted(grains.items())):
        sector = data_base + i * grain_sectors
        image[sector * SECTOR : sector * SECTOR + len(data)] = data
        table, entry = divmod(index, gt_entries)
        struct.pack_into("<I", image, gt_sector[table] * SECTOR + entry * 4, sector)
    return bytes(image)


def _sesparse_image(sectors: int, regions: Sequence[Region]) -> bytes:
    """An ESXi seSparse extent with the header values qemu 7.2 insists on (4 KiB grains)."""
    grain_sectors = 8
    gt_entries = 4096
    gt_sectors = gt_entries * 8 // SECTOR  # 64
    gd_entries = -(-sectors // (gt_entries * grain_sectors))
    gd_offset = 8  # after const header, volatile header, journal header and journal
    gd_sectors = -(-gd_entries * 8 // SECTOR)
    gt_offset = gd_offset + gd_sectors
    grains = _grains(regions, grain_sectors * SECTOR)
    tables = sorted({index // gt_entries for index in grains})
    gt_number = {table: i for i, table in enumerate(tables)}
    grains_offset = -(-(gt_offset + len(tables) * gt_sectors) // grain_sectors) * grain_sectors
    total = grains_offset + len(grains) * grain_sectors
    image = bytearray(total * SECTOR)
    struct.pack_into(
        "<26Q", image, 0,
        0xCAFEBABE, 0x0000000200000001, sectors, grain_sectors, gt_sectors, 0,  # magic..flags
        0, 0, 0, 0,  # reserved
        1, 1,  # volatile header
        2, 1,  # journal header
        3, 5,  # journal
        gd_offset, gd_sectors,
        gt_offset, len(tables) * gt_sectors,
        0, 0,  # free bitmap (qemu does not read it)
        0, 0,  # backmap
        grains_offset, len(grains) * grain_sectors,
    )  # fmt: skip
    struct.pack_into("<4Q", image, SECTOR, 0xCAFECAFE, len(tables), 1, 0)
    for table, number in gt_number.items():
        struct.pack_into("<Q", image, gd_offset * SECTOR + table * 8, 0x1000000000000000 | number)
    for cluster, (index, data) in enumerate(sorted(grains.items())):
        sector = grains_offset + cluster * grain_sectors
        image[sector * SECTOR : sector * SECTOR + len(data)] = data
        table, entry = divmod(index, gt_entries)
        # qemu: allocated grain = 0x3 nibble, cluster bits 0..11 at 48..59, the rest at 0..47.
        value = 0x3000000000000000 | ((cluster & 0xFFF) << 48) | (cluster >> 12)
        gt_at = (gt_offset + gt_number[table] * gt_sectors) * SECTOR
        struct.pack_into("<Q", image, gt_at + entry * 8, value)
    return bytes(image)


def _write_hand_made(
    dir: Path,
    name: str,
    subformat: str,
    size: int,
    regions: Sequence[Region],
    *,
    adapter_type: str | None,
    parent_cid: int = NO_PARENT,
    parent_hint: str | None = None,
) -> Path:
    sectors = size // SECTOR
    descriptor = dir / f"{name}.vmdk"
    ddb = _ddb_base(sectors, adapter_type or "lsilogic")
    if subformat == "vmfs":
        extent_name = f"{name}-flat.vmdk"
        write_reference_raw(dir / extent_name, size, regions)
        extent = f'RW {sectors} VMFS "{extent_name}"'
        ddb.insert(4, 'ddb.thinProvisioned = "1"')
    elif subformat == "vmfsSparse":
        extent_name = f"{name}-delta.vmdk"
        (dir / extent_name).write_bytes(_cowd_image(sectors, regions))
        extent = f'RW {sectors} VMFSSPARSE "{extent_name}"'
    elif subformat == "seSparse":
        extent_name = f"{name}-sesparse.vmdk"
        (dir / extent_name).write_bytes(_sesparse_image(sectors, regions))
        extent = f'RW {sectors} SESPARSE "{extent_name}"'
        ddb.append('ddb.grain = "8"')
    else:
        raise ValueError(f"unknown hand-written subformat {subformat!r}")
    if parent_hint is not None:
        # ESXi snapshot descriptors carry only the content IDs in their DDB.
        ddb = [line for line in ddb if line.startswith(("ddb.longContentID", "ddb.grain"))]
    descriptor.write_text(
        _descriptor(subformat, extent, ddb, cid=_new_cid(), parent_cid=parent_cid, parent_hint=parent_hint)
    )
    return descriptor


# --- public factories ------------------------------------------------------


def _check_new(dir: Path, name: str, size: int) -> Path:
    if size < 2 * MiB or size % MiB:
        raise ValueError(f"size must be a whole number of MiB, at least 2 MiB (got {size})")
    if "/" in name or not name:
        raise ValueError(f"bad disk name {name!r}")
    dir.mkdir(parents=True, exist_ok=True)
    descriptor = dir / f"{name}.vmdk"
    if descriptor.exists():
        raise FileExistsError(descriptor)
    return descriptor


def make_vmdk(
    dir: Path,
    name: str,
    subformat: str,
    size: int = 64 * MiB,
    *,
    pattern: bytes | None = None,
    adapter_type: str | None = None,
) -> Path:
    """Create ``dir/name.vmdk`` of ``size`` bytes holding ``pattern_regions(size, pattern)``.

    ``pattern`` defaults to ``default_pattern(name)``.  ``adapter_type`` goes
    into ``ddb.adapterType`` (qemu-img accepts ide, buslogic, lsilogic,
    legacyESX; hand-written formats take any string; defaults: qemu's ide,
    lsilogic for ESXi formats).  Returns the descriptor path.
    """
    descriptor = _check_new(dir, name, size)
    regions = pattern_regions(size, default_pattern(name) if pattern is None else pattern)
    if subformat in HAND_WRITTEN_SUBFORMATS:
        return _write_hand_made(dir, name, subformat, size, regions, adapter_type=adapter_type)
    if subformat not in QEMU_SUBFORMATS:
        raise ValueError(f"unknown subformat {subformat!r}; one of {SUBFORMATS}")
    options = f"subformat={subformat}"
    if adapter_type:
        options += f",adapter_type={adapter_type}"
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_reference_raw(Path(tmp) / "content.raw", size, regions)
        _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", options, str(raw), str(descriptor))
    return descriptor


def make_delta(
    dir: Path,
    name: str,
    parent: Path,
    *,
    subformat: str = "monolithicSparse",
    pattern: bytes | None = None,
    write: bool = True,
) -> Path:
    """A snapshot ``dir/name.vmdk`` on top of ``parent`` (any VMDK qemu reads).

    ``parentFileNameHint`` is the parent's path relative to ``dir`` and
    ``parentCID`` its CID, as VMware writes them.  With ``write`` the delta
    holds ``pattern_regions(size, pattern, delta_offsets(size))`` (pattern
    defaults to ``default_pattern(name)``); qemu-made deltas get their data
    through ``qemu-io``, which also gives them a new CID, as VMware does on
    first write.  ``subformat`` is one of ``DELTA_SUBFORMATS``; ESXi-style
    chains use vmfsSparse or seSparse over a ``vmfs`` base.
    """
    info = qemu_info(parent)
    size = int(info["virtual-size"])
    descriptor = _check_new(dir, name, size)
    parent_cid = int(info["format-specific"]["data"]["cid"])
    hint = os.path.relpath(parent.resolve(), dir.resolve())
    pattern = default_pattern(name) if pattern is None else pattern
    regions = pattern_regions(size, pattern, delta_offsets(size)) if write else ()
    if subformat in ("vmfsSparse", "seSparse"):
        return _write_hand_made(
            dir, name, subformat, size, regions, adapter_type=None, parent_cid=parent_cid, parent_hint=hint
        )
    if subformat not in DELTA_SUBFORMATS:
        raise ValueError(f"cannot make a {subformat!r} delta; one of {DELTA_SUBFORMATS}")
    _run(
        "qemu-img", "create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}",
        "-b", hint, "-F", "vmdk", str(descriptor),
    )  # fmt: skip
    if regions:
        with tempfile.TemporaryDirectory() as tmp:
            commands = []
            for i, region in enumerate(regions):
                source = Path(tmp) / f"region{i}"
                source.write_bytes(region.data)
                commands += ["-c", f"write -q -s {source} {region.offset} {len(region.data)}"]
            _run("qemu-io", "-f", "vmdk", *commands, str(descriptor))
    return descriptor


def write_descriptor(
    dir: Path,
    name: str,
    extents: Sequence[str],
    *,
    create_type: str = "monolithicFlat",
    cid: int = 0x1234ABCD,
    parent_cid: int = NO_PARENT,
    hint: str | None = None,
    extra: Sequence[str] = (),
) -> Path:
    """A hand-written text descriptor ``dir/name.vmdk`` with the given extent lines, verbatim.

    For descriptors qemu-img cannot make: RDMs, ZERO extents, odd createTypes,
    cycles.  ``extra`` lines go after the DDB header; nothing is checked.
    """
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        f"CID={cid:08x}",
        f"parentCID={parent_cid:08x}",
        f'createType="{create_type}"',
    ]
    if hint is not None:
        lines.append(f'parentFileNameHint="{hint}"')
    lines += ["", "# Extent description", *extents, "", "#DDB", 'ddb.adapterType = "lsilogic"', *extra]
    path = dir / f"{name}.vmdk"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_flat_file(dir: Path, name: str, size: int = 1 * MiB) -> Path:
    """An all-zero sparse file, e.g. the flat extent of a ``write_descriptor`` disk."""
    path = dir / name
    with path.open("wb") as f:
        f.truncate(size)
    return path


def sha256_tree(dir: Path) -> dict[str, str]:
    """SHA-256 of every file under ``dir`` by relative path; symlinks by their target.

    Compare before and after an operation to prove the source was not modified.
    """
    sums: dict[str, str] = {}
    for root, dirs, files in os.walk(dir):
        dirs.sort()
        for entry in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            full = Path(root) / entry
            rel = full.relative_to(dir).as_posix()
            if full.is_symlink():
                sums[rel] = "symlink:" + os.readlink(full)
                continue
            digest = hashlib.sha256()
            with full.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            sums[rel] = digest.hexdigest()
    return sums
