"""virtio-win read from the ISO file users download, in place (pycdlib), against the same tree unpacked.

The ISO is made by xorriso (Debian's, the tool the virtio-win ISO is built with: ``mkisofs``
options) from the fake tree of ``testbed/virtio_win.py``, so the reader meets a real ISO 9660
image with Rock Ridge and Joliet names; the directory reader is the reference.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed.virtio_win import CURRENT_ISO, LEGACY_ISO, build_virtio_win
from vm2kvmd.convert.windows.virtio_win import open_virtio_win
from vm2kvmd.core.guest.windows.virtio_win import WindowsRelease, select_drivers
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def make_iso(tree: Path, iso: Path, *names: str) -> Path:
    """``names``: mkisofs name-space options (-R Rock Ridge, -J Joliet); none: plain ISO 9660."""
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", *names, "-V", "virtio-win", "-o", str(iso), str(tree)],
        check=True,
        capture_output=True,
    )
    return iso


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_virtio_win(tmp_path_factory.mktemp("vw") / "virtio-win", (*CURRENT_ISO, *LEGACY_ISO))


@pytest.mark.parametrize("names", [("-R", "-J"), ("-J",)], ids=["rock-ridge", "joliet"])
def test_the_iso_reads_as_the_unpacked_tree(tree: Path, tmp_path: Path, names: tuple[str, ...]) -> None:
    iso = make_iso(tree, tmp_path / "virtio-win.iso", *names)
    unpacked, packed = open_virtio_win(str(tree)), open_virtio_win(str(iso))
    try:
        assert packed.root == iso
        assert len(unpacked.files) > 100
        assert packed.files == unpacked.files
        for name in unpacked.files:
            assert packed.read(name) == unpacked.read(name), name
        # The same drivers are chosen from either form.
        release = WindowsRelease(10, 0, 17763, True, "x86_64")
        assert select_drivers(packed.files, release) == select_drivers(unpacked.files, release)
    finally:
        packed.close()


def test_a_file_that_is_no_iso_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "virtio-win.zip"
    bogus.write_bytes(b"PK\x03\x04" + bytes(70000))
    with pytest.raises(Vm2kvmError) as caught:
        open_virtio_win(str(bogus))
    err = caught.value
    assert err.code is ErrorCode.INVALID_OPTION
    assert err.file == str(bogus) and err.key == "virtio-win"
    assert "not an ISO 9660 image" in str(err)


def test_an_iso_whose_walk_fails_is_named_and_closed(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pycdlib reads every directory record at open, so no real image was found that opens and then
    # fails to walk: the walk is made to raise what pycdlib raises for a damaged image.
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibInvalidISO

    iso = make_iso(tree, tmp_path / "virtio-win.iso", "-J")
    closed: list[bool] = []
    real_close = pycdlib.PyCdlib.close

    def walk(self: pycdlib.PyCdlib, **_kw: str) -> None:
        raise PyCdlibInvalidISO("a damaged directory record")

    def close(self: pycdlib.PyCdlib) -> None:
        closed.append(True)
        real_close(self)

    monkeypatch.setattr(pycdlib.PyCdlib, "walk", walk)
    monkeypatch.setattr(pycdlib.PyCdlib, "close", close)
    with pytest.raises(Vm2kvmError) as caught:
        open_virtio_win(str(iso))
    err = caught.value
    assert err.code is ErrorCode.INVALID_OPTION and err.file == str(iso) and err.key == "virtio-win"
    assert "a damaged directory record" in err.message
    assert closed == [True]
