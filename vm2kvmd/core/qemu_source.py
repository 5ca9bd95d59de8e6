"""How QEMU opens a source disk: a blockdev options tree, read-only, parents explicit.

Pure: from a ``DiskChain`` to the nested options QEMU takes as ``--image-opts``
(flattened with dots) or as a ``json:{...}`` pseudo-filename (the backing
file of an overlay).  Every layer is ``read-only=on``; parents are given as
explicit ``backing`` nodes with the paths our resolver checked, so QEMU never
follows ``parentFileNameHint`` by itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vm2kvmd.core.model import DiskChain, DiskLayer

Node = dict[str, Any]


def layer_node(layer: DiskLayer) -> Node:
    """One layer as QEMU options (without its backing)."""
    file: Node = {"driver": "file", "filename": layer.path}
    if layer.member_offset is not None:
        # A disk inside a tar: QEMU's raw driver exposes a byte range of the file.
        file = {"driver": "raw", "offset": layer.member_offset, "file": file}
        if layer.member_size is not None:
            file["size"] = layer.member_size
    return {"driver": "vmdk", "read-only": True, "file": file}


def source_blockdev(chain: DiskChain) -> Node:
    """The whole chain, top first, each parent as the ``backing`` of its child."""
    node: Node | None = None
    for layer in reversed(chain.layers):
        child = layer_node(layer)
        if node is not None:
            child["backing"] = node
        node = child
    assert node is not None, "a DiskChain has at least one layer"
    return node


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
