"""Free space on a local file system, and the error of a work directory too full for the job.

The one place that measures it: the work-area preflight and watch
(``pipeline.overlay``), the OVA extraction (``sources.ovf.extract``) and an
output directory (``pipeline.targets.DirTarget``).  Free is what an
unprivileged writer may still use (``statvfs`` ``f_bavail``): the blocks a
file system keeps for root (ext4's ``mkfs -m``, 5 % by default) do not
count, although the daemon runs as root and could fill them.  They are
there so that a full disk does not stop the host's own services; a
migration must not take them.
"""

from __future__ import annotations

import os

from vm2kvmd.errors import ErrorCode, Vm2kvmError

WORK_DIR_HINT = (
    "free space there, or give vm2kvmd a work directory on a larger file system "
    "(work_dir in vm2kvmd.conf, or --work-dir)"
)


def free_space(path: str) -> int:
    """Bytes free for us on the file system of ``path``, or of its nearest existing parent (blocking)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def work_dir_full(work_dir: str, message: str, *, hint: str = WORK_DIR_HINT) -> Vm2kvmError:
    """``NoSpace`` naming the work directory (``file``, key ``work-dir``); ``message`` says how full."""
    return Vm2kvmError(ErrorCode.NO_SPACE, message, file=work_dir, key="work-dir", hint=hint)
