"""OVA and OVF packages: read in place, manifests checked, migrated through the pipeline.

Real archives made with Python's ``tarfile`` (the descriptor first, then
streamOptimized disks made with qemu-img, then the manifest, as ovftool
writes them), real qemu-img, and for the pipeline tests the test libvirtd.
Every package directory is checksummed before and after each test, also when
the test fails: sources are never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import subprocess
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libvirt
import pytest

from testbed.services import DirPool, remove_domain
from tests.helpers.ova_factory import (
    OvfDisk,
    OvfNic,
    build_ova,
    manifest_text,
    ovf_text,
    write_tar,
)
from tests.helpers.vmdk_factory import MiB, images_equal, make_vmdk, sha256_tree
from tests.pipeline.support import RecordingEvents
from vm2kvmd.core.hardware.model import DiskChain, Firmware, SourceVM
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning import blockdev as qemu_source
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline import run_migration
from vm2kvmd.sources import load_source, open_package, verify_source
from vm2kvmd.sources.ovf import files as source_files
from vm2kvmd.sources.ovf.manifest import parse_manifest
from vm2kvmd.sources.ovf.ova import index_ova
from vm2kvmd.sources.ovf.package import verify

MAC1, MAC2 = "00:50:56:9a:01:10", "00:50:56:9a:01:11"
BIOS_UUID = "42 1a 5c 3e 9b 1f 2d 4c-8a 11 22 33 44 55 66 01"


@pytest.fixture
def untouched() -> Iterator[Callable[[Path], Path]]:
    """``untouched(dir)`` checksums ``dir`` now; the test fails if it differs at the end, pass or fail."""
    watched: dict[Path, dict[str, str]] = {}

    def watch(directory: Path) -> Path:
        watched[directory] = sha256_tree(directory)
        return directory

    yield watch
    for directory, before in watched.items():
        assert sha256_tree(directory) == before, f"{directory} was modified"


@dataclass
class Package:
    dir: Path  # holds the .ova (or the .ovf and its files)
    path: Path  # the .ova / .ovf
    disks: list[OvfDisk]  # the original VMDKs
    ovf: str
    members: list[tuple[str, bytes | Path]] = field(default_factory=list)


def make_disks(staging: Path, specs: Sequence[tuple[str, str, int]]) -> list[OvfDisk]:
    """``(bus, subformat, size)`` -> VMDKs named ``web-diskN.vmdk``."""
    return [
        OvfDisk(make_vmdk(staging, f"web-disk{n}", subformat, size), bus=bus)
        for n, (bus, subformat, size) in enumerate(specs, start=1)
    ]


def make_ova(
    tmp_path: Path,
    specs: Sequence[tuple[str, str, int]] = (("scsi", "streamOptimized", 32 * MiB),),
    nics: Sequence[OvfNic] = (OvfNic(MAC1),),
    **ovf_options: Any,
) -> Package:
    staging, out = tmp_path / "staging", tmp_path / "pkg"
    out.mkdir()
    disks = make_disks(staging, specs)
    ovf = ovf_text("web", disks, nics, **ovf_options)
    ova = build_ova(out / "web.ova", "web", ovf, disks)
    return Package(out, ova, disks, ovf)


def qemu_identical(chain: DiskChain, original: Path) -> bool:
    """``qemu-img compare`` of a chain opened as the pipeline opens it, with the original VMDK."""
    opts = qemu_source.image_opts(qemu_source.source_blockdev(chain))
    result = subprocess.run(
        ["qemu-img", "compare", "--image-opts", opts, f"driver=vmdk,file.filename={original}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def notes(vm: SourceVM) -> str:
    return "\n".join(str(n) for n in vm.notes)


def raises(code: ErrorCode, fn: Callable[[], object], *mentions: str) -> Vm2kvmError:
    with pytest.raises(Vm2kvmError) as caught:
        fn()
    err = caught.value
    assert err.code is code, err.describe()
    for word in mentions:
        assert word in err.describe(), err.describe()
    return err


# --- reading an OVA in place ---------------------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_disks_are_read_inside_the_archive(
    tmp_path: Path, untouched: Callable[[Path], Path], fmt: int
) -> None:
    specs = [("scsi", "streamOptimized", 32 * MiB), ("sata", "monolithicSparse", 16 * MiB)]
    disks = make_disks(tmp_path / "staging", specs)
    ovf = ovf_text("web", disks, [OvfNic(MAC1)])
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    members: list[tuple[str, bytes | Path]] = [("web.ovf", ovf.encode()), *((d.name, d.path) for d in disks)]
    members.append(("web.mf", manifest_text(members).encode()))
    ova = write_tar(pkg / "web.ova", members, fmt=fmt)
    untouched(pkg)

    vm = load_source(str(ova))
    with tarfile.open(ova) as tar:
        infos = {info.name: info for info in tar.getmembers()}
    assert [d.address.key for d in vm.disks] == ["scsi0:0", "sata0:0"]
    for disk, original in zip(vm.disks, disks, strict=True):
        assert disk.chain is not None, disk.problem
        (layer,) = disk.chain.layers
        assert layer.path == str(ova) and disk.path == str(ova)
        assert (layer.member_offset, layer.member_size) == (
            infos[original.name].offset_data,
            infos[original.name].size,
        )
        assert layer.embedded and layer.parent_hint is None
        assert qemu_identical(disk.chain, original.path)
    assert [n.mac for n in vm.nics] == [MAC1]
    assert "no manifest" not in notes(vm)
    assert "first member" not in notes(vm)


def test_index_matches_tarfile(tmp_path: Path) -> None:
    pkg = make_ova(tmp_path)
    index = index_ova(str(pkg.path))
    with tarfile.open(pkg.path) as tar:
        expected = [(i.name, i.offset_data, i.size) for i in tar.getmembers()]
    assert [(m.name, m.offset, m.size) for m in index.members] == expected
    assert index.complete and index.notes == ()


def test_descriptor_not_first_is_read_with_a_note(tmp_path: Path, untouched: Callable[[Path], Path]) -> None:
    disks = make_disks(tmp_path / "staging", [("scsi", "streamOptimized", 8 * MiB)])
    ovf = ovf_text("web", disks)
    (tmp_path / "pkg").mkdir()
    ova = write_tar(tmp_path / "pkg" / "web.ova", [(disks[0].name, disks[0].path), ("web.ovf", ovf.encode())])
    untouched(ova.parent)
    vm = load_source(str(ova))
    assert vm.disks[0].chain is not None
    text = notes(vm)
    assert "the descriptor web.ovf is not the archive's first member, as OVF requires; read anyway" in text
    assert "no manifest (web.mf): the package's files cannot be checked" in text


def test_members_with_a_dot_slash_prefix(tmp_path: Path) -> None:
    disks = make_disks(tmp_path / "staging", [("scsi", "streamOptimized", 8 * MiB)])
    (tmp_path / "pkg").mkdir()
    members: list[tuple[str, bytes | Path]] = [
        ("./web.ovf", ovf_text("web", disks).encode()),
        (f"./{disks[0].name}", disks[0].path),
    ]
    vm = load_source(str(write_tar(tmp_path / "pkg" / "web.ova", members)))
    assert vm.disks[0].chain is not None


# --- broken archives ------------------------------------------------------------------


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


def gzip_ova(pkg: Package) -> Path:
    data = gzip.compress(pkg.path.read_bytes())
    pkg.path.write_bytes(data)
    return pkg.path


def xz_ova(pkg: Package) -> Path:
    pkg.path.write_bytes(lzma.compress(pkg.path.read_bytes()))
    return pkg.path


def cut_in_disk(pkg: Package) -> Path:
    index = index_ova(str(pkg.path))
    disk = index.by_name[pkg.disks[0].name]
    _truncate(pkg.path, disk.offset + disk.size // 2)
    return pkg.path


def cut_before_disk(pkg: Package) -> Path:
    disk = index_ova(str(pkg.path)).by_name[pkg.disks[0].name]
    _truncate(pkg.path, disk.offset - 512)  # after the descriptor, before the disk's header
    return pkg.path


def xml_as_ova(pkg: Package) -> Path:
    pkg.path.write_text(pkg.ovf)
    return pkg.path


def garbage(pkg: Package) -> Path:
    pkg.path.write_bytes(os.urandom(4096))
    return pkg.path


def empty(pkg: Package) -> Path:
    pkg.path.write_bytes(b"")
    return pkg.path


def no_descriptor(pkg: Package) -> Path:
    write_tar(pkg.path, [(d.name, d.path) for d in pkg.disks])
    return pkg.path


def two_descriptors(pkg: Package) -> Path:
    write_tar(pkg.path, [("a.ovf", pkg.ovf.encode()), ("b.ovf", pkg.ovf.encode())])
    return pkg.path


def duplicate_member(pkg: Package) -> Path:
    disk = pkg.disks[0]
    write_tar(pkg.path, [("web.ovf", pkg.ovf.encode()), (disk.name, disk.path), (disk.name, disk.path)])
    return pkg.path


BROKEN: dict[str, tuple[Callable[[Package], Path], ErrorCode, tuple[str, ...]]] = {
    "xz": (xz_ova, ErrorCode.INVALID_SOURCE, ("compressed with xz",)),
    "truncated in a disk": (
        cut_in_disk,
        ErrorCode.INVALID_SOURCE,
        ("truncated", "web-disk1.vmdk", "copy the OVA"),
    ),
    "XML named .ova": (xml_as_ova, ErrorCode.INVALID_SOURCE, ("XML file, not a tar",)),
    "garbage": (garbage, ErrorCode.INVALID_SOURCE, ("not a tar archive",)),
    "empty": (empty, ErrorCode.INVALID_SOURCE, ("not a tar archive",)),
    "no descriptor": (no_descriptor, ErrorCode.INVALID_SOURCE, ("no .ovf descriptor",)),
    "two descriptors": (two_descriptors, ErrorCode.INVALID_SOURCE, ("several descriptors (a.ovf, b.ovf)",)),
    "duplicate member": (duplicate_member, ErrorCode.INVALID_SOURCE, ("'web-disk1.vmdk' appears twice",)),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_archives_are_named_errors(tmp_path: Path, case: str) -> None:
    damage, code, mentions = BROKEN[case]
    path = damage(make_ova(tmp_path, (("scsi", "streamOptimized", 8 * MiB),)))
    err = raises(code, lambda: load_source(str(path)), str(path), *mentions)
    assert "\n" not in err.describe()


def test_an_archive_cut_between_members_misses_its_disk(tmp_path: Path) -> None:
    pkg = make_ova(tmp_path, (("scsi", "streamOptimized", 8 * MiB),))
    vm = load_source(str(cut_before_disk(pkg)))
    (disk,) = vm.disks
    assert disk.problem_code is ErrorCode.DISK_MISSING
    assert disk.problem and "no member 'web-disk1.vmdk'" in disk.problem and "looks truncated" in disk.problem
    assert "no end-of-archive marker" in notes(vm)


def test_source_files_that_are_not_archives(tmp_path: Path) -> None:
    raises(ErrorCode.SOURCE_NOT_FOUND, lambda: load_source(str(tmp_path / "gone.ova")), "no such file")
    (tmp_path / "dir.ova").mkdir()
    raises(ErrorCode.SOURCE_NOT_FOUND, lambda: load_source(str(tmp_path / "dir.ova")), "is a directory")
    os.mkfifo(tmp_path / "fifo.ova")
    raises(ErrorCode.INVALID_SOURCE, lambda: load_source(str(tmp_path / "fifo.ova")), "not a regular file")


def _package_with(tmp_path: Path, member: bytes | Path, *, size: int | None = None, attrs: str = "") -> Path:
    """An OVA whose one disk member holds ``member``; ``size``/``attrs`` change its File element."""
    disks = make_disks(tmp_path / "staging", [("scsi", "streamOptimized", 8 * MiB)])
    ovf = ovf_text("web", disks)
    real = disks[0].path.stat().st_size
    ovf = ovf.replace(f'ovf:size="{real}"', f'ovf:size="{size if size is not None else real}"{attrs}')
    if size is None and not isinstance(member, Path):
        ovf = ovf.replace(f'ovf:size="{real}"', f'ovf:size="{len(member)}"')
    (tmp_path / "pkg").mkdir()
    return write_tar(tmp_path / "pkg" / "web.ova", [("web.ovf", ovf.encode()), (disks[0].name, member)])


def test_a_text_descriptor_member_is_unsupported(tmp_path: Path) -> None:
    text = (
        b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
    )
    vm = load_source(str(_package_with(tmp_path, text + b'RW 2048 FLAT "web-flat.vmdk" 0\n')))
    (disk,) = vm.disks
    assert disk.problem_code is ErrorCode.UNSUPPORTED_DISK
    assert disk.problem and "single-file sparse VMDK" in disk.problem and "a text descriptor" in disk.problem
    assert "member web-disk1.vmdk" in disk.problem


def test_a_member_that_is_no_vmdk_is_unsupported(tmp_path: Path) -> None:
    vm = load_source(str(_package_with(tmp_path, os.urandom(65536))))
    assert vm.disks[0].problem_code is ErrorCode.UNSUPPORTED_DISK


def test_a_member_shorter_than_its_file_element(tmp_path: Path) -> None:
    disk = make_vmdk(tmp_path / "other", "x", "streamOptimized", 8 * MiB)
    vm = load_source(str(_package_with(tmp_path, disk, size=disk.stat().st_size + 512)))
    (found,) = vm.disks
    assert found.problem_code is ErrorCode.INVALID_DISK
    assert found.problem and "says" in found.problem and "ovf:id='file1'" in found.problem


def test_a_truncated_member_is_an_invalid_disk(tmp_path: Path) -> None:
    disk = make_vmdk(tmp_path / "other", "x", "streamOptimized", 8 * MiB)
    vm = load_source(str(_package_with(tmp_path, disk.read_bytes()[:1024])))
    (found,) = vm.disks
    assert found.problem_code is ErrorCode.INVALID_DISK, found.problem


def test_a_gzip_member_is_extracted_at_migration(tmp_path: Path) -> None:
    disk = make_vmdk(tmp_path / "other", "x", "streamOptimized", 8 * MiB)
    data = gzip.compress(disk.read_bytes())
    vm = load_source(str(_package_with(tmp_path, data, size=len(data), attrs=' ovf:compression="gzip"')))
    (found,) = vm.disks
    assert found.problem_code is None and found.chain is None and found.extracted_at_migration
    assert found.problem and "compressed: extracted at migration" in found.problem


def test_a_gzip_ova_is_inspected(tmp_path: Path) -> None:
    """Compressed as a whole: read (the descriptor only); tests/test_ova_compressed.py migrates it."""
    vm = load_source(str(gzip_ova(make_ova(tmp_path, (("scsi", "streamOptimized", 8 * MiB),)))))
    (found,) = vm.disks
    assert found.extracted_at_migration and found.extracted_capacity == 8 * MiB
    assert "compressed with gzip" in notes(vm)


def test_links_in_the_archive_are_never_followed(tmp_path: Path) -> None:
    disks = make_disks(tmp_path / "staging", [("scsi", "streamOptimized", 8 * MiB)])
    (tmp_path / "pkg").mkdir()
    ova = tmp_path / "pkg" / "web.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        data = ovf_text("web", disks).encode()
        info = tarfile.TarInfo("web.ovf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(disks[0].name)
        link.type = tarfile.SYMTYPE
        link.linkname = str(disks[0].path)
        tar.addfile(link)
    vm = load_source(str(ova))
    assert vm.disks[0].problem_code is ErrorCode.DISK_MISSING
    assert "archive member 'web-disk1.vmdk' is a link or special file; ignored" in notes(vm)


# --- manifests -----------------------------------------------------------------------


def test_parse_manifest_forms() -> None:
    sha1, sha256, sha512 = "a" * 40, "B" * 64, "c" * 128
    text = (
        f"\ufeffSHA1(web.ovf)= {sha1}\r\nSHA256 (my disk (1).vmdk) = {sha256}\n\nSHA512(x.nvram)={sha512}\n"
    )
    entries = parse_manifest(text.encode(), "m.mf")
    assert [(e.algorithm, e.name, e.digest, e.line) for e in entries] == [
        ("sha1", "web.ovf", sha1, 1),
        ("sha256", "my disk (1).vmdk", sha256.lower(), 2),
        ("sha512", "x.nvram", sha512, 4),
    ]


@pytest.mark.parametrize(
    ("text", "mention"),
    [
        ("MD5(web.ovf)= " + "a" * 32, "only SHA1, SHA256 and SHA512"),
        ("SHA256(web.ovf)= " + "a" * 40, "64 hex digits, not 40"),
        ("web.ovf: ok", "line 1 is not"),
        (f"SHA1(a)= {'a' * 40}\nSHA1(a)= {'a' * 40}", "line 2 lists 'a' a second time"),
        ("", "lists no file"),
    ],
)
def test_bad_manifests(text: str, mention: str) -> None:
    raises(ErrorCode.INVALID_SOURCE, lambda: parse_manifest(text.encode(), "/p/web.mf"), "/p/web.mf", mention)


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
def test_manifest_verified(tmp_path: Path, untouched: Callable[[Path], Path], algorithm: str) -> None:
    disks = make_disks(tmp_path / "staging", [("scsi", "streamOptimized", 16 * MiB)])
    (tmp_path / "pkg").mkdir()
    ova = build_ova(tmp_path / "pkg" / "web.ova", "web", ovf_text("web", disks), disks, algorithm=algorithm)
    untouched(ova.parent)
    lines: list[str] = []
    package = open_package(str(ova))
    assert package is not None
    verify(package, threading.Event(), lines.append)
    assert lines[0].startswith("checking 2 files (") and "web.ova member web.mf" in lines[0]
    assert lines[1:] == [
        f"manifest: web.ovf ({len(ovf_text('web', disks).encode())} bytes) matches its {algorithm}",
        f"manifest: web-disk1.vmdk ({disks[0].path.stat().st_size} bytes) matches its {algorithm}",
    ]


def _rewrite_manifest(pkg: Package, transform: Callable[[str], str]) -> None:
    members: list[tuple[str, bytes | Path]] = [
        ("web.ovf", pkg.ovf.encode()),
        *((d.name, d.path) for d in pkg.disks),
    ]
    members.append(("web.mf", transform(manifest_text(members)).encode()))
    write_tar(pkg.path, members)


def _zero_digest(text: str) -> str:
    """The manifest with web-disk1.vmdk's digest replaced by zeros."""
    lines = [
        line if "disk1" not in line else line.split("= ")[0] + "= " + "0" * 64 for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def test_a_digest_mismatch(tmp_path: Path) -> None:
    pkg = make_ova(tmp_path)
    _rewrite_manifest(pkg, _zero_digest)
    package = open_package(str(pkg.path))
    assert package is not None
    raises(
        ErrorCode.MANIFEST_MISMATCH,
        lambda: verify(package, threading.Event(), lambda _line: None),
        "SHA256 of 'web-disk1.vmdk' is ",
        "the manifest (line 2) says 0000",
        "web.ova member web.mf",
    )


def test_a_listed_file_that_is_missing(tmp_path: Path) -> None:
    pkg = make_ova(tmp_path)
    _rewrite_manifest(pkg, lambda text: text + f"SHA256(web.cert)= {'0' * 64}\n")
    package = open_package(str(pkg.path))
    assert package is not None
    hashed: list[str] = []
    raises(
        ErrorCode.MANIFEST_MISMATCH,
        lambda: verify(package, threading.Event(), hashed.append),
        "lists 'web.cert' (line 3), which the package does not contain",
    )
    assert hashed[1:] == []  # nothing hashed: the listing is checked first


def test_manifest_notes_at_load(tmp_path: Path) -> None:
    pkg = make_ova(tmp_path)
    _rewrite_manifest(pkg, lambda text: "\n".join(line for line in text.splitlines() if "disk1" not in line))
    assert "not listed in the manifest, so not checked: web-disk1.vmdk" in notes(load_source(str(pkg.path)))
    _rewrite_manifest(pkg, lambda text: "MD5(web.ovf)= 00\n")
    assert "the manifest cannot be used, so migrating will fail" in notes(load_source(str(pkg.path)))


def test_a_certificate_is_noted(tmp_path: Path) -> None:
    pkg = make_ova(tmp_path)
    members: list[tuple[str, bytes | Path]] = [
        ("web.ovf", pkg.ovf.encode()),
        *((d.name, d.path) for d in pkg.disks),
    ]
    members += [("web.mf", manifest_text(members).encode()), ("web.cert", b"-----BEGIN CERTIFICATE-----\n")]
    write_tar(pkg.path, members)
    assert "the package is signed (web.cert); vm2kvm checks its manifest, not the signature" in notes(
        load_source(str(pkg.path))
    )


def test_hashing_stops_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * (4 * MiB))
    stop = threading.Event()
    stop.set()
    loc = source_files.Located(str(path), 0, 4 * MiB, "big")
    raises(ErrorCode.CANCELLED, lambda: source_files.hash_range(loc, "sha256", stop), "cancelled")


class _SlowHash:
    """A digest that takes a millisecond per chunk: hashing big.bin would take seconds."""

    def __init__(self, algorithm: str) -> None:
        self._digest = hashlib.new(algorithm)

    def update(self, data: bytes) -> None:
        time.sleep(0.001)
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


async def test_cancelling_the_check_stops_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, untouched: Callable[[Path], Path]
) -> None:
    pkg = make_ova(tmp_path)
    big = tmp_path / "staging" / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 24)
    members: list[tuple[str, bytes | Path]] = [("web.ovf", pkg.ovf.encode()), ("big.bin", big)]
    members.append(("web.mf", manifest_text(members).encode()))
    await asyncio.to_thread(write_tar, pkg.path, members)
    untouched(pkg.dir)
    monkeypatch.setattr(source_files, "HASH_CHUNK", 4096)  # 6144 chunks of big.bin: over 6 s
    monkeypatch.setattr(source_files, "hashlib", SimpleNamespace(new=_SlowHash))
    started = asyncio.Event()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if "web.ovf" in line:
            started.set()

    task = asyncio.create_task(verify_source(str(pkg.path), log))
    await asyncio.wait_for(started.wait(), 30)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The task ends when its thread has stopped, at the next chunk, long before big.bin is hashed.
    assert time.monotonic() - cancelled_at < 2
    await asyncio.sleep(0.1)
    assert not any("big.bin" in line for line in lines)


async def test_a_vmx_needs_no_check(tmp_path: Path) -> None:
    lines: list[str] = []
    await verify_source(str(tmp_path / "vm.vmx"), lines.append)
    assert lines == []


# --- an .ovf next to its files ----------------------------------------------------------


def make_ovf_dir(tmp_path: Path, subformats: Sequence[str] = ("monolithicFlat",)) -> Package:
    out = tmp_path / "pkg"
    disks = [
        OvfDisk(make_vmdk(out, f"web-disk{n}", sub, 16 * MiB), bus="scsi")
        for n, sub in enumerate(subformats, 1)
    ]
    ovf = ovf_text("web", disks, [OvfNic(MAC1)])
    (out / "web.ovf").write_text(ovf)
    members: list[tuple[str, bytes | Path]] = [("web.ovf", ovf.encode()), *((d.name, d.path) for d in disks)]
    (out / "web.mf").write_text(manifest_text(members))
    return Package(out, out / "web.ovf", disks, ovf)


def test_an_ovf_next_to_its_files(tmp_path: Path, untouched: Callable[[Path], Path]) -> None:
    pkg = make_ovf_dir(tmp_path, ("monolithicFlat", "streamOptimized"))
    untouched(pkg.dir)
    vm = load_source(str(pkg.path))
    assert vm.source_path == str(pkg.path)
    for disk, original in zip(vm.disks, pkg.disks, strict=True):
        assert disk.chain is not None, disk.problem
        assert disk.chain.top.path == str(original.path) and disk.chain.top.member_offset is None
        assert qemu_identical(disk.chain, original.path)
    lines: list[str] = []
    package = open_package(str(pkg.path))
    assert package is not None
    verify(package, threading.Event(), lines.append)
    assert len(lines) == 4 and lines[0].endswith("web.mf")


def test_ovf_hrefs_obey_the_containment_rule(tmp_path: Path) -> None:
    pkg = make_ovf_dir(tmp_path)
    outside = make_vmdk(tmp_path / "elsewhere", "x", "streamOptimized", 8 * MiB)
    pkg.path.write_text(
        pkg.ovf.replace('ovf:href="web-disk1.vmdk"', 'ovf:href="../elsewhere/x.vmdk"').replace(
            f'ovf:size="{pkg.disks[0].path.stat().st_size}"', f'ovf:size="{outside.stat().st_size}"'
        )
    )
    (disk,) = load_source(str(pkg.path)).disks
    assert disk.problem_code is ErrorCode.PATH_OUTSIDE_SOURCE
    assert disk.problem and "--allow-external-paths" in disk.problem
    vm = load_source(str(pkg.path), allow_external=True)
    assert vm.disks[0].chain is not None
    assert "following path outside the VM directory" in notes(vm)


def test_a_missing_file_next_to_the_ovf(tmp_path: Path) -> None:
    pkg = make_ovf_dir(tmp_path)
    pkg.disks[0].path.unlink()
    (disk,) = load_source(str(pkg.path)).disks
    assert disk.problem_code is ErrorCode.DISK_MISSING
    assert disk.problem and "'web-disk1.vmdk'" in disk.problem and "next to the .ovf" in disk.problem


def test_garbage_ovf(tmp_path: Path) -> None:
    path = tmp_path / "vm.ovf"
    path.write_bytes(b"\x00\x01binary")
    raises(ErrorCode.INVALID_SOURCE, lambda: load_source(str(path)), str(path), "not an XML document")


# --- through the pipeline ---------------------------------------------------------------


@pytest.fixture
def cleanup_domain(libvirt_conn: Any, domain_name: str) -> Iterator[str]:
    yield domain_name
    with contextlib.suppress(libvirt.libvirtError):
        remove_domain(libvirt_conn, domain_name)


@pytest.mark.libvirt
async def test_migrate_an_ova_into_a_pool(
    tmp_path: Path,
    untouched: Callable[[Path], Path],
    dir_pool: DirPool,
    test_network: str,
    cleanup_domain: str,
    libvirt_conn: Any,
) -> None:
    pkg = await asyncio.to_thread(
        make_ova,
        tmp_path,
        (("scsi", "streamOptimized", 48 * MiB), ("sata", "streamOptimized", 16 * MiB)),
        (OvfNic(MAC1, "VM Network"), OvfNic(MAC2, "Backup", model="E1000e")),
        vcpus=4,
        cores_per_socket=2,
        memory_mib=1024,
        firmware="efi",
        bios_uuid=BIOS_UUID,
    )
    untouched(pkg.dir)
    options = MigrateOptions(
        name=cleanup_domain,
        pool=dir_pool.name,
        networks=(("VM Network", test_network), ("Backup", test_network)),
        domain_type="qemu",
    )
    events = RecordingEvents()
    result = await run_migration(str(pkg.path), options, events)

    assert result.domain_uuid == "421a5c3e-9b1f-2d4c-8a11-223344556601"
    root = ET.fromstring(libvirt_conn.lookupByName(cleanup_domain).XMLDesc(0))
    assert root.findtext("vcpu") == "4"
    topology = root.find("cpu/topology")
    assert topology is not None and (topology.get("sockets"), topology.get("cores")) == ("2", "2")
    assert root.findtext("memory") == str(1024 * 1024)
    os_el = root.find("os")
    assert os_el is not None and os_el.get("firmware") == Firmware.EFI.value
    assert [m.get("address") for m in root.iterfind("devices/interface/mac")] == [MAC1, MAC2]
    targets = [s.get("file") for s in root.iterfind("devices/disk[@device='disk']/source")]
    assert targets == list(result.outputs)
    for original, target in zip(pkg.disks, targets, strict=True):
        assert target is not None and Path(target).parent == dir_pool.path
        assert await asyncio.to_thread(images_equal, original.path, Path(target), fmt_b="qcow2")
    assert events.phases[:2] == ["inspect", "prepare"] and events.phases[-1] == "define"
    assert any(line.startswith("checking 3 files") for line in events.logs)
    assert "manifest: web-disk2.vmdk" in "\n".join(events.logs)


@pytest.mark.libvirt
async def test_a_bad_manifest_fails_before_anything_is_written(
    tmp_path: Path, untouched: Callable[[Path], Path], dir_pool: DirPool, domain_name: str, libvirt_conn: Any
) -> None:
    pkg = await asyncio.to_thread(make_ova, tmp_path)
    await asyncio.to_thread(_rewrite_manifest, pkg, _zero_digest)
    untouched(pkg.dir)
    options = MigrateOptions(name=domain_name, pool=dir_pool.name, networks=(("VM Network", "default"),))
    events = RecordingEvents()
    with pytest.raises(Vm2kvmError) as caught:
        await run_migration(str(pkg.path), options, events)
    assert caught.value.code is ErrorCode.MANIFEST_MISMATCH
    assert "web.mf" in caught.value.describe()
    assert events.phases == ["inspect"]
    assert dir_pool.volume_names() == [] and list(dir_pool.path.iterdir()) == []
    assert domain_name not in [d.name() for d in libvirt_conn.listAllDomains(0)]


async def test_migrate_an_ovf_directory_to_an_output_dir(
    tmp_path: Path, untouched: Callable[[Path], Path]
) -> None:
    pkg = await asyncio.to_thread(make_ovf_dir, tmp_path, ("monolithicFlat", "streamOptimized"))
    untouched(pkg.dir)
    out = tmp_path / "out"
    options = MigrateOptions(name="web", output_dir=str(out), format="raw", domain_type="qemu")
    result = await run_migration(str(pkg.path), options, RecordingEvents())
    assert [Path(p).name for p in result.outputs] == ["web-disk1.img", "web-disk2.img", "web.xml"]
    for original, target in zip(pkg.disks, result.outputs[:2], strict=True):
        assert await asyncio.to_thread(images_equal, original.path, Path(target), fmt_b="raw")
    xml = ET.parse(out / "web.xml").getroot()
    assert [m.get("address") for m in xml.iterfind("devices/interface/mac")] == [MAC1]
    os_el = xml.find("os")
    assert os_el is not None and os_el.get("firmware") is None  # BIOS
