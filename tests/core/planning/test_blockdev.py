"""core.planning.blockdev: the QEMU options tree of a chain and the descriptor views (pure, no qemu)."""

from __future__ import annotations

import json

import pytest

from vm2kvmd.core.hardware.model import DiskChain, DiskLayer, Extent
from vm2kvmd.core.planning.blockdev import (
    DescriptorView,
    descriptor_views,
    image_opts,
    json_filename,
    layer_node,
    layer_nodes,
    needs_view,
    node_file,
    source_blockdev,
    stack,
    target_node,
)

MiB_SECTORS = 2048
NO_PARENT = 0xFFFFFFFF


def flat(path: str, name: str, sectors: int = MiB_SECTORS, *, access: str = "RW", offset: int = 0) -> Extent:
    return Extent(access, sectors, "FLAT", name, path, offset)


def layer(
    path: str,
    extents: tuple[Extent, ...],
    *,
    create_type: str = "monolithicFlat",
    embedded: bool = False,
    cid: int = 0x1234ABCD,
    parent_cid: int = NO_PARENT,
) -> DiskLayer:
    sectors = sum(ext.sectors for ext in extents)
    return DiskLayer(
        path=path,
        create_type=create_type,
        cid=cid,
        parent_cid=parent_cid,
        parent_hint=None,
        extents=extents,
        embedded=embedded,
        virtual_size=sectors * 512,
    )


def sparse_file(path: str) -> DiskLayer:
    extent = Extent("RW", MiB_SECTORS, "SPARSE", "old-name.vmdk", path)
    return layer(path, (extent,), embedded=True, create_type="monolithicSparse")


# --- nodes -------------------------------------------------------------------------


def test_plain_layer_is_vmdk_over_its_file_read_only() -> None:
    node = layer_node(layer("/vm/d.vmdk", (flat("/vm/d-flat.vmdk", "d-flat.vmdk"),)))
    assert node == {"driver": "vmdk", "read-only": True, "file": {"driver": "file", "filename": "/vm/d.vmdk"}}


def test_chain_stacks_parents_as_backing() -> None:
    base = sparse_file("/vm/base.vmdk")
    delta = Extent("RW", MiB_SECTORS, "VMFSSPARSE", "top-delta.vmdk", "/vm/top-delta.vmdk")
    top = layer("/vm/top.vmdk", (delta,), create_type="vmfsSparse", parent_cid=base.cid)
    node = source_blockdev(DiskChain((top, base)))
    assert node["file"]["filename"] == "/vm/top.vmdk"
    assert node["backing"]["file"]["filename"] == "/vm/base.vmdk"
    assert "backing" not in node["backing"]
    assert node["read-only"] and node["backing"]["read-only"]
    assert stack(layer_nodes(DiskChain((top, base)))) == node


def test_tar_member_is_a_raw_byte_range() -> None:
    member = layer("/pkg/vm.ova", sparse_file("/pkg/vm.ova").extents, embedded=True)
    member = DiskLayer(**{**member.__dict__, "member_offset": 1536, "member_size": 4096})
    node = layer_node(member)
    assert node["file"] == {
        "driver": "raw",
        "offset": 1536,
        "size": 4096,
        "file": {"driver": "file", "filename": "/pkg/vm.ova"},
    }
    assert not needs_view(member)


def test_image_opts_and_json_filename() -> None:
    node = layer_node(sparse_file("/vm/a, b.vmdk"))
    assert image_opts(node) == "driver=vmdk,read-only=on,file.driver=file,file.filename=/vm/a,, b.vmdk"
    assert json.loads(json_filename(node).removeprefix("json:")) == node


def test_target_node_and_node_file() -> None:
    target = target_node("/pool/x.qcow2", "qcow2")
    assert target == {
        "driver": "qcow2",
        "read-only": True,
        "file": {"driver": "file", "filename": "/pool/x.qcow2"},
    }
    assert node_file(target) == "/pool/x.qcow2"
    member = DiskLayer(**{**sparse_file("/pkg/vm.ova").__dict__, "member_offset": 512})
    assert node_file(layer_node(member)) == "/pkg/vm.ova"
    assert node_file({"driver": "null-co"}) is None


# --- when a view is needed ------------------------------------------------------------


@pytest.mark.parametrize(
    "disk",
    [
        layer("/vm/d.vmdk", (flat("/vm/d-flat.vmdk", "d-flat.vmdk"),)),
        layer("/vm/d.vmdk", (flat("/vm/d-flat.vmdk", "/vm/d-flat.vmdk"),), create_type="vmfs"),
        sparse_file("/vm/renamed.vmdk"),  # the stale extent name does not matter
    ],
)
def test_what_qemu_reads_right_needs_no_view(disk: DiskLayer) -> None:
    assert not needs_view(disk)
    assert descriptor_views(DiskChain((disk,))) == ()


@pytest.mark.parametrize(
    ("why", "disk"),
    [
        ("vmfsThin", layer("/vm/d.vmdk", (flat("/vm/d-flat.vmdk", "d-flat.vmdk"),), create_type="vmfsThin")),
        (
            "ZERO",
            layer(
                "/vm/d.vmdk", (flat("/vm/d-flat.vmdk", "d-flat.vmdk"), Extent("RW", 8, "ZERO", None, None))
            ),
        ),
        ("RDONLY", layer("/vm/d.vmdk", (flat("/vm/d-flat.vmdk", "d-flat.vmdk", access="RDONLY"),))),
        ("datastore", layer("/vm/d.vmdk", (flat("/ds/x/d-flat.vmdk", "[ds] x/d-flat.vmdk"),))),
        ("windows", layer("/vm/d.vmdk", (flat("/vm/d-flat.vmdk", "C:\\VMs\\d-flat.vmdk"),))),
        ("symlink", layer("/vm/d.vmdk", (flat("/elsewhere/real-flat.vmdk", "d-flat.vmdk"),))),
        ("dotdot", layer("/vm/d.vmdk", (flat("/vm/d-flat.vmdk", "sub/../d-flat.vmdk"),))),
    ],
)
def test_what_qemu_reads_wrong_needs_a_view(why: str, disk: DiskLayer) -> None:
    assert needs_view(disk), why
    with pytest.raises(ValueError, match="needs a descriptor view"):
        layer_node(disk)
    with pytest.raises(ValueError, match="pass views_dir"):
        source_blockdev(DiskChain((disk,)))


def _extent_lines(view: DescriptorView) -> list[str]:
    return [line for line in view.text.splitlines() if line.startswith("RW ")]


def test_view_of_vmfs_thin_with_offset_extent() -> None:
    extent = Extent("RW", 4096, "VMFS", "d-flat.vmdk", "/vm/d-flat.vmdk", 0)
    disk = layer("/vm/d.vmdk", (extent,), create_type="vmfsThin", cid=0xCAFE)
    (view,) = descriptor_views(DiskChain((disk,)))
    assert view.layer == 0
    assert view.name == "0/d.vmdk"
    assert 'createType="monolithicFlat"' in view.text
    assert "CID=0000cafe" in view.text and "parentCID=ffffffff" in view.text
    assert _extent_lines(view) == ['RW 4096 FLAT "/vm/d-flat.vmdk" 0']
    assert view.zero_size == 0 and view.links == ()


def test_view_turns_zero_into_flat_over_a_zero_file_and_rdonly_into_rw() -> None:
    disk = layer(
        "/vm/d.vmdk",
        (
            flat("/vm/a.bin", "a.bin"),
            Extent("RW", 4096, "ZERO", None, None),
            flat("/vm/b.bin", "b.bin", access="RDONLY", offset=16),
            Extent("RDONLY", 100, "ZERO", None, None),
        ),
    )
    (view,) = descriptor_views(DiskChain((disk,)))
    assert _extent_lines(view) == [
        'RW 2048 FLAT "/vm/a.bin" 0',
        'RW 4096 FLAT "aux/zero" 0',
        'RW 2048 FLAT "/vm/b.bin" 16',
        'RW 100 FLAT "aux/zero" 0',
    ]
    assert view.zero_size == 4096 * 512
    # Every line qemu reads is an extent it keeps: no RDONLY, no ZERO, no blank line before an extent.
    lines = view.text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("RW "):
            assert lines[i - 1].strip(), "qemu 7.2 reads an extent twice after a blank line"
    assert "RDONLY" not in view.text and "ZERO" not in view.text


def test_view_keeps_sparse_kinds_and_links_paths_qemu_cannot_parse() -> None:
    odd = '/ds/store "A"/d-s002.vmdk'
    long = "/ds/" + "x" * 600 + "/d-s003.vmdk"
    disk = layer(
        "/vm/d.vmdk",
        (
            Extent("RW", 2048, "SPARSE", "d-s001.vmdk", "/vm/d-s001.vmdk"),
            Extent("RW", 2048, "SPARSE", "[A] d-s002.vmdk", odd),
            Extent("RW", 2048, "SPARSE", "[B] d-s003.vmdk", long),
        ),
        create_type="twoGbMaxExtentSparse",
    )
    (view,) = descriptor_views(DiskChain((disk,)))
    assert _extent_lines(view) == [
        'RW 2048 SPARSE "/vm/d-s001.vmdk"',
        'RW 2048 SPARSE "aux/extent1"',
        'RW 2048 SPARSE "aux/extent2"',
    ]
    assert view.links == (("aux/extent1", odd), ("aux/extent2", long))
    assert 'createType="twoGbMaxExtentSparse"' in view.text


def test_views_only_for_the_layers_that_need_them_and_named_per_layer() -> None:
    base = layer(
        "/vm/base.vmdk", (flat("/vm/base-flat.vmdk", "base-flat.vmdk"),), create_type="vmfsThin", cid=7
    )
    delta = Extent("RW", 2048, "SESPARSE", "top-sesparse.vmdk", "/vm/top-sesparse.vmdk")
    top = layer("/vm/top.vmdk", (delta,), create_type="seSparse", parent_cid=7)
    chain = DiskChain((top, base))
    (view,) = descriptor_views(chain)
    assert (view.layer, view.name) == (1, "1/base.vmdk")
    node = source_blockdev(chain, "/work/job-1/views/3")
    assert node["file"]["filename"] == "/vm/top.vmdk"
    assert node["backing"]["file"]["filename"] == "/work/job-1/views/3/1/base.vmdk"
    # Forcing a view (qemu was found to read a layer at another size) views that layer too.
    forced = descriptor_views(chain, always={0})
    assert [v.name for v in forced] == ["0/top.vmdk", "1/base.vmdk"]
    assert _extent_lines(forced[0]) == ['RW 2048 SESPARSE "/vm/top-sesparse.vmdk"']
    assert "parentCID=00000007" in forced[0].text
    # Embedded sparse files have nothing to view.
    assert descriptor_views(DiskChain((sparse_file("/vm/s.vmdk"),)), always={0}) == ()


def test_noaccess_extent_is_never_viewed_as_data() -> None:
    disk = layer("/vm/d.vmdk", (flat("/vm/a.bin", "a.bin", access="NOACCESS"),))
    with pytest.raises(ValueError, match="NOACCESS"):
        descriptor_views(DiskChain((disk,)))
