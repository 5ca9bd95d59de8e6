"""The vSphere simulator harness itself: it starts with TLS on loopback, verifies as its printed
certificate says, serves its datastore with Range requests, and leaves nothing behind."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from testbed.processes import pid_alive
from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo, build_vcsim

pytestmark = pytest.mark.slow  # the first build of the simulator takes about 20 s


@pytest.fixture(scope="module")
def esx() -> Iterator[VcsimInfo]:
    with Vcsim("esx") as info:
        yield info


def _context(info: VcsimInfo) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=info.ca_file)


def test_build_is_cached() -> None:
    first = build_vcsim()
    mtime = first.stat().st_mtime_ns
    assert build_vcsim() == first
    assert first.stat().st_mtime_ns == mtime


def test_listens_on_loopback_with_the_printed_certificate(esx: VcsimInfo) -> None:
    assert esx.host == "127.0.0.1"
    with (
        socket.create_connection((esx.host, esx.port)) as raw,
        _context(esx).wrap_socket(raw, server_hostname=esx.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    digest = hashlib.sha256(der).hexdigest().upper()
    assert esx.thumbprint.replace(":", "") == digest


def test_login_and_inventory(esx: VcsimInfo) -> None:
    si = SmartConnect(host=esx.host, port=esx.port, user=USER, pwd=PASSWORD, sslContext=_context(esx))
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        names = sorted(vm.name for vm in view.view)
        view.Destroy()
    finally:
        Disconnect(si)
    assert names == ["ha-host_VM0", "ha-host_VM1"]


def test_wrong_password_is_refused(esx: VcsimInfo) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(host=esx.host, port=esx.port, user=USER, pwd="wrong", sslContext=_context(esx))


def test_datastore_serves_ranges(esx: VcsimInfo) -> None:
    si = SmartConnect(host=esx.host, port=esx.port, user=USER, pwd=PASSWORD, sslContext=_context(esx))
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
        (datastore,) = view.view
        view.Destroy()
        directory = Path(datastore.info.url)
        cookie = si._stub.cookie  # the session cookie, as the disk reader will send it
    finally:
        Disconnect(si)
    payload = os.urandom(1 << 16)
    (directory / "range-test.bin").write_bytes(payload)
    conn = http.client.HTTPSConnection(esx.host, esx.port, context=_context(esx))
    try:
        conn.request(
            "GET",
            "/folder/range-test.bin?dcPath=ha-datacenter&dsName=LocalDS_0",
            headers={"Range": "bytes=1000-1999", "Cookie": cookie},
        )
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 206
    assert body == payload[1000:2000]


def test_stop_removes_the_process_and_its_files() -> None:
    sim = Vcsim("vpx")
    info = sim.start()
    assert sim.proc is not None
    pid = sim.proc.pid
    assert Path(info.ca_file).exists()
    sim.stop()
    assert not pid_alive(pid)
    assert not Path(info.ca_file).exists()
