"""Authorization of every method call: the rule table, polkit, root, the bus policy.

The integration tests run a real ``dbus-daemon`` configured like the system
bus (default deny) with the project's policy file, vm2kvmd in this process
(root) with an injected runner, python-dbusmock's ``polkitd`` template as
polkit, and an unprivileged caller: a child process running as ``nobody``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageFlag
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method
from dbus_fast.signature import Variant

from testbed.bus import PrivateBus
from testbed.processes import register_service, stop_process
from tests.service.support import BusClient, ScriptedRunner, StaticInspector, serve_daemon
from tests.service.test_daemon_process import finish, running, wait_for_name
from vm2kvmd.constants import BUS_NAME, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.daemon import Daemon
from vm2kvmd.service import auth
from vm2kvmd.service.auth import (
    ACTION_CANCEL_OWN_JOB,
    ACTION_INSPECT,
    ACTION_MANAGE_ALL_JOBS,
    ACTION_MIGRATE,
    RULES,
    Rule,
    caller_from_credentials,
    polkit_flags,
)
from vm2kvmd.service.caller import current_caller
from vm2kvmd.service.interface import BusInterface, bus_method
from vm2kvmd.service.jobs.dbus_object import JobObject
from vm2kvmd.service.jobs.job import Job
from vm2kvmd.service.manager import Manager

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
NOT_AUTHORIZED = "org.vm2kvm.Error.NotAuthorized"
MOCK_IFACE = "org.freedesktop.DBus.Mock"

# Lets the mock (running as root) be polkit on the default-deny bus, as polkit's own file does.
POLKIT_MOCK_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
</busconfig>
"""

# One connection as the unprivileged user: the calls in argv[2] (JSON), in order; prints
# {"name": unique name, "uid": its uid, "replies": [{"error": name or "", "text" | "body": ...}]}.
_CLIENT = r"""
import asyncio, json, os, sys
from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

async def main(address, calls):
    bus = await MessageBus(bus_address=address).connect()
    replies = []
    for c in calls:
        reply = await bus.call(Message(
            destination=c["dest"], path=c["path"], interface=c["iface"], member=c["member"],
            signature=c.get("sig", ""), body=c.get("body", []), flags=MessageFlag(c.get("flags", 0))))
        if reply.message_type is MessageType.ERROR:
            replies.append({"error": reply.error_name, "text": reply.body[0] if reply.body else ""})
        else:
            replies.append({"error": "", "body": reply.body})
    print(json.dumps({"name": bus.unique_name, "uid": os.getuid(), "replies": replies}, default=str))
    bus.disconnect()

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs a caller as nobody)")


# --- unit: the rule table ---------------------------------------------------------------------


def _method_names(interface: ServiceInterface) -> set[str]:
    return {m.name for m in interface.introspect().methods}


def _job() -> JobObject:
    return JobObject(Job(1, "/vms/a.vmx", MigrateOptions(), None))


@pytest.mark.parametrize(("make", "iface"), [(Manager, MANAGER_IFACE), (_job, JOB_IFACE)])
def test_every_method_has_exactly_one_rule(make: Callable[[], ServiceInterface], iface: str) -> None:
    """A method added without a rule is refused to everyone; this says which one to add."""
    ruled = {member for (interface, member) in RULES if interface == iface}
    assert _method_names(make()) == ruled


def test_rule_table() -> None:
    def actions(iface: str, member: str, uid: int, owner: int | None) -> tuple[str, ...]:
        return RULES[(iface, member)].actions_for(uid, owner)

    assert actions(MANAGER_IFACE, "Inspect", 1000, None) == (ACTION_INSPECT,)
    assert actions(MANAGER_IFACE, "Migrate", 1000, None) == (ACTION_MIGRATE,)
    for member in ("Cancel", "Dismiss"):
        assert actions(JOB_IFACE, member, 1000, 1000) == (ACTION_CANCEL_OWN_JOB,)
        assert actions(JOB_IFACE, member, 1000, 0) == (ACTION_MANAGE_ALL_JOBS,)
        assert actions(JOB_IFACE, member, 1000, None) == (ACTION_MANAGE_ALL_JOBS,)
    assert actions(JOB_IFACE, "Retry", 1000, 1000) == (ACTION_MIGRATE,)
    assert actions(JOB_IFACE, "Retry", 1000, 0) == (ACTION_MIGRATE, ACTION_MANAGE_ALL_JOBS)
    exempt = {key for key, rule in RULES.items() if rule.exempt}
    assert exempt == {
        (MANAGER_IFACE, "GetJobs"),
        (MANAGER_IFACE, "ListJobs"),
        (JOB_IFACE, "GetReport"),
        (JOB_IFACE, "GetLog"),
    }
    rule = RULES[(JOB_IFACE, "Cancel")]
    assert rule.describe("/org/vm2kvm/Daemon1/jobs/7", 1000, 0) == "cancel job 7, which uid 0 started"


def test_polkit_flags_follow_the_message_flag() -> None:
    plain = Message(destination=BUS_NAME, path=MANAGER_PATH, interface=MANAGER_IFACE, member="Migrate")
    assert polkit_flags(plain) == 0
    interactive = Message(
        destination=BUS_NAME,
        path=MANAGER_PATH,
        interface=MANAGER_IFACE,
        member="Migrate",
        flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION,
    )
    assert polkit_flags(interactive) == 1


def test_caller_from_credentials() -> None:
    caller = caller_from_credentials(
        ":1.5", {"UnixUserID": NOBODY, "ProcessID": 42, "UnixGroupIDs": [100, NOBODY]}
    )
    assert (caller.uid, caller.pid, caller.gids) == (NOBODY, 42, (NOBODY, 100))
    # No UnixGroupIDs: the account's groups.
    assert caller_from_credentials(":1.6", {"UnixUserID": NOBODY}).gids[0] == NOBODY
    root = caller_from_credentials(":1.7", {"UnixUserID": 0})
    assert root.is_root and root.gids[0] == 0


# --- the bus, polkit and an unprivileged caller -------------------------------------------------


@pytest.fixture(scope="module")
def system_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    mock_policy = tmp_path_factory.mktemp("policy") / "polkit-mock.conf"
    mock_policy.write_text(POLKIT_MOCK_POLICY)
    include = [REPO / "dbus/org.vm2kvm.Daemon1.conf", mock_policy]
    with PrivateBus(kind="system", include_files=include) as bus:
        assert bus.tmpdir is not None
        os.chmod(bus.tmpdir, 0o711)  # nobody reaches the socket, cannot list the directory
        yield bus


class PolkitMock:
    """python-dbusmock's polkitd template on ``address``; refuses everything until told."""

    def __init__(self, address: str, log: Path) -> None:
        self.address = address
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "dbusmock", "--template", "polkitd"],
            env={"DBUS_SYSTEM_BUS_ADDRESS": self.address, "PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            start_new_session=True,
        )
        register_service(self.proc.pid)

    async def start(self, client: BusClient) -> None:
        self.spawn()
        assert self.proc is not None
        async with asyncio.timeout(20):
            while not (await has_owner(client, auth.POLKIT_NAME)):
                assert self.proc.poll() is None, self.log.read_text()
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=5)
            self.proc = None

    async def allow(self, client: BusClient, *actions: str) -> None:
        await client.call_ok(
            auth.POLKIT_NAME, auth.POLKIT_PATH, MOCK_IFACE, "SetAllowed", "as", [list(actions)]
        )

    async def checks(self, client: BusClient) -> list[tuple[Any, ...]]:
        """The CheckAuthorization calls so far: (subject, action, details, flags, cancellation id)."""
        (calls,) = await client.call_ok(auth.POLKIT_NAME, auth.POLKIT_PATH, MOCK_IFACE, "GetCalls")
        return [tuple(v.value for v in args) for _, name, args in calls if name == "CheckAuthorization"]


async def has_owner(client: BusClient, name: str) -> bool:
    (owned,) = await client.call_ok(
        "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", [name]
    )
    return bool(owned)


@pytest.fixture
async def client(system_bus: PrivateBus) -> AsyncIterator[BusClient]:
    bus_client = await BusClient.connect(system_bus.address)
    yield bus_client
    await bus_client.close()


@pytest.fixture
async def polkit(system_bus: PrivateBus, client: BusClient, tmp_path: Path) -> AsyncIterator[PolkitMock]:
    mock = PolkitMock(system_bus.address, tmp_path / "polkit-mock.log")
    try:
        await mock.start(client)
        yield mock
    finally:
        mock.stop()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory (not under pytest's 0700 tmp) whose files nobody may read unless told otherwise."""
    path = Path(tempfile.mkdtemp(prefix="vm2kvm-auth-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def source(public_dir: Path) -> str:
    """A file anyone may read: enough for an injected runner (no preflight)."""
    vmx = public_dir / "vm.vmx"
    vmx.write_text('displayName = "vm"\n')
    vmx.chmod(0o644)
    return str(vmx)


@contextlib.asynccontextmanager
async def daemon_on(address: str, **kwargs: Any) -> AsyncIterator[Daemon]:
    """vm2kvmd in this process, its jobs held in the copy phase, job owners wired."""
    kwargs.setdefault("runner", ScriptedRunner(hold=asyncio.Event()))
    kwargs.setdefault("inspector", StaticInspector({"name": "vm"}))
    async with serve_daemon(address, **kwargs) as daemon:
        daemon.bus.owner_of = daemon.manager.job_owner
        yield daemon


@pytest.fixture
async def daemon(system_bus: PrivateBus) -> AsyncIterator[Daemon]:
    async with daemon_on(system_bus.address) as served:
        yield served


def call(
    member: str,
    sig: str = "",
    body: Sequence[Any] = (),
    *,
    path: str = MANAGER_PATH,
    iface: str = MANAGER_IFACE,
    dest: str = BUS_NAME,
    flags: int = 0,
) -> dict[str, Any]:
    return {
        "dest": dest,
        "path": path,
        "iface": iface,
        "member": member,
        "sig": sig,
        "body": list(body),
        "flags": flags,
    }


def inspect_call(source: str, flags: int = 0) -> dict[str, Any]:
    return call("Inspect", "sa{sv}", [source, {}], flags=flags)


def migrate_call(source: str, flags: int = 0) -> dict[str, Any]:
    return call("Migrate", "sa{sv}", [source, {}], flags=flags)


def job_call(path: str, member: str) -> dict[str, Any]:
    return call(member, path=path, iface=JOB_IFACE)


async def as_nobody(address: str, *calls: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Make ``calls`` on one connection as user nobody; its unique name and the replies."""
    name, uid, replies = await unprivileged(address, *calls)
    assert uid == NOBODY
    return name, replies


async def unprivileged(address: str, *calls: dict[str, Any]) -> tuple[str, int, list[dict[str, Any]]]:
    """Make ``calls`` on one connection from a child process that is not root: run as root, the
    child drops to nobody (groups, gid, uid); run as anyone else, it is already unprivileged.
    Its unique name, uid and the replies."""
    drop: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENT,
        address,
        json.dumps(list(calls)),
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **drop,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    answer = json.loads(out)
    assert answer["uid"] != 0
    return answer["name"], answer["uid"], answer["replies"]


def denied(reply: dict[str, Any], action: str) -> bool:
    return reply["error"] == NOT_AUTHORIZED and f"(polkit action {action})" in reply["text"]


async def job_user(client: BusClient, path: str) -> int:
    return int((await client.job_props(path))["User"])


@needs_root
async def test_root_is_allowed_without_polkit(daemon: Daemon, client: BusClient, source: str) -> None:
    assert not await has_owner(client, auth.POLKIT_NAME)
    reply = await client.manager("Inspect", "sa{sv}", [source, {}])
    assert reply.error_name is None, reply.body
    path = await client.migrate(source)
    assert await job_user(client, path) == 0
    cancel = await client.job_call(path, "Cancel")
    assert cancel.error_name is None, cancel.body


@needs_root
async def test_without_polkit_others_are_refused(system_bus: PrivateBus, daemon: Daemon, source: str) -> None:
    _, replies = await as_nobody(system_bus.address, inspect_call(source), migrate_call(source))
    for reply in replies:
        assert reply["error"] == NOT_AUTHORIZED
        assert "cannot check authorization: polkit is not running" in reply["text"]
    assert daemon.manager.jobs == []


@needs_root
async def test_polkit_decides_for_others(
    system_bus: PrivateBus, daemon: Daemon, polkit: PolkitMock, client: BusClient, source: str
) -> None:
    _, replies = await as_nobody(system_bus.address, inspect_call(source), migrate_call(source))
    assert denied(replies[0], ACTION_INSPECT), replies[0]
    assert denied(replies[1], ACTION_MIGRATE), replies[1]
    assert "not authorized to migrate a virtual machine" in replies[1]["text"]
    assert daemon.manager.jobs == []

    await polkit.allow(client, ACTION_INSPECT, ACTION_MIGRATE)
    name, replies = await as_nobody(system_bus.address, inspect_call(source), migrate_call(source))
    assert [r["error"] for r in replies] == ["", ""], replies
    (path,) = replies[1]["body"]
    # The caller reached the (async) method: the job is nobody's.
    assert await job_user(client, path) == NOBODY
    checks = await polkit.checks(client)
    subject, action, details, flags, cancellation = checks[-1]
    assert subject[0] == "system-bus-name"
    assert subject[1]["name"].value == name
    assert (action, details, flags, cancellation) == (ACTION_MIGRATE, {}, 0, "")


@needs_root
async def test_interactive_authorization_only_when_the_caller_allows_it(
    system_bus: PrivateBus, daemon: Daemon, polkit: PolkitMock, client: BusClient, source: str
) -> None:
    interactive = int(MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
    _, replies = await as_nobody(
        system_bus.address, inspect_call(source, flags=interactive), inspect_call(source)
    )
    assert all(denied(r, ACTION_INSPECT) for r in replies), replies
    flags = [check[3] for check in await polkit.checks(client)]
    assert flags == [auth.POLKIT_ALLOW_USER_INTERACTION, 0]


@needs_root
async def test_another_users_job_needs_manage_all_jobs(
    system_bus: PrivateBus, daemon: Daemon, polkit: PolkitMock, client: BusClient, source: str
) -> None:
    path = await client.migrate(source)  # root's job
    await polkit.allow(client, ACTION_CANCEL_OWN_JOB, ACTION_MIGRATE)
    _, replies = await as_nobody(
        system_bus.address, job_call(path, "Cancel"), job_call(path, "Dismiss"), job_call(path, "Retry")
    )
    assert all(denied(r, ACTION_MANAGE_ALL_JOBS) for r in replies), replies
    assert "which uid 0 started" in replies[0]["text"]
    assert (await client.job_props(path))["State"] != "cancelled"

    await polkit.allow(client, ACTION_MANAGE_ALL_JOBS)
    _, replies = await as_nobody(system_bus.address, job_call(path, "Cancel"))
    assert replies[0]["error"] == "", replies
    await daemon.manager.job(path).wait()
    assert (await client.job_props(path))["State"] == "cancelled"


@needs_root
async def test_own_job_needs_cancel_own_job(
    system_bus: PrivateBus, daemon: Daemon, polkit: PolkitMock, client: BusClient, source: str
) -> None:
    await polkit.allow(client, ACTION_MIGRATE)
    _, replies = await as_nobody(system_bus.address, migrate_call(source))
    (path,) = replies[0]["body"]
    _, replies = await as_nobody(system_bus.address, job_call(path, "Cancel"))
    assert denied(replies[0], ACTION_CANCEL_OWN_JOB), replies
    assert "not authorized to cancel job" in replies[0]["text"]

    await polkit.allow(client, ACTION_CANCEL_OWN_JOB)  # not manage-all-jobs: it is nobody's job
    _, replies = await as_nobody(system_bus.address, job_call(path, "Cancel"))
    assert replies[0]["error"] == "", replies
    await daemon.manager.job(path).wait()
    assert (await client.job_props(path))["State"] == "cancelled"


@needs_root
async def test_read_only_methods_and_properties_need_nothing(
    system_bus: PrivateBus, daemon: Daemon, client: BusClient, source: str
) -> None:
    path = await client.migrate(source)
    _, replies = await as_nobody(
        system_bus.address,
        call("GetJobs"),
        job_call(path, "GetLog"),
        call("Get", "ss", [JOB_IFACE, "State"], path=path, iface="org.freedesktop.DBus.Properties"),
        call("Introspect", path=path, iface="org.freedesktop.DBus.Introspectable"),
    )
    assert [r["error"] for r in replies] == ["", "", "", ""], replies
    assert replies[0]["body"] == [[path]]


@needs_root
async def test_nobody_may_set_properties(system_bus: PrivateBus, daemon: Daemon, client: BusClient) -> None:
    value = Variant("s", "x")
    reply = await client.call(
        BUS_NAME,
        MANAGER_PATH,
        "org.freedesktop.DBus.Properties",
        "Set",
        "ssv",
        [MANAGER_IFACE, "Version", value],
    )
    assert reply.error_name == NOT_AUTHORIZED, reply.body
    assert "read-only" in reply.body[0]


@needs_root
async def test_only_root_may_own_the_name(system_bus: PrivateBus, daemon: Daemon, client: BusClient) -> None:
    assert await has_owner(client, BUS_NAME)  # the daemon, as root, owns it
    request = call(
        "RequestName",
        "su",
        [BUS_NAME, 4],
        dest="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        iface="org.freedesktop.DBus",
    )
    _, replies = await as_nobody(system_bus.address, request)
    assert replies[0]["error"] == "org.freedesktop.DBus.Error.AccessDenied", replies


@needs_root
async def test_the_daemon_process_refuses_and_allows(
    system_bus: PrivateBus, polkit: PolkitMock, client: BusClient, source: str
) -> None:
    """``python -m vm2kvmd.daemon`` on the system-like bus, as installed: same rules."""
    async with running("DBUS_SYSTEM_BUS_ADDRESS", system_bus.address, "--bus", "system") as proc:
        await wait_for_name(client, proc)
        _, replies = await as_nobody(system_bus.address, migrate_call(source))
        assert denied(replies[0], ACTION_MIGRATE), replies
        await polkit.allow(client, ACTION_INSPECT)
        # The real inspection, as nobody: the source is no VM, but nobody may read it.
        _, replies = await as_nobody(system_bus.address, inspect_call(source))
        assert replies[0]["error"] not in (NOT_AUTHORIZED, "org.vm2kvm.Error.PermissionDenied"), replies
        proc.terminate()
        status, err = await finish(proc)
    assert status == 0, err
    assert "refused org.vm2kvm.Manager1.Migrate" in err


# --- default deny and the caller in the method ---------------------------------------------------


class Extra(BusInterface):
    """Methods nobody wrote a rule for (unless a test adds one)."""

    @bus_method()
    def Frobnicate(self) -> DBusStr:
        return "frobnicated"

    @bus_method()
    def WhoAmI(self) -> DBusUInt32:
        return current_caller().uid

    @bus_method()
    async def WhoAmIAsync(self) -> DBusUInt32:
        await asyncio.sleep(0)
        return current_caller().uid


EXTRA_PATH = MANAGER_PATH + "/extra"


@needs_root
@pytest.mark.parametrize("iface", [MANAGER_IFACE, "org.vm2kvm.Extra1"])
async def test_a_method_without_a_rule_is_refused_to_everyone(
    system_bus: PrivateBus, daemon: Daemon, client: BusClient, iface: str
) -> None:
    daemon.bus.export(EXTRA_PATH, Extra(iface))
    reply = await client.call(BUS_NAME, EXTRA_PATH, iface, "Frobnicate")
    assert reply.error_name == NOT_AUTHORIZED
    assert f"{iface}.Frobnicate has no authorization rule" in reply.body[0]
    _, replies = await as_nobody(system_bus.address, call("Frobnicate", path=EXTRA_PATH, iface=iface))
    assert replies[0]["error"] == NOT_AUTHORIZED, replies


@needs_root
async def test_the_method_sees_its_caller(
    system_bus: PrivateBus, daemon: Daemon, client: BusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    iface = "org.vm2kvm.Extra1"
    for member in ("WhoAmI", "WhoAmIAsync"):
        monkeypatch.setitem(RULES, (iface, member), Rule("ask who I am"))
    daemon.bus.export(EXTRA_PATH, Extra(iface))
    authorizer = daemon.bus.authorizer
    forgotten: list[str] = []

    def forget(name: str) -> None:
        if authorizer.cached(name) is not None:
            forgotten.append(name)
        type(authorizer).forget(authorizer, name)

    monkeypatch.setattr(authorizer, "forget", forget)
    assert await client.call_ok(BUS_NAME, EXTRA_PATH, iface, "WhoAmI") == [0]
    assert await client.call_ok(BUS_NAME, EXTRA_PATH, iface, "WhoAmIAsync") == [0]
    name, replies = await as_nobody(
        system_bus.address,
        call("WhoAmI", path=EXTRA_PATH, iface=iface),
        call("WhoAmIAsync", path=EXTRA_PATH, iface=iface),
    )
    assert [r.get("body") for r in replies] == [[NOBODY], [NOBODY]], replies
    # The caller's credentials were cached, and are forgotten when it disconnects.
    for _ in range(500):
        if name in forgotten:
            break
        await asyncio.sleep(0.02)
    assert name in forgotten
    assert daemon.bus.authorizer.cached(name) is None


# --- no way around the dispatcher ------------------------------------------------------------------


async def test_an_unprivileged_caller_is_refused(request: pytest.FixtureRequest, source: str) -> None:
    """Never skipped: as root the caller drops to nobody in a child process, otherwise it is the
    (unprivileged) user running the tests.  No polkit: everything but the read-only methods is refused,
    with or without an interface name in the call."""
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:
            address = request.getfixturevalue("system_bus").address
        else:
            address = stack.enter_context(PrivateBus()).address  # a session bus: the daemon may own its name
        async with daemon_on(address) as daemon:
            # A handler added later sees the calls first, and changes nothing about their authorization.
            seen: list[str | None] = []
            daemon.bus.add_message_handler(lambda msg: seen.append(msg.member))
            _, uid, replies = await unprivileged(
                address,
                inspect_call(source),
                migrate_call(source),
                {**migrate_call(source), "iface": None},
                call("GetJobs"),
            )
            assert daemon.manager.jobs == []
    assert uid != 0
    assert {"Inspect", "Migrate", "GetJobs"} <= set(seen)
    for reply in replies[:3]:
        assert reply["error"] == NOT_AUTHORIZED, replies
        assert "cannot check authorization: polkit is not running" in reply["text"]
    assert replies[3] == {"error": "", "body": [[]]}


async def test_dbus_fast_never_runs_our_methods_itself(private_bus: str) -> None:
    """Defense in depth: exported without ServiceBus (so nothing authorizes), our methods refuse."""
    manager = Manager(runner=ScriptedRunner(), inspector=StaticInspector())
    plain = await MessageBus(bus_address=private_bus).connect()
    caller = await BusClient.connect(private_bus)
    try:
        plain.export(MANAGER_PATH, manager)
        assert plain.unique_name is not None
        for member, signature, body in (("GetJobs", "", []), ("Migrate", "sa{sv}", ["/vms/a.vmx", {}])):
            reply = await caller.call(plain.unique_name, MANAGER_PATH, MANAGER_IFACE, member, signature, body)
            assert reply.error_name == NOT_AUTHORIZED, reply.body
            assert f"{member} was called without authorization" in reply.body[0]
    finally:
        await caller.close()
        plain.disconnect()
        await manager.shutdown(grace=1)
    assert manager.jobs == []


class Plain(ServiceInterface):
    """A method as dbus-fast alone would run it: for anyone."""

    @dbus_method()
    def Frobnicate(self) -> DBusStr:
        return "frobnicated"


async def test_a_method_not_declared_with_bus_method_is_refused(
    private_bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    iface = "org.vm2kvm.Plain1"
    # Not even a rule makes it callable: only @bus_method methods are run.
    monkeypatch.setitem(RULES, (iface, "Frobnicate"), auth.EXEMPT)
    async with serve_daemon(private_bus) as daemon:
        daemon.bus.export(EXTRA_PATH, Plain(iface))
        caller = await BusClient.connect(private_bus)
        try:
            named = await caller.call(BUS_NAME, EXTRA_PATH, iface, "Frobnicate")
            no_interface = Message(destination=BUS_NAME, path=EXTRA_PATH, member="Frobnicate")
            unnamed = await caller.bus.call(no_interface)
        finally:
            await caller.close()
    for reply in (named, unnamed):
        assert reply is not None and reply.error_name == NOT_AUTHORIZED, reply
        assert f"{iface}.Frobnicate has no authorization rule" in reply.body[0]


def test_a_bus_interface_declares_its_methods_with_bus_method() -> None:
    class Sloppy(BusInterface):
        @dbus_method()
        def Frobnicate(self) -> DBusStr:
            return "frobnicated"

    with pytest.raises(TypeError, match=r"declare \['Frobnicate'\] with @bus_method"):
        Sloppy("org.vm2kvm.Sloppy1")
