"""``qemu-img`` for kept snapshot chains: measure one VMDK layer, copy it onto its parent's qcow2.

A layer is copied with ``qemu-img convert -n -B <parent volume> -F qcow2``:
the source is the layer *with* its parents (a blockdev tree from
``vm2kvmd.core.planning.blockdev``, every node read-only), and ``-B`` makes
qemu-img write only what the top layer itself allocates (block status above
its backing), zeroes included, so each qcow2 holds exactly its VMDK layer's
grains and reads, through its backing chain, as that layer reads through
its parents.  The target is the libvirt volume, already created with its
backing file.  ``--target-is-zero`` is only given to a base: qemu 7.2
refuses it with ``-B`` ("Cannot use --target-is-zero when the destination
image has a backing file") and, worse, accepts it silently with ``-n`` alone,
skipping zeroes that must hide the parent's data.

Converting each delta on its own and then ``qemu-img rebase -u`` would be
wrong: a delta opened without its parent reads unallocated grains as zero, so
convert cannot tell "not written here" from "zeroes written here".

The subprocess plumbing (progress, kill and reap on any exception) is
``adapters.qemu_img``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from vm2kvmd.adapters.qemu_img import _last_line, _run, _run_with_progress
from vm2kvmd.core.planning.blockdev import image_opts, json_filename, node_file
from vm2kvmd.errors import ErrorCode, Vm2kvmError


async def measure_layer(layer: Mapping[str, Any]) -> int:
    """Bytes the qcow2 of one layer needs: its own grains only (``layer`` is a node without parents)."""
    alone = {**layer, "backing": None}  # a null backing: QEMU does not follow parentFileNameHint either
    label = node_file(layer) or "the layer"
    out = await _run(["measure", "--output=json", "-O", "qcow2", json_filename(alone)], label)
    required = json.loads(out).get("required")
    if not isinstance(required, int):
        raise Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img measure gave no size", file=label)
    return required


async def convert_layer(
    source: Mapping[str, Any],
    dst: str,
    *,
    backing: str | None,
    on_progress: Callable[[float], None],
) -> None:
    """Write the top layer of ``source`` into the qcow2 volume ``dst`` (whose backing is ``backing``).

    ``source`` is the layer with its parents (``qemu_source.stack``); ``dst``
    exists (created by libvirt with ``backing`` as its backing file, or none
    for a base).  ``on_progress`` gets qemu-img's percentage, never
    decreasing, and 100 at the end.  Raises ``Vm2kvmError(COPY_FAILED)``.
    """
    opts = image_opts(source)
    label = node_file(source) or "the layer"
    args = ["convert", "-p", "-W", "-m", "8", "--image-opts", opts, "-O", "qcow2", "-n"]
    args += ["-B", backing, "-F", "qcow2"] if backing else ["--target-is-zero"]
    args.append(dst)
    returncode, _, stderr = await _run_with_progress(args, on_progress)
    # qemu 7.2 reports some refusals (--target-is-zero with a backing) on stderr with status 0.
    if returncode != 0 or _errors(stderr):
        line = _last_line(stderr, returncode).replace(opts, label)
        raise Vm2kvmError(
            ErrorCode.COPY_FAILED, f"qemu-img could not copy the layer to {dst}: {line}", file=label
        )
    on_progress(100.0)


def _errors(stderr: bytes) -> bool:
    return any(
        line.strip() and "warning:" not in line for line in stderr.decode(errors="replace").splitlines()
    )
