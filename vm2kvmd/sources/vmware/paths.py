"""``HostPaths`` on the local file system, and a ``PathResolver`` that uses it."""

from __future__ import annotations

import os
from collections.abc import Mapping

from vm2kvmd.core.vmware.paths import PathResolver

__all__ = ["LOCAL_PATHS", "LocalPaths", "local_resolver"]


class LocalPaths:
    """The host's own file system, through ``os.path``."""

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def lexists(self, path: str) -> bool:
        return os.path.lexists(path)


LOCAL_PATHS = LocalPaths()


def local_resolver(
    base_dir: str, *, datastores: Mapping[str, str] | None = None, allow_external: bool = False
) -> PathResolver:
    """A resolver for a VM (or OVF package) in ``base_dir`` on this host."""
    return PathResolver(base_dir, host=LOCAL_PATHS, datastores=datastores, allow_external=allow_external)
