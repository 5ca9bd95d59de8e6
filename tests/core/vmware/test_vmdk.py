"""parse_descriptor on text, follow_chain over given layers (loaders on files: tests/sources/vmware)."""

from __future__ import annotations

import posixpath

import pytest

from tests.core.vmware.fake_host import FakeHost
from vm2kvmd.core.hardware.model import DiskChain, DiskLayer, Extent
from vm2kvmd.core.vmware.paths import PathResolver
from vm2kvmd.core.vmware.vmdk import NO_PARENT, follow_chain, parse_descriptor
from vm2kvmd.errors import ErrorCode, Vm2kvmError

GOOD = """\
# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=0a0b0c0d
isNativeSnapshot="no"
createType="twoGbMaxExtentFlat"
parentFileNameHint="/vmfs/volumes/datastore1/vm/base.vmdk"

# Extent description
RW 4192256 FLAT "vm-f001.vmdk" 0
RDONLY 100 ZERO
NOACCESS 8 FLAT "name with spaces-f002.vmdk" 16

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "261"
ddb.uuid = "60 00 C2 9a"
"""


def test_parse_good_descriptor() -> None:
    d = parse_descriptor(GOOD, "/x.vmdk")

    assert d.create_type == "twoGbMaxExtentFlat"
    assert d.cid == 0xFFFFFFFE and d.parent_cid == 0x0A0B0C0D
    assert d.parent_hint == "/vmfs/volumes/datastore1/vm/base.vmdk"
    assert [(e.access, e.sectors, e.kind, e.file_name, e.offset, e.line) for e in d.extents] == [
        ("RW", 4192256, "FLAT", "vm-f001.vmdk", 0, 11),
        ("RDONLY", 100, "ZERO", None, 0, 12),
        ("NOACCESS", 8, "FLAT", "name with spaces-f002.vmdk", 16, 13),
    ]
    assert d.ddb == {"adapterType": "lsilogic", "geometry.cylinders": "261", "uuid": "60 00 C2 9a"}
    assert d.adapter_type == "lsilogic"
    assert d.header["encoding"] == "UTF-8" and d.header["version"] == "1"
    assert d.sectors == 4192256 + 100 + 8


def test_parse_crlf_and_missing_parent_cid() -> None:
    text = '# Disk DescriptorFile\r\nCID=1\r\ncreateType="vmfs"\r\nRW 8 VMFS "a-flat.vmdk"\r\n'
    d = parse_descriptor(text, "/x.vmdk")
    assert d.parent_cid == NO_PARENT and d.parent_hint is None and d.extents[0].file_name == "a-flat.vmdk"


def test_parse_empty_hint_means_no_parent() -> None:
    d = parse_descriptor('CID=1\ncreateType="vmfs"\nparentFileNameHint=""\nRW 8 VMFS "a"\n', "/x")
    assert d.parent_hint is None


HEAD = 'CID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('RW 12x FLAT "a" 0', "not a whole number"),
        ('RW -5 FLAT "a" 0', "not a whole number"),
        ('RW ١٢ FLAT "a" 0', "not a whole number"),  # Arabic-Indic digits: int() would take them
        ('RW 99999999999999999999 FLAT "a" 0', "beyond any real disk"),
        ('RW 999999999999999999999999 FLAT "a" 0', "not a whole number"),
        ('RW 8 FLAT "a" 99999999999999999999', "beyond any real disk"),
        ('RW 8 FLAT "a" zero', "not a whole number"),
        ('RW 0 FLAT "a" 0', "0 sectors"),
        ("RW 8 FLAT a-flat.vmdk 0", "malformed"),
        ('RW 8 FLAT "a-flat.vmdk', "malformed"),
        ('RW 8 FLAT ""', "names no file"),
        ("RW 8 FLAT", "names no file"),
        ('RW 8 ZERO "a"', "ZERO extent names no file"),
        ('RW 8 SPARSE "a" 0', "takes no offset"),
        ('RW 8 flat "a" 0', "malformed"),
        ("RW", "malformed"),
        ('RW 8 FLAT "a" 0 extra', "malformed"),
    ],
)
def test_parse_bad_extent_lines(body: str, words: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        parse_descriptor(HEAD + body + "\n", "/d/x.vmdk")
    assert info.value.code is ErrorCode.INVALID_DISK
    assert words in info.value.message and info.value.file == "/d/x.vmdk"


def test_parse_total_beyond_any_disk() -> None:
    lines = "".join(f'RW {1 << 36} FLAT "a" 0\n' for _ in range(3))
    with pytest.raises(Vm2kvmError, match="beyond any real disk"):
        parse_descriptor(HEAD + lines, "/x")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('CID=xyz\ncreateType="vmfs"\nRW 8 VMFS "a"\n', "CID"),
        ('CID=123456789\ncreateType="vmfs"\nRW 8 VMFS "a"\n', "CID"),
        ('CID=1\nparentCID=-1\ncreateType="vmfs"\nRW 8 VMFS "a"\n', "parentCID"),
        ('createType="vmfs"\nRW 8 VMFS "a"\n', "CID"),
        ('CID=1\nRW 8 VMFS "a"\n', "createType"),
        ('CID=1\ncreateType=""\nRW 8 VMFS "a"\n', "createType"),
        ('CID=1\ncreateType="vmfs\nRW 8 VMFS "a"\n', "createType"),
        ('CID=1\ncreateType="vmfs"\ncreateType="monolithicFlat"\nRW 8 VMFS "a"\n', "createType"),
    ],
)
def test_parse_bad_header(text: str, key: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        parse_descriptor(text, "/x.vmdk")
    assert info.value.code is ErrorCode.INVALID_DISK and info.value.key == key


@pytest.mark.parametrize("line", ["this is not a descriptor", "scsi0:0.present = TRUE", "=value"])
def test_parse_foreign_lines(line: str) -> None:
    with pytest.raises(Vm2kvmError, match="not part of a VMDK descriptor"):
        parse_descriptor(HEAD + line + '\nRW 8 FLAT "a" 0\n', "/x")


# --- follow_chain over injected layers ---------------------------------------------


def _layer(path: str, cid: int, parent_cid: int = NO_PARENT, hint: str | None = None) -> DiskLayer:
    extent = Extent("RW", 8, "SPARSE", posixpath.basename(path), path)
    return DiskLayer(path, "monolithicSparse", cid, parent_cid, hint, (extent,), True, None, 4096)


def _follow(layers: dict[str, DiskLayer], top: str) -> DiskChain:
    host = FakeHost(files=frozenset(layers))
    return follow_chain(
        layers[top], PathResolver("/vm", host=host), layers.__getitem__, key="scsi0:0.fileName"
    )


def test_follow_chain_top_first() -> None:
    layers = {
        "/vm/d-000002.vmdk": _layer("/vm/d-000002.vmdk", 3, 2, "d-000001.vmdk"),
        "/vm/d-000001.vmdk": _layer("/vm/d-000001.vmdk", 2, 1, "d.vmdk"),
        "/vm/d.vmdk": _layer("/vm/d.vmdk", 1),
    }
    chain = _follow(layers, "/vm/d-000002.vmdk")
    assert [layer.path for layer in chain.layers] == ["/vm/d-000002.vmdk", "/vm/d-000001.vmdk", "/vm/d.vmdk"]


@pytest.mark.parametrize(
    ("layers", "words"),
    [
        ({"/vm/s.vmdk": _layer("/vm/s.vmdk", 2, 1, "d.vmdk")}, "does not exist"),
        (
            {"/vm/s.vmdk": _layer("/vm/s.vmdk", 2, 7, "d.vmdk"), "/vm/d.vmdk": _layer("/vm/d.vmdk", 1)},
            "expects parent CID 00000007",
        ),
        ({"/vm/s.vmdk": _layer("/vm/s.vmdk", 2, 2, "s.vmdk")}, "loops"),
    ],
    ids=["missing-parent", "cid-mismatch", "self-parent"],
)
def test_follow_chain_broken(layers: dict[str, DiskLayer], words: str) -> None:
    with pytest.raises(Vm2kvmError) as info:
        _follow(layers, "/vm/s.vmdk")
    assert info.value.code is ErrorCode.DISK_CHAIN_BROKEN and words in info.value.message
    assert info.value.key == "scsi0:0.fileName" and info.value.file == "/vm/s.vmdk"
