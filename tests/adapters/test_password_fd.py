"""A password passed as a file descriptor: read to end of file, bounded, with a deadline; the fd
is closed whatever happens, and the password never shows in a refusal."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from vm2kvmd.adapters.password_fd import MAX_PASSWORD_BYTES, read_password_fd
from vm2kvmd.errors import ErrorCode, Vm2kvmError


def _pipe_with(data: bytes, *, close: bool = True) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    if close:
        os.close(write_end)
        return read_end, -1
    return read_end, write_end


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


@pytest.mark.parametrize(
    ("data", "password"),
    [
        (b"s3cret", "s3cret"),
        (b"s3cret\n", "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b" with spaces \n", " with spaces "),
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_pipe(data: bytes, password: str) -> None:
    fd, _ = _pipe_with(data)
    assert read_password_fd(fd) == password
    assert _closed(fd)


def test_regular_file_and_socket(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"FromAFile\n")
    fd = os.open(path, os.O_RDONLY)
    assert read_password_fd(fd) == "FromAFile"
    assert _closed(fd)
    ours, theirs = socket.socketpair()
    with ours:
        ours.sendall(b"FromASocket")
        ours.shutdown(socket.SHUT_WR)
        assert read_password_fd(theirs.detach()) == "FromASocket"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty password"),
        (b"\n", "empty password"),
        (b"TopSecret1\nTopSecret2\n", "more than one line"),
        (b"TopSecret1\x00", "NUL byte"),
        (b"\xffTopSecret1", "UTF-8"),
        (b"TopSecret1" * (MAX_PASSWORD_BYTES // 10 + 1), f"more than {MAX_PASSWORD_BYTES} bytes"),
    ],
)
def test_refused_without_the_password(data: bytes, problem: str) -> None:
    fd, _ = _pipe_with(data)
    with pytest.raises(Vm2kvmError) as info:
        read_password_fd(fd)
    assert info.value.code is ErrorCode.INVALID_OPTION
    assert problem in info.value.message
    assert "TopSecret" not in info.value.describe()
    assert _closed(fd)


def test_a_writer_that_never_closes_is_given_up_on() -> None:
    fd, write_end = _pipe_with(b"TopSecret1", close=False)
    try:
        started = time.monotonic()
        with pytest.raises(Vm2kvmError) as info:
            read_password_fd(fd, timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 3
    finally:
        os.close(write_end)
    assert "was not closed within 0.3 s" in info.value.message
    assert _closed(fd)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    with pytest.raises(Vm2kvmError) as info:
        read_password_fd(fd)
    assert "not a pipe, socket or regular file" in info.value.message
    assert _closed(fd)
