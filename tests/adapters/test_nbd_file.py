"""An NBD export shown as a file (``adapters/nbd_file.py``): real nbdkit, real nbdfuse (FUSE).

The file reads as the export; leaving the context unmounts it and reaps nbdfuse; a mount left
behind by a killed daemon is removed with the job's directory (``pipeline/rollback.py``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.processes import register_service, stop_process
from vm2kvmd.adapters.nbd_file import NbdFile
from vm2kvmd.core.residue import Residue
from vm2kvmd.pipeline.rollback import remove_residue

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse here")

CONTENT = os.urandom(64 * 1024) * 4


@pytest.fixture
def export(tmp_path: Path) -> Iterator[str]:
    """A read-only NBD export of CONTENT on a unix socket (nbdkit's file plugin)."""
    data = tmp_path / "data.bin"
    data.write_bytes(CONTENT)
    socket = tmp_path / "nbd.sock"
    proc = subprocess.Popen(
        ["nbdkit", "--foreground", "-r", "--unix", str(socket), "file", str(data)],
        stdin=subprocess.DEVNULL,
    )
    register_service(proc.pid)
    deadline = time.monotonic() + 10
    while not socket.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    try:
        yield str(socket)
    finally:
        stop_process(proc)


async def test_the_file_reads_as_the_export_and_goes_away(export: str, tmp_path: Path) -> None:
    directory = tmp_path / "work" / "file0"
    async with NbdFile(export, str(directory), label="[ds] v/d-flat.vmdk") as path:
        assert path == str(directory / "data")
        assert await asyncio.to_thread(Path(path).read_bytes) == CONTENT
        assert await asyncio.to_thread(os.path.ismount, directory)
        with pytest.raises(OSError):
            await asyncio.to_thread(Path(path).write_bytes, b"x")  # read-only
    assert not await asyncio.to_thread(directory.exists)


def test_a_dead_mount_of_a_killed_daemon_is_removed_with_the_tree(export: str, tmp_path: Path) -> None:
    tree = tmp_path / "job-dead"
    mount = tree / "disk1" / "remote" / "file0"
    mount.mkdir(parents=True)
    proc = subprocess.Popen(["nbdfuse", "-r", str(mount / "data"), "--unix", export])
    deadline = time.monotonic() + 10
    while not os.path.ismount(mount):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # as with the daemon: pdeathsig
    proc.wait()
    with pytest.raises(OSError):
        os.listdir(mount)  # "Transport endpoint is not connected"
    gone, line = remove_residue(Residue("tree", path=str(tree)))
    assert gone, line
    assert not tree.exists()
