"""Descriptor reads from a datastore (``sources.vsphere.datastore.read_head``) when the host is busy:
its ``Retry-After`` is followed, and a host that stays busy is a named error.

The simulator never answers 503; ``testbed.https_front`` does, in front of the simulator's
``/folder`` service, as a throttling ESXi does.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from testbed.https_front import HttpsFront
from testbed.vcsim import PASSWORD, Vcsim, VcsimInfo
from tests.adapters.vsphere_support import direct
from vm2kvmd.adapters.vsphere import Session, connect
from vm2kvmd.core.vsphere.uri import TlsPolicy, parse_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vsphere.datastore import read_head

pytestmark = pytest.mark.slow

PATH = "[LocalDS_0] busy/busy.vmdk"
TEXT = b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n'


@pytest.fixture(scope="module")
def simulator() -> Iterator[tuple[VcsimInfo, Session]]:
    with Vcsim("esx") as info:
        with direct(info) as content:
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
            (datastore,) = view.view
            folder = Path(datastore.info.url) / "busy"
        folder.mkdir(exist_ok=True)
        (folder / "busy.vmdk").write_bytes(TEXT)
        uri = parse_uri(f"esx://user@{info.host}:{info.port}/")
        with connect(uri, PASSWORD, TlsPolicy(ca_file=info.ca_file)) as session:
            yield info, session


def _through(session: Session, front: HttpsFront) -> Session:
    """The same session (its cookie), its datastore reads going through ``front``."""
    routed = copy.copy(session)
    routed.uri = dataclasses.replace(session.uri, port=front.port)
    routed.context = ssl.create_default_context(cafile=front.ca_file)
    return routed


def test_retry_after_is_followed(simulator: tuple[VcsimInfo, Session]) -> None:
    info, session = simulator
    with HttpsFront(info.host, info.port, info.ca_file, busy_first=2, retry_after="1") as front:
        assert read_head(_through(session, front), PATH) == TEXT
    statuses = [r.status for r in front.requests]
    assert statuses == [503, 503, 206]
    # Retry-After 1, not the 2 and 4 s of the backoff it replaces.
    gaps = [b.at - a.at for a, b in itertools.pairwise(front.requests)]
    assert all(0.9 < g < 1.8 for g in gaps), gaps


def test_a_host_that_stays_busy_is_a_named_error(simulator: tuple[VcsimInfo, Session]) -> None:
    info, session = simulator
    front = HttpsFront(info.host, info.port, info.ca_file, busy_first=99, retry_after="1")
    with front, pytest.raises(Vm2kvmError) as caught:
        read_head(_through(session, front), PATH)
    assert caught.value.code is ErrorCode.VSPHERE_ERROR
    assert "503" in caught.value.message and "busy" in caught.value.message
    assert len(front.requests) == 6
