"""Per-job overlays: a writable qcow2 over each read-only source disk.

Before anything is copied, every source disk gets an empty qcow2 overlay in
the job's own directory under the daemon's work directory
(``MigrateOptions.work_dir``, ``vm2kvmd --work-dir``, default
``/var/tmp/vm2kvm``).  Its backing file is the source chain as a ``json:``
pseudo-filename (``qemu_source.source_blockdev``): every node read-only,
every parent explicit.  Whatever a later step changes in the guest (the
guest conversion, ``fstrim`` that discards free blocks) lands in the
overlay, never in a VMware file, and the final copy reads the overlay and
writes the target once.

Hook point: ``run_migration(..., before_copy=[...])`` calls each
``BeforeCopy`` hook, in order, with the overlays after they exist and
before the space check that sizes the copy.  A hook may write into the
overlays (open them as qcow2 read-write; their backing stays read-only),
e.g. run ``fstrim`` through libguestfs so free blocks read as zeros and are
not copied.  It must be cancellable (a cancelled job cancels it) and
raise ``Vm2kvmError`` on failure; the job then rolls back as usual.

A qcow2 header holds at most 1023 bytes of backing file name; a long chain
(ESXi paths, several snapshots) describes itself in more.  Then every
layer is named through a short symlink to its directory in the job's
directory (``backing_file``); about seven layers fit that way.  A deeper
chain is refused with a hint (consolidate the snapshots, or keep them).

The job's directory (overlays, symlinks, descriptor views) is removed when
the job ends: after success, failure or cancellation.  With a
``ResidueRecorder`` it is written down (a "tree" residue) before it is made
and forgotten once removed, so a daemon killed mid-job removes it at its
next start (``service.recovery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.free_space import free_space, work_dir_full
from vm2kvmd.aio import in_thread
from vm2kvmd.core.planning import blockdev as qemu_source
from vm2kvmd.core.residue import Residue, ResidueRecorder
from vm2kvmd.core.units import size_text
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.blockdev import OpenedSource

# QEMU's qcow2 driver refuses longer backing file names (block/qcow2.c).
QCOW2_BACKING_MAX = 1023

# What a guest conversion writes into the overlays (a rebuilt initramfs, packages, logs) has to
# fit in the work area: virt-v2v refuses to start with less than 1 GiB free in its temporary
# directory for the same reason, and so does the preflight here.
CONVERSION_SPACE = 1 << 30
# The appliance's QEMU pauses the guest when a write into an overlay hits ENOSPC (QEMU's
# default werror=enospc; libguestfs offers no other), and the conversion call then never
# returns.  So while the guest is converted the work area is watched: this little free for
# this long means it is full.
FULL_BELOW = 1 << 20
FULL_FOR = 3.0
WATCH_INTERVAL = 0.5


@dataclass(frozen=True)
class Overlay:
    """The writable qcow2 over one source disk."""

    index: int  # the disk's position in the plan (and in the job's progress)
    key: str  # the source device, "scsi0:0"
    path: str  # the overlay file
    source: qemu_source.Node  # how QEMU opens the source chain (its backing)
    label: str  # the source's top file, for messages

    def node(self) -> qemu_source.Node:
        """The overlay as QEMU options, read-only (its backing comes from its header): what is copied."""
        return _read_only_qcow2(self.path)


class BeforeCopy(Protocol):
    """A step that runs on the overlays before they are measured and copied."""

    async def __call__(self, overlays: Sequence[Overlay]) -> None: ...


class WorkArea:
    """A job's private directory under the work directory; ``remove`` takes it all away."""

    def __init__(self, path: str, recorder: ResidueRecorder | None = None, rid: int = 0) -> None:
        self.path = path
        self._recorder = recorder
        self._rid = rid  # its "tree" residue, 0 when not recorded

    @classmethod
    def create(cls, work_dir: str, recorder: ResidueRecorder | None = None) -> WorkArea:
        """Blocking.  ``recorder``: write the directory down as a residue before making it."""
        try:
            os.makedirs(work_dir, mode=0o700, exist_ok=True)
            if recorder is None:
                return cls(tempfile.mkdtemp(prefix="job-", dir=work_dir))
            return cls._create_recorded(work_dir, recorder)
        except OSError as err:
            code = ErrorCode.NO_SPACE if err.errno == errno.ENOSPC else ErrorCode.INVALID_OPTION
            raise Vm2kvmError(
                code,
                f"cannot create a job directory in the work directory: {err.strerror}",
                file=work_dir,
                key="work-dir",
                hint="start vm2kvmd with --work-dir on a writable file system with room for the overlays",
            ) from err

    @classmethod
    def _create_recorded(cls, work_dir: str, recorder: ResidueRecorder) -> WorkArea:
        # mkdtemp picks the name and creates it in one step; the record must come first,
        # so pick the name ourselves.  A name someone already has is forgotten, never removed.
        for _attempt in range(100):
            path = os.path.join(work_dir, f"job-{secrets.token_hex(4)}")
            rid = recorder.record(Residue("tree", path=path))
            try:
                os.mkdir(path, 0o700)
            except BaseException as err:
                recorder.forget(rid)
                if isinstance(err, FileExistsError):
                    continue
                raise
            return cls(path, recorder, rid)
        raise FileExistsError(errno.EEXIST, "no free job directory name", work_dir)

    def disk_dir(self, index: int) -> str:
        """A directory for disk ``index``'s files (blocking)."""
        path = os.path.join(self.path, f"disk{index + 1}")
        os.makedirs(path, exist_ok=True)
        return path

    def remove(self) -> list[str]:
        """Blocking; never raises.  Returns what could not be removed, as log lines."""
        problems: list[str] = []

        def failed(_fn: object, path: str, exc: tuple[type[BaseException], BaseException, object]) -> None:
            if not isinstance(exc[1], FileNotFoundError):
                problems.append(f"could not remove {path}: {exc[1]}")

        shutil.rmtree(self.path, onerror=failed)
        if self._recorder is not None and self._rid and not os.path.lexists(self.path):
            # A stale record is harmless (undoing a missing tree is fine): never fail over it.
            with contextlib.suppress(Exception):
                self._recorder.forget(self._rid)
            self._rid = 0
        return problems


def check_conversion_space(work_dir: str) -> None:
    """NO_SPACE unless the work directory has ``CONVERSION_SPACE`` free (blocking; the preflight)."""
    free = free_space(work_dir)
    if free < CONVERSION_SPACE:
        raise no_space_in_work_area(
            work_dir, f"a guest conversion needs {size_text(CONVERSION_SPACE)} free there", free
        )


def no_space_in_work_area(work_dir: str, what: str, free: int) -> Vm2kvmError:
    return work_dir_full(
        work_dir, f"the work directory {work_dir} is too full: {what}, {size_text(free)} ({free} bytes) free"
    )


class WorkAreaWatch:
    """Notices a full work area while the appliance writes into the overlays; see ``FULL_BELOW``."""

    def __init__(self, work_dir: str, overlays: Sequence[Overlay]) -> None:
        self.work_dir = work_dir
        self.overlays = tuple(overlays)
        self.error: Vm2kvmError | None = None

    async def watch(self, stop: Callable[[], None]) -> None:
        """Poll until cancelled; when the area stays full, record ``error`` and call ``stop`` (once)."""
        if not self.overlays:
            return
        where = os.path.dirname(self.overlays[0].path)
        loop = asyncio.get_running_loop()
        full_since: float | None = None
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            free = await asyncio.to_thread(free_space, where)
            if free >= FULL_BELOW:
                full_since = None
                continue
            full_since = full_since if full_since is not None else loop.time()
            if loop.time() - full_since >= FULL_FOR:
                grown = await asyncio.to_thread(lambda: sum(_allocated(o.path) for o in self.overlays))
                self.error = no_space_in_work_area(
                    self.work_dir,
                    f"it filled up while the guest was converted (the overlays had grown to "
                    f"{size_text(grown)}; a conversion needs up to {size_text(CONVERSION_SPACE)})",
                    free,
                )
                stop()
                return


def _allocated(path: str) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


async def create_overlays(sources: Sequence[tuple[str, OpenedSource]], area: WorkArea) -> list[Overlay]:
    """One overlay per (device key, source) in ``area``, in that order."""
    overlays = []
    for index, (key, source) in enumerate(sources):
        directory = await in_thread(area.disk_dir, index)
        node = source.node
        backing = await in_thread(backing_file, node, area.path, index)
        path = os.path.join(directory, "overlay.qcow2")
        await qemu_img.create_overlay(path, backing, node["driver"])
        overlays.append(Overlay(index, key, path, node, source.label))
    return overlays


def backing_file(node: qemu_source.Node, links_dir: str, index: int) -> str:
    """``node`` as a backing file name that fits a qcow2 header (blocking: may make symlinks).

    First the plain ``json:`` name.  When that is too long (deep chains, long
    paths), every layer's directory gets a short symlink in ``links_dir``
    (``<disk>.<layer>``) and the layers are named through it: QEMU resolves
    a VMDK's relative extent names against the directory of the name it was
    given, so linking the directory keeps them working.  A vmdk layer's
    parent must be a vmdk node (qemu checks the parent's CID), so the chain
    cannot be split behind an intermediate qcow2.
    """
    text = qemu_source.json_filename(node)
    if len(text.encode()) <= QCOW2_BACKING_MAX:
        return text
    layers = [_linked(layer, links_dir, f"{index + 1}.{depth}") for depth, layer in enumerate(_unstack(node))]
    text = qemu_source.json_filename(qemu_source.stack(layers))
    if len(text.encode()) <= QCOW2_BACKING_MAX:
        return text
    raise Vm2kvmError(
        ErrorCode.UNSUPPORTED_DISK,
        f"its chain of {len(layers)} layers is too deep to open through a qcow2 overlay "
        f"({len(text.encode())} bytes of options even with short paths, QEMU allows {QCOW2_BACKING_MAX})",
        file=qemu_source.node_file(node),
        hint="delete (consolidate) the VM's snapshots in VMware first, or migrate with --snapshots keep",
    )


def _unstack(node: qemu_source.Node) -> list[qemu_source.Node]:
    """The inverse of ``qemu_source.stack``: each layer without its backing, top first."""
    layers: list[qemu_source.Node] = []
    current: Any = node
    while current is not None:
        layers.append({k: v for k, v in current.items() if k != "backing"})
        current = current.get("backing")
    return layers


def _linked(layer: qemu_source.Node, links_dir: str, name: str) -> qemu_source.Node:
    """``layer`` with its file named through ``links_dir/name``, a symlink to the file's directory."""
    copy = copy_tree(layer)
    node: Any = copy
    while isinstance(node.get("file"), dict):
        node = node["file"]
    path = node.get("filename")
    if not isinstance(path, str):
        return copy
    link = os.path.join(links_dir, name)
    if not os.path.islink(link):
        os.symlink(os.path.dirname(path), link)
    node["filename"] = os.path.join(link, os.path.basename(path))
    return copy


def copy_tree(node: qemu_source.Node) -> qemu_source.Node:
    return {k: copy_tree(v) if isinstance(v, dict) else v for k, v in node.items()}


def _read_only_qcow2(path: str) -> qemu_source.Node:
    return {"driver": "qcow2", "read-only": True, "file": {"driver": "file", "filename": path}}
