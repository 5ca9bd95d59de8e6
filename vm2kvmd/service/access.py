"""Callers may only make vm2kvmd read files they could read themselves.

vm2kvmd runs as root; without this check any caller polkit lets migrate
could have it read (and copy into a disk image, or quote in an error) any
file of the host.  ``check_readable`` opens each file *as the caller*: in a
short-lived child process with the caller's uid and groups, which opens the
paths read-only and says which one failed.  The kernel then applies every
rule it applies to the caller itself -- mode bits, ACLs, LSMs, a
root-squashing NFS or FUSE server, search permission on every directory on
the way, and every symlink resolved with the caller's rights (a symlink into
a directory the caller cannot search fails).  Re-implementing that from
``stat`` results would miss most of it, and switching credentials inside
the daemon is not possible: it has threads, and ``setgroups`` applies to all
of them.

``source_files`` lists what a migration of an inspected source reads;
``vet_failure`` makes sure an inspection error does not describe a file
the caller could not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import sys
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Final, TypeVar

from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.caller import Caller

CHECK_TIMEOUT: Final = 30.0  # seconds; a hung NFS server must not hang the call forever
SYSTEM_PYTHON: Final = "/usr/bin/python3"
NOBODY_GID: Final = 65534

T = TypeVar("T")

# Runs as the caller: ``python3 -I -S`` (no environment, no site packages, nothing
# the caller controls).  Paths arrive NUL-separated on stdin, each after one byte:
# "!" must exist, "?" may be absent.  The answer is "ok" or "<index> <errno>" for
# the first path that cannot be opened.  O_NONBLOCK: a FIFO must not block the
# check; O_NOCTTY: a terminal must not become ours.
_CHILD: Final = """
import errno, os, sys
items = sys.stdin.buffer.read().split(b"\\0")
flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
for index, item in enumerate(items):
    try:
        os.close(os.open(item[1:], flags))
    except OSError as exc:
        if item[:1] == b"?" and exc.errno in (errno.ENOENT, errno.ENOTDIR):
            continue
        sys.stdout.write("%d %d\\n" % (index, exc.errno or 0))
        sys.exit(0)
sys.stdout.write("ok\\n")
"""

_NOT_FOUND: Final = (errno.ENOENT, errno.ENOTDIR)
_HINT: Final = (
    "vm2kvmd reads only files its caller may read; fix the file's permissions (and those of "
    "the directories above it), or have an administrator run the migration"
)


# The system Python, not the daemon's: a virtualenv may live where the caller cannot go.
# Decided at import: no file system calls on the event loop.
INTERPRETER: Final = SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable


class SourceFiles(list[str]):
    """Files to check, in order; ``optional`` ones may be absent (the migration copes)."""

    def __init__(self, paths: Iterable[str] = (), optional: Iterable[str] = ()) -> None:
        super().__init__(paths)
        self.optional = frozenset(optional)


def _unique(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(p for p in paths if p))


def _check_failed(caller: Caller, reason: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.PERMISSION_DENIED,
        f"cannot check which files uid {caller.uid} may read: {reason}",
        hint="details are in the daemon log; call as root to skip the check",
    )


def denial(caller: Caller, path: str, err: int) -> Vm2kvmError:
    """The error for ``caller`` failing to open ``path`` with ``errno`` ``err``."""
    if err in _NOT_FOUND:
        return Vm2kvmError(
            ErrorCode.SOURCE_NOT_FOUND,
            f"does not exist (as seen by uid {caller.uid})",
            file=path,
            hint="check the path; vm2kvmd looks it up with the caller's rights",
        )
    reason = os.strerror(err) if err else "unknown error"
    return Vm2kvmError(
        ErrorCode.PERMISSION_DENIED,
        f"uid {caller.uid} cannot read this file ({reason}), so vm2kvmd will not read it either",
        file=path,
        hint=_HINT,
    )


async def check_readable(caller: Caller, paths: Sequence[str]) -> None:
    """Raise PERMISSION_DENIED (SOURCE_NOT_FOUND: it does not exist) for the first of
    ``paths`` ``caller`` cannot open for reading; root passes unchecked.

    ``paths`` may be a ``SourceFiles``: its optional files may be absent.
    """
    wanted = _unique(paths)
    # Root may read anything anyway; a daemon running as the caller's own user has no more rights.
    if caller.is_root or caller.uid == os.geteuid() or not wanted:
        return
    if any("\x00" in p for p in wanted):
        raise Vm2kvmError(ErrorCode.INVALID_OPTION, "a path contains a NUL character")
    gids = list(caller.gids) or [NOBODY_GID]
    try:
        proc = await asyncio.create_subprocess_exec(
            INTERPRETER,
            "-I",
            "-S",
            "-c",
            _CHILD,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            user=caller.uid,
            group=gids[0],
            extra_groups=gids,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            close_fds=True,
        )
    except OSError as exc:
        raise _check_failed(caller, f"cannot start the check: {exc.strerror or exc}") from exc
    optional: frozenset[str] = getattr(paths, "optional", frozenset())
    data = b"\0".join((b"?" if p in optional else b"!") + os.fsencode(p) for p in wanted)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            out, err = await proc.communicate(data)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise _check_failed(caller, f"the check took longer than {CHECK_TIMEOUT:.0f} s") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    answer = out.decode(errors="replace").strip()
    if proc.returncode != 0 or not answer:
        detail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise _check_failed(caller, f"the check failed: {detail[0]}")
    if answer == "ok":
        return
    try:
        index, code = (int(x) for x in answer.split())
        path = wanted[index]
    except (ValueError, IndexError):
        raise _check_failed(caller, f"unexpected answer {answer!r}") from None
    raise denial(caller, path, code)


# --- what a migration reads ----------------------------------------------------------------


def source_files(result: object) -> SourceFiles:
    """Every file an inspection/preflight result (``pipeline.InspectResult``) will make us read,
    or that what we return describes.

    Pure (no file system access: it runs on the event loop).  Required: the
    source (VMX, ``.ovf`` or ``.ova``) and every disk's descriptors and
    extents, parents included (an OVA member's layer is the ``.ova``).
    Optional (checked when present): a VMX's ``.vmsd``, an ``.ovf``'s
    manifest and certificate, the descriptor of a disk whose chain could
    not be loaded and every path its problem text names, CD-ROM and floppy
    images (the domain gets them).  Optional paths are listed whether or not
    they exist: "missing" versus "refused" must not tell the caller whether
    a file exists where it cannot look.  A result without a ``vm`` (an
    injected test inspector) names nothing.
    """
    vm: Any = getattr(result, "vm", None)
    if vm is None:
        return SourceFiles()
    required: list[str] = [vm.source_path]
    optional: list[str] = []
    stem, ext = os.path.splitext(vm.source_path)
    if ext.lower() == ".ovf":
        optional += [stem + ".mf", stem + ".cert"]
    elif ext.lower() != ".ova":
        optional.append(stem + ".vmsd")
    for disk in vm.disks:
        if disk.chain is not None:
            required.extend(disk.chain.files)
            continue
        if disk.path:
            optional.append(disk.path)
        optional.extend(paths_in(disk.problem or ""))
    for drive in (*vm.cdroms, *vm.floppies):
        if drive.path:
            optional.append(drive.path)
    needed = _unique(required)
    extra = [p for p in _unique(optional) if p not in needed]
    return SourceFiles(needed + extra, extra)


# An absolute path in a message, up to what ends it in our messages: space, colon,
# quote, bracket, comma.  A path with such characters is cut short; see vet_failure.
_PATH_IN_TEXT: Final = re.compile(r"""(?<![\w.:/])/[^\s:'"(),;]+""")


def paths_in(text: str) -> list[str]:
    """The absolute paths a message names (``"... /a/b.vmdk: line 3 ..."`` gives ``/a/b.vmdk``)."""
    return _unique(match.rstrip(".") for match in _PATH_IN_TEXT.findall(text))


def error_files(exc: BaseException) -> list[str]:
    """The host files an error is about: a ``Vm2kvmError``'s ``file`` (without an OVA member's
    name) and every absolute path its text names."""
    if not isinstance(exc, Vm2kvmError):
        return []
    files = []
    if exc.file:
        path = exc.file.split(" member ", 1)[0]
        if path.startswith("/"):
            files.append(path)
    return _unique([*files, *paths_in(exc.describe())])


async def vet_failure(caller: Caller, exc: BaseException) -> None:
    """Before an inspection or preflight error goes to ``caller``: PERMISSION_DENIED (naming
    the file) instead, when it names a file the caller cannot read -- its text may quote
    the file, give its size, or say whether it exists.

    Paths the caller cannot find pass (it learns nothing it could not see).  A
    path cut short in the text (one with a space or colon) is checked as cut.
    """
    files = error_files(exc)
    if files:
        await check_readable(caller, SourceFiles(files, optional=files))


async def read_checked(caller: Caller, work: Awaitable[T]) -> T:
    """``await work`` (an inspection or preflight), then make sure ``caller`` may see its
    outcome: its failure is vetted (``vet_failure``), its files checked (``source_files``)."""
    try:
        result = await work
    except Exception as exc:
        await vet_failure(caller, exc)
        raise
    await check_readable(caller, source_files(result))
    return result
