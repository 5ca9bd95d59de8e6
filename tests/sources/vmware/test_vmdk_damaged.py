"""Damaged and hostile VMDK files (parse_descriptor on its own: tests/core/vmware/test_vmdk.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.helpers.vmdk_factory import (
    HAND_WRITTEN_SUBFORMATS,
    QEMU_SUBFORMATS,
    SUBFORMATS,
    MiB,
    descriptor_text,
    make_delta,
    make_flat_file,
    make_vmdk,
    sha256_tree,
)
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.paths import local_resolver
from vm2kvmd.sources.vmware.vmdk import load_chain, load_layer


@pytest.fixture
def vm(tmp_path: Path) -> Path:
    d = tmp_path / "vm"
    d.mkdir()
    return d


def resolver_for(d: Path) -> PathResolver:
    return local_resolver(str(d))


def expect_error(code: ErrorCode, fn: object, *args: object, **kwargs: object) -> Vm2kvmError:
    with pytest.raises(Vm2kvmError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    err = info.value
    assert err.code is code, err.describe()
    assert "\n" not in str(err)
    return err


# --- damaged files -----------------------------------------------------------------


def test_garbage_binary(vm: Path) -> None:
    path = vm / "g.vmdk"
    path.write_bytes(bytes(range(256)) * 8)
    err = expect_error(ErrorCode.INVALID_DISK, load_chain, str(path), resolver_for(vm))
    assert "binary" in err.message


def test_empty_file(vm: Path) -> None:
    (vm / "e.vmdk").touch()
    err = expect_error(ErrorCode.INVALID_DISK, load_chain, str(vm / "e.vmdk"), resolver_for(vm))
    assert "empty" in err.message


def test_vmx_given_as_disk(vm: Path) -> None:
    path = vm / "x.vmdk"
    path.write_text('.encoding = "UTF-8"\nconfig.version = "8"\nscsi0:0.fileName = "x.vmdk"\n')
    expect_error(ErrorCode.INVALID_DISK, load_chain, str(path), resolver_for(vm))


def test_text_without_create_type(vm: Path) -> None:
    path = vm / "n.vmdk"
    path.write_text("# Disk DescriptorFile\nversion=1\nCID=12345678\n")
    err = expect_error(ErrorCode.INVALID_DISK, load_chain, str(path), resolver_for(vm))
    assert err.key == "createType"


def test_flat_file_given_as_descriptor(vm: Path) -> None:
    make_vmdk(vm, "disk", "monolithicFlat", 2 * MiB)
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(vm / "disk-flat.vmdk"), resolver_for(vm))
    assert "-flat" in str(err)


@pytest.mark.parametrize(
    ("subformat", "extent"),
    [
        ("twoGbMaxExtentSparse", "disk-s001.vmdk"),
        ("vmfsSparse", "disk-delta.vmdk"),
        ("seSparse", "disk-sesparse.vmdk"),
    ],
)
def test_extent_given_as_descriptor(vm: Path, subformat: str, extent: str) -> None:
    make_vmdk(vm, "disk", subformat, 2 * MiB)
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(vm / extent), resolver_for(vm))
    assert "descriptor" in str(err)


def test_truncated_descriptor_mid_extent_line(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "monolithicFlat", 2 * MiB)
    text = path.read_text()
    path.write_text(text[: text.index('"disk-flat.vmdk"') + 8])
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "malformed" in err.message


def test_truncated_descriptor_before_extents(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "monolithicFlat", 2 * MiB)
    text = path.read_text()
    path.write_text(text[: text.index("# Extent")])
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "no extents" in err.message


@pytest.mark.parametrize("keep", [100, 600, 5000, 20000])
def test_truncated_sparse_file(vm: Path, keep: int) -> None:
    path = make_vmdk(vm, "disk", "monolithicSparse", 2 * MiB)
    with path.open("r+b") as f:
        f.truncate(keep)
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "truncated" in err.message


def test_truncated_sparse_extent(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "twoGbMaxExtentSparse", 2 * MiB)
    with (vm / "disk-s001.vmdk").open("r+b") as f:
        f.truncate(4096)
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "truncated" in err.message and err.file == str(vm / "disk-s001.vmdk")


def test_ascii_mode_transfer_detected(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "monolithicSparse", 2 * MiB)
    with path.open("r+b") as f:
        f.seek(73)
        assert f.read(4) == b"\n \r\n"
        f.seek(73)
        f.write(b"\n \n\n")
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "binary mode" in str(err)


def test_huge_embedded_descriptor_size(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "monolithicSparse", 2 * MiB)
    with path.open("r+b") as f:
        f.seek(36)
        f.write(struct.pack("<Q", 1 << 40))
    expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))


def test_sparse_header_version_too_new(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "monolithicSparse", 2 * MiB)
    with path.open("r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 4))
    err = expect_error(ErrorCode.UNSUPPORTED_DISK, load_layer, str(path), resolver_for(vm))
    assert err.value == "4"


def test_non_utf8_file_name(vm: Path) -> None:
    path = vm / "n.vmdk"
    path.write_bytes(
        b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        b'RW 2048 FLAT "disque-\xe9-flat.vmdk" 0\n'
    )
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "UTF-8" in err.message


def test_declared_windows_1252_encoding(vm: Path) -> None:
    # Workstation on Windows declares its code page; the file name on Linux is UTF-8.
    make_flat_file(vm, "disque-é-flat.vmdk")
    path = vm / "n.vmdk"
    path.write_bytes(
        b'# Disk DescriptorFile\nversion=1\nencoding="windows-1252"\nCID=1\nparentCID=ffffffff\n'
        b'createType="monolithicFlat"\nRW 2048 FLAT "disque-\xe9-flat.vmdk" 0\n'
    )
    layer = load_layer(str(path), resolver_for(vm))
    assert layer.extents[0].path == str(vm / "disque-é-flat.vmdk")


def test_descriptor_too_large(vm: Path) -> None:
    path = vm / "big.vmdk"
    path.write_text("# x\n" * 300_000)
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "too large" in err.message


def test_directory_given_as_disk(vm: Path) -> None:
    (vm / "d.vmdk").mkdir()
    expect_error(ErrorCode.INVALID_DISK, load_layer, str(vm / "d.vmdk"), resolver_for(vm))


def test_qemu_padded_text_descriptor(vm: Path) -> None:
    # qemu rewrites a descriptor file in place on the first write and leaves NUL padding.
    base = make_vmdk(vm, "vm", "monolithicSparse", 2 * MiB)
    snap = make_delta(vm, "snap", base, subformat="twoGbMaxExtentSparse")
    assert snap.read_bytes().endswith(b"\x00")
    assert load_chain(str(snap), resolver_for(vm)).layers[1].path == str(base)


def test_qemu_cid_rewrite_residue(vm: Path) -> None:
    # qemu-img wrote this when a new CID had fewer hex digits than the old one:
    # the text, a NUL, the old text's last character, then NUL padding.
    make_vmdk(vm, "disk", "monolithicFlat", 2 * MiB)
    path = vm / "disk.vmdk"
    text = descriptor_text(path)
    path.write_bytes((text.encode() + b"\x00\n").ljust(512, b"\x00"))
    assert load_layer(str(path), resolver_for(vm)).extents[0].kind == "FLAT"


def test_load_does_not_modify_anything(vm: Path) -> None:
    for subformat in QEMU_SUBFORMATS + HAND_WRITTEN_SUBFORMATS:
        make_vmdk(vm / subformat, "d", subformat, 2 * MiB)
    before = sha256_tree(vm)
    mtimes = {p: p.stat().st_mtime_ns for p in vm.rglob("*")}
    for subformat in SUBFORMATS:
        load_chain(str(vm / subformat / "d.vmdk"), resolver_for(vm))
    assert sha256_tree(vm) == before
    assert {p: p.stat().st_mtime_ns for p in vm.rglob("*")} == mtimes
