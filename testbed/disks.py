"""Small VMDK images for adapter and pipeline tests, made with qemu-img and qemu-io.

``tests/helpers/vmdk_factory.py`` builds byte-exact VMware layouts for the
parser tests; these helpers only need images QEMU reads, with known content.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

MiB = 1024 * 1024


def make_vmdk(
    directory: Path,
    name: str,
    size: int = 64 * MiB,
    *,
    writes: Sequence[tuple[int, int, int]] = ((0, 4 * MiB, 0xAB),),
    subformat: str = "monolithicSparse",
) -> Path:
    """A VMDK of ``size`` bytes; ``writes`` are (offset, length, byte pattern) runs of data."""
    path = directory / name
    raw = directory / f".{name}.raw"
    # A sparse raw file converted to VMDK: much faster than writing through qemu-io.
    with raw.open("wb") as f:
        f.truncate(size)
        for offset, length, pattern in writes:
            f.seek(offset)
            chunk = bytes([pattern]) * min(length, 16 * MiB)
            for start in range(0, length, len(chunk)):
                f.write(chunk[: length - start])
    try:
        subprocess.run(
            [
                "qemu-img",
                "convert",
                "-q",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                f"subformat={subformat}",
                str(raw),
                str(path),
            ],
            check=True,
        )
    finally:
        raw.unlink()
    return path


def sha256_files(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``directory``."""
    out: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def images_equal(a: str | Path, b: str | Path, fmt_a: str | None = None, fmt_b: str | None = None) -> bool:
    """``qemu-img compare`` (content, not format): True when the guest sees the same bytes."""
    args = ["qemu-img", "compare", "-q"]
    if fmt_a:
        args += ["-f", fmt_a]
    if fmt_b:
        args += ["-F", fmt_b]
    result = subprocess.run([*args, str(a), str(b)], capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"qemu-img compare failed: {result.stderr.strip()}")
    return result.returncode == 0


def virtual_size(path: str | Path) -> int:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return int(json.loads(out)["virtual-size"])


def make_delta(
    directory: Path, name: str, parent: Path, *, writes: Sequence[tuple[int, int, int]] = ()
) -> Path:
    """A VMDK delta (``parentFileNameHint`` = ``parent``'s name) with ``writes`` on top."""
    path = directory / name
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vmdk", "-b", parent.name, "-F", "vmdk", str(path)],
        check=True,
        cwd=directory,
    )
    cmds: list[str] = []
    for offset, length, pattern in writes:
        cmds += ["-c", f"write -P {pattern:#x} {offset} {length}"]
    if cmds:
        subprocess.run(["qemu-io", "-f", "vmdk", *cmds, str(path)], check=True, capture_output=True)
    return path


def set_immutable(path: Path, on: bool) -> bool:
    """``chattr [+-]i``: an immutable file cannot be opened for writing, even by root."""
    flag = "+i" if on else "-i"
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def make_unreadable_vmdk(directory: Path, name: str, size: int = 64 * MiB) -> Path:
    """A streamOptimized VMDK that opens (and inspects) fine but fails in the middle of a copy.

    Truncating a sparse VMDK is not enough: QEMU reads past the end of a file
    as zeros.  Here the compressed data of a grain in the middle of the disk is
    garbled, so inflating it fails when qemu-img reaches it.
    """
    plain = make_vmdk(directory, f".{name}.plain", size, writes=[(0, size, 0x6B)])
    path = directory / name
    stream = ["-O", "vmdk", "-o", "subformat=streamOptimized"]
    subprocess.run(["qemu-img", "convert", "-q", "-f", "vmdk", *stream, str(plain), str(path)], check=True)
    plain.unlink()
    data = bytearray(path.read_bytes())
    # A grain is a sector-aligned marker (u64 LBA, u32 size) followed by zlib data (0x78 ...).
    grains = [
        off
        for off in range(512, len(data) - 14, 512)
        if data[off + 12] == 0x78 and int.from_bytes(data[off + 8 : off + 12], "little") > 2
    ]
    if not grains:
        raise RuntimeError(f"no compressed grains found in {path}")
    off = grains[len(grains) // 2]
    length = int.from_bytes(data[off + 8 : off + 12], "little")
    for i in range(off + 14, off + 12 + length):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path
