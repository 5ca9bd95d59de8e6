"""A run's source disks as QEMU opens them: nodes, descriptor views, a size check.

``core.planning.blockdev`` decides how QEMU reads a chain; some layers need a
descriptor *view* (a descriptor written for QEMU, see there).  ``SourceViews``
writes those views into one private directory per run, never next to the
source, and removes it at the end.  ``open_source`` returns the chain's
nodes after checking that QEMU sees every layer at the size its descriptor
gives: qemu 7.2 drops extents it does not understand without a word, and a
disk copied short or with shifted data is worse than no copy.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from vm2kvmd.adapters import qemu_img
from vm2kvmd.aio import in_thread
from vm2kvmd.core.hardware.model import DiskChain
from vm2kvmd.core.planning.blockdev import (
    AUX_DIR,
    ZERO_FILE,
    DescriptorView,
    Node,
    descriptor_views,
    layer_nodes,
    needs_view,
    stack,
)
from vm2kvmd.errors import ErrorCode, Vm2kvmError


class OpenedSource(Protocol):
    """A source disk as QEMU opens it, local (``QemuSource``) or remote (``pipeline.vsphere``)."""

    @property
    def node(self) -> Node: ...

    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class QemuSource:
    """One source disk as QEMU opens it."""

    chain: DiskChain
    layers: tuple[Node, ...]  # each layer without backing, top first

    @property
    def node(self) -> Node:
        """The whole chain: what qemu-img convert, measure and compare read."""
        return stack(self.layers)

    @property
    def label(self) -> str:
        """The file that names the disk in messages (the VMDK the VM names)."""
        return self.chain.top.path


class SourceViews:
    """The descriptor views of a run, in a private directory; ``close`` removes it.

    Blocking (file system): call ``write`` and ``close`` in a thread.
    """

    def __init__(self, parent: str | None = None) -> None:
        self._parent = parent  # where the private directory goes (default: the temp directory)
        self._root: str | None = None
        self._count = 0
        self._lock = threading.Lock()

    def write(self, chain: DiskChain, always: Collection[int] = ()) -> tuple[Node, ...]:
        """The layer nodes of ``chain`` (top first), writing the views they need first.

        ``always``: layers to read through a view whatever ``needs_view`` says.
        """
        views = descriptor_views(chain, always)
        if not views:
            return layer_nodes(chain)
        try:
            with self._lock:
                if self._root is None:
                    self._root = tempfile.mkdtemp(prefix="vm2kvm-views-", dir=self._parent)
                self._count += 1
                directory = os.path.join(self._root, str(self._count))
            for view in views:
                _write_view(directory, view)
        except OSError as err:
            raise Vm2kvmError(
                ErrorCode.NO_SPACE if err.errno == errno.ENOSPC else ErrorCode.INVALID_OPTION,
                f"cannot write the descriptor view of {chain.layers[views[0].layer].path}: "
                f"{err.strerror or err}",
                file=err.filename or self._parent,
                key="work-dir",
                hint="start vm2kvmd with --work-dir on a writable file system with some room",
            ) from err
        return layer_nodes(chain, directory, always)

    def close(self) -> None:
        with self._lock:
            root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _write_view(directory: str, view: DescriptorView) -> None:
    path = os.path.join(directory, view.name)
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    # surrogateescape: extent paths go back to the bytes the resolver opened.
    with open(path, "xb") as f:
        f.write(view.text.encode("utf-8", "surrogateescape"))
    if view.zero_size or view.links:
        os.makedirs(os.path.join(folder, AUX_DIR), mode=0o700, exist_ok=True)
    if view.zero_size:
        with open(os.path.join(folder, ZERO_FILE), "xb") as f:
            f.truncate(view.zero_size)  # sparse: no blocks, reads as zeros
    for name, target in view.links:
        os.symlink(target, os.path.join(folder, name))


async def open_source(views: SourceViews, chain: DiskChain) -> QemuSource:
    """``chain`` as QEMU opens it, after checking QEMU's size of every layer against ours.

    A layer QEMU reads at another size from its own descriptor is read
    through a descriptor view instead (qemu's parser has quirks we cannot
    predict from the parsed descriptor); if the view does not help either,
    the disk is refused.  Raises ``Vm2kvmError``: UNSUPPORTED_DISK when QEMU
    would read a layer at another size (it would copy a wrong disk),
    COPY_FAILED when qemu-img cannot open it.
    """
    layers = await in_thread(views.write, chain)
    wrong = await _wrong_sizes(chain, layers)
    retry = {index for index in wrong if not needs_view(chain.layers[index])}
    if retry:
        layers = await in_thread(views.write, chain, retry)
        wrong = await _wrong_sizes(chain, layers)
    if wrong:
        index, size = next(iter(wrong.items()))
        layer = chain.layers[index]
        raise Vm2kvmError(
            ErrorCode.UNSUPPORTED_DISK,
            f"QEMU reads this VMDK as {size} bytes, its descriptor describes "
            f"{layer.virtual_size}: copying it would give a wrong disk",
            file=layer.path,
            hint="clone the disk with vmware-vdiskmanager or vmkfstools first, "
            "and report the descriptor to the vm2kvm developers",
        )
    return QemuSource(chain, layers)


async def _wrong_sizes(chain: DiskChain, layers: Sequence[Node]) -> dict[int, object]:
    """Layers (by index) QEMU reads at another size than ours, with QEMU's size."""
    wrong: dict[int, object] = {}
    for index, (layer, node) in enumerate(zip(chain.layers, layers, strict=True)):
        info = await qemu_img.info(node, label=layer.path)
        size = info.get("virtual-size")
        if size != layer.virtual_size:
            wrong[index] = size
    return wrong
