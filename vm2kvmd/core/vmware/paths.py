"""One resolver for every path a VMware source names.

VMX and VMDK files name other files in four ways: relative to the naming file,
absolute, ``[datastore] dir/file`` (ESXi), and Windows paths from Workstation
on Windows.  All of them go through ``PathResolver.resolve`` so the rule "never
leave the directory the caller pointed us at without saying so" is enforced in
one place: the daemon runs as root and must not read files the caller did not
ask for (a symlink or ``..`` in a VMX is enough to try).

The resolver asks the host's file system through the injected ``HostPaths``
(``vm2kvmd.sources.vmware.paths`` implements it on local files), so the rules
here stay pure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from vm2kvmd.core.hardware.model import Note
from vm2kvmd.errors import ErrorCode, Vm2kvmError

_DATASTORE_RE = re.compile(r"^\[(?P<ds>[^\]]*)\]\s*(?P<rest>.*)$")
_WINDOWS_ABS_RE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")
_VMFS_RE = re.compile(r"^/vmfs/volumes/(?P<ds>[^/]+)/(?P<rest>.*)$")


@dataclass(frozen=True)
class Resolved:
    path: str  # absolute, normalised; symlinks resolved
    note: Note | None = None  # set when the path is outside the source directory (allowed) or guessed


class HostPaths(Protocol):
    """What path resolution needs to know about the host's file system."""

    def realpath(self, path: str) -> str:
        """``path`` made absolute with every symlink resolved."""
        ...

    def exists(self, path: str) -> bool:
        """Whether ``path`` names an existing file, following symlinks."""
        ...

    def lexists(self, path: str) -> bool:
        """Whether ``path`` names anything, a dangling symlink included."""
        ...


class PathResolver:
    """Resolves names written in a source VM to absolute host paths.

    ``base_dir`` is the directory of the VMX (or OVF); ``datastores`` maps
    datastore names to host directories; with ``allow_external`` a path outside
    ``base_dir`` and the datastore directories is followed with a note instead
    of being an error.  ``host`` answers what only the file system knows.
    """

    def __init__(
        self,
        base_dir: str,
        *,
        host: HostPaths,
        datastores: Mapping[str, str] | None = None,
        allow_external: bool = False,
    ) -> None:
        self.host = host
        self.base_dir = host.realpath(base_dir)
        self.datastores = {k: host.realpath(v) for k, v in (datastores or {}).items()}
        self.allow_external = allow_external

    def resolve(
        self,
        name: str,
        *,
        relative_to: str | None = None,
        key: str | None = None,
        file: str | None = None,
        contained: bool = True,
    ) -> Resolved:
        """Resolve ``name``; ``relative_to`` is the directory of the naming file.

        ``contained=False`` skips the containment rule for paths we only pass
        on to libvirt and never read (ISO images of CD-ROM drives).
        Raises ``Vm2kvmError`` (INVALID_VALUE, PATH_OUTSIDE_SOURCE) naming
        ``file`` and ``key``.
        """
        if not name or "\x00" in name:
            raise Vm2kvmError(
                ErrorCode.INVALID_VALUE, "empty or invalid path", file=file, key=key, value=name
            )
        note: Note | None = None
        base = relative_to or self.base_dir
        ds_match = _DATASTORE_RE.match(name)
        vmfs_match = _VMFS_RE.match(name)
        if ds_match:
            path = self._on_datastore(ds_match["ds"], ds_match["rest"], key=key, file=file)
        elif vmfs_match and vmfs_match["ds"] in self.datastores:
            path = os.path.join(self.datastores[vmfs_match["ds"]], vmfs_match["rest"])
        elif _WINDOWS_ABS_RE.match(name):
            # A VM copied off a Windows host keeps C:\... paths; the file is
            # almost always next to the naming file.
            basename = name.replace("\\", "/").rsplit("/", 1)[-1]
            if basename in ("", ".", ".."):
                # "C:\\vms\\" names a directory: looking up "" next to the VM
                # would hand back the VM directory itself.
                raise Vm2kvmError(
                    ErrorCode.INVALID_VALUE, "Windows path names no file", file=file, key=key, value=name
                )
            path = os.path.join(base, basename)
            note = Note(f"Windows path {name!r} looked up as {basename!r} next to the VM", key)
        else:
            path = os.path.join(base, name)
        real = self.host.realpath(path)
        if contained and not self._inside(real):
            if not self.allow_external:
                raise Vm2kvmError(
                    ErrorCode.PATH_OUTSIDE_SOURCE,
                    f"path {name!r} leads outside the VM directory {self.base_dir} (to {real})",
                    file=file,
                    key=key,
                    hint="move the file next to the VMX, map its datastore with --datastore, "
                    "or pass --allow-external-paths",
                )
            note = Note(f"following path outside the VM directory: {real}", key)
        return Resolved(real, note)

    def _on_datastore(self, datastore: str, rest: str, *, key: str | None, file: str | None) -> str:
        if datastore in self.datastores:
            return os.path.join(self.datastores[datastore], rest)
        raise Vm2kvmError(
            ErrorCode.INVALID_VALUE,
            f"datastore [{datastore}] is not mapped to a directory",
            file=file,
            key=key,
            hint=f"pass --datastore '{datastore}=/path/to/datastore'",
        )

    def _inside(self, real: str) -> bool:
        roots = [self.base_dir, *self.datastores.values()]
        return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)
