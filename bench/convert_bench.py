"""End-to-end migration of the test suite's Debian 12 guest: vm2kvm against virt-v2v.

    .venv/bin/python bench/convert_bench.py [--runs N] [--keep]

As root, after ``./test.sh``'s set-up.  Builds (once, cached in
``build/guests/``) the bootable Debian 12 VMware guest the boot tests use,
then migrates it, one after the other on the same machine:

1. with vm2kvm's pipeline (``run_migration`` with the libguestfs converter,
   ``--output-dir``: disks and domain XML into a directory, like
   virt-v2v's ``-o local``), qcow2;
2. with Debian's virt-v2v: ``virt-v2v -i vmx GUEST.vmx -o local -os DIR -of qcow2``
   (installed with apt when missing: a reference peer, never a dependency).

Both run with the same libguestfs settings (this machine: TCG,
``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``).  Prints a table with the
medians, vm2kvm's per-step times, writes ``build/bench/convert-results.json``
and exits 1 when the ratio misses the goal (≤ 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from testbed.guests.debian12 import build_debian12  # noqa: E402
from vm2kvmd.core.options import MigrateOptions  # noqa: E402
from vm2kvmd.pipeline import run_migration  # noqa: E402
from vm2kvmd.pipeline.conversion import LibguestfsConverter  # noqa: E402
from vm2kvmd.pipeline.events import DiskProgress  # noqa: E402

GOAL = 0.5
RESULTS = REPO / "build" / "bench" / "convert-results.json"


class _Events:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.phases: list[tuple[str, float]] = []

    def phase(self, name: str) -> None:
        self.phases.append((name, time.monotonic() - self.started))

    def disks(self, items: Sequence[DiskProgress]) -> None:
        pass

    def disk_progress(self, index: int, done: int, total: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass


# libguestfs calls whose time is not vm2kvm's own work: the appliance's start and libguestfs'
# inspection, which any libguestfs-based converter pays (virt-v2v too), and the guest's own
# programs run in the appliance (dpkg, update-initramfs, lsinitramfs, update-grub).
_FIXED_CALLS = ("launch", "inspect_os", "sh", "sh_lines")


@contextlib.contextmanager
def _time_guestfs_calls() -> Iterator[dict[str, float]]:
    """Sum the wall time of ``_FIXED_CALLS`` on every handle while inside (bench-only patching)."""
    import guestfs

    spent = dict.fromkeys(_FIXED_CALLS, 0.0)
    originals = {name: getattr(guestfs.GuestFS, name) for name in _FIXED_CALLS}

    def timed(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return call(self, *args, **kwargs)
            finally:
                spent[name] += time.monotonic() - started

        return wrapper

    for name, call in originals.items():
        setattr(guestfs.GuestFS, name, timed(name, call))
    try:
        yield spent
    finally:
        for name, call in originals.items():
            setattr(guestfs.GuestFS, name, call)


def run_vm2kvm(vmx: Path, out: Path) -> tuple[float, dict[str, float]]:
    options = MigrateOptions(output_dir=str(out), work_dir=str(out / ".work"))
    events = _Events()
    started = time.monotonic()
    with _time_guestfs_calls() as spent:
        result = asyncio.run(run_migration(str(vmx), options, events, converter=LibguestfsConverter()))
    elapsed = time.monotonic() - started
    steps = {f"step {t['step']}": float(t["seconds"]) for t in result.report.get("timings", [])}
    phases = [*events.phases, ("end", elapsed)]
    for (name, start), (_next, end) in itertools.pairwise(phases):
        steps[f"phase {name}"] = end - start
    steps["calls appliance launch"] = spent["launch"]
    steps["calls libguestfs inspect_os"] = spent["inspect_os"]
    steps["calls guest programs (sh)"] = spent["sh"] + spent["sh_lines"]
    steps["fixed (launch + inspect_os + guest programs)"] = sum(spent.values())
    steps["vm2kvm's own work (the rest)"] = elapsed - sum(spent.values())
    return elapsed, steps


def run_virt_v2v(vmx: Path, out: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        ["virt-v2v", "-q", "-i", "vmx", str(vmx), "-o", "local", "-os", str(out), "-of", "qcow2"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def ensure_virt_v2v() -> None:
    if shutil.which("virt-v2v"):
        return
    print("installing virt-v2v (reference peer for this benchmark only)", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "virt-v2v"], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs of each tool (medians); default 1")
    args = parser.parse_args()
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    if not os.path.exists("/dev/kvm") or os.environ.get("VM2KVM_BENCH_TCG", "1") == "1":
        os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    ensure_virt_v2v()
    guest = build_debian12(REPO / "build" / "guests")
    ours: list[float] = []
    theirs: list[float] = []
    steps: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vm2kvm-bench-", dir=REPO / "build") as tmp:
        for run in range(args.runs):
            out = Path(tmp) / f"vm2kvm-{run}"
            out.mkdir()
            elapsed, steps = run_vm2kvm(guest.vmx, out)
            ours.append(elapsed)
            print(f"vm2kvm run {run + 1}: {elapsed:.1f} s", file=sys.stderr)
            shutil.rmtree(out)
            out = Path(tmp) / f"v2v-{run}"
            out.mkdir()
            theirs.append(run_virt_v2v(guest.vmx, out))
            print(f"virt-v2v run {run + 1}: {theirs[-1]:.1f} s", file=sys.stderr)
            shutil.rmtree(out)
    ratio = statistics.median(ours) / statistics.median(theirs)
    # What the ratio would be if everything but the fixed costs took no time: the floor.
    floor = steps["fixed (launch + inspect_os + guest programs)"] / statistics.median(theirs)
    rows = [
        ("vm2kvm end to end (median)", f"{statistics.median(ours):.1f} s"),
        ("virt-v2v -i vmx -o local (median)", f"{statistics.median(theirs):.1f} s"),
        (f"ratio (goal <= {GOAL})", f"{ratio:.2f}"),
        ("ratio floor (fixed costs only)", f"{floor:.2f}"),
        *((f"  vm2kvm {name}", f"{seconds:.1f} s") for name, seconds in steps.items()),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"vm2kvm_s": ours, "virt_v2v_s": theirs, "ratio": ratio, "floor": floor, "steps": steps}, indent=2
        )
        + "\n"
    )
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
