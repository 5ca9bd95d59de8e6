"""org.vm2kvm.Manager1 over a real private bus: arguments, errors, job listing."""

from __future__ import annotations

import json

import pytest
from dbus_fast import MessageType
from dbus_fast.signature import Variant

from tests.service.support import (
    BusClient,
    ScriptedRunner,
    StaticInspector,
    missing_source,
    serve_daemon,
)
from vm2kvmd import __version__
from vm2kvmd.constants import BUS_NAME, JOB_IFACE, JOBS_PATH, MANAGER_IFACE, MANAGER_PATH, job_path
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.service.errors import INTERNAL_MESSAGE
from vm2kvmd.service.interface import dbus_methods, is_translated
from vm2kvmd.service.jobs.dbus_object import JobObject
from vm2kvmd.service.jobs.job import Job
from vm2kvmd.service.manager import Manager


def assert_error(reply: object, name: str, *fragments: str) -> str:
    assert getattr(reply, "message_type", None) is MessageType.ERROR
    assert reply.error_name == name, (reply.error_name, reply.body)  # type: ignore[attr-defined]
    (text,) = reply.body  # type: ignore[attr-defined]
    assert "\n" not in text and "Traceback" not in text and 'File "' not in text
    for fragment in fragments:
        assert fragment in text
    return str(text)


async def test_version_property(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus):
        (value,) = await client.call_ok(
            BUS_NAME, MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get", "ss", [MANAGER_IFACE, "Version"]
        )
    assert value.value == __version__


async def test_inspect_returns_json_and_uses_daemon_defaults(private_bus: str, client: BusClient) -> None:
    inspector = StaticInspector(data={"vm": {"display_name": "web1"}, "plan": {"name": "web1"}})
    defaults = MigrateOptions(connect="qemu:///session")
    async with serve_daemon(private_bus, inspector=inspector, defaults=defaults):
        reply = await client.manager("Inspect", "sa{sv}", ["/vms/web1.vmx", {"format": Variant("s", "raw")}])
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    data = json.loads(reply.body[0])
    assert data["vm"] == {"display_name": "web1"}
    # Filled in from the result when to_json() does not carry them.
    assert data["domain_xml"].startswith("<domain")
    assert data["notes"] == ["guest not converted"]
    ((source, options),) = inspector.calls
    assert source == "/vms/web1.vmx"
    assert options.format == "raw"
    assert options.connect == "qemu:///session"


@pytest.mark.parametrize("member", ["Inspect", "Migrate"])
@pytest.mark.parametrize(
    ("source", "options", "fragments"),
    [
        ("web1.vmx", {}, ("'web1.vmx'", "not absolute")),
        ("", {}, ("empty",)),
        ("/vms/a.vmx", {"colour": Variant("s", "red")}, ("unknown option 'colour'",)),
        ("/vms/a.vmx", {"format": Variant("s", "vdi")}, ("format", "qcow2, raw")),
        ("/vms/a.vmx", {"name": Variant("u", 7)}, ("name", "must be a string")),
        ("/vms/a.vmx", {"network": Variant("as", ["=novalue"])}, ("VMWARE=TARGET",)),
        ("/vms/a.vmx", {"output-dir": Variant("s", "out")}, ("absolute",)),
    ],
)
async def test_invalid_arguments(
    private_bus: str,
    client: BusClient,
    member: str,
    source: str,
    options: dict[str, Variant],
    fragments: tuple[str],
) -> None:
    runner, inspector = ScriptedRunner(), StaticInspector()
    async with serve_daemon(private_bus, runner=runner, inspector=inspector):
        reply = await client.manager(member, "sa{sv}", [source, options])
        (jobs,) = await client.call_ok(BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetJobs")
    assert_error(reply, "org.vm2kvm.Error.InvalidOption", *fragments)
    assert jobs == []
    assert runner.calls == [] and inspector.calls == []


async def test_inspect_error_from_the_pipeline(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus, inspector=missing_source):
        reply = await client.manager("Inspect", "sa{sv}", ["/vms/gone.vmx", {}])
    assert_error(reply, "org.vm2kvm.Error.SourceNotFound", "/vms/gone.vmx: no such file")


async def test_unexpected_exception_is_internal_and_daemon_keeps_serving(
    private_bus: str, client: BusClient, caplog: pytest.LogCaptureFixture
) -> None:
    inspector = StaticInspector(fail=ZeroDivisionError("secret-detail"))
    async with serve_daemon(private_bus, inspector=inspector):
        reply = await client.manager("Inspect", "sa{sv}", ["/vms/a.vmx", {}])
        text = assert_error(reply, "org.vm2kvm.Error.Internal")
        (jobs,) = await client.call_ok(BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetJobs")
        path = await client.migrate("/vms/a.vmx")
    assert text == INTERNAL_MESSAGE
    assert "secret-detail" not in text and "ZeroDivisionError" not in text
    assert "secret-detail" in caplog.text and "Traceback" in caplog.text
    assert jobs == []
    assert path == job_path(1)


async def test_get_jobs_and_object_manager(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1)):
        first = await client.migrate("/vms/a.vmx")
        second = await client.migrate("/vms/b.vmx", {"format": Variant("s", "raw")})
        await client.wait_for(first, "Completed")
        await client.wait_for(second, "Completed")
        (jobs,) = await client.call_ok(BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetJobs")
        (managed,) = await client.call_ok(
            BUS_NAME, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"
        )
    assert jobs == [job_path(1), job_path(2)] == [first, second]
    assert sorted(managed) == jobs
    job2 = managed[second][JOB_IFACE]
    assert job2["Source"].value == "/vms/b.vmx"
    assert job2["State"].value == "completed"
    assert job2["Options"].value["format"].value == "raw"
    added = [s.body[0] for s in client.signals if s.member == "InterfacesAdded" and s.path == MANAGER_PATH]
    assert added == jobs


@pytest.mark.parametrize(
    ("interface", "member", "signature", "body"),
    [
        (JOB_IFACE, "Cancel", "", []),
        ("org.freedesktop.DBus.Properties", "GetAll", "s", [JOB_IFACE]),
        ("org.freedesktop.DBus.Properties", "Get", "ss", [JOB_IFACE, "State"]),
    ],
)
async def test_unknown_job_is_no_such_job(
    private_bus: str, client: BusClient, interface: str, member: str, signature: str, body: list[object]
) -> None:
    async with serve_daemon(private_bus):
        reply = await client.call(BUS_NAME, f"{JOBS_PATH}/42", interface, member, signature, body)
    assert_error(reply, "org.vm2kvm.Error.NoSuchJob", "no such job 42")


async def test_migrate_during_shutdown_is_refused(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus) as daemon:
        await daemon.manager.shutdown()
        reply = await client.manager("Migrate", "sa{sv}", ["/vms/a.vmx", {}])
    assert_error(reply, "org.vm2kvm.Error.Cancelled", "shutting down")


def test_every_exported_method_translates_errors() -> None:
    job = JobObject(Job(1, "/vms/a.vmx", MigrateOptions(), ScriptedRunner()))
    for interface in (Manager(), job):
        methods = dbus_methods(interface)
        assert methods
        for name, fn in methods:
            assert is_translated(fn), name
