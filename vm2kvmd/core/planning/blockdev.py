"""How QEMU opens a source disk: a blockdev options tree, read-only, parents explicit.

Pure: from a ``DiskChain`` to the nested options QEMU takes as ``--image-opts``
(flattened with dots) or as a ``json:{...}`` pseudo-filename (the backing
file of an overlay).  Every layer is ``read-only=on``; parents are given as
explicit ``backing`` nodes with the paths our resolver checked, so QEMU never
follows ``parentFileNameHint`` by itself.

Descriptor views.  qemu 7.2's vmdk driver reads some descriptors differently
from VMware, silently: it drops ZERO, RDONLY and NOACCESS extents (shifting
the extents after them), refuses the createTypes vmfsThin, vmfsPreallocated
and vmfsEagerZeroedThick, and opens every extent at the name the descriptor
gives, relative to the descriptor, where our resolver may have found it
elsewhere (``[datastore] path``, Windows paths, symlinks).  Its
``extents.N`` options cannot redirect an extent either ("Can't specify
'file' and 'filename' options at the same time").  For such a layer QEMU
reads a *view* instead of the descriptor: a small descriptor written into a
private directory (never next to the source) that describes the same disk
the way qemu 7.2 understands it: every extent ``RW`` and at the absolute
path we resolved, ZERO extents as flat extents over a sparse all-zero file,
and a createType qemu accepts.  ``descriptor_views`` says which files to
write; ``source_blockdev(chain, views_dir)`` names them.  The data files
are still the source's own, opened read-only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vm2kvmd.core.hardware.model import DiskChain, DiskLayer, Extent

Node = dict[str, Any]

SECTOR = 512

# Text descriptors qemu 7.2 opens (block/vmdk.c, vmdk_open_desc_file); hosted
# sparse files (monolithicSparse, streamOptimized) are opened by their header.
QEMU_TEXT_CREATE_TYPES = frozenset(
    {"monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"}
)
_FLAT_KINDS = frozenset({"FLAT", "VMFS"})
# qemu parses the extent file name with "%511[^\n\r\"]".
_MAX_QEMU_NAME = 511
# A view's own files go in a subdirectory: a descriptor may be called anything, even "zero".
AUX_DIR = "aux"
ZERO_FILE = f"{AUX_DIR}/zero"


@dataclass(frozen=True)
class DescriptorView:
    """A descriptor QEMU reads instead of a layer's own; see the module docstring.

    Write ``text`` to ``views_dir/name``; when ``zero_size`` is not 0, create
    ``ZERO_FILE`` (relative to the view's directory), a sparse all-zero file
    of that many bytes; create each of ``links`` (name relative to the view's
    directory, target) as a symlink: an extent path QEMU cannot parse from a
    descriptor.
    """

    layer: int  # index into chain.layers
    name: str  # relative to the chain's views directory: "<layer>/<descriptor file name>"
    text: str
    zero_size: int = 0
    links: tuple[tuple[str, str], ...] = ()


def needs_view(layer: DiskLayer) -> bool:
    """Whether qemu 7.2 would read ``layer``'s own descriptor differently from VMware."""
    if not _viewable(layer):
        # Hosted sparse files are read by their header; the extent line is ignored.
        # Descriptors inside a tar are the OVA reader's business (their extents are members).
        return False
    if layer.create_type not in QEMU_TEXT_CREATE_TYPES:
        return True
    return any(
        ext.access != "RW" or ext.kind == "ZERO" or _qemu_path(layer, ext) != ext.path
        for ext in layer.extents
    )


def _qemu_path(layer: DiskLayer, ext: Extent) -> str | None:
    """Where qemu opens an extent: the name as written, relative to the descriptor's directory."""
    if ext.file_name is None:
        return None
    if ext.file_name.startswith("/"):
        return ext.file_name
    return os.path.dirname(layer.path) + "/" + ext.file_name


def descriptor_views(chain: DiskChain, always: Collection[int] = ()) -> tuple[DescriptorView, ...]:
    """The views the layers of ``chain`` need (none for most disks).

    ``always``: indexes of layers to view even though ``needs_view`` sees no
    reason, because qemu was found to read them at another size.  (qemu 7.2's
    extent parser also reads an extent line twice when a blank line comes
    right before it: ``sscanf`` skips the newline.)  Embedded and tar-member
    layers are never viewed.
    """
    return tuple(
        _view(index, layer)
        for index, layer in enumerate(chain.layers)
        if needs_view(layer) or (index in always and _viewable(layer))
    )


def _viewable(layer: DiskLayer) -> bool:
    return not layer.embedded and layer.member_offset is None


def _view(index: int, layer: DiskLayer) -> DescriptorView:
    lines: list[str] = []
    links: list[tuple[str, str]] = []
    zero_size = 0
    for number, ext in enumerate(layer.extents):
        if ext.access == "NOACCESS":
            # vmdk.load_layer refuses these; a view must never turn them into data.
            raise ValueError(f"{layer.path}: a NOACCESS extent cannot be viewed")
        if ext.kind == "ZERO":
            zero_size = max(zero_size, ext.sectors * SECTOR)
            lines.append(f'RW {ext.sectors} FLAT "{ZERO_FILE}" 0')
            continue
        assert ext.path is not None, "load_layer resolves every extent with a file"
        name = ext.path
        if not _qemu_can_parse(name):
            name = f"{AUX_DIR}/extent{number}"
            links.append((name, ext.path))
        if ext.kind in _FLAT_KINDS:
            lines.append(f'RW {ext.sectors} FLAT "{name}" {ext.offset}')
        else:
            lines.append(f'RW {ext.sectors} {ext.kind} "{name}"')
    text = "\n".join(
        [
            "# Disk DescriptorFile",
            f"# vm2kvm: how QEMU reads {_comment(layer.path)}; the data files are the source's own",
            "version=1",
            f"CID={layer.cid:08x}",
            f"parentCID={layer.parent_cid:08x}",
            f'createType="{_qemu_create_type(layer)}"',
            # No blank line before the extents: qemu would read the first one twice.
            "# Extent description",
            *lines,
            "",
        ]
    )
    name = f"{index}/{os.path.basename(layer.path)}"
    return DescriptorView(index, name, text, zero_size, tuple(links))


def _qemu_create_type(layer: DiskLayer) -> str:
    if layer.create_type in QEMU_TEXT_CREATE_TYPES:
        return layer.create_type
    kinds = {ext.kind for ext in layer.extents} - {"ZERO", *_FLAT_KINDS}
    if not kinds:
        return "monolithicFlat"  # vmfsThin, vmfsPreallocated, vmfsEagerZeroedThick
    # The createType only decides how qemu *creates* extents; reading goes by extent kind.
    return "twoGbMaxExtentSparse"


def _qemu_can_parse(name: str) -> bool:
    return len(name.encode("utf-8", "surrogateescape")) <= _MAX_QEMU_NAME and not any(
        c in name for c in '"\n\r'
    )


def _comment(path: str) -> str:
    return " ".join(path.split())


def layer_node(layer: DiskLayer, view: str | None = None) -> Node:
    """One layer as QEMU options (without its backing); ``view``: the path of its descriptor view."""
    if view is None and needs_view(layer):
        raise ValueError(f"{layer.path} needs a descriptor view (qemu_source.descriptor_views)")
    file: Node = {"driver": "file", "filename": view or layer.path}
    if layer.member_offset is not None:
        # A disk inside a tar: QEMU's raw driver exposes a byte range of the file.
        file = {"driver": "raw", "offset": layer.member_offset, "file": file}
        if layer.member_size is not None:
            file["size"] = layer.member_size
    return {"driver": "vmdk", "read-only": True, "file": file}


def layer_nodes(
    chain: DiskChain, views_dir: str | None = None, always: Collection[int] = ()
) -> tuple[Node, ...]:
    """Every layer of ``chain`` as its own node (no backing), top first.

    ``views_dir`` is where the caller wrote ``descriptor_views(chain, always)``;
    it may be None only when there are none.
    """
    views = {view.layer: view.name for view in descriptor_views(chain, always)}
    if views and views_dir is None:
        raise ValueError(f"{chain.top.path}: the chain needs descriptor views; pass views_dir")
    return tuple(
        layer_node(layer, os.path.join(views_dir, views[index]) if views_dir and index in views else None)
        for index, layer in enumerate(chain.layers)
    )


def stack(layers: Sequence[Mapping[str, Any]]) -> Node:
    """Layer nodes (top first) as one node, each parent the ``backing`` of its child."""
    node: Node | None = None
    for layer in reversed(layers):
        child = dict(layer)
        if node is not None:
            child["backing"] = node
        node = child
    assert node is not None, "a chain has at least one layer"
    return node


def source_blockdev(chain: DiskChain, views_dir: str | None = None, always: Collection[int] = ()) -> Node:
    """The whole chain, top first, each parent as the ``backing`` of its child.

    ``views_dir``: where ``descriptor_views(chain, always)`` were written
    (needed only when there are any).
    """
    return stack(layer_nodes(chain, views_dir, always))


def target_node(path: str, fmt: str, *, block: bool = False) -> Node:
    """A copy's target image (``qcow2``/``raw``), opened read-only, e.g. to compare it.

    ``block``: the target is a block device (a logical volume); QEMU's ``file``
    driver refuses those, ``host_device`` is the one for them.
    """
    protocol = "host_device" if block else "file"
    return {"driver": fmt, "read-only": True, "file": {"driver": protocol, "filename": path}}


def node_file(node: Mapping[str, Any]) -> str | None:
    """The file a node reads (through its ``file`` children, not its backing), for messages."""
    current: Any = node
    while isinstance(current, Mapping):
        if isinstance(current.get("filename"), str):
            return str(current["filename"])
        current = current.get("file")
    return None


def image_opts(node: Mapping[str, Any]) -> str:
    """``--image-opts`` syntax: dotted keys, ``on``/``off``, commas doubled."""
    return ",".join(f"{key}={_opt_value(value)}" for key, value in _flatten(node, ""))


def json_filename(node: Mapping[str, Any]) -> str:
    """A ``json:`` pseudo-filename, e.g. an overlay's backing file."""
    return "json:" + json.dumps(node, separators=(",", ":"), sort_keys=True)


def _flatten(node: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _opt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value).replace(",", ",,")
