"""Phony Windows guests as fixtures: the images (built once, cached in build/guests/windows/) and
one appliance on overlays of all of them.

    def test_x(windows_images, tmp_path):
        with open_overlays(list(windows_images["win2019"].disks), tmp_path) as g: ...

The first build of every layout takes about a minute (one appliance launch);
later sessions reuse the images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.guests.windows.build import DEFAULT_CACHE_DIR, WindowsImage, build_windows_images
from testbed.guests.windows.layout import ALL_LAYOUTS
from tests.guests.phony_fixtures import open_overlays


@pytest.fixture(scope="session")
def windows_images() -> dict[str, WindowsImage]:
    """layout name -> read-only raw images of every phony Windows layout."""
    return build_windows_images(ALL_LAYOUTS, DEFAULT_CACHE_DIR)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class SharedAppliance:
    """One launched appliance on overlays of every layout's disks, in ``ALL_LAYOUTS`` order."""

    def __init__(self, g: Any, images: dict[str, WindowsImage]) -> None:
        self.g = g
        self.disk_names: dict[str, str] = {}  # appliance disk (/dev/sdc) -> "win2008r2:disk1"
        self.disks: dict[str, list[str]] = {}  # layout -> its appliance disks, system disk first
        devices = iter(g.list_devices())
        for name, image in images.items():
            for n, _ in enumerate(image.disks):
                device = next(devices)
                self.disk_names[device] = f"{name}:disk{n}"
                self.disks.setdefault(name, []).append(device)


@pytest.fixture(scope="module")
def windows_appliance(
    windows_images: dict[str, WindowsImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedAppliance]:
    before = {p: sha256(p) for image in windows_images.values() for p in image.disks}
    paths = [p for image in windows_images.values() for p in image.disks]
    with open_overlays(paths, tmp_path_factory.mktemp("windows")) as g:
        yield SharedAppliance(g, windows_images)
    # Whatever the tests did through the overlays, the images (the "source disks") are unchanged.
    assert {p: sha256(p) for p in before} == before
