"""A host file system that exists only in a test, for the ``HostPaths`` core asks."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping


class FakeHost:
    """Symlinks and files of a host that exists only in this test."""

    def __init__(self, links: Mapping[str, str] = {}, files: frozenset[str] = frozenset()) -> None:
        self.links = dict(links)
        self.files = files
        self.asked: list[str] = []

    def realpath(self, path: str) -> str:
        self.asked.append(path)
        path = posixpath.normpath(path)
        for link, target in self.links.items():
            if path == link or path.startswith(link + "/"):
                return target + path[len(link) :]
        return path

    def exists(self, path: str) -> bool:
        return self.realpath(path) in self.files

    def lexists(self, path: str) -> bool:
        return path in self.files or path in self.links
