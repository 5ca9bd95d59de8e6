"""``--verify``: after the copy, the target must hold exactly what it should.

``verify_disk`` compares the guest-visible content of a target image with
"what the target should equal", given as a QEMU node: today the source
chain itself (``QemuSource.node``); once the pipeline changes a disk on the
way (an overlay with the guest's conversion on top of the source), that
overlay.  Both are opened read-only by ``qemu-img compare``, which skips
areas unallocated in both and reads the rest; it costs about one more read
of the source's data.  A difference is ``VERIFY_FAILED`` naming the first
differing offset; the caller fails the job, which rolls back.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any

from vm2kvmd.adapters import qemu_img
from vm2kvmd.core.hardware.model import Note
from vm2kvmd.core.planning.blockdev import target_node
from vm2kvmd.errors import ErrorCode, Vm2kvmError

VERIFIED = "verified: identical to the source"


async def verify_disk(
    expected: Mapping[str, Any],
    target: str,
    target_format: str,
    *,
    size: int,
    key: str,
    label: str,
    on_progress: Callable[[float], None] | None = None,
) -> Note:
    """Check that the image ``target`` holds what the node ``expected`` reads.

    ``size`` is the virtual size the target must have; ``key`` the source
    device ("scsi0:0") and ``label`` the source file, both for messages.
    ``on_progress`` gets qemu-img's percentage.  Returns the note to report;
    raises ``Vm2kvmError``: VERIFY_FAILED on a difference, COPY_FAILED when
    an image cannot be read.
    """
    written = target_node(target, target_format, block=await asyncio.to_thread(_is_block_device, target))
    info = await qemu_img.info(written, label=target)
    if info.get("virtual-size") != size:
        raise _failed(
            key,
            target,
            f"the copy has a virtual size of {info.get('virtual-size')} bytes, the source {size}",
        )
    result = await qemu_img.compare(expected, written, on_progress=on_progress, label=label)
    if not result.identical:
        where = f" at byte {result.offset}" if result.offset is not None else ""
        raise _failed(key, target, f"the copy differs from the source {label}{where} ({result.message})")
    return Note(VERIFIED, key)


def _failed(key: str, target: str, message: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.VERIFY_FAILED,
        f"disk {key}: verification failed: {message}",
        file=target,
        hint="nothing was kept; check the target storage (and the kernel log for I/O errors) "
        "and migrate again",
    )


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
