"""``qemu-img`` as asyncio subprocesses: convert with progress, info, measure.

Sources are always opened read-only and never with ``-U`` (force-share): the
image is given as ``--image-opts`` with ``read-only=on`` on every layer, so
even a bug in our argument building cannot make qemu-img open a VMware file
for writing, and an image that a running VM holds open is refused by QEMU's
locking instead of being copied inconsistently.

A delta chain is passed explicitly (``backing.file.filename=...``) with the
parent paths our own resolver checked, instead of letting QEMU follow
``parentFileNameHint`` by itself: the hint may be a datastore or Windows path
QEMU cannot resolve, and the daemon must read only files the caller named.

Every subprocess is owned by the coroutine that started it: on any exception,
including ``CancelledError``, it is killed and reaped before the exception
propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from vm2kvmd.aio import settle
from vm2kvmd.errors import ErrorCode, Vm2kvmError

QEMU_IMG = "qemu-img"

# ``-p`` prints "    (12.34/100%)\r" to stdout, also when stdout is a pipe.
_PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_CHUNK = 4096


def image_opts(path: str, fmt: str = "vmdk", backing: Sequence[str] = ()) -> str:
    """The ``--image-opts`` string opening ``path`` (and its explicit parents) read-only."""
    parts: list[str] = []
    prefix = ""
    for layer in (path, *backing):
        parts += [
            f"{prefix}driver={fmt}",
            f"{prefix}read-only=on",
            f"{prefix}file.driver=file",
            f"{prefix}file.filename={_escape(layer)}",
        ]
        prefix += "backing."
    return ",".join(parts)


def _escape(value: str) -> str:
    # QemuOpts syntax: a literal comma is written twice.
    return value.replace(",", ",,")


async def convert(
    src: str,
    dst: str,
    *,
    src_format: str = "vmdk",
    dst_format: str,
    on_progress: Callable[[float], None],
    target_exists: bool,
    backing: Sequence[str] = (),
) -> None:
    """Copy ``src`` (with explicit parents ``backing``, nearest first) to ``dst``.

    ``on_progress`` gets the percentage (0–100), never decreasing, and 100 on
    success.  ``target_exists``: ``dst`` is a freshly created, all-zero image
    of the right size (a libvirt volume); qemu-img writes into it (``-n``) and
    skips writing zeroes (``--target-is-zero``).  Otherwise qemu-img creates
    ``dst`` itself.  Raises ``Vm2kvmError(COPY_FAILED)`` with qemu-img's last
    error line.
    """
    opts = image_opts(src, src_format, backing)
    args = ["convert", "-p", "-W", "-m", "8", "--image-opts", opts, "-O", dst_format]
    if target_exists:
        args += ["-n", "--target-is-zero"]
    args.append(dst)

    proc = await asyncio.create_subprocess_exec(
        QEMU_IMG,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    last = -1.0
    try:
        buf = b""
        while chunk := await proc.stdout.read(_CHUNK):
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
    if returncode != 0:
        line = _last_line(stderr, returncode).replace(f"'{opts}'", f"'{src}'")
        raise Vm2kvmError(
            ErrorCode.COPY_FAILED,
            f"qemu-img could not copy the disk to {dst}: {line}",
            file=src,
        )
    if last < 100.0:
        on_progress(100.0)


async def info(path: str, *, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of ``path`` (opened read-only)."""
    args = ["info", "--output=json"]
    if fmt:
        args += ["--image-opts", image_opts(path, fmt)]
    else:
        args.append(path)
    out = await _run(args, path)
    result = json.loads(out)
    if not isinstance(result, dict):
        raise Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img info returned no object", file=path)
    return result


async def measure(src: str, fmt: str, *, src_format: str = "vmdk", backing: Sequence[str] = ()) -> int:
    """Bytes a copy of ``src`` needs as ``fmt`` (``qemu-img measure``'s "required")."""
    out = await _run(
        ["measure", "--output=json", "-O", fmt, "--image-opts", image_opts(src, src_format, backing)], src
    )
    required = json.loads(out).get("required")
    if not isinstance(required, int):
        raise Vm2kvmError(ErrorCode.COPY_FAILED, "qemu-img measure gave no size", file=src)
    return required


async def _run(args: list[str], path: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
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
        # Show the path, not our --image-opts string, in the message.
        line = re.sub(r"'driver=[^']*'", f"'{path}'", line)
        raise Vm2kvmError(ErrorCode.COPY_FAILED, f"qemu-img {args[0]} failed: {line}", file=path)
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
