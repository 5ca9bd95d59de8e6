"""read_vmx: the VMX file on the host (parsing: tests/core/vmware/test_vmx.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vmware.vmx import read_vmx


def test_read_vmx(tmp_path: Path) -> None:
    path = tmp_path / "vm.vmx"
    path.write_bytes(b'displayName = "from disk"\n')
    vmx = read_vmx(str(path))
    assert vmx.path == str(path)
    assert vmx.get("displayName") == "from disk"


def test_read_vmx_makes_the_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rel.vmx").write_bytes(b'displayName = "r"\n')
    monkeypatch.chdir(tmp_path)
    assert read_vmx("rel.vmx").path == str(tmp_path / "rel.vmx")


def test_read_vmx_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.vmx")
    with pytest.raises(Vm2kvmError) as info:
        read_vmx(missing)
    assert info.value.code is ErrorCode.SOURCE_NOT_FOUND
    assert missing in info.value.describe()


def test_read_vmx_directory(tmp_path: Path) -> None:
    with pytest.raises(Vm2kvmError) as info:
        read_vmx(str(tmp_path))
    assert info.value.code is ErrorCode.SOURCE_NOT_FOUND
    assert info.value.file == str(tmp_path)
    assert "directory" in info.value.describe()


def test_read_vmx_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.vmx"
    os.mkfifo(fifo)
    with pytest.raises(Vm2kvmError) as info:
        read_vmx(str(fifo))  # would block forever if it were opened
    assert info.value.code is ErrorCode.INVALID_SOURCE
    assert "regular file" in info.value.describe()


def test_read_vmx_five_mib(tmp_path: Path) -> None:
    big = tmp_path / "big.vmx"
    with big.open("wb") as handle:
        handle.write(b'displayName = "x"\n')
        handle.truncate(5 * 1024 * 1024)
    with pytest.raises(Vm2kvmError) as info:
        read_vmx(str(big))
    assert info.value.code is ErrorCode.INVALID_SOURCE
    assert str(5 * 1024 * 1024) in info.value.message and info.value.file == str(big)


def test_read_vmx_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "secret.vmx"
    path.write_bytes(b'displayName = "x"\n')
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(Vm2kvmError) as info:
            read_vmx(str(path))
        assert info.value.code is ErrorCode.SOURCE_NOT_FOUND
        return
    # Root reads any file: read it from a child that keeps uid 0 but loses the
    # capabilities that override file modes.
    caps = "-dac_override,-dac_read_search"
    code = (
        "import sys\n"
        "from vm2kvmd.sources.vmware.vmx import read_vmx\n"
        "from vm2kvmd.errors import Vm2kvmError\n"
        "try:\n    read_vmx(sys.argv[1])\nexcept Vm2kvmError as e:\n    print(e.code.value, e.file)\n"
        "else:\n    print('read')\n"
    )
    out = subprocess.run(
        ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout.split()
    assert out == [ErrorCode.SOURCE_NOT_FOUND.value, str(path)]
