"""``migrate --key-file FILE``: a BitLocker key handed to vm2kvmd as a file descriptor only.

virt-v2v's ``--key SELECTOR`` may carry the key on the command line; ours never
does.  FILE (the recovery key or the password, on one line) is opened here and
that open file is attached to the ``Migrate`` call as the ``bitlocker-key``
option (D-Bus ``h``); ``-`` reads the key from stdin (asked for, unechoed, on
a terminal) into a pipe whose read end is attached.  The key is never in argv,
an option value or a message of ours.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import stat
import sys
from collections.abc import Iterator
from typing import Final

from vm2kvmctl.common import UsageError
from vm2kvmctl.vsphere import pipe_with

OPTION: Final = "bitlocker-key"
MAX_KEY_BYTES: Final = 4096


def add_key_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--key-file",
        metavar="FILE",
        help="Windows guests: file holding the BitLocker recovery key or password of the encrypted "
        "volume (mode 0600 or 0400); - reads it from stdin.  Passed to vm2kvmd as a file descriptor",
    )


def _open_key_file(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif stat.S_IMODE(info.st_mode) & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        problem = f"has mode {mode:04o}: other users may read the key (chmod 600 {path})"
    elif info.st_uid != os.getuid():
        problem = f"belongs to user id {info.st_uid}, not to you"
    if problem is not None:
        os.close(fd)
        raise UsageError(f"--key-file {path} {problem}")
    return fd


def _stdin_key() -> int:
    if sys.stdin.isatty():
        text = getpass.getpass("BitLocker recovery key or password: ")
    else:
        text = sys.stdin.read(MAX_KEY_BYTES + 1)
    data = text.encode()
    if not data.strip():
        raise UsageError("--key-file -: no key on stdin")
    if len(data) > MAX_KEY_BYTES:
        raise UsageError(f"--key-file -: more than {MAX_KEY_BYTES} bytes on stdin")
    return pipe_with(text)


@contextlib.contextmanager
def key_fd(args: argparse.Namespace) -> Iterator[int | None]:
    """The fd holding the key of ``--key-file`` (None without it); closed on exit."""
    path: str | None = getattr(args, "key_file", None)
    if path is None:
        yield None
        return
    fd = _stdin_key() if path == "-" else _open_key_file(path)
    try:
        yield fd
    finally:
        os.close(fd)
