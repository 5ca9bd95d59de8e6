"""``qemu-img`` as asyncio subprocesses: convert with progress, info, measure, compare.

A source is a blockdev options tree (``vm2kvmd.core.planning.blockdev``), given to
qemu-img as ``--image-opts``: every caller describes a source disk the same
way, built in one place from the ``DiskChain`` our resolver checked.  Sources
are opened read-only and never with ``-U`` (force-share): every node of the
tree says ``read-only=on``, so even a bug in our argument building cannot
make qemu-img open a VMware file for writing, and an image that a running VM
holds open is refused by QEMU's locking instead of being copied
inconsistently.  Parents are explicit ``backing`` nodes: QEMU never follows
``parentFileNameHint`` by itself (the hint may be a datastore or Windows path
QEMU cannot resolve, and the daemon must read only files the caller named).

Every subprocess is owned by the coroutine that started it: on any exception,
including ``CancelledError``, it is killed and reaped before the exception
propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vm2kvmd.aio import settle
from vm2kvmd.core.planning.blockdev import image_opts, node_file, target_node
from vm2kvmd.errors import ErrorCode, Vm2kvmError

QEMU_IMG = "qemu-img"
# qemu-img dies with vm2kvmd: a daemon killed mid-copy (SIGKILL, OOM) must not leave a
# qemu-img writing into a volume that recovery removes at the next start.  setpriv (util-linux)
# sets the parent-death signal and execs qemu-img: same PID, no preexec_fn in a threaded process.
_WATCHED = ("setpriv", "--pdeathsig", "KILL", "--") if shutil.which("setpriv") else ()

# ``-p`` prints "    (12.34/100%)\r" to stdout, also when stdout is a pipe.
_PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_MISMATCH_RE = re.compile(r"Content mismatch at offset (\d+)")
_CHUNK = 4096

Progress = Callable[[float], None]


class _Image:
    """A node as qemu-img arguments, and the file that names it in messages."""

    def __init__(self, node: Mapping[str, Any], label: str | None) -> None:
        self.opts = image_opts(node)
        self.label = label or node_file(node) or "the source disk"

    def clean(self, text: str) -> str:
        # Show the file, not our --image-opts string, in messages.
        return text.replace(f"'{self.opts}'", f"'{self.label}'").replace(self.opts, self.label)


# Local disks: out-of-order writes with 8 requests in flight beat an in-order copy (copy_bench).
COPY_REQUESTS = 8


async def convert(
    source: Mapping[str, Any],
    dst: str,
    *,
    dst_format: str,
    on_progress: Progress,
    target_exists: bool,
    label: str | None = None,
    target_is_zero: bool | None = None,
    preallocation: str | None = None,
    on_start: Callable[[int], None] | None = None,
    requests: int = COPY_REQUESTS,
) -> None:
    """Copy the disk ``source`` (a blockdev node, ``qemu_source.source_blockdev``) to ``dst``.

    ``on_progress`` gets the percentage (0–100), never decreasing, and 100 on
    success.  ``target_exists``: ``dst`` is a freshly created image of the
    right size (a libvirt volume); qemu-img writes into it (``-n``) and, as
    it reads as zeros, skips writing zeroes (``--target-is-zero``) unless
    ``target_is_zero`` is False (a logical volume holds old data).
    Otherwise qemu-img creates ``dst`` itself, with ``preallocation``
    (``falloc``...) if given.  ``label`` names the source in errors (default:
    the top node's file).  ``on_start`` gets qemu-img's PID.  ``requests``: reads and
    writes in flight (``-m``).  Raises
    ``Vm2kvmError(COPY_FAILED)`` with qemu-img's last error line.
    """
    src = _Image(source, label)
    args = ["convert", "-p", "-W", "-m", str(requests), "--image-opts", src.opts, "-O", dst_format]
    if target_exists:
        args.append("-n")
        if target_is_zero is not False:
            args.append("--target-is-zero")
    elif preallocation:
        args += ["-o", f"preallocation={preallocation}"]
    args.append(dst)
    seen: list[float] = []

    def progress(percent: float) -> None:
        seen.append(percent)
        on_progress(percent)

    returncode, _, stderr = await _run_with_progress(args, progress, on_start)
    if returncode != 0:
        raise Vm2kvmError(
            ErrorCode.COPY_FAILED,
            f"qemu-img could not copy the disk to {dst}: {src.clean(_last_line(stderr, returncode))}",
            file=src.label,
        )
    if not seen or seen[-1] < 100.0:
        on_progress(100.0)


async def info(
    image: str | Mapping[str, Any], *, fmt: str | None = None, label: str | None = None
) -> dict[str, Any]:
    """``qemu-img info --output=json`` of a file or of one node, opened read-only.

    A node must not have a ``backing``: ``qemu-img info`` opens no backing
    files and refuses options for them.  ``fmt`` only applies to a file name;
    ``label`` names a node in errors (default: its file).
    """
    if isinstance(image, str):
        label = image
        opened = ["--image-opts", image_opts(target_node(image, fmt))] if fmt else [image]
        args = ["info", "--output=json", *opened]
    else:
        src = _Image(image, label)
        args = ["info", "--output=json", "--image-opts", src.opts]
        label = src.label
    out = await _run(args, label)
    result = json.loads(out)
    if not isinstance(result, dict):
        raise Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img info returned no object", file=label)
    return result


async def measure(source: Mapping[str, Any], fmt: str, *, label: str | None = None) -> int:
    """Bytes a copy of ``source`` (a node) needs as ``fmt`` (``qemu-img measure``'s "required")."""
    src = _Image(source, label)
    out = await _run(["measure", "--output=json", "-O", fmt, "--image-opts", src.opts], src.label)
    required = json.loads(out).get("required")
    if not isinstance(required, int):
        raise Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img measure gave no size", file=src.label)
    return required


@dataclass(frozen=True)
class Comparison:
    """What ``qemu-img compare`` found."""

    identical: bool
    offset: int | None = None  # the first differing byte offset, when known
    message: str = ""  # qemu-img's words


async def compare(
    first: Mapping[str, Any],
    second: Mapping[str, Any],
    *,
    on_progress: Progress | None = None,
    label: str | None = None,
) -> Comparison:
    """Whether two nodes hold the same guest-visible bytes (``qemu-img compare``).

    Both are opened read-only (every node says so).  Images of different
    sizes are compared over the shorter one and the rest must be zero, as
    qemu-img does; callers that care check the sizes themselves.  Raises
    ``Vm2kvmError(COPY_FAILED)`` when qemu-img cannot read either image.
    """
    a, b = _Image(first, label), _Image(second, None)
    args = ["compare", "-p", "--image-opts", a.opts, b.opts]
    returncode, stdout, stderr = await _run_with_progress(args, on_progress or (lambda _p: None))
    text = stdout.decode(errors="replace")
    if returncode == 0:
        return Comparison(True, message="images are identical")
    if returncode == 1:
        match = _MISMATCH_RE.search(text)
        lines = [ln.strip() for ln in _PROGRESS_RE.sub(b"", stdout).decode(errors="replace").splitlines()]
        message = next((ln for ln in reversed(lines) if ln), "content differs")
        return Comparison(False, int(match.group(1)) if match else None, b.clean(a.clean(message)))
    line = b.clean(a.clean(_last_line(stderr, returncode)))
    raise Vm2kvmError(
        ErrorCode.COPY_FAILED, f"qemu-img could not compare {a.label} with {b.label}: {line}", file=a.label
    )


async def _run_with_progress(
    args: list[str], on_progress: Progress, on_start: Callable[[int], None] | None = None
) -> tuple[int, bytes, bytes]:
    """Run qemu-img with ``-p``; returns its status, stdout and stderr.

    ``on_progress`` gets each new percentage (never decreasing), ``on_start``
    the PID; the process is killed and reaped if anything, including a
    callback, raises.
    """
    proc = await asyncio.create_subprocess_exec(
        *_WATCHED,
        QEMU_IMG,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    last = -1.0
    out = b""
    try:
        if on_start is not None:
            on_start(proc.pid)
        buf = b""
        while chunk := await proc.stdout.read(_CHUNK):
            out = (out + chunk)[-_CHUNK:]
            buf += chunk
            # Keep an unterminated tail: a chunk may end in the middle of "(12.3".
            *lines, buf = re.split(rb"[\r\n]", buf)
            for line in lines:
                for match in _PROGRESS_RE.finditer(line):
                    value = min(float(match.group(1)), 100.0)
                    if value > last:
                        last = value
                        on_progress(value)
        returncode = await proc.wait()
        stderr = await stderr_task
    except BaseException:
        await _kill_and_reap(proc, stderr_task)
        raise
    return returncode, out, stderr


# --- overlays and what a copy will write (the disk pipeline, pipeline/overlay.py) --------------


async def create_overlay(path: str, backing: str, backing_format: str) -> None:
    """A new empty qcow2 ``path`` over ``backing`` (a file name or a ``json:`` pseudo-filename).

    The size is the backing's.  qemu-img opens the backing to find it: a
    backing that QEMU cannot open fails here, naming ``path``.  The backing
    is opened read-only (a backing always is, and our nodes say so too).
    """
    await _run(["create", "-q", "-f", "qcow2", "-b", backing, "-F", backing_format, path], path)


@dataclass(frozen=True)
class Measure:
    """``qemu-img measure`` of a source for one target format."""

    required: int  # bytes a sparse copy needs (data and metadata)
    fully_allocated: int  # bytes a preallocated copy needs


async def measure_sizes(source: Mapping[str, Any], fmt: str, *, label: str | None = None) -> Measure:
    """``measure``, with the fully allocated size too."""
    src = _Image(source, label)
    out = json.loads(await _run(["measure", "--output=json", "-O", fmt, "--image-opts", src.opts], src.label))
    required, full = out.get("required"), out.get("fully-allocated")
    if not isinstance(required, int) or not isinstance(full, int):
        raise Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img measure gave no size", file=src.label)
    return Measure(required, full)


async def data_bytes(source: Mapping[str, Any], *, label: str | None = None) -> int:
    """Bytes of ``source`` (with its backing chain) that hold data: what a sparse raw copy writes.

    ``qemu-img map``: areas that read as zeros (unallocated, or discarded in
    an overlay) are not data.
    """
    src = _Image(source, label)
    extents = json.loads(await _run(["map", "--output=json", "--image-opts", src.opts], src.label))
    if not isinstance(extents, list):
        raise Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img map returned no list", file=src.label)
    return sum(
        int(e["length"]) for e in extents if isinstance(e, dict) and e.get("data") and not e.get("zero")
    )


async def _run(args: list[str], label: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *_WATCHED,
        QEMU_IMG,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        await _kill_and_reap(proc, None)
        raise
    if proc.returncode != 0:
        line = _last_line(err, proc.returncode or 0)
        # Show the file, not our --image-opts string, in the message.
        line = re.sub(r"'(?:driver=|json:)[^']*'", f"'{label}'", line)
        raise Vm2kvmError(ErrorCode.COPY_FAILED, f"qemu-img {args[0]} failed: {line}", file=label)
    return out


def _last_line(stderr: bytes, returncode: int) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return f"exit status {returncode}"
    return lines[-1].removeprefix("qemu-img:").strip()


async def _kill_and_reap(proc: asyncio.subprocess.Process, reader: asyncio.Task[bytes] | None) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await settle(proc.wait())
    if reader is not None:
        # The pipe reaches EOF once the process is gone.
        await settle(reader)
