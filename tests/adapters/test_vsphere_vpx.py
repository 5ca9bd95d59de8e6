"""The vSphere session against a simulated vCenter: the vpx:// path chooses a datacenter, a
cluster and a host, lookups stay on that host, and wrong path parts are named with close matches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyVmomi import vim

from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from tests.adapters.vsphere_support import direct, expected_summary, vms_under
from vm2kvmd.adapters.vsphere import connect
from vm2kvmd.core.vsphere.uri import TlsPolicy, VsphereUri, parse_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError

pytestmark = pytest.mark.slow  # the first build of the simulator takes about 20 s


@pytest.fixture(scope="module")
def vpx() -> Iterator[VcsimInfo]:
    with Vcsim("vpx") as info:
        yield info


@pytest.fixture(scope="module")
def trusted(vpx: VcsimInfo) -> TlsPolicy:
    return TlsPolicy(ca_file=vpx.ca_file)


def _uri(vpx: VcsimInfo, path: str) -> VsphereUri:
    return parse_uri(f"vpx://{USER}@{vpx.host}:{vpx.port}/{path}")


def _host_vms(vpx: VcsimInfo, inventory_path: str) -> list[str]:
    with direct(vpx) as content:
        host = content.searchIndex.FindByInventoryPath(inventory_path)
        assert isinstance(host, vim.HostSystem)
        return sorted(vm.name for vm in host.vm)


@pytest.mark.parametrize(
    ("path", "inventory_path"),
    [
        ("DC0/DC0_C0/DC0_C0_H0", "DC0/host/DC0_C0/DC0_C0_H0"),
        ("DC0/DC0_C0/DC0_C0_H1", "DC0/host/DC0_C0/DC0_C0_H1"),
        ("DC0/DC0_H0", "DC0/host/DC0_H0/DC0_H0"),  # a standalone host: its compute resource
    ],
)
def test_the_path_chooses_the_host(
    vpx: VcsimInfo, trusted: TlsPolicy, path: str, inventory_path: str
) -> None:
    expected = _host_vms(vpx, inventory_path)
    with connect(_uri(vpx, path), PASSWORD, trusted) as session:
        listed = [vm.name for vm in session.list_vms()]
    assert expected and listed == expected


def test_list_vms_reads_what_pyvmomi_reads(vpx: VcsimInfo, trusted: TlsPolicy) -> None:
    with direct(vpx) as content:
        cluster = content.searchIndex.FindByInventoryPath("DC0/host/DC0_C0")
        vms = sorted((vm for host in cluster.host for vm in host.vm), key=lambda vm: vm.name)
        expected = {vm.name: expected_summary(vm, snapshots=0) for vm in vms}
        hosts = {vm.name: vm.runtime.host.name for vm in vms}
    listed = {}
    for name, host in hosts.items():
        with connect(_uri(vpx, f"DC0/DC0_C0/{host}"), PASSWORD, trusted) as session:
            listed[name] = next(vm.to_json() for vm in session.list_vms() if vm.name == name)
    assert listed == expected
    # Cluster VMs sit on a distributed port group: its name, not its key, is shown.
    assert {nic["network"] for vm in listed.values() for nic in vm["nics"]} == {"DC0_DVPG0"}  # type: ignore[attr-defined]


def test_a_vm_on_another_host_is_not_found(vpx: VcsimInfo, trusted: TlsPolicy) -> None:
    with connect(_uri(vpx, "DC0/DC0_H0"), PASSWORD, trusted) as session:
        assert session.find_vm("DC0_H0_VM0").name == "DC0_H0_VM0"
        with pytest.raises(Vm2kvmError) as info:
            session.find_vm("DC0_C0_RP0_VM0")
    assert info.value.code is ErrorCode.VM_NOT_FOUND
    assert "host DC0_H0" in info.value.message


def test_all_vms_of_the_vcenter_exist_as_the_simulator_says(vpx: VcsimInfo) -> None:
    # The parametrised paths above cover every VM of the datacenter between them.
    with direct(vpx) as content:
        every = sorted(vm.name for vm in vms_under(content, content.rootFolder))
    covered = sorted(
        _host_vms(vpx, "DC0/host/DC0_C0/DC0_C0_H0")
        + _host_vms(vpx, "DC0/host/DC0_C0/DC0_C0_H1")
        + _host_vms(vpx, "DC0/host/DC0_C0/DC0_C0_H2")
        + _host_vms(vpx, "DC0/host/DC0_H0/DC0_H0")
    )
    assert every == covered


@pytest.mark.parametrize(
    ("path", "what", "suggestion"),
    [
        ("DC1/DC0_H0", "datacenter named 'DC1' on 127.0.0.1:", "'DC0'"),
        ("DC0/DC0_C1/DC0_C0_H0", "cluster named 'DC0_C1' in datacenter DC0 of", "'DC0_C0'"),
        ("DC0/DC0_H1", "host named 'DC0_H1' in datacenter DC0 of", "'DC0_H0'"),
        ("DC0/DC0_C0/DC0_C0_H9", "host named 'DC0_C0_H9' in cluster DC0_C0", "'DC0_C0_H0'"),
    ],
)
def test_a_wrong_path_part_is_named_with_close_matches(
    vpx: VcsimInfo, trusted: TlsPolicy, path: str, what: str, suggestion: str
) -> None:
    with pytest.raises(Vm2kvmError) as info:
        connect(_uri(vpx, path), PASSWORD, trusted)
    err = info.value
    assert err.code is ErrorCode.INVENTORY_NOT_FOUND
    assert f"no {what}" in err.message
    assert err.hint is not None and suggestion in err.hint
