"""The virtio-win tree on the host: its listing and file contents (``core.guest.windows.virtio_win`` picks).

Two forms are read, as users have them: a directory (the RPM's
``/usr/share/virtio-win``, or an unpacked ISO) and the ISO file itself
(``virtio-win.iso``, what the project publishes).  The ISO is read in
place with pycdlib (ISO 9660 parsed in Python, through its Rock Ridge,
Joliet or UDF names): no loop mount, which the daemon's sandbox does not
allow, and no unpacked copy.  A missing tree is not an error: the guest
then keeps emulated devices, with notes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from vm2kvmd.errors import ErrorCode, Vm2kvmError

# The name spaces of an ISO 9660 image, most faithful first: Rock Ridge and UDF keep the names
# as written, Joliet keeps case (64 characters), plain ISO 9660 upper-cases and adds ";1".
_NAME_SPACES = (("rr_path", "has_rock_ridge"), ("udf_path", "has_udf"), ("joliet_path", "has_joliet"))


@dataclass(frozen=True)
class VirtioWinTree:
    root: Path | None  # the directory or ISO file; None: no tree at that path
    files: tuple[str, ...]  # relative POSIX paths
    _iso: Any = field(default=None, repr=False, compare=False)  # an open pycdlib.PyCdlib
    _space: str = "iso_path"  # the keyword pycdlib reads the ISO's names with

    def read(self, relative: str) -> bytes:
        assert self.root is not None
        if self._iso is None:
            return (self.root / relative).read_bytes()
        out = io.BytesIO()
        name = "/" + relative if self._space != "iso_path" else "/" + relative.upper() + ";1"
        try:
            self._iso.get_file_from_iso_fp(out, **{self._space: name})
        except PyCdlibException as err:
            raise _unreadable(str(self.root), f"cannot read {relative} from it ({err})") from err
        return out.getvalue()

    def close(self) -> None:
        if self._iso is not None:
            self._iso.close()


def open_virtio_win(path: str) -> VirtioWinTree:
    """The tree at ``path`` (a directory or an ISO file); ``close()`` it when done."""
    root = Path(path)
    if root.is_file():
        return _open_iso(root)
    if not root.is_dir():
        return VirtioWinTree(None, ())
    files: list[str] = []
    for directory, _dirs, names in os.walk(root, followlinks=True):
        base = Path(directory).relative_to(root)
        files.extend((base / name).as_posix() for name in names)
    return VirtioWinTree(root, tuple(sorted(files)))


def _open_iso(path: Path) -> VirtioWinTree:
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (PyCdlibException, OSError) as err:
        raise _unreadable(str(path), f"it is not an ISO 9660 image ({err})") from err
    space = next((kw for kw, has in _NAME_SPACES if getattr(iso, has)()), "iso_path")
    files: list[str] = []
    try:
        for directory, _dirs, names in iso.walk(**{space: "/"}):
            base = directory.strip("/")
            for name in names:
                if space == "iso_path":
                    name = name.rsplit(";", 1)[0].lower()
                files.append(f"{base}/{name}" if base else name)
    except (PyCdlibException, OSError) as err:  # a damaged directory record past the volume descriptors
        iso.close()
        raise _unreadable(str(path), f"its directories cannot be read ({err})") from err
    return VirtioWinTree(path, tuple(sorted(files)), iso, space)


def _unreadable(path: str, why: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.INVALID_OPTION,
        f"virtio-win {path}: {why}",
        file=path,
        key="virtio-win",
        hint="pass virtio-win.iso as published, or a directory holding its contents",
    )
