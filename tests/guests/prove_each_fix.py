"""Prove that the boot test needs every fix: migrate the Debian 12 guest with one step left out.

    .venv/bin/python -m tests.guests.prove_each_fix [--steps vmware-tools,network,initramfs,devices]

Run by hand (about 4–6 minutes per step under TCG; not part of the suite).
For each step it migrates the hard-way Debian 12 VMware guest
(``testbed/guests/debian12.py``) through the real pipeline with that one
conversion step skipped (``LibguestfsConverter(skip=...)``), boots the
result under libvirt exactly as ``tests/e2e/test_boot_converted.py`` does,
and prints which of the boot test's checks fail.  Every line must show at
least one failure; the first line (nothing skipped) must show none.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from testbed.guests.boot import ProbeResult, boot_and_probe
from testbed.guests.debian12 import DebianGuest, build_debian12
from testbed.services import DirPool, LiveConnection, ensure_libvirtd, remove_domain, unique_name
from tests.pipeline.support import RecordingEvents
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.pipeline import run_migration
from vm2kvmd.pipeline.conversion import LibguestfsConverter

REPO = Path(__file__).resolve().parents[2]
STEPS = ("vmware-tools", "network", "initramfs", "devices")


def failed_checks(result: ProbeResult, guest: DebianGuest) -> list[str]:
    """The boot test's guest-side checks that do not hold."""
    checks = {
        "multi-user reached": result.multi_user,
        "no failed units": not result.failed_units,
        "systemd running": result.state == "running",
        "root mounted read-write": "rw" in result.root_options.split(","),
        "root on virtio_blk": result.root_driver == "virtio_blk",
        "fstab's root exists": result.fstab_root[1] not in ("", "missing"),
        f"{guest.nic_name} has an IPv4 address": bool(result.interfaces.get(guest.nic_name, ("", []))[1]),
        "VMware Tools gone": not result.tools_installed and not result.vmtoolsd_present,
    }
    return [name for name, ok in checks.items() if not ok]


def run_one(guest: DebianGuest, conn: object, pool: DirPool, skip: str | None, work: Path) -> str:
    name = unique_name(f"prove-{skip or 'none'}")
    options = MigrateOptions(name=name, pool=pool.name, domain_type="qemu")
    converter = LibguestfsConverter(skip=frozenset({skip}) if skip else frozenset())
    asyncio.run(run_migration(str(guest.vmx), options, RecordingEvents(), converter=converter))
    try:
        result = boot_and_probe(conn, name, work / (skip or "none"))
    except AssertionError as err:
        return f"did not boot: {str(err).splitlines()[0]}"
    finally:
        remove_domain(conn, name)
        for volume in pool.volume_names():
            pool.pool.storageVolLookupByName(volume).delete(0)
    failed = failed_checks(result, guest)
    return "all checks pass" if not failed else "fails: " + "; ".join(failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps to leave out")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run with every step")
    args = parser.parse_args()
    guest = build_debian12(REPO / "build" / "guests")
    runs: list[str | None] = ([] if args.no_baseline else [None]) + args.steps.split(",")
    lines = []
    work = Path(tempfile.mkdtemp(prefix="vm2kvm-prove-", dir=REPO / "build"))
    with ensure_libvirtd(), DirPool(LiveConnection()) as pool:
        conn = LiveConnection()
        for skip in runs:
            outcome = run_one(guest, conn, pool, skip, work)
            line = f"{'(nothing skipped)' if skip is None else 'without ' + skip:<26} {outcome}"
            print(line, flush=True)
            lines.append(line)
    shutil.rmtree(work, ignore_errors=True)
    ok = all(("all checks pass" in line) == line.startswith("(nothing") for line in lines)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
