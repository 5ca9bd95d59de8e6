"""Helpers of the reliability tests (no tests here)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from testbed.private_libvirtd import PrivateLibvirtd
from testbed.services import DirPool
from tests.e2e.lifecycle_support import ServiceDaemon, get_log, store_residues, work_files
from tests.pipeline.support import MiB, make_disk, vm_with
from tests.reliability.conftest import connect

__all__ = ["MiB", "job_log", "leftovers", "same_content", "small_vm"]


def small_vm(directory: Path, size_mib: int = 64, data_mib: int = 8) -> Path:
    """A VM without NICs (the test's libvirtd has no networks) and one disk holding data: its .vmx."""
    directory.mkdir(parents=True, exist_ok=True)
    runs = [(0, data_mib * MiB // 2, 0x61), (size_mib * MiB // 2, data_mib * MiB // 2, 0x62)]
    return vm_with(directory, [make_disk(directory, "disk.vmdk", size_mib * MiB, runs)])


def same_content(source: Path, target: str) -> bool:
    """``qemu-img compare``: the guest sees the same bytes in both."""
    run = subprocess.run(["qemu-img", "compare", str(source), target], capture_output=True, text=True)
    return run.returncode == 0


def job_log(daemon: ServiceDaemon, number: int) -> list[str]:
    return [message for _t, _phase, message in get_log(daemon.address, number)]


def leftovers(
    libvirtd: PrivateLibvirtd, pool: DirPool, daemon: ServiceDaemon, domain: str, number: int
) -> dict[str, Any]:
    """Everything of the job still around (libvirtd must answer): all empty when nothing is."""
    conn = connect(libvirtd.uri)
    try:
        handle = conn.storagePoolLookupByName(pool.name)
        if handle.isActive():
            handle.refresh(0)
            vols = sorted(str(n) for n in handle.listVolumes())
        else:
            vols = []
        domains = [str(d.name()) for d in conn.listAllDomains(0) if d.name() == domain]
    finally:
        conn.close()
    return {
        "volumes": vols,
        "pool files": sorted(p.name for p in pool.path.iterdir()),
        "work dir": work_files(daemon.work_dir),
        "domains": domains,
        "store residues": store_residues(daemon.state_dir, number),
    }


NOTHING: dict[str, list[Any]] = {
    "volumes": [],
    "pool files": [],
    "work dir": [],
    "domains": [],
    "store residues": [],
}
