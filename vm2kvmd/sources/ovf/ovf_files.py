"""An ``.ovf`` next to its files: the unpacked form of an OVA, or what ovftool writes to a directory.

Every name the descriptor or its manifest gives goes through the
``PathResolver`` of the descriptor's directory, with the same containment
rules as a VMX: an ``ovf:href`` of ``../../other/disk.vmdk`` or a symlink
leading out is ``PathOutsideSource`` unless ``--allow-external-paths`` or a
``--datastore`` allows it.  Disks are VMDK files like any other (any
createType the VMDK reader takes, not only streamOptimized).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Mapping

from vm2kvmd.core.hardware.model import DiskChain
from vm2kvmd.core.ovf.envelope import OvfFile
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.ovf.files import Located, stat_source
from vm2kvmd.sources.ovf.package import Package
from vm2kvmd.sources.vmware.paths import local_resolver
from vm2kvmd.sources.vmware.vmdk import load_chain


def _located(real: str, name: str) -> Located | None:
    """The whole regular file ``real`` (``name`` as the package names it); None when it does not exist."""
    try:
        info = os.stat(real)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise Vm2kvmError(
            ErrorCode.INVALID_SOURCE, f"cannot read {name!r}: {err.strerror or err}", file=real
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise Vm2kvmError(ErrorCode.INVALID_SOURCE, f"{name!r} is not a regular file", file=real)
    return Located(real, 0, info.st_size, real)


class OvfFilesPackage(Package):
    """An OVF package whose files lie next to its descriptor."""

    def __init__(
        self, path: str, *, datastores: Mapping[str, str] | None = None, allow_external: bool = False
    ) -> None:
        path = os.path.abspath(path)
        size = stat_source(path, "OVF descriptor").st_size
        super().__init__(path, Located(path, 0, size, path), path)
        self.resolver = local_resolver(
            os.path.dirname(path), datastores=datastores, allow_external=allow_external
        )

    def locate(self, name: str) -> Located | None:
        return _located(self.resolver.resolve(name, file=self.path).path, name)

    def load_disk(self, file: OvfFile, key: str) -> DiskChain:
        if file.compression == "gzip":
            raise Vm2kvmError(
                ErrorCode.UNSUPPORTED_DISK,
                f"the disk file {file.href!r} is stored compressed (ovf:compression='gzip')",
                file=self.path,
                key=key,
                hint="decompress it (gzip -dc) next to the .ovf and remove ovf:compression, "
                "or migrate the package as an .ova, which is extracted at migration",
            )
        resolved = self.resolver.resolve(file.href, key=key, file=self.path)
        loc = _located(resolved.path, file.href)
        if loc is None:
            raise Vm2kvmError(
                ErrorCode.DISK_MISSING,
                f"the disk file {file.href!r} ({file.locator}) does not exist",
                file=resolved.path,
                key=key,
                value=file.href,
                hint="copy every file of the package next to the .ovf",
            )
        self.check_size(file, loc, key)
        chain = load_chain(resolved.path, self.resolver, key=key)
        if resolved.note is None:
            return chain
        top = chain.top
        return DiskChain((dataclasses.replace(top, notes=(resolved.note, *top.notes)), *chain.layers[1:]))
