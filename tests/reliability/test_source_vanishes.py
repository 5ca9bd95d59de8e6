"""The source goes away while the job reads it: its file system unmounted, a disk file truncated.

The VM lives on a loop-mounted ext4 (as a VMX folder on an NFS share would,
seen from the host).  At the copy phase the test unmounts it (``umount -l``,
as an admin does with a busy share) or truncates the disk file.  A lazily
unmounted file stays readable through descriptors opened before, and QEMU
reads past the end of a truncated file as zeros, so without the check the
copy could even "succeed".  Expected: ``SourceVanished`` naming the file, no
volume, no domain, nothing in the work area.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.private_libvirtd import PrivateLibvirtd
from testbed.services import DirPool
from tests.e2e.lifecycle_support import HOLD_ENV, ServiceDaemon, start_job, wait_finished, wait_phase
from tests.reliability.support import NOTHING, leftovers, small_vm

pytestmark = pytest.mark.libvirt

VANISHED = "org.vm2kvm.Error.SourceVanished"


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Path]:
    """A 128 MiB ext4 file system, loop-mounted: the VM's datastore."""
    image = tmp_path / "share.img"
    with image.open("wb") as f:
        f.truncate(128 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mnt = tmp_path / "share"
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "loop", str(image), str(mnt)]).returncode != 0:
        pytest.skip("cannot loop-mount a file system here")
    try:
        yield mnt
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("fault", ["unmounted", "truncated"])
def test_source_vanishing_mid_copy_is_source_vanished(
    fault: str,
    share: Path,
    reliab_daemon: Callable[..., ServiceDaemon],
    own_libvirtd: PrivateLibvirtd,
    own_pool: DirPool,
    domain_name: str,
) -> None:
    vmx = small_vm(share / "vm", size_mib=64, data_mib=32)
    disk = vmx.parent / "disk.vmdk"
    vmx_text = vmx.read_text()
    daemon = reliab_daemon(env={HOLD_ENV: "copy:2"})
    number = start_job(daemon, str(vmx), "--name", domain_name)
    wait_phase(daemon.address, number, "copy")
    if fault == "unmounted":
        subprocess.run(["umount", "-l", str(share)], check=True)
    else:
        os.truncate(disk, disk.stat().st_size // 2)

    props = wait_finished(daemon.address, number, timeout=60)
    assert props["State"] == "failed"
    name, message = props["Error"]
    assert name == VANISHED, props["Error"]
    assert message.startswith(f"{disk}: source file of disk scsi0:0 vanished"), message
    assert ("unmounted" if fault == "unmounted" else "shrank from") in message
    assert leftovers(own_libvirtd, own_pool, daemon, domain_name, number) == NOTHING
    if fault == "truncated":
        assert vmx.read_text() == vmx_text  # what still exists is unchanged
