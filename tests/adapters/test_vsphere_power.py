"""Powering a source VM down for --shutdown-source, against the simulator (vm2kvmd/adapters/vsphere_power.py).

The simulator plays the guest's part through its test controls (testbed/vcsim/main.go): VMware
Tools running or not, and a guest that ignores the shutdown request.  The power state is read
back through a second, independent pyvmomi connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from tests.adapters.vsphere_support import direct, vms_under
from vm2kvmd.adapters.vsphere import Session, connect
from vm2kvmd.adapters.vsphere_power import shut_down
from vm2kvmd.core.vsphere.uri import TlsPolicy, parse_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError

pytestmark = pytest.mark.slow  # a simulator per test (about 1 s each once built)

VM = "ha-host_VM0"


@dataclass
class Host:
    sim: Vcsim
    info: VcsimInfo
    session: Session


@pytest.fixture
def host() -> Iterator[Host]:
    sim = Vcsim("esx")
    info = sim.start()
    try:
        uri = parse_uri(f"esx://{USER}@{info.host}:{info.port}/")
        with connect(uri, PASSWORD, TlsPolicy(ca_file=info.ca_file)) as session:
            yield Host(sim, info, session)
    finally:
        sim.stop()


def _power_state(info: VcsimInfo, name: str) -> str:
    with direct(info) as content:
        (vm,) = [vm for vm in vms_under(content, content.rootFolder) if vm.name == name]
        return str(vm.runtime.powerState)


def test_a_guest_with_tools_shuts_down_cleanly(host: Host) -> None:
    host.sim.set_tools(VM)
    lines: list[str] = []
    how = shut_down(host.session, host.session.find_vm(VM), timeout=30, on_log=lines.append, poll=0.2)
    assert how == "guest shutdown"
    assert _power_state(host.info, VM) == "poweredOff"
    assert any("asking the guest" in line and VM in line for line in lines)
    assert not any("hard" in line for line in lines)


def test_without_tools_it_refuses_unless_forced(host: Host) -> None:
    vm = host.session.find_vm(VM)
    with pytest.raises(Vm2kvmError) as caught:
        shut_down(host.session, vm, timeout=30)
    err = caught.value
    assert err.code is ErrorCode.SHUTDOWN_FAILED
    assert VM in err.message and "guestToolsNotRunning" in err.message
    assert "--force" in err.describe()
    assert _power_state(host.info, VM) == "poweredOn"  # nothing was done to it

    lines: list[str] = []
    assert shut_down(host.session, vm, force=True, on_log=lines.append) == "power off"
    assert _power_state(host.info, VM) == "poweredOff"
    assert any("powering it off hard (--force)" in line for line in lines)


def test_a_guest_that_ignores_the_request_times_out_then_force_powers_it_off(host: Host) -> None:
    host.sim.set_tools(VM)
    host.sim.ignore_shutdown(VM)
    vm = host.session.find_vm(VM)
    start = time.monotonic()
    with pytest.raises(Vm2kvmError) as caught:
        shut_down(host.session, vm, timeout=2, poll=0.2)
    assert 2 <= time.monotonic() - start < 10
    err = caught.value
    assert err.code is ErrorCode.SHUTDOWN_FAILED
    assert "still powered on 2 s after" in err.message and "Tools guestToolsRunning" in err.message
    assert _power_state(host.info, VM) == "poweredOn"

    lines: list[str] = []
    assert shut_down(host.session, vm, timeout=1, force=True, on_log=lines.append, poll=0.2) == "power off"
    assert _power_state(host.info, VM) == "poweredOff"
    assert [line for line in lines if "hard" in line]


def test_a_powered_off_vm_is_left_alone(host: Host) -> None:
    vm = host.session.find_vm(VM)
    shut_down(host.session, vm, force=True)
    lines: list[str] = []
    assert shut_down(host.session, vm, on_log=lines.append) == "already off"
    assert lines == [f"VM {VM!r} on {host.session.where} is already powered off"]
