"""The vSphere session against a simulated standalone ESXi: every way to trust its certificate,
the named errors (wrong password, nothing listening, unknown VM) and the VM list."""

from __future__ import annotations

import http.server
import logging
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from tests.adapters.vsphere_support import SwitchingProxy, direct, expected_summary, free_port, vms_under
from vm2kvmd.adapters.vsphere import connect
from vm2kvmd.core.vsphere.uri import TlsPolicy, VsphereUri, parse_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError

pytestmark = pytest.mark.slow  # the first build of the simulator takes about 20 s

WRONG_PASSWORD = "Wr0ng-Pa55word-xyzzy"
CONFIG_SPEC: Any = vim.vm.ConfigSpec  # pyVmomi data objects take keyword properties, unannotated


@pytest.fixture(scope="module")
def esx() -> Iterator[VcsimInfo]:
    with Vcsim("esx") as info:
        yield info


@pytest.fixture(scope="module")
def uri(esx: VcsimInfo) -> VsphereUri:
    return parse_uri(f"esx://{USER}@{esx.host}:{esx.port}/")


@pytest.fixture(scope="module")
def trusted(esx: VcsimInfo) -> TlsPolicy:
    return TlsPolicy(ca_file=esx.ca_file)


def test_ca_file_verifies_and_logs_in(uri: VsphereUri, trusted: TlsPolicy) -> None:
    with connect(uri, PASSWORD, trusted) as session:
        names = [vm.name for vm in session.list_vms()]
        assert "pass" not in repr(session)
    assert names == ["ha-host_VM0", "ha-host_VM1"]


def test_the_session_logs_out_when_closed(uri: VsphereUri, trusted: TlsPolicy) -> None:
    with connect(uri, PASSWORD, trusted) as session:
        assert session.content.sessionManager.currentSession.userName == USER
    with pytest.raises(vim.fault.NotAuthenticated):
        session.content.sessionManager.currentSession.userName  # noqa: B018 (the call is the test)


def test_system_store_refuses_the_self_signed_certificate_and_shows_how_to_pin(
    esx: VcsimInfo, uri: VsphereUri
) -> None:
    with pytest.raises(Vm2kvmError) as info:
        connect(uri, PASSWORD)
    err = info.value
    assert err.code is ErrorCode.CERTIFICATE_NOT_TRUSTED
    assert "system CA store" in err.message and "self-signed" in err.message
    assert esx.thumbprint in err.message
    assert f"--thumbprint {esx.thumbprint}" in err.describe()


@pytest.mark.parametrize("form", ["colons", "bare lower-case"])
def test_the_right_pinned_thumbprint_logs_in(esx: VcsimInfo, uri: VsphereUri, form: str) -> None:
    pin = esx.thumbprint if form == "colons" else esx.thumbprint.replace(":", "").lower()
    with connect(uri, PASSWORD, TlsPolicy(thumbprint=pin)) as session:
        assert session.find_vm("ha-host_VM1")


def test_a_wrong_pinned_thumbprint_is_a_mismatch_showing_the_real_one(
    esx: VcsimInfo, uri: VsphereUri
) -> None:
    wrong = "AB:" * 31 + "AB"
    with pytest.raises(Vm2kvmError) as info:
        connect(uri, PASSWORD, TlsPolicy(thumbprint=wrong))
    err = info.value
    assert err.code is ErrorCode.CERTIFICATE_MISMATCH
    assert esx.thumbprint in err.message and wrong in err.message
    assert f"--thumbprint {esx.thumbprint}" in err.describe()


def test_no_verify_connects_with_a_warning(esx: VcsimInfo, caplog: pytest.LogCaptureFixture) -> None:
    uri = parse_uri(f"esx://{USER}@{esx.host}:{esx.port}/?no_verify=1")
    with caplog.at_level(logging.WARNING), connect(uri, PASSWORD) as session:
        assert len(session.list_vms()) == 2
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "not verified" in warning.getMessage() and esx.thumbprint in warning.getMessage()


def test_wrong_password_is_named_and_never_shown(
    uri: VsphereUri, trusted: TlsPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(Vm2kvmError) as info:
        connect(uri, WRONG_PASSWORD, trusted)
    err = info.value
    assert err.code is ErrorCode.LOGIN_FAILED
    assert repr(USER) in err.message
    for text in (err.describe(), repr(err), repr(err.args), caplog.text):
        assert WRONG_PASSWORD not in text
    assert err.__cause__ is None and err.__suppress_context__


def test_nothing_listening_is_host_unreachable(trusted: TlsPolicy) -> None:
    port = free_port()
    with pytest.raises(Vm2kvmError) as info:
        connect(parse_uri(f"esx://127.0.0.1:{port}/"), PASSWORD, trusted)
    assert info.value.code is ErrorCode.HOST_UNREACHABLE
    assert f"127.0.0.1:{port}" in info.value.message
    assert "refused" in info.value.message.lower()


def test_a_missing_ca_file_is_named(uri: VsphereUri, tmp_path: Path) -> None:
    missing = f"{tmp_path}/absent.pem"
    with pytest.raises(Vm2kvmError) as info:
        connect(uri, PASSWORD, TlsPolicy(ca_file=missing))
    assert (info.value.code, info.value.file) == (ErrorCode.INVALID_OPTION, missing)


def test_find_vm_by_name_and_by_managed_object_id(uri: VsphereUri, trusted: TlsPolicy) -> None:
    with connect(uri, PASSWORD, trusted) as session:
        vm = session.find_vm("ha-host_VM1")
        assert vm.name == "ha-host_VM1"
        assert session.find_vm(vm._moId) == vm


def test_an_unknown_vm_is_named_with_close_matches(uri: VsphereUri, trusted: TlsPolicy) -> None:
    with connect(uri, PASSWORD, trusted) as session, pytest.raises(Vm2kvmError) as info:
        session.find_vm("ha-host_VM")
    err = info.value
    assert err.code is ErrorCode.VM_NOT_FOUND
    assert "'ha-host_VM'" in err.message
    assert err.hint is not None and "'ha-host_VM0'" in err.hint and "'ha-host_VM1'" in err.hint


def test_an_unknown_vm_without_close_matches_lists_the_vms(uri: VsphereUri, trusted: TlsPolicy) -> None:
    with connect(uri, PASSWORD, trusted) as session, pytest.raises(Vm2kvmError) as info:
        session.find_vm("payroll")
    assert info.value.code is ErrorCode.VM_NOT_FOUND
    assert info.value.hint == "there are: ha-host_VM0, ha-host_VM1"


def test_list_vms_reads_what_pyvmomi_reads(esx: VcsimInfo, uri: VsphereUri, trusted: TlsPolicy) -> None:
    with direct(esx) as content:
        vm0, vm1 = sorted(vms_under(content, content.rootFolder), key=lambda vm: vm.name)
        # Make the two VMs differ where list-vms looks: a snapshot on one, CBT on the other.
        WaitForTask(vm0.CreateSnapshot_Task(name="before", memory=False, quiesce=False))
        WaitForTask(vm0.CreateSnapshot_Task(name="after", memory=False, quiesce=False))
        WaitForTask(vm1.ReconfigVM_Task(spec=CONFIG_SPEC(changeTrackingEnabled=True)))
        expected = [expected_summary(vm0, snapshots=2), expected_summary(vm1, snapshots=0)]
    with connect(uri, PASSWORD, trusted) as session:
        listed = [vm.to_json() for vm in session.list_vms()]
    for got, want in zip(listed, expected, strict=True):
        assert got == want, {k: (got[k], want[k]) for k in got if got[k] != want[k]}
    assert [vm["snapshot_count"] for vm in listed] == [2, 0]
    assert [vm["cbt"] for vm in listed] == [False, True]
    assert listed[0]["nics"] and listed[0]["disks"]


def test_the_pin_is_checked_on_every_new_connection(esx: VcsimInfo) -> None:
    """Another server behind the same address mid-session is refused, not trusted by the pool."""
    with (
        Vcsim("esx") as other,
        SwitchingProxy((esx.host, esx.port)) as proxy,
        connect(
            parse_uri(f"esx://{USER}@127.0.0.1:{proxy.port}/"), PASSWORD, TlsPolicy(thumbprint=esx.thumbprint)
        ) as session,
    ):
        assert len(session.list_vms()) == 2
        proxy.target = (other.host, other.port)
        session._stub.DropConnections()  # the next call opens a new connection, to the other server
        with pytest.raises(Vm2kvmError) as info:
            session.list_vms()
    err = info.value
    assert err.code is ErrorCode.CERTIFICATE_MISMATCH
    assert other.thumbprint in err.message and esx.thumbprint in err.message


def test_a_host_gone_mid_session_is_named() -> None:
    sim = Vcsim("esx")
    info = sim.start()
    try:
        uri = parse_uri(f"esx://{USER}@{info.host}:{info.port}/")
        with connect(uri, PASSWORD, TlsPolicy(ca_file=info.ca_file)) as session:
            assert len(session.list_vms()) == 2
            sim.kill()
            with pytest.raises(Vm2kvmError) as caught:
                session.find_vm("ha-host_VM0")
    finally:
        sim.stop()
    assert caught.value.code is ErrorCode.HOST_UNREACHABLE
    assert f"lost the connection to {info.host}:{info.port}" in caught.value.message


def test_an_https_server_that_is_not_vsphere_is_named(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(Vm2kvmError) as info:
            connect(
                parse_uri(f"esx://127.0.0.1:{server.server_address[1]}/"),
                PASSWORD,
                TlsPolicy(ca_file=str(cert)),
            )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert info.value.code is ErrorCode.VSPHERE_ERROR
    assert "not an ESXi host or vCenter" in info.value.message
