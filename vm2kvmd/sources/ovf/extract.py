"""Extracting a compressed ``.ova`` into a migration job's work directory.

Only the job does this (never ``Inspect`` or the ``Migrate`` preflight, which
must answer quickly).  ``extract_package`` (async; the work runs in a worker
thread) does, in order:

1. an ``.ova`` that is a gzip stream is decompressed to ``source.ova`` (a
   plain tar) in ``dest``;
2. the manifest is checked against the tar's members as stored (what the
   ``.mf`` lists: a gzip'd member's compressed bytes);
3. each gzip'd disk member the VM uses is decompressed to its own file.

Before each decompression the free space of ``dest`` is compared with what
it will write (NO_SPACE naming the work directory and both sizes); running
out anyway (gzip keeps the size only modulo 4 GiB, so the estimate is a
lower bound) is NO_SPACE too.  Data is streamed 1 MiB at a time and a
cancelled job stops at the next chunk.  A damaged gzip stream (bad data, CRC,
truncated) is INVALID_SOURCE naming the file or member.  The source is only
ever opened read-only; the caller removes ``dest`` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import zlib
from collections.abc import Callable, Sequence

from vm2kvmd.adapters.free_space import WORK_DIR_HINT, free_space, work_dir_full
from vm2kvmd.aio import settle
from vm2kvmd.core.ovf.envelope import parse_ovf
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.ovf.files import Located, open_read_only, stat_source
from vm2kvmd.sources.ovf.ova import ExtractedOvaPackage, OvaPackage, is_gzip
from vm2kvmd.sources.ovf.package import verify

CHUNK = 1 << 20
_GZIP = 16 + zlib.MAX_WBITS  # zlib window bits for the gzip wrapper
_GZIP_OVERHEAD = 18  # header and trailer


def gunzipped_size(loc: Located) -> int:
    """The least size the gzip data ``loc`` decompresses to (blocking).

    The trailer holds the size modulo 2**32; the data is taken to be at least
    as large as 99 % of the compressed bytes (stored blocks are the worst case).
    """
    if loc.size < _GZIP_OVERHEAD:
        return 0
    fd = open_read_only(loc.path, "file")
    try:
        tail = os.pread(fd, 4, loc.offset + loc.size - 4)
    finally:
        os.close(fd)
    size = int.from_bytes(tail, "little")
    while size < (loc.size * 99) // 100 - _GZIP_OVERHEAD:
        size += 1 << 32
    return size


def _no_space(dest: str, what: str, needed: int, free: int) -> Vm2kvmError:
    return work_dir_full(
        dest,
        f"not enough space in the work directory {dest} to extract {what}: "
        f"{needed} bytes needed (at least), {free} free",
        hint=f"{WORK_DIR_HINT}; or decompress the package yourself and migrate the result",
    )


def check_space(dest: str, what: str, needed: int) -> None:
    """NO_SPACE unless ``dest`` has ``needed`` bytes free (blocking)."""
    free = free_space(dest)
    if needed > free:
        raise _no_space(dest, what, needed, free)


def _damaged(label: str, detail: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.INVALID_SOURCE,
        f"damaged gzip data: {detail}",
        file=label,
        hint="the package is damaged (an incomplete or corrupted copy); copy it again",
    )


def gunzip(loc: Located, out: str, dest: str, stop: threading.Event) -> int:
    """Decompress the gzip data ``loc`` into the new file ``out`` (blocking); returns its size.

    Concatenated gzip members are one stream, as ``gzip -d`` reads them.
    CANCELLED as soon as ``stop`` is set; ``dest`` (the work directory) is
    named when the space runs out.
    """
    src = open_read_only(loc.path, "file")
    try:
        dst = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as err:
        os.close(src)
        raise _write_error(out, dest, err, loc.label) from None
    written = 0

    def write(data: bytes) -> None:
        nonlocal written
        view = memoryview(data)
        while view:
            try:
                n = os.write(dst, view)
            except OSError as err:
                raise _write_error(out, dest, err, loc.label, written + len(view)) from None
            view = view[n:]
            written += n

    try:
        inflate = zlib.decompressobj(_GZIP)
        done = 0
        while done < loc.size:
            if stop.is_set():
                raise Vm2kvmError(ErrorCode.CANCELLED, "extraction cancelled", file=loc.label)
            chunk = os.pread(src, min(CHUNK, loc.size - done), loc.offset + done)
            if not chunk:
                raise _damaged(loc.label, f"the file ends after {done} of its {loc.size} bytes")
            done += len(chunk)
            pending = chunk
            while True:
                try:
                    data = inflate.decompress(pending, CHUNK)
                except zlib.error as err:
                    raise _damaged(loc.label, f"{err} after {written} bytes") from None
                write(data)
                if inflate.eof:
                    # Another gzip member may follow (gzip -d reads them all).
                    pending = inflate.unused_data
                    if not pending:
                        break
                    inflate = zlib.decompressobj(_GZIP)
                    continue
                pending = inflate.unconsumed_tail
                if not pending and len(data) < CHUNK:
                    break  # all input used and no output held back
                if stop.is_set():
                    raise Vm2kvmError(ErrorCode.CANCELLED, "extraction cancelled", file=loc.label)
        if not inflate.eof:
            raise _damaged(loc.label, "the gzip stream ends early (truncated)")
        try:
            os.fsync(dst)
        except OSError as err:
            raise _write_error(out, dest, err, loc.label) from None
    finally:
        os.close(src)
        os.close(dst)
    return written


def _write_error(out: str, dest: str, err: OSError, what: str, needed: int = 0) -> Vm2kvmError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_space(dest)
        return _no_space(dest, what, needed, free)
    return Vm2kvmError(
        ErrorCode.INVALID_OPTION,
        f"cannot write {out}: {err.strerror or err}",
        file=out,
        key="work-dir",
        hint="start vm2kvmd with --work-dir on a writable file system",
    )


def extract_blocking(
    source: str, dest: str, members: Sequence[str], stop: threading.Event, log: Callable[[str], None]
) -> ExtractedOvaPackage:
    """Steps 1 to 3 of the module docstring (blocking).

    ``members``: the disks the VM uses that are extracted at migration; those
    the descriptor stores with ``ovf:compression="gzip"`` are decompressed.
    """
    size = stat_source(source, "OVA file").st_size
    plain = source
    if is_gzip(source):
        whole = Located(source, 0, size, source)
        needed = gunzipped_size(whole)
        check_space(dest, source, needed)
        plain = os.path.join(dest, "source.ova")
        log(f"decompressing {source} ({size} bytes) into {dest}")
        written = gunzip(whole, plain, dest, stop)
        log(f"decompressed {source}: {written} bytes")
    package = OvaPackage(plain)
    verify(package, stop, log)
    env = parse_ovf(package.descriptor_bytes(), package.descriptor.label)
    gzipped = {file.href for file in env.files.values() if file.compression == "gzip"}
    located = [
        (name, loc) for name in members if name in gzipped and (loc := package.locate(name)) is not None
    ]
    if located:
        needed = sum(gunzipped_size(loc) for _, loc in located)
        check_space(dest, ", ".join(name for name, _ in located), needed)
    extracted: dict[str, str] = {}
    disks = os.path.join(dest, "disks")
    for number, (name, loc) in enumerate(located, start=1):
        if number == 1:
            os.mkdir(disks, 0o700)
        out = os.path.join(disks, f"{number}.vmdk")
        log(f"extracting {name} ({loc.size} bytes, gzip) into {out}")
        written = gunzip(loc, out, dest, stop)
        log(f"extracted {name}: {written} bytes")
        extracted[name] = out
    return ExtractedOvaPackage(plain, source, extracted)


async def extract_package(
    source: str, dest: str, members: Sequence[str], log: Callable[[str], None]
) -> ExtractedOvaPackage:
    """``extract_blocking`` in a worker thread; ``log`` is called in the event loop.

    Cancelling stops the work at its next 1 MiB chunk, waits for the thread
    and re-raises ``CancelledError``; what was written stays in ``dest`` for
    the caller to remove.
    """
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def log_in_loop(line: str) -> None:
        loop.call_soon_threadsafe(log, line)

    task = asyncio.ensure_future(
        asyncio.to_thread(extract_blocking, source, dest, members, stop, log_in_loop)
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Vm2kvmError):
            await settle(task)
        raise
