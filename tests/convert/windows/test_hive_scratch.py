"""Windows' hives are read out into the job's work area (not /tmp), and a full one is NoSpace.

One appliance on the phony Server 2019's disks; the full work area is a tmpfs filled to a page.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from testbed.guests.windows.build import WindowsImage
from tests.guests.phony_fixtures import open_overlays
from vm2kvmd.adapters.guestfs_api import GuestFS
from vm2kvmd.convert.windows.inspect import inspect_windows
from vm2kvmd.errors import ErrorCode, Vm2kvmError

pytestmark = pytest.mark.slow


class RecordingDownloads:
    """The real handle, with the local file of every ``download`` written down."""

    def __init__(self, g: Any) -> None:
        self.g = g
        self.downloads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.g, name)

    def download(self, remote: str, local: str) -> None:
        self.downloads.append(local)
        self.g.download(remote, local)


@pytest.fixture(scope="module")
def win2019(
    windows_images: dict[str, WindowsImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    with open_overlays(list(windows_images["win2019"].disks), tmp_path_factory.mktemp("hives")) as g:
        (root,) = g.inspect_os()
        g.mount_ro(root, "/")
        yield g, root


def test_the_hives_go_into_the_work_area_and_leave_nothing(win2019: tuple[Any, str], tmp_path: Path) -> None:
    g, root = win2019
    recording = RecordingDownloads(g)
    info = inspect_windows(cast(GuestFS, recording), root, str(tmp_path))
    assert info.product_name.startswith("Windows Server 2019")
    assert len(recording.downloads) == 2
    assert all(Path(p).parent.parent == tmp_path for p in recording.downloads), recording.downloads
    assert list(tmp_path.iterdir()) == []


def test_a_full_work_area_is_no_space(win2019: tuple[Any, str], tmp_path: Path) -> None:
    g, root = win2019
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (full / "filler").write_bytes(bytes(60 << 10))  # a hive is 8 KiB at the least
        with pytest.raises(Vm2kvmError) as caught:
            inspect_windows(g, root, str(full))
        err = caught.value
        assert err.code is ErrorCode.NO_SPACE and err.file == str(full) and err.key == "work-dir"
        assert "registry hive" in err.message
        assert [p.name for p in full.iterdir()] == ["filler"]
    finally:
        subprocess.run(["umount", str(full)], check=True)
