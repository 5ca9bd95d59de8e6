"""Copy benchmark of the disk pipeline: one run, every figure.

    .venv/bin/python bench/copy_bench.py [--dir build/bench] [--size-gib 4] [--data-gib 0.8] [--runs 3]

Builds (once, then reuses) a twoGbMaxExtentSparse VMDK of ``--size-gib``
with ``--data-gib`` of pseudo-random data in runs of 64 KiB to 4 MiB spread
over the whole disk, starts a libvirtd if none answers, and reports, as
medians of ``--runs`` runs with a warm page cache:

1. the pipeline's copy phase (``run_migration`` into a ``dir`` pool: overlay,
   ``qemu-img convert -W -m 8 -n --target-is-zero`` into the libvirt
   volume) against a plain ``qemu-img convert -f vmdk -O qcow2`` of the
   same source into the same directory (goal: at most 1.1);
2. the target's allocated size against the source's allocated data (goal:
   at most 1.05);
3. the copy engines on the same overlay into a fresh qcow2: ``qemu-img
   convert`` against ``nbdcopy`` between two ``qemu-nbd`` (as virt-v2v does).

Prints a table, writes ``results.json`` into ``--dir`` and exits 1 when a
goal is missed.  Needs root (libvirt's system instance).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.services import DirPool, ensure_libvirtd, remove_domain, unique_name  # noqa: E402
from vm2kvmd.adapters import qemu_img  # noqa: E402
from vm2kvmd.core.options import MigrateOptions  # noqa: E402
from vm2kvmd.core.planning import blockdev as qemu_source  # noqa: E402
from vm2kvmd.pipeline import DiskProgress, run_migration  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SLOT = 64 * KiB
RUN_LENGTHS = (64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB)
COPY_RATIO_GOAL = 1.1
SIZE_RATIO_GOAL = 1.05
NBDCOPY_VARIANTS: dict[str, list[str]] = {
    "nbdcopy (defaults)": [],
    "nbdcopy -C 2 -R 16 --request-size=1M": ["-C", "2", "-R", "16", "--request-size=1048576"],
}


# --- the source ----------------------------------------------------------------------------------


def build_source(directory: Path, size: int, data: int, seed: int = 3) -> Path:
    """The benchmark VM (a VMX and its VMDK); reused when one with these parameters exists."""
    vmdir = directory / f"source-{size // MiB}M-{data // MiB}M"
    vmx = vmdir / "Bench.vmx"
    if vmx.exists():
        return vmx
    shutil.rmtree(vmdir, ignore_errors=True)
    vmdir.mkdir(parents=True)
    raw = vmdir / "disk.raw"
    rng = random.Random(seed)
    used = bytearray(size // SLOT)
    written = 0
    with raw.open("wb") as f:
        f.truncate(size)
        while written < data:
            length = min(rng.choice(RUN_LENGTHS), data - written)
            length = -(-length // SLOT) * SLOT
            first = rng.randrange(0, len(used) - length // SLOT)
            slots = range(first, first + length // SLOT)
            if any(used[s] for s in slots):
                continue
            for s in slots:
                used[s] = 1
            f.seek(first * SLOT)
            f.write(rng.randbytes(length))
            written += length
    subformat = "subformat=twoGbMaxExtentSparse"
    convert = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", subformat]
    subprocess.run([*convert, str(raw), str(vmdir / "disk.vmdk")], check=True)
    raw.unlink()
    vmx.write_text(
        "\n".join(
            [
                '.encoding = "UTF-8"',
                'config.version = "8"',
                'virtualHW.version = "19"',
                'displayName = "Bench"',
                'guestOS = "debian12-64"',
                'memsize = "512"',
                'scsi0.present = "TRUE"',
                'scsi0.virtualDev = "lsilogic"',
                'scsi0:0.present = "TRUE"',
                'scsi0:0.fileName = "disk.vmdk"',
            ]
        )
        + "\n"
    )
    return vmx


def warm(paths: Sequence[Path]) -> None:
    """Read every source file once: every measurement then starts with a warm page cache."""
    for path in paths:
        with path.open("rb") as f:
            while f.read(16 * MiB):
                pass


def allocated(path: Path | str) -> int:
    return os.stat(path).st_blocks * 512


def timed(argv: Sequence[str]) -> float:
    subprocess.run(["sync"], check=True)
    begin = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - begin


# --- the pipeline --------------------------------------------------------------------------------


@dataclass
class TimedEvents:
    """``JobEvents`` that remember when each phase began."""

    phases: dict[str, float] = field(default_factory=dict)
    announced: list[DiskProgress] = field(default_factory=list)

    def phase(self, name: str) -> None:
        self.phases[name] = time.monotonic()

    def disks(self, items: Sequence[DiskProgress]) -> None:
        self.announced = list(items)

    def disk_progress(self, index: int, done: int, total: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass


@dataclass
class PipelineRun:
    copy_seconds: float
    total_seconds: float
    target_allocated: int
    announced: int


def pipeline_run(vmx: Path, pool: DirPool, work: Path) -> PipelineRun:
    name = unique_name("bench")
    options = MigrateOptions(name=name, pool=pool.name, domain_type="qemu", work_dir=str(work))
    events = TimedEvents()
    subprocess.run(["sync"], check=True)
    begin = time.monotonic()
    result = asyncio.run(run_migration(str(vmx), options, events))
    end = time.monotonic()
    try:
        target = result.outputs[0]
        return PipelineRun(
            copy_seconds=events.phases["define"] - events.phases["copy"],
            total_seconds=end - begin,
            target_allocated=allocated(target),
            announced=events.announced[0].total,
        )
    finally:
        remove_domain(pool.pool.connect(), name)
        for vol in pool.pool.listAllVolumes(0):
            vol.delete(0)


# --- copy engines ---------------------------------------------------------------------------------


def engine_runs(source_node: dict[str, Any], size: int, scratch: Path, runs: int) -> dict[str, float]:
    """Median seconds of each engine copying one overlay of the source into a fresh qcow2."""
    overlay = scratch / "overlay.qcow2"
    target = scratch / "target.qcow2"
    overlay.unlink(missing_ok=True)
    backing = qemu_source.json_filename(source_node)
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "vmdk", str(overlay)]
    subprocess.run(create, check=True)

    def fresh_target() -> None:
        target.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), str(size)], check=True)

    engines: dict[str, list[str]] = {
        "qemu-img convert -W -m 8": [
            *("qemu-img", "convert", "-W", "-m", "8", "-f", "qcow2", str(overlay)),
            *("-O", "qcow2", "-n", "--target-is-zero", str(target)),
        ],
    }
    for label, extra in NBDCOPY_VARIANTS.items():
        engines[label] = [
            *("nbdcopy", *extra, "--destination-is-zero", "--"),
            *("[", "qemu-nbd", "-r", "-e", "8", "-f", "qcow2", str(overlay), "]"),
            *("[", "qemu-nbd", "-e", "8", "-f", "qcow2", str(target), "]"),
        ]
    times: dict[str, list[float]] = {label: [] for label in engines}
    for _ in range(runs):
        for label, argv in engines.items():
            fresh_target()
            times[label].append(timed(argv))
    target.unlink(missing_ok=True)
    overlay.unlink(missing_ok=True)
    return {label: statistics.median(values) for label, values in times.items()}


# --- main --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO / "build" / "bench", help="work directory")
    parser.add_argument("--size-gib", type=float, default=4.0, help="virtual size of the disk")
    parser.add_argument("--data-gib", type=float, default=0.8, help="data in the disk")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (medians)")
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    size, data = int(args.size_gib * GiB), int(args.data_gib * GiB)

    print(f"source: {args.size_gib:g} GiB twoGbMaxExtentSparse, {args.data_gib:g} GiB data", flush=True)
    vmx = build_source(directory, size, data)
    vmdk = vmx.parent / "disk.vmdk"
    extents = sorted(vmx.parent.glob("disk*.vmdk"))
    node = qemu_source.target_node(str(vmdk), "vmdk")
    source_data = asyncio.run(qemu_img.data_bytes(node))
    work = directory / "work"
    plain_dir = directory / "plain"
    plain_dir.mkdir(exist_ok=True)

    guard = ensure_libvirtd()
    try:
        with DirPool(parent_dir=directory) as pool:
            warm(extents)
            pipeline_run(vmx, pool, work)  # warm-up: libvirt, qemu-img, the page cache
            pipelines: list[PipelineRun] = []
            plains: list[float] = []
            for _ in range(args.runs):
                pipelines.append(pipeline_run(vmx, pool, work))
                out = pool.path / "plain.qcow2"
                plain_argv = ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(vmdk), str(out)]
                plains.append(timed(plain_argv))
                out.unlink()
        engines = engine_runs(node, size, plain_dir, args.runs)
    finally:
        guard.stop()
        shutil.rmtree(plain_dir, ignore_errors=True)

    copy = statistics.median(p.copy_seconds for p in pipelines)
    total = statistics.median(p.total_seconds for p in pipelines)
    plain = statistics.median(plains)
    target = pipelines[-1].target_allocated
    announced = pipelines[-1].announced
    results = {
        "size": size,
        "source_data": source_data,
        "runs": args.runs,
        "pipeline_copy_seconds": copy,
        "pipeline_total_seconds": total,
        "plain_convert_seconds": plain,
        "copy_ratio": copy / plain,
        "target_allocated": target,
        "size_ratio": target / source_data,
        "announced_bytes": announced,
        "engines_seconds": engines,
    }
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    ok_copy, ok_size = copy / plain <= COPY_RATIO_GOAL, target / source_data <= SIZE_RATIO_GOAL
    rows = [
        ("source allocated data", f"{source_data / MiB:.1f} MiB"),
        ("pipeline: copy phase", f"{copy:.2f} s  (whole job {total:.2f} s)"),
        ("plain qemu-img convert -f vmdk -O qcow2", f"{plain:.2f} s"),
        ("copy ratio (goal <= 1.1)", f"{copy / plain:.2f}  {'ok' if ok_copy else 'MISSED'}"),
        ("target allocated", f"{target / MiB:.1f} MiB (progress total {announced / MiB:.1f} MiB)"),
        ("size ratio (goal <= 1.05)", f"{target / source_data:.3f}  {'ok' if ok_size else 'MISSED'}"),
        *((f"engine: {label}", f"{seconds:.2f} s") for label, seconds in engines.items()),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"medians of {args.runs} runs, warm page cache")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    return 0 if ok_copy and ok_size else 1


if __name__ == "__main__":
    sys.exit(main())
