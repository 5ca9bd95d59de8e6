"""Helpers of the disk pipeline tests (no tests here): events that record, small VMs, pool contents."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.services import DirPool, child_pids
from tests.e2e.support import VmxDisk, write_vmx
from vm2kvmd.pipeline import DiskProgress

MiB = 1 << 20


@dataclass
class RecordingEvents:
    """``JobEvents`` that keep everything, with the loop time of each progress report."""

    phases: list[str] = field(default_factory=list)
    announced: list[DiskProgress] = field(default_factory=list)
    progress: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)  # (time, index, done, total)
    logs: list[str] = field(default_factory=list)

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def disks(self, items: Sequence[DiskProgress]) -> None:
        self.announced = list(items)

    def disk_progress(self, index: int, done: int, total: int) -> None:
        self.progress.setdefault(index, []).append((done, total))
        self.timeline.append((asyncio.get_running_loop().time(), index, done, total))

    def log(self, message: str) -> None:
        self.logs.append(message)

    def job_totals(self) -> list[int]:
        """The job's BytesDone after every report, as ``Job`` sums the disks."""
        done: dict[int, int] = {}
        out = []
        for _t, index, value, _total in self.timeline:
            done[index] = value
            out.append(sum(done.values()))
        return out

    def most_concurrent(self) -> int:
        """The most disks copying at once: started (first report) and not finished (done == total)."""
        active: set[int] = set()
        most = 0
        for _t, index, done, total in self.timeline:
            if done < total:
                active.add(index)
            else:
                active.discard(index)
            most = max(most, len(active))
        return most


def make_disk(directory: Path, name: str, size: int, data: Sequence[tuple[int, int, int]], **kw: str) -> Path:
    """A VMDK of ``size`` holding ``data`` runs (offset, length, byte) made with qemu-img."""
    from testbed.disks import make_vmdk

    return make_vmdk(directory, name, size, writes=data, **kw)


def small_vm(tmp_path: Path, count: int, disk_mib: int, data_mib: int) -> Path:
    """A VM in ``tmp_path/vm`` with ``count`` disks, each holding ``data_mib`` of its own byte."""
    vmdir = tmp_path / "vm"
    vmdir.mkdir()
    disks = [
        make_disk(vmdir, f"disk{n}.vmdk", disk_mib * MiB, [(n * MiB, data_mib * MiB, 0x30 + n)])
        for n in range(count)
    ]
    return vm_with(vmdir, disks)


def vm_with(directory: Path, disks: Sequence[Path], name: str = "Disk Pipeline") -> Path:
    """A VMX with ``disks`` on scsi0, no NIC (no network to map) and a UUID of its own.

    Its own UUID: test sessions running side by side on one libvirtd must not take each other's.
    """
    pairs = [secrets.token_hex(1) for _ in range(16)]
    uuid = " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])
    disks_ = [VmxDisk(f"scsi0:{i}", d.name) for i, d in enumerate(disks)]
    return write_vmx(directory, name, disks_, nics=(), uuid=uuid)


def allocated(path: str | Path) -> int:
    return os.stat(path).st_blocks * 512


def qemu_img_children() -> set[int]:
    found = set()
    for pid in child_pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "qemu-img":
                found.add(pid)
        except OSError:
            pass
    return found


def pool_files(pool: DirPool) -> list[str]:
    return sorted(p.name for p in pool.path.iterdir())


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout
