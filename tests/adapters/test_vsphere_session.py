"""Keeping a vSphere session alive and logging in again when it ends, against the simulator.

The session is ended for real: a second session terminates it (SessionManager.TerminateSession),
as an administrator or a host restart does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.vcsim import PASSWORD, USER, Vcsim, VcsimInfo
from tests.adapters.vsphere_support import direct
from vm2kvmd.adapters.vsphere import Session, connect
from vm2kvmd.adapters.vsphere_keepalive import SessionKeeper
from vm2kvmd.core.vsphere.uri import TlsPolicy, parse_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError

pytestmark = pytest.mark.slow  # the first build of the simulator takes about 20 s


@pytest.fixture(scope="module")
def esx() -> Iterator[VcsimInfo]:
    with Vcsim("esx") as info:
        yield info


@pytest.fixture
def session(esx: VcsimInfo) -> Iterator[Session]:
    uri = parse_uri(f"esx://{USER}@{esx.host}:{esx.port}/")
    with connect(uri, PASSWORD, TlsPolicy(ca_file=esx.ca_file)) as s:
        yield s


def _live_sessions(content: Any) -> set[str]:
    return {str(s.key) for s in content.sessionManager.sessionList}


def terminate(info: VcsimInfo, key: str) -> None:
    with direct(info) as content:
        content.sessionManager.TerminateSession([key])


def test_keep_alive_on_a_live_session_keeps_it(session: Session) -> None:
    key, cookie = session.session_key, session.cookie
    assert session.keep_alive() is False
    assert (session.session_key, session.cookie, session.logins) == (key, cookie, 1)
    assert PASSWORD not in repr(session) and PASSWORD not in repr(vars(session).get("uri"))


def test_a_terminated_session_is_renewed_with_a_new_cookie(esx: VcsimInfo, session: Session) -> None:
    old_key, old_cookie = session.session_key, session.cookie
    assert old_key in old_cookie
    terminate(esx, old_key)
    assert session.keep_alive() is True
    assert session.logins == 2
    new_key = session.session_key
    assert new_key != old_key and new_key in session.cookie and old_key not in session.cookie
    with direct(esx) as content:
        live = _live_sessions(content)
    assert new_key in live and old_key not in live
    assert [vm.name for vm in session.list_vms()] == ["ha-host_VM0", "ha-host_VM1"]


async def test_the_keeper_renews_on_its_interval_and_logs_it(esx: VcsimInfo, session: Session) -> None:
    lines: list[str] = []
    async with SessionKeeper(session, interval=0.2, on_log=lines.append) as keeper:
        await asyncio.sleep(0.5)
        assert keeper.renewals == 0  # alive: only kept alive
        key = await asyncio.to_thread(lambda: session.session_key)
        await asyncio.to_thread(terminate, esx, key)
        for _ in range(50):
            if keeper.renewals:
                break
            await asyncio.sleep(0.1)
    assert keeper.renewals == 1
    assert lines == [f"the vSphere session on {session.uri.address} had ended; logged in again"]
    assert await asyncio.to_thread(session.keep_alive) is False  # the renewed session is live


def test_a_refused_login_again_is_login_failed_without_the_password(esx: VcsimInfo, session: Session) -> None:
    # As if the password was changed on the host while the job ran (the simulator's is fixed).
    session._password = "Changed-Meanwhile-xyzzy"
    terminate(esx, session.session_key)
    with pytest.raises(Vm2kvmError) as caught:
        session.keep_alive()
    err = caught.value
    assert err.code is ErrorCode.LOGIN_FAILED
    assert "logging in again as 'user' was refused" in err.message
    assert "Changed-Meanwhile-xyzzy" not in err.describe()
    assert session.logins == 1
