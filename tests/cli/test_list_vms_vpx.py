"""``vm2kvmctl list-vms vpx://...`` against a simulated vCenter: the path chooses the host whose
VMs are listed (as pyvmomi reads them), and a wrong host is one line with close matches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from tests.adapters.vsphere_support import direct, expected_summary
from tests.cli.test_list_vms import error_line, list_vms
from tests.service.support import serve_daemon

pytestmark = pytest.mark.slow  # the simulator (built once, about 20 s)

HOST = "DC0_C0_H0"


@pytest.fixture(scope="module")
def vpx() -> Iterator[VcsimInfo]:
    with Vcsim("vpx") as info:
        yield info


@pytest.fixture
def home(tmp_path: Path, vpx: VcsimInfo) -> Path:
    """HOME with a 0600 ~/.netrc for the vCenter (the machine is the vCenter, not the host)."""
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine {vpx.host} login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    return tmp_path


def uri_of(vpx: VcsimInfo, path: str) -> str:
    return f"vpx://{USER}@{vpx.host}:{vpx.port}/{path}"


@pytest.fixture(scope="module")
def expected(vpx: VcsimInfo) -> list[dict[str, Any]]:
    """The VMs of HOST as list-vms should show them, read through pyvmomi directly."""
    with direct(vpx) as content:
        host = content.searchIndex.FindByInventoryPath(f"DC0/host/DC0_C0/{HOST}")
        return sorted((expected_summary(vm, 0) for vm in host.vm), key=lambda vm: vm["name"])


async def test_the_vms_of_the_host_the_path_names(
    private_bus: str, vpx: VcsimInfo, home: Path, expected: list[dict[str, Any]]
) -> None:
    async with serve_daemon(private_bus):
        run = await list_vms(
            private_bus, home, uri_of(vpx, f"DC0/DC0_C0/{HOST}"), "--json", "--ca-file", vpx.ca_file
        )
    assert run.status == 0, run.err
    assert expected and run.json() == expected
    assert {nic["network"] for vm in run.json() for nic in vm["nics"]} == {"DC0_DVPG0"}


async def test_an_unknown_host_is_one_line_with_close_matches(
    private_bus: str, vpx: VcsimInfo, home: Path
) -> None:
    async with serve_daemon(private_bus):
        run = await list_vms(private_bus, home, uri_of(vpx, "DC0/DC0_C0/DC0_C0_H9"), "--ca-file", vpx.ca_file)
    line = error_line(run)
    assert "no host named 'DC0_C0_H9' in cluster DC0_C0" in line and "did you mean" in line, line
    assert run.status == 1
