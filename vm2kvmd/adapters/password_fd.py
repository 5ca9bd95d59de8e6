"""A password handed over as a file descriptor (D-Bus ``h``): read once, bounded, never waited on
forever.

Credentials reach the daemon only this way (issue 12): never in argv, properties, the job store
or logs.  The caller writes the password into a pipe (or passes an open file) and closes its end;
we read to end of file with a deadline, so a caller that never closes its end cannot hold a daemon
thread, and refuse anything that is not a password-sized text.  The fd is always closed here.
"""

from __future__ import annotations

import os
import select
import stat
import time

from vm2kvmd.errors import ErrorCode, Vm2kvmError

MAX_PASSWORD_BYTES = 4096  # vCenter allows up to 256 characters; anything far larger is a mistake
READ_TIMEOUT = 5.0


def _refused(problem: str, what: str = "password") -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.INVALID_OPTION,
        f"the {what} file descriptor {problem}",
        hint=f"pass a pipe or file holding only the {what}, closed after writing",
    )


def read_password_fd(fd: int, *, timeout: float = READ_TIMEOUT, what: str = "password") -> str:
    """The password in ``fd`` (one trailing newline dropped); ``fd`` is closed in every case.

    ``what`` names the secret in errors (a BitLocker key travels the same way)."""
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise _refused("is not a pipe, socket or regular file", what)
        os.set_blocking(fd, False)
        data = _read_to_eof(fd, timeout, what)
    finally:
        os.close(fd)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise _refused("does not hold UTF-8 text", what) from None
    # A file written by `echo` or an editor ends with a newline that is not part of the password.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise _refused(f"holds an empty {what}", what)
    if "\n" in text:
        raise _refused("holds more than one line", what)
    if "\x00" in text:
        raise _refused("holds a NUL byte", what)
    return text


def _read_to_eof(fd: int, timeout: float, what: str = "password") -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _refused(f"was not closed within {timeout:g} s (the caller must close its end)", what)
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, MAX_PASSWORD_BYTES + 1 - size)
        except BlockingIOError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_PASSWORD_BYTES:
            raise _refused(f"holds more than {MAX_PASSWORD_BYTES} bytes", what)
