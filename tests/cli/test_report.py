"""``vm2kvmctl report``: the report of a completed job, as a user reads it or a script parses it.

The daemon runs in this process with a ``ScriptedRunner`` whose result
carries a real report (``build_report`` of a VMX capture and a hand-made
guest conversion); the CLI is a real subprocess.  The readable output is
compared with ``tests/data/report/<case>.txt`` (``--regenerate`` rewrites it).
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.cli.test_cli import assert_one_error_line, ctl
from tests.core.test_report import GOLDEN_DIR, OPTS, REPORT_DATA, converted, load_vm
from tests.core.vmware.vmx_support import DATA
from tests.service.support import ScriptedRunner, serve_daemon
from vm2kvmctl.report import print_report
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.report import build_report


def converted_report() -> dict[str, Any]:
    vm = load_vm("esxi-rhel55.vmx")
    plan, conversion = converted(vm)
    return build_report(vm, plan, conversion, plan.notes)


def unconverted_report() -> dict[str, Any]:
    vm = load_vm("fusion-ubuntu-efi.vmx")
    plan = plan_domain(vm, OPTS, GuestCaps.unconverted())
    return build_report(vm, plan, None, plan.notes)


# Built at import: reading the VMX is blocking I/O, not allowed in the async tests' loop.
CONVERTED = converted_report()


async def test_report_matches_golden(private_bus: str, regenerate: bool) -> None:
    report = CONVERTED
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1, report=report)):
        assert (await ctl(private_bus, "migrate", "/vms/a.vmx")).status == 0
        run = await ctl(private_bus, "report", "1")
    assert run.status == 0, run.err
    assert run.err == ""
    text = run.out.replace(str(DATA), GOLDEN_DIR)
    golden = REPORT_DATA / "esxi-rhel55-converted.txt"
    if regenerate:
        golden.write_text(text, encoding="utf-8")
    elif not golden.exists():
        pytest.fail(f"{golden.name} does not exist; run pytest {__file__} --regenerate", pytrace=False)
    else:
        assert text == golden.read_text(encoding="utf-8"), f"{golden.name} differs; --regenerate and review"
    lines = run.out.splitlines()
    # The sections a migration engineer expects, in order.
    headings = ["Hardware", "Guest OS", "Changes made in the guest", "Device choice", "Notes"]
    assert [line for line in lines if line in headings] == headings
    assert all(line == line.rstrip() for line in lines)  # not a terminal: no trailing blanks
    assert "\x1b[" not in run.out


async def test_report_json_is_the_daemons_report(private_bus: str) -> None:
    report = CONVERTED
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1, report=report)):
        assert (await ctl(private_bus, "migrate", "/vms/a.vmx")).status == 0
        run = await ctl(private_bus, "report", "/org/vm2kvm/Daemon1/jobs/1", "--json")
    assert run.status == 0, run.err
    assert run.json() == json.loads(json.dumps(report))


def test_unconverted_guest_says_so() -> None:
    console = Console(file=io.StringIO(), highlight=False, markup=False, width=10_000)
    print_report(console, unconverted_report())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\nGuest OS\n  guest not converted\n" in text
    assert "\nChanges made in the guest\n  none (guest not converted)\n" in text
    assert "\nDevice choice\n  guest not converted\n" in text
    assert "Conversion timings" not in text
    assert "  NIC ethernet0" in text


def test_unknown_keys_and_missing_sections_are_tolerated() -> None:
    console = Console(file=io.StringIO(), highlight=False, markup=False, width=10_000)
    print_report(console, {"name": "vm", "future": [1, 2]})
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert text.startswith("Migration report: vm (from ?)\n")


async def test_no_report_yet_is_one_line(private_bus: str) -> None:
    hold = asyncio.Event()
    runner = ScriptedRunner(hold=hold, report=CONVERTED)
    async with serve_daemon(private_bus, runner=runner):
        assert (await ctl(private_bus, "migrate", "--detach", "/vms/a.vmx")).status == 0
        await asyncio.wait_for(runner.copying.wait(), 10)
        running = await ctl(private_bus, "report", "1")
        running_json = await ctl(private_bus, "report", "1", "--json")
        unknown = await ctl(private_bus, "report", "7")
        hold.set()
    assert running.status == 1
    assert running.out == ""
    assert_one_error_line(
        running,
        "job 1 has not finished (running, phase copy); the report is made when the migration has completed",
    )
    assert running_json.json()["error"]["name"] == "org.vm2kvm.Error.NoReport"
    assert unknown.status == 1
    assert_one_error_line(unknown, "no such job 7")


async def test_bad_job_argument(private_bus: str, tmp_path: Path) -> None:
    async with serve_daemon(private_bus):
        run = await ctl(private_bus, "report", "x1")
    assert run.status == 2
    assert_one_error_line(run, "JOB must be a job number or a job object path, not 'x1'")
