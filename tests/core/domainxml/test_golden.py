"""Golden files: every ``tests/data/vmx/<case>.vmx`` renders to ``<case>.xml``.

The disks the VMX files name are absent (the cases are real-world captures,
not VMs), which the mapping plans anyway.  Run with ``--regenerate`` to rewrite
the XML files from the current output, then read the diff.  Every golden file
is also defined in libvirt's test driver and in the test libvirtd.

The data directory is machine-specific (the VMX path is absolute and ends up in
``<metadata>``), so it is written as ``GOLDEN_DIR`` in the golden files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.core.domainxml.test_domainxml import define_everywhere
from tests.helpers.golden import check_golden
from vm2kvmd.core.domainxml import render_domain_xml
from vm2kvmd.core.planning.guestcaps import GuestCaps
from vm2kvmd.core.planning.mapping import plan_domain
from vm2kvmd.core.planning.plan import PlanOptions
from vm2kvmd.sources.vmware.vm import load_source_vm

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "vmx"
GOLDEN_DIR = "/golden/vmx"
OPTS = PlanOptions(
    target_dir="/var/lib/libvirt/images",
    new_uuid="00000000-0000-4000-8000-000000000001",
    networks=(("VM Network", "default"),),
    started=datetime(2026, 12, 7, 20, 31, tzinfo=UTC),
    # esxi-nsx-ubuntu's NSX segment, by the id its VMX gives (it carries no name).
    bridges=(("5d9f1a9c-0b6e-4c1d-9a43-7e2f61d5b0a8", "br-nsx-web"),),
)
CASES = sorted(DATA_DIR.glob("*.vmx"))


def render_case(vmx: Path) -> str:
    vm = load_source_vm(str(vmx))
    xml = render_domain_xml(plan_domain(vm, OPTS, GuestCaps.unconverted()))
    assert isinstance(xml, str)
    return xml.replace(str(DATA_DIR), GOLDEN_DIR)


def test_there_are_cases() -> None:
    assert len(CASES) >= 2, f"no .vmx cases in {DATA_DIR}"


@pytest.mark.parametrize("vmx", CASES, ids=[p.stem for p in CASES])
def test_golden(vmx: Path, regenerate: bool, libvirt_conn: Any) -> None:
    golden = vmx.with_suffix(".xml")
    xml = render_case(vmx)
    check_golden(golden, xml, regenerate=regenerate, test_file=__file__)
    define_everywhere(libvirt_conn, xml)
