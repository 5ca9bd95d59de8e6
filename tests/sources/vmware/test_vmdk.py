"""VMDK descriptors and chains, on disks made by real qemu-img (tests/helpers/vmdk_factory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.vmdk_factory import (
    SUBFORMATS,
    GiB,
    MiB,
    allocated_bytes,
    default_pattern,
    delta_offsets,
    descriptor_text,
    images_equal,
    make_delta,
    make_flat_file,
    make_vmdk,
    pattern_regions,
    qemu_info,
    read_virtual,
    rewrite_descriptor,
    sha256_tree,
    write_descriptor,
    write_reference_raw,
)
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.core.vmware.vmdk import MAX_CHAIN_LAYERS, NO_PARENT, parse_descriptor
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.paths import local_resolver
from vm2kvmd.sources.vmware.vmdk import load_chain, load_layer
from vm2kvmd.sources.vmware.vmdk_files import read_descriptor

SIZE = 16 * MiB

EXTENT_KIND = {
    "monolithicSparse": "SPARSE",
    "twoGbMaxExtentSparse": "SPARSE",
    "monolithicFlat": "FLAT",
    "twoGbMaxExtentFlat": "FLAT",
    "streamOptimized": "SPARSE",
    "vmfs": "VMFS",
    "vmfsSparse": "VMFSSPARSE",
    "seSparse": "SESPARSE",
}
EMBEDDED = {"monolithicSparse", "streamOptimized"}


@pytest.fixture
def vm(tmp_path: Path) -> Path:
    d = tmp_path / "vm"
    d.mkdir()
    return d


def resolver_for(d: Path, **kwargs: object) -> PathResolver:
    return local_resolver(str(d), **kwargs)  # type: ignore[arg-type]


def expect_error(code: ErrorCode, fn: object, *args: object, **kwargs: object) -> Vm2kvmError:
    with pytest.raises(Vm2kvmError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    err = info.value
    assert err.code is code, err.describe()
    assert "\n" not in str(err)
    return err


# --- every subformat the factory makes ---------------------------------------


@pytest.mark.parametrize("subformat", SUBFORMATS)
def test_subformat_loads_like_qemu_sees_it(vm: Path, subformat: str) -> None:
    path = make_vmdk(vm, "disk", subformat, SIZE)
    before = sha256_tree(vm)

    chain = load_chain(str(path), resolver_for(vm))

    info = qemu_info(path)
    assert len(chain.layers) == 1
    layer = chain.top
    assert layer.path == str(path)
    assert layer.create_type == subformat == info["format-specific"]["data"]["create-type"]
    assert layer.cid == info["format-specific"]["data"]["cid"]
    assert layer.parent_cid == NO_PARENT and layer.parent_hint is None
    assert layer.embedded is (subformat in EMBEDDED)
    assert [e.kind for e in layer.extents] == [EXTENT_KIND[subformat]]
    assert chain.virtual_size == layer.virtual_size == info["virtual-size"] == SIZE
    assert sum(e.sectors for e in layer.extents) * 512 == SIZE
    assert all(os.path.isfile(f) for f in chain.files)
    # Every file the factory wrote belongs to the disk, and nothing else does.
    assert sorted(chain.files) == sorted(str(vm / f) for f in before)
    assert chain.notes == ()
    assert sha256_tree(vm) == before


@pytest.mark.parametrize("subformat", SUBFORMATS)
def test_factory_content_matches_reference(tmp_path: Path, subformat: str) -> None:
    path = make_vmdk(tmp_path / "vm", "disk", subformat, SIZE, pattern=b"\xa5known bytes")
    regions = pattern_regions(SIZE, b"\xa5known bytes")
    ref = write_reference_raw(tmp_path / "ref.raw", SIZE, regions)

    assert images_equal(path, ref, fmt_a="vmdk", fmt_b="raw")
    assert read_virtual(path, regions[1].offset, 4096) == regions[1].data
    if subformat not in ("monolithicFlat", "twoGbMaxExtentFlat", "vmfs"):
        # Sparse formats hold only the written regions (qemu grains are 64 KiB).
        assert allocated_bytes(path) <= len(regions) * 64 * 1024


@pytest.mark.parametrize("subformat", ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"])
def test_split_disk_has_one_extent_per_2gib(vm: Path, subformat: str) -> None:
    path = make_vmdk(vm, "big", subformat, 3 * GiB)

    layer = load_layer(str(path), resolver_for(vm))

    letter = "s" if "Sparse" in subformat else "f"
    assert [(e.file_name, e.sectors) for e in layer.extents] == [
        (f"big-{letter}001.vmdk", 4 * 1024 * 1024),
        (f"big-{letter}002.vmdk", 2 * 1024 * 1024),
    ]
    assert [e.path for e in layer.extents] == [str(vm / e.file_name) for e in layer.extents if e.file_name]
    assert layer.virtual_size == qemu_info(path)["virtual-size"] == 3 * GiB


@pytest.mark.parametrize("adapter", ["lsilogic", "buslogic", "ide", "legacyESX"])
def test_adapter_type_from_ddb(vm: Path, adapter: str) -> None:
    path = make_vmdk(vm, "disk", "monolithicSparse", 2 * MiB, adapter_type=adapter)
    assert load_layer(str(path), resolver_for(vm)).adapter_type == adapter


def test_read_descriptor_text_and_embedded(vm: Path) -> None:
    sparse = make_vmdk(vm, "sparse", "monolithicSparse", 2 * MiB)
    flat = make_vmdk(vm, "flat", "monolithicFlat", 2 * MiB)

    text, embedded = read_descriptor(str(sparse))
    assert embedded and 'createType="monolithicSparse"' in text and "\x00" not in text
    text, embedded = read_descriptor(str(flat))
    assert not embedded and 'RW 4096 FLAT "flat-flat.vmdk" 0' in text


def test_renamed_monolithic_sparse_uses_itself(vm: Path) -> None:
    # The embedded extent line keeps the old name after a rename; VMware and qemu ignore it.
    path = make_vmdk(vm, "old", "monolithicSparse", 2 * MiB)
    new = vm / "new.vmdk"
    path.rename(new)

    layer = load_layer(str(new), resolver_for(vm))

    assert layer.extents[0].file_name == "old.vmdk"
    assert layer.extents[0].path == str(new)


# --- chains ----------------------------------------------------------------------


def test_three_layer_qemu_chain(vm: Path, tmp_path: Path) -> None:
    base = make_vmdk(vm, "vm", "monolithicSparse", SIZE)
    snap1 = make_delta(vm, "vm-000001", base)
    snap2 = make_delta(vm, "vm-000002", snap1, subformat="twoGbMaxExtentSparse")
    before = sha256_tree(vm)

    chain = load_chain(str(snap2), resolver_for(vm), key="scsi0:0.fileName")

    qemu_chain = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--backing-chain", "--output=json", str(snap2)],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    assert [layer.path for layer in chain.layers] == [str(snap2), str(snap1), str(base)]
    assert [layer.create_type for layer in chain.layers] == [
        "twoGbMaxExtentSparse",
        "monolithicSparse",
        "monolithicSparse",
    ]
    assert [layer.parent_hint for layer in chain.layers] == ["vm-000001.vmdk", "vm.vmdk", None]
    assert [layer.cid for layer in chain.layers] == [q["format-specific"]["data"]["cid"] for q in qemu_chain]
    assert [layer.parent_cid for layer in chain.layers] == [
        q["format-specific"]["data"]["parent-cid"] for q in qemu_chain
    ]
    assert chain.layers[0].parent_cid == chain.layers[1].cid
    assert chain.layers[1].parent_cid == chain.layers[2].cid
    assert chain.virtual_size == SIZE
    assert sorted(chain.files) == sorted(str(vm / f) for f in before)
    assert chain.files[0] == str(snap2)
    # The factory's promise: the chain reads as base regions overlaid by each delta's.
    ref = write_reference_raw(
        tmp_path / "ref.raw",
        SIZE,
        pattern_regions(SIZE, default_pattern("vm")),
        pattern_regions(SIZE, default_pattern("vm-000001"), delta_offsets(SIZE)),
        pattern_regions(SIZE, default_pattern("vm-000002"), delta_offsets(SIZE)),
    )
    assert images_equal(snap2, ref, fmt_a="vmdk", fmt_b="raw")
    assert sha256_tree(vm) == before


def test_esxi_chain_vmfs_vmfssparse_sesparse(vm: Path, tmp_path: Path) -> None:
    base = make_vmdk(vm, "vm", "vmfs", SIZE)
    snap1 = make_delta(vm, "vm-000001", base, subformat="vmfsSparse")
    snap2 = make_delta(vm, "vm-000002", snap1, subformat="seSparse")

    chain = load_chain(str(snap2), resolver_for(vm))

    assert [(layer.create_type, layer.extents[0].kind) for layer in chain.layers] == [
        ("seSparse", "SESPARSE"),
        ("vmfsSparse", "VMFSSPARSE"),
        ("vmfs", "VMFS"),
    ]
    assert chain.layers[0].parent_cid == chain.layers[1].cid
    assert chain.layers[1].parent_cid == chain.layers[2].cid
    assert chain.layers[2].adapter_type == "lsilogic"
    assert chain.virtual_size == qemu_info(snap2)["virtual-size"]
    assert sorted(os.path.basename(f) for f in chain.files) == sorted(
        [
            "vm.vmdk",
            "vm-flat.vmdk",
            "vm-000001.vmdk",
            "vm-000001-delta.vmdk",
            "vm-000002.vmdk",
            "vm-000002-sesparse.vmdk",
        ]
    )
    ref = write_reference_raw(
        tmp_path / "ref.raw",
        SIZE,
        pattern_regions(SIZE, default_pattern("vm")),
        pattern_regions(SIZE, default_pattern("vm-000001"), delta_offsets(SIZE)),
        pattern_regions(SIZE, default_pattern("vm-000002"), delta_offsets(SIZE)),
    )
    assert images_equal(snap2, ref, fmt_a="vmdk", fmt_b="raw")


def test_cid_mismatch(vm: Path) -> None:
    base = make_vmdk(vm, "vm", "monolithicSparse", 2 * MiB)
    snap = make_delta(vm, "vm-000001", base, write=False)
    base_cid = load_layer(str(base), resolver_for(vm)).cid
    wrong = (base_cid + 1) & 0xFFFFFFFF
    rewrite_descriptor(snap, lambda t: t.replace(f"parentCID={base_cid:x}", f"parentCID={wrong:x}"))

    err = expect_error(ErrorCode.DISK_CHAIN_BROKEN, load_chain, str(snap), resolver_for(vm))

    assert str(snap) in str(err) and str(base) in str(err)
    assert f"{wrong:08x}" in err.message and f"{base_cid:08x}" in err.message
    # qemu agrees: reading the chain fails.
    assert subprocess.run(["qemu-img", "convert", "-O", "raw", str(snap), str(vm / "x.raw")]).returncode != 0


def test_missing_parent_is_chain_broken(vm: Path) -> None:
    base = make_vmdk(vm, "vm", "vmfs", 2 * MiB)
    snap = make_delta(vm, "vm-000001", base, subformat="vmfsSparse")
    base.unlink()

    err = expect_error(ErrorCode.DISK_CHAIN_BROKEN, load_chain, str(snap), resolver_for(vm), key="scsi0:0")

    assert str(base) in err.message and err.file == str(snap) and err.key == "scsi0:0"
    assert err.value == "vm.vmdk"
    # load_layer does not follow parents, so the snapshot itself still loads.
    assert load_layer(str(snap), resolver_for(vm)).parent_hint == "vm.vmdk"


def test_cycle_between_two_descriptors(vm: Path) -> None:
    make_flat_file(vm, "shared-flat.vmdk")
    extent = ['RW 2048 VMFS "shared-flat.vmdk"']
    a = write_descriptor(vm, "a", extent, create_type="vmfsSparse", cid=0xA, parent_cid=0xB, hint="b.vmdk")
    write_descriptor(vm, "b", extent, create_type="vmfsSparse", cid=0xB, parent_cid=0xA, hint="a.vmdk")

    err = expect_error(ErrorCode.DISK_CHAIN_BROKEN, load_chain, str(a), resolver_for(vm))

    assert "loops" in err.message and str(vm / "b.vmdk") in err.message


def test_self_parent_is_a_cycle(vm: Path) -> None:
    make_flat_file(vm, "x-flat.vmdk")
    a = write_descriptor(vm, "a", ['RW 2048 FLAT "x-flat.vmdk" 0'], cid=0xA, parent_cid=0xA, hint="./a.vmdk")
    expect_error(ErrorCode.DISK_CHAIN_BROKEN, load_chain, str(a), resolver_for(vm))


def _long_chain(d: Path, layers: int) -> Path:
    make_flat_file(d, "shared-flat.vmdk")
    for i in range(layers):
        last = i == layers - 1
        write_descriptor(
            d,
            f"l{i}",
            ['RW 2048 VMFS "shared-flat.vmdk"'],
            create_type="vmfs",
            cid=i + 1,
            parent_cid=NO_PARENT if last else i + 2,
            hint=None if last else f"l{i + 1}.vmdk",
        )
    return d / "l0.vmdk"


def test_chain_of_max_layers_loads(vm: Path) -> None:
    chain = load_chain(str(_long_chain(vm, MAX_CHAIN_LAYERS)), resolver_for(vm))
    assert len(chain.layers) == MAX_CHAIN_LAYERS == 256


def test_chain_deeper_than_max_is_broken(vm: Path) -> None:
    err = expect_error(
        ErrorCode.DISK_CHAIN_BROKEN, load_chain, str(_long_chain(vm, MAX_CHAIN_LAYERS + 1)), resolver_for(vm)
    )
    assert "256" in err.message


def test_parent_hint_windows_path_found_next_to_child(vm: Path) -> None:
    base = make_vmdk(vm, "vm", "vmfs", 2 * MiB)
    snap = make_delta(vm, "vm-000001", base, subformat="vmfsSparse", write=False)
    rewrite_descriptor(snap, lambda t: t.replace('"vm.vmdk"', '"D:\\\\VMs\\\\web\\\\vm.vmdk"'))

    chain = load_chain(str(snap), resolver_for(vm))

    assert chain.layers[1].path == str(base)
    assert len(chain.notes) == 1 and "Windows path" in str(chain.notes[0])


def test_parent_hint_on_mapped_datastore(tmp_path: Path) -> None:
    ds = tmp_path / "datastore1"
    (ds / "base").mkdir(parents=True)
    (ds / "vm").mkdir()
    base = make_vmdk(ds / "base", "golden", "vmfs", 2 * MiB)
    snap = make_delta(ds / "vm", "vm-000001", base, subformat="seSparse")
    rewrite_descriptor(snap, lambda t: t.replace('"../base/golden.vmdk"', '"[datastore1] base/golden.vmdk"'))
    resolver = local_resolver(str(ds / "vm"), datastores={"datastore1": str(ds)})

    chain = load_chain(str(snap), resolver)

    assert chain.layers[1].path == str(base) and chain.notes == ()
    unmapped = local_resolver(str(ds / "vm"))
    err = expect_error(ErrorCode.INVALID_VALUE, load_chain, str(snap), unmapped)
    assert "--datastore" in str(err)


def test_parent_outside_vm_dir(tmp_path: Path) -> None:
    vm = tmp_path / "vm"
    base = make_vmdk(tmp_path / "shared", "golden", "monolithicSparse", 2 * MiB)
    snap = make_delta(vm, "linked", base)

    expect_error(ErrorCode.PATH_OUTSIDE_SOURCE, load_chain, str(snap), resolver_for(vm))
    chain = load_chain(str(snap), resolver_for(vm, allow_external=True))
    assert chain.layers[1].path == str(base)
    assert [n.message for n in chain.layers[0].notes] == [f"following path outside the VM directory: {base}"]


def test_hint_without_parent_cid_check(vm: Path) -> None:
    # A parentCID but no parentFileNameHint: read as a base, as qemu does.
    make_flat_file(vm, "x-flat.vmdk")
    path = write_descriptor(vm, "x", ['RW 2048 FLAT "x-flat.vmdk" 0'], parent_cid=0x55)
    chain = load_chain(str(path), resolver_for(vm))
    assert len(chain.layers) == 1 and chain.top.parent_cid == 0x55


# --- extents ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subformat", "victim"),
    [
        ("monolithicFlat", "disk-flat.vmdk"),
        ("twoGbMaxExtentSparse", "disk-s001.vmdk"),
        ("vmfs", "disk-flat.vmdk"),
        ("vmfsSparse", "disk-delta.vmdk"),
        ("seSparse", "disk-sesparse.vmdk"),
    ],
)
def test_missing_extent(vm: Path, subformat: str, victim: str) -> None:
    path = make_vmdk(vm, "disk", subformat, 2 * MiB)
    (vm / victim).unlink()

    err = expect_error(
        ErrorCode.DISK_MISSING, load_chain, str(path), resolver_for(vm), key="scsi0:1.fileName"
    )

    assert err.file == str(path) and str(vm / victim) in err.message and err.key == "scsi0:1.fileName"


def test_missing_descriptor(vm: Path) -> None:
    err = expect_error(ErrorCode.DISK_MISSING, load_chain, str(vm / "nope.vmdk"), resolver_for(vm), key="k")
    assert err.file == str(vm / "nope.vmdk") and err.key == "k"


def test_extent_escaping_vm_dir(tmp_path: Path) -> None:
    vm = tmp_path / "vm"
    vm.mkdir()
    make_flat_file(tmp_path, "outside-flat.vmdk")
    path = write_descriptor(vm, "disk", ['RW 2048 FLAT "../outside-flat.vmdk" 0'])

    err = expect_error(ErrorCode.PATH_OUTSIDE_SOURCE, load_layer, str(path), resolver_for(vm), key="sata0:0")
    assert err.file == str(path) and err.key == "sata0:0"

    layer = load_layer(str(path), resolver_for(vm, allow_external=True), key="sata0:0")
    assert layer.extents[0].path == str(tmp_path / "outside-flat.vmdk")
    assert len(layer.notes) == 1 and layer.notes[0].key == "sata0:0"


def test_extent_symlink_escaping_vm_dir(tmp_path: Path) -> None:
    vm = tmp_path / "vm"
    vm.mkdir()
    make_flat_file(tmp_path, "secret")
    (vm / "disk-flat.vmdk").symlink_to(tmp_path / "secret")
    path = write_descriptor(vm, "disk", ['RW 2048 FLAT "disk-flat.vmdk" 0'])

    expect_error(ErrorCode.PATH_OUTSIDE_SOURCE, load_layer, str(path), resolver_for(vm))


def test_zero_extent_counts_in_size(vm: Path) -> None:
    make_flat_file(vm, "z-flat.vmdk")
    path = write_descriptor(
        vm, "z", ['RW 2048 FLAT "z-flat.vmdk" 0', "RW 2048 ZERO", 'RW 2048 FLAT "z-flat.vmdk" 0']
    )

    layer = load_layer(str(path), resolver_for(vm))

    assert [(e.kind, e.path) for e in layer.extents] == [
        ("FLAT", str(vm / "z-flat.vmdk")),
        ("ZERO", None),
        ("FLAT", str(vm / "z-flat.vmdk")),
    ]
    assert layer.virtual_size == 3 * MiB
    # Pinned qemu 7.2 behaviour the copy step must guard against: ZERO extents are dropped.
    assert qemu_info(path)["virtual-size"] == 2 * MiB


def test_flat_extent_with_offset(vm: Path) -> None:
    make_flat_file(vm, "o-flat.vmdk", 2 * MiB)
    path = write_descriptor(vm, "o", ['RW 2048 FLAT "o-flat.vmdk" 2048'])
    layer = load_layer(str(path), resolver_for(vm))
    assert layer.extents[0].offset == 2048 and layer.virtual_size == 1 * MiB


def test_truncated_flat_extent(vm: Path) -> None:
    make_flat_file(vm, "t-flat.vmdk", 1 * MiB - 512)
    path = write_descriptor(vm, "t", ['RW 2048 FLAT "t-flat.vmdk" 0'])
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "t-flat.vmdk" in err.message


def test_sparse_extent_size_disagrees_with_descriptor(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "twoGbMaxExtentSparse", 2 * MiB)
    rewrite_descriptor(path, lambda t: t.replace("RW 4096 SPARSE", "RW 8192 SPARSE"))
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "8192" in err.message and "4096" in err.message


def test_embedded_descriptor_size_disagrees_with_header(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "monolithicSparse", 2 * MiB)
    rewrite_descriptor(path, lambda t: t.replace("RW 4096 SPARSE", "RW 4095 SPARSE"))
    expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))


def test_extent_of_wrong_kind(vm: Path) -> None:
    # A FLAT file named as a SPARSE extent has no sparse header.
    make_flat_file(vm, "w-flat.vmdk")
    path = write_descriptor(vm, "w", ['RW 2048 SPARSE "w-flat.vmdk"'], create_type="twoGbMaxExtentSparse")
    err = expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))
    assert "not a SPARSE extent" in err.message


def test_extent_naming_the_descriptor(vm: Path) -> None:
    path = write_descriptor(vm, "self", ['RW 1 FLAT "self.vmdk" 0'])
    expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))


def test_vsan_object_extent(vm: Path) -> None:
    path = write_descriptor(vm, "v", ['RW 2048 VMFS "vsan://5223a1b2c3d4e5f6"'], create_type="vmfs")
    err = expect_error(ErrorCode.UNSUPPORTED_DISK, load_layer, str(path), resolver_for(vm))
    assert "vsan://" in err.message


def test_extent_on_fifo_does_not_hang(vm: Path) -> None:
    os.mkfifo(vm / "p-flat.vmdk")
    path = write_descriptor(vm, "p", ['RW 2048 FLAT "p-flat.vmdk" 0'])
    expect_error(ErrorCode.INVALID_DISK, load_layer, str(path), resolver_for(vm))


# --- unsupported types -------------------------------------------------------------


@pytest.mark.parametrize(
    ("create_type", "extent"),
    [
        ("vmfsRawDeviceMap", 'RW 2048 VMFSRDM "disk-rdm.vmdk"'),
        ("vmfsPassthroughRawDeviceMap", 'RW 2048 VMFSRAW "disk-rdmp.vmdk"'),
        ("vmfsRDM", 'RW 2048 VMFSRDM "disk-rdm.vmdk"'),
        ("fullDevice", 'RW 2048 FLAT "/dev/sdb" 0'),
        ("partitionedDevice", 'RW 2048 FLAT "/dev/sdb1" 0'),
        ("custom", 'RW 2048 FLAT "disk-flat.vmdk" 0'),
        ("vsanSparse", 'RW 2048 VSANSPARSE "vsan://x"'),
        ("somethingNew", 'RW 2048 FLAT "disk-flat.vmdk" 0'),
    ],
)
def test_unsupported_create_type(vm: Path, create_type: str, extent: str) -> None:
    path = write_descriptor(vm, "disk", [extent], create_type=create_type)

    err = expect_error(ErrorCode.UNSUPPORTED_DISK, load_chain, str(path), resolver_for(vm))

    assert err.value == create_type and err.file == str(path) and create_type in str(err)
    assert err.hint


@pytest.mark.parametrize(("kind", "word"), [("VMFSRDM", "raw device mapping"), ("NEWKIND", "unknown kind")])
def test_unsupported_extent_kind(vm: Path, kind: str, word: str) -> None:
    path = write_descriptor(vm, "disk", [f'RW 2048 {kind} "disk-x.vmdk"'], create_type="vmfs")
    err = expect_error(ErrorCode.UNSUPPORTED_DISK, load_layer, str(path), resolver_for(vm))
    assert word in err.message and err.value == kind


def test_vmfs_thin_create_type_is_accepted(vm: Path) -> None:
    make_flat_file(vm, "t-flat.vmdk")
    path = write_descriptor(vm, "t", ['RW 2048 VMFS "t-flat.vmdk"'], create_type="vmfsThin")
    assert load_layer(str(path), resolver_for(vm)).create_type == "vmfsThin"


def test_factory_descriptor_text_roundtrip(vm: Path) -> None:
    path = make_vmdk(vm, "disk", "streamOptimized", 2 * MiB)
    parsed = parse_descriptor(descriptor_text(path), str(path))
    assert parsed.create_type == "streamOptimized" and parsed.sectors == 4096


def test_copy_of_factory_disk_elsewhere_still_loads(tmp_path: Path) -> None:
    # Relative extent names: a VM directory copied as a whole keeps working.
    src = tmp_path / "a"
    make_vmdk(src, "disk", "vmfs", 2 * MiB)
    make_delta(src, "disk-000001", src / "disk.vmdk", subformat="vmfsSparse")
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    chain = load_chain(str(dst / "disk-000001.vmdk"), resolver_for(dst))
    assert all(f.startswith(str(dst)) for f in chain.files)
