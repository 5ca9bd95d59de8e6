"""``migrate --key-file``: the BitLocker key is opened (or piped from stdin) here and leaves
vm2kvmctl only as a file descriptor; a file others may read is refused before it is read."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import pytest

from vm2kvmctl.common import UsageError
from vm2kvmctl.keys import key_fd

KEY = "111111-222222-333333-444444-555555-666666-777777-888888"


def args(path: str | None) -> argparse.Namespace:
    return argparse.Namespace(key_file=path)


def test_key_file_is_passed_as_an_open_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    with key_fd(args(str(key))) as fd:
        assert fd is not None
        assert os.read(fd, 100).decode().strip() == KEY
    with pytest.raises(OSError):
        os.fstat(fd)  # closed after the call
    with key_fd(args(None)) as none:
        assert none is None


@pytest.mark.parametrize(
    ("mode", "why"), [(0o644, "has mode 0644: other users may read the key (chmod 600"), (0o640, "0640")]
)
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int, why: str) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(mode)
    with pytest.raises(UsageError) as err, key_fd(args(str(key))):
        pass
    assert why in str(err.value) and KEY not in str(err.value)


def test_missing_or_odd_key_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No such file"), key_fd(args(str(tmp_path / "none"))):
        pass
    with pytest.raises(UsageError, match="is not a regular file"), key_fd(args(str(tmp_path))):
        pass


def test_key_from_stdin_goes_through_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    with key_fd(args("-")) as fd:
        assert fd is not None
        assert os.read(fd, 100).decode() == KEY + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    with pytest.raises(UsageError, match="no key on stdin"), key_fd(args("-")):
        pass
