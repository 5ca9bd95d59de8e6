"""A vSphere disk's layers from the first bytes of their datastore files (pure), and the QEMU
options and descriptor views they become."""

from __future__ import annotations

import struct

import pytest

from vm2kvmd.core.vmware.vmdk import NO_PARENT
from vm2kvmd.core.vsphere.disk_chain import (
    HEAD_BYTES,
    RemoteLayer,
    flat_node,
    remote_chain,
    remote_layer,
    remote_view,
    split_datastore_path,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError

MiB = 1 << 20


def descriptor(create_type: str, extents: list[str], cid: int = 0x11, parent: int = NO_PARENT) -> bytes:
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        f"CID={cid:08x}",
        f"parentCID={parent:08x}",
        f'createType="{create_type}"',
        "",
        "# Extent description",
        *extents,
        "",
        'ddb.adapterType = "lsilogic"',
    ]
    return "\n".join(lines).encode()


def test_esxi_flat_descriptor() -> None:
    layer = remote_layer("[ds1] vm/disk.vmdk", descriptor("vmfs", ['RW 8192 VMFS "disk-flat.vmdk"']))
    assert layer == RemoteLayer("[ds1] vm/disk.vmdk", "[ds1] vm/disk-flat.vmdk", "flat", 4 * MiB, 0, 0x11)
    node = flat_node(layer, {"driver": "nbd", "server": {"type": "unix", "path": "/s"}})
    assert node == {
        "driver": "raw",
        "read-only": True,
        "offset": 0,
        "size": 4 * MiB,
        "file": {"driver": "nbd", "server": {"type": "unix", "path": "/s"}},
    }


def test_monolithic_flat_with_offset_and_a_folder_less_descriptor() -> None:
    layer = remote_layer("[ds1] d.vmdk", descriptor("monolithicFlat", ['RW 2048 FLAT "d-flat.vmdk" 16']))
    assert (layer.data, layer.offset, layer.size) == ("[ds1] d-flat.vmdk", 16 * 512, MiB)


def test_snapshot_chain_checks_content_ids() -> None:
    base = remote_layer("[ds] v/b.vmdk", descriptor("vmfs", ['RW 2048 VMFS "b-flat.vmdk"'], cid=0xA))
    delta_text = descriptor("vmfsSparse", ['RW 2048 VMFSSPARSE "b-000001-delta.vmdk"'], cid=0xB, parent=0xA)
    delta = remote_layer("[ds] v/b-000001.vmdk", delta_text)
    assert delta.kind == "sparse" and delta.data == "[ds] v/b-000001-delta.vmdk"
    chain = remote_chain([delta, base])
    assert chain.files == ("[ds] v/b-000001-delta.vmdk", "[ds] v/b-flat.vmdk")
    assert chain.size == MiB
    stale = remote_layer(
        "[ds] v/b-000001.vmdk",
        descriptor("vmfsSparse", ['RW 2048 VMFSSPARSE "b-000001-delta.vmdk"'], cid=0xB, parent=0xC),
    )
    with pytest.raises(Vm2kvmError) as err:
        remote_chain([stale, base], key="scsi0:0")
    assert err.value.code is ErrorCode.DISK_CHAIN_BROKEN
    assert err.value.file == "[ds] v/b-000001.vmdk" and "0000000a" in err.value.message
    with pytest.raises(Vm2kvmError) as err:
        remote_chain([delta])  # vSphere named no parent for a delta
    assert err.value.code is ErrorCode.DISK_CHAIN_BROKEN


def test_views_name_local_files() -> None:
    base = RemoteLayer("[ds] v/b.vmdk", "[ds] v/b-flat.vmdk", "flat", MiB, 0, 0xA)
    delta = RemoteLayer("[ds] v/c.vmdk", "[ds] v/c-delta.vmdk", "sparse", MiB, 0, 0xB, 0xA)
    assert 'RW 2048 FLAT "/w/0/data" 0' in remote_view(base, "/w/0/data")
    text = remote_view(delta, "/w/1/data")
    assert 'RW 2048 VMFSSPARSE "/w/1/data"' in text and "parentCID=0000000a" in text
    assert "\n\n# Extent" not in text  # qemu 7.2 would read the extent twice
    with pytest.raises(ValueError):
        remote_view(base, 'relative"name')


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (descriptor("vmfsRawDeviceMap", ['RW 2048 VMFSRDM "d-rdm.vmdk"']), ErrorCode.UNSUPPORTED_DISK),
        (
            descriptor("seSparse", ['RW 2048 SESPARSE "d-sesparse.vmdk"'], parent=1),
            ErrorCode.UNSUPPORTED_DISK,
        ),
        (
            descriptor("twoGbMaxExtentFlat", ['RW 2048 FLAT "a.vmdk" 0', 'RW 2048 FLAT "b.vmdk" 0']),
            ErrorCode.UNSUPPORTED_DISK,
        ),
        (descriptor("vmfs", ['RW 2048 VMFS "../other/d-flat.vmdk"']), ErrorCode.UNSUPPORTED_DISK),
        (b"\x01\x02 not a descriptor\x00\xff", ErrorCode.INVALID_DISK),
        (bytes(HEAD_BYTES), ErrorCode.INVALID_DISK),  # a data file where the descriptor belongs
        (b"COWD" + struct.pack("<IIIIIII", 1, 3, 2048, 1, 4, 1, 5) + bytes(512), ErrorCode.UNSUPPORTED_DISK),
    ],
)
def test_refusals_name_the_file(text: bytes, code: ErrorCode) -> None:
    with pytest.raises(Vm2kvmError) as err:
        remote_layer("[ds] v/d.vmdk", text)
    assert err.value.code is code
    assert err.value.file == "[ds] v/d.vmdk"


def test_datastore_paths() -> None:
    assert split_datastore_path("[LocalDS_0] vm/d.vmdk") == ("LocalDS_0", "vm/d.vmdk")
    for bad in ("vm/d.vmdk", "[ds]", "[ds] /abs.vmdk"):
        with pytest.raises(Vm2kvmError):
            split_datastore_path(bad)
