"""Reading the files of a source package: whole files and byte ranges of an archive, read-only.

A ``Located`` file is a byte range of a host file: the whole file for a
``.ovf`` next to its disks, a member's data for an ``.ova``.  Every open is
read-only and refuses what is not a regular file (a FIFO would block the
worker thread forever, a device is not a package).  All functions block:
call them in a thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from dataclasses import dataclass

from vm2kvmd.errors import ErrorCode, Vm2kvmError

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Located:
    """Bytes ``[offset, offset + size)`` of the host file ``path``; ``label`` names them in messages."""

    path: str
    offset: int
    size: int
    label: str


def _not_found(path: str, err: OSError, what: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.SOURCE_NOT_FOUND,
        f"cannot read the {what}: {err.strerror or err}",
        file=path,
        hint="check that the file exists and that the vm2kvm daemon may read it",
    )


def stat_source(path: str, what: str) -> os.stat_result:
    """``stat`` of the file the caller named; SOURCE_NOT_FOUND / INVALID_SOURCE naming it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise Vm2kvmError(
            ErrorCode.SOURCE_NOT_FOUND, "no such file", file=path, hint=f"check the path of the {what}"
        ) from None
    except (OSError, ValueError) as err:
        raise _not_found(path, err if isinstance(err, OSError) else OSError(str(err)), what) from None
    if stat.S_ISDIR(info.st_mode):
        raise Vm2kvmError(
            ErrorCode.SOURCE_NOT_FOUND,
            f"is a directory, not an {what}",
            file=path,
            hint=f"pass the {what} file",
        )
    if not stat.S_ISREG(info.st_mode):
        raise Vm2kvmError(ErrorCode.INVALID_SOURCE, "is not a regular file", file=path)
    return info


def open_read_only(path: str, what: str) -> int:
    """A read-only descriptor of the regular file ``path`` (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Vm2kvmError(ErrorCode.SOURCE_NOT_FOUND, "no such file", file=path) from None
    except OSError as err:
        raise _not_found(path, err, what) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Vm2kvmError(ErrorCode.INVALID_SOURCE, "is not a regular file", file=path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_error(loc: Located, err: OSError) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.INVALID_SOURCE, f"cannot read: {err.strerror or err}", file=loc.label)


def read_range(loc: Located, limit: int, what: str) -> bytes:
    """All bytes of ``loc``, which must be at most ``limit`` (INVALID_SOURCE otherwise)."""
    if loc.size > limit:
        raise Vm2kvmError(
            ErrorCode.INVALID_SOURCE,
            f"{what} of {loc.size} bytes is larger than the {limit} allowed",
            file=loc.label,
        )
    fd = open_read_only(loc.path, what)
    try:
        data = os.pread(fd, loc.size, loc.offset)
    except OSError as err:
        raise _read_error(loc, err) from None
    finally:
        os.close(fd)
    if len(data) != loc.size:
        raise Vm2kvmError(
            ErrorCode.INVALID_SOURCE,
            f"{what} ends after {len(data)} of its {loc.size} bytes",
            file=loc.label,
            hint="the file is truncated (an incomplete copy?); copy it again",
        )
    return data


def hash_range(loc: Located, algorithm: str, stop: threading.Event) -> str:
    """The hex digest of ``loc``'s bytes, read in chunks; CANCELLED as soon as ``stop`` is set."""
    digest = hashlib.new(algorithm)
    fd = open_read_only(loc.path, "file")
    try:
        done = 0
        while done < loc.size:
            if stop.is_set():
                raise Vm2kvmError(ErrorCode.CANCELLED, "manifest check cancelled", file=loc.label)
            try:
                chunk = os.pread(fd, min(HASH_CHUNK, loc.size - done), loc.offset + done)
            except OSError as err:
                raise _read_error(loc, err) from None
            if not chunk:
                raise Vm2kvmError(
                    ErrorCode.MANIFEST_MISMATCH,
                    f"the file ends after {done} of its {loc.size} bytes",
                    file=loc.label,
                    hint="the package is truncated (an incomplete copy?); copy it again",
                )
            digest.update(chunk)
            done += len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()
