"""pytest plugin for phony guests: the base images, built once per session, and appliances on overlays.

    def test_x(phony_images, tmp_path):
        with open_overlays([phony_images["debian11"]], tmp_path) as g:
            ...

The cached images are read-only; every appliance works on qcow2 overlays in
``tmp_path``, so a test may change anything.  A first build of all base
images takes a few minutes under TCG (one appliance); later sessions reuse
them (``build/guests/phony/``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from testbed.guests.phony import BASE_SPECS, DEFAULT_CACHE_DIR, build_images


@pytest.fixture(scope="session")
def phony_images() -> dict[str, Path]:
    """name -> read-only raw image of every base phony guest (debian11, rhel8, ...)."""
    return build_images([spec() for spec in BASE_SPECS], DEFAULT_CACHE_DIR)


def overlay(image: Path, directory: Path) -> Path:
    """A fresh qcow2 overlay of ``image`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{image.stem}-{os.urandom(4).hex()}.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.resolve()), str(path)],
        check=True,
        capture_output=True,
    )
    return path


@contextlib.contextmanager
def open_overlays(images: Sequence[Path], tmp_path: Path) -> Iterator[Any]:
    """A launched guestfs handle on overlays of ``images`` (sda, sdb, ... in that order); always closed."""
    import guestfs

    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    overlays = [overlay(image, tmp_path / "overlays") for image in images]
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        for path in overlays:
            g.add_drive_opts(str(path), format="qcow2", readonly=False)
        g.launch()
        yield g
    finally:
        with contextlib.suppress(RuntimeError):
            g.shutdown()
        g.close()
