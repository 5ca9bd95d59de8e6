"""Faults while the guest is converted (the libguestfs appliance of a phony guest is up).

Slow: one appliance launch each under TCG.  The test's own libvirtd gets an
inactive network named ``default`` (defining a domain only needs it to
exist), which the phony VM's NIC is mapped to.

* libvirtd stops while the appliance works and comes back only after the
  conversion ended (the issue's `apt upgrade` case, which failed the job at
  define): the job waits in its next libvirt call, logs the outage, and
  completes with the domain defined.
* the work area (a tmpfs) fills up: the appliance's QEMU would pause on
  ENOSPC and the job hang for ever; it fails with ``NoSpace`` naming the work
  directory, and the daemon serves on.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.private_libvirtd import PrivateLibvirtd
from testbed.services import DefinedNetwork, DirPool
from tests.e2e.lifecycle_support import (
    HOLD_ENV,
    ServiceDaemon,
    converting_job,
    job_props,
    manager_jobs,
    phony_vm,
    wait_finished,
    wait_for,
    work_files,
)
from tests.helpers.vmdk_factory import sha256_tree
from tests.reliability.conftest import connect
from tests.reliability.support import NOTHING, job_log, leftovers

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.timeout(900)]

# Above the 1 GiB a conversion needs free at its start (pipeline.overlay.CONVERSION_SPACE).
WORK_TMPFS = "1100m"


@pytest.fixture
def default_network(own_libvirtd: PrivateLibvirtd) -> Iterator[DefinedNetwork]:
    with DefinedNetwork(own_libvirtd.uri, name="default") as net:
        yield net


def config(libvirtd: PrivateLibvirtd, pool: DirPool) -> str:
    return f'libvirt_uri = "{libvirtd.uri}"\ndefault_pool = "{pool.name}"\n'


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.allow_blocking
def test_work_area_full_during_conversion_is_no_space(
    phony_images: dict[str, Path],
    daemons: Callable[..., ServiceDaemon],
    own_libvirtd: PrivateLibvirtd,
    own_pool: DirPool,
    default_network: DefinedNetwork,
    domain_name: str,
    tmp_path: Path,
) -> None:
    pytest.importorskip("guestfs")
    vmx, before = phony_vm(phony_images["debian11"], tmp_path / "vm")
    daemon = daemons(config=config(own_libvirtd, own_pool))
    with tmpfs(daemon.work_dir, WORK_TMPFS):
        daemon.start()
        number, _procs = converting_job(daemon, vmx, own_pool.name, domain_name)
        # Someone else fills the file system of the work area while the guest is converted.
        filler = daemon.work_dir / "filler"
        fs = os.statvfs(daemon.work_dir)
        with filler.open("wb") as f:
            os.posix_fallocate(f.fileno(), 0, fs.f_bavail * fs.f_frsize - (256 << 10))

        props = wait_finished(daemon.address, number, timeout=300)
        assert props["State"] == "failed"
        name, message = props["Error"]
        assert name == "org.vm2kvm.Error.NoSpace", props["Error"]
        assert f"the work directory {daemon.work_dir} is too full" in message, message
        assert "filled up while the guest was converted" in message and "free" in message
        filler.unlink()
        assert work_files(daemon.work_dir) == []
        assert leftovers(own_libvirtd, own_pool, daemon, domain_name, number) == NOTHING
        assert manager_jobs(daemon.address)  # still serving
        assert daemon.terminate()[0] == 0
    assert sha256_tree(tmp_path / "vm") == before


@pytest.mark.allow_blocking
def test_libvirtd_restarted_during_conversion_job_completes(
    phony_images: dict[str, Path],
    daemons: Callable[..., ServiceDaemon],
    own_libvirtd: PrivateLibvirtd,
    own_pool: DirPool,
    default_network: DefinedNetwork,
    domain_name: str,
    tmp_path: Path,
) -> None:
    pytest.importorskip("guestfs")
    vmx, before = phony_vm(phony_images["debian11"], tmp_path / "vm")
    # Held a moment on entering the copy: the job's first libvirt call after the conversion comes
    # while libvirtd is still away, whatever the machine's speed.
    daemon = daemons(config=config(own_libvirtd, own_pool), env={HOLD_ENV: "copy:2"}).start()
    number, _procs = converting_job(daemon, vmx, own_pool.name, domain_name)
    own_libvirtd.stop()  # while the appliance converts the guest

    def past_conversion() -> bool | None:
        phase = job_props(daemon.address, number)["Phase"]
        waiting = any("not reachable since" in line for line in job_log(daemon, number))
        return True if phase not in ("inspect", "prepare", "convert") or waiting else None

    wait_for(past_conversion, 300, "the job to finish converting")
    time.sleep(3)
    own_libvirtd.start()

    props = wait_finished(daemon.address, number, timeout=300)
    assert props["State"] == "completed", props["Error"]
    assert props["Domain"] == domain_name
    conn = connect(own_libvirtd.uri)
    try:
        assert conn.lookupByName(domain_name).UUIDString()
    finally:
        conn.close()
    log = job_log(daemon, number)
    assert any("not reachable since" in line for line in log), log
    assert any("reachable again after" in line for line in log), log
    assert len(props["Outputs"]) == 1
    assert daemon.terminate()[0] == 0
    assert sha256_tree(tmp_path / "vm") == before
