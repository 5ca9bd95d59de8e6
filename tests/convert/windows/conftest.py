"""Phony Windows guests as fixtures: the images (built once, cached in build/guests/windows/), one
appliance for the whole session on overlays of all of them, and the good layouts converted in it.

    def test_x(windows_appliance): windows_appliance.g ...     # launched, every layout attached
    def test_y(windows_converted): windows_converted["win2019"]  # inspected, converted, read back

One launch serves the inspection and the conversion tests (an appliance
launch and ``inspect_os`` over every disk cost about a minute under TCG):
``windows_roots`` runs inspection before any conversion; each good layout is
then inspected and converted on its own overlays as a migration does
(``converted.py``); the broken layouts' overlays are never written, so the
refusal tests read them as built.  The first build of every layout takes
about a minute (one appliance launch); later sessions reuse the images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.guests.windows.build import DEFAULT_CACHE_DIR, WindowsImage, build_windows_images
from testbed.guests.windows.layout import ALL_LAYOUTS
from tests.convert.windows.converted import Result, SharedAppliance, convert_all
from tests.guests.phony_fixtures import overlay
from vm2kvmd.adapters.appliance import Appliance


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


@pytest.fixture(scope="package")
def windows_appliance(
    windows_images: dict[str, WindowsImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedAppliance]:
    """The migration's own appliance (``adapters.appliance``) on overlays of every layout's disks.

    Package-wide, not session-wide: an idle TCG appliance still keeps about a third of a core
    busy, which slowed every later test of a CI run by minutes."""
    before = {p: sha256(p) for image in windows_images.values() for p in image.disks}
    work = tmp_path_factory.mktemp("windows")
    overlays = [str(overlay(p, work)) for image in windows_images.values() for p in image.disks]
    appliance = Appliance(overlays)
    try:
        yield SharedAppliance(appliance.launch(), windows_images)
    finally:
        appliance.close()
    # Whatever the tests did through the overlays, the images (the "source disks") are unchanged.
    assert {p: sha256(p) for p in before} == before


@pytest.fixture(scope="package")
def windows_roots(windows_appliance: SharedAppliance) -> list[str]:
    """``inspect_os`` over every disk, before any layout is converted."""
    return list(windows_appliance.g.inspect_os())


@pytest.fixture(scope="package")
def windows_converted(
    windows_appliance: SharedAppliance, windows_roots: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Result]:
    return convert_all(windows_appliance, windows_roots, tmp_path_factory.mktemp("winconv"))
