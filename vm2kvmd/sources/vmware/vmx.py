"""Reading a ``.vmx`` file from the host; ``core.vmware.vmx`` parses it."""

from __future__ import annotations

import os
import stat

from vm2kvmd.core.vmware.vmx import MAX_VMX_BYTES, VmxFile, invalid_source, parse_vmx
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = ["read_vmx"]


def read_vmx(path: str) -> VmxFile:
    """Read and parse a VMX file.

    Raises ``Vm2kvmError``: SOURCE_NOT_FOUND when the path is missing,
    unreadable or a directory; INVALID_SOURCE when it is not a regular file,
    too large, or not a VMX file (see ``parse_vmx``).
    """
    abspath = os.path.abspath(path)
    try:
        info = os.stat(abspath)
    except FileNotFoundError:
        raise Vm2kvmError(
            ErrorCode.SOURCE_NOT_FOUND, "no such file", file=abspath, hint="check the path of the .vmx file"
        ) from None
    except (OSError, ValueError) as err:
        raise _not_found(abspath, err) from None
    if stat.S_ISDIR(info.st_mode):
        raise Vm2kvmError(
            ErrorCode.SOURCE_NOT_FOUND,
            "is a directory, not a VMX file",
            file=abspath,
            hint="pass the .vmx file inside the VM directory",
        )
    if not stat.S_ISREG(info.st_mode):
        # Reading a FIFO or a device could block the daemon forever.
        raise invalid_source(abspath, "is not a regular file")
    if info.st_size > MAX_VMX_BYTES:
        raise invalid_source(
            abspath,
            f"file is {info.st_size} bytes, more than the {MAX_VMX_BYTES} a VMX file can have",
        )
    try:
        with open(abspath, "rb") as handle:
            data = handle.read(MAX_VMX_BYTES + 1)  # the file may grow between stat and read
    except IsADirectoryError:
        raise Vm2kvmError(ErrorCode.SOURCE_NOT_FOUND, "is a directory, not a VMX", file=abspath) from None
    except (OSError, ValueError) as err:
        raise _not_found(abspath, err) from None
    return parse_vmx(data, abspath)


def _not_found(path: str, err: Exception) -> Vm2kvmError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return Vm2kvmError(
        ErrorCode.SOURCE_NOT_FOUND,
        f"cannot read the file: {reason}",
        file=path,
        hint="check the path and the permissions of the .vmx file",
    )
