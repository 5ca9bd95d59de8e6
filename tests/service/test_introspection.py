"""dbus/*.xml describe exactly what the running daemon exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dbus_fast import introspection as intr

from tests.service.support import BusClient, ScriptedRunner, serve_daemon
from vm2kvmd.constants import (
    BUS_NAME,
    JOB_IFACE,
    JOBS_PATH,
    MANAGER_IFACE,
    MANAGER_PATH,
    OBJECT_MANAGER_IFACE,
)

DBUS_DIR = Path(__file__).resolve().parents[2] / "dbus"


def describe(interface: intr.Interface) -> dict[str, Any]:
    """Members and signatures; argument names too (they document the API)."""
    return {
        "methods": {
            m.name: (
                [(a.name, a.signature) for a in m.in_args],
                [(a.name, a.signature) for a in m.out_args],
            )
            for m in interface.methods
        },
        "signals": {s.name: [(a.name, a.signature) for a in s.args] for s in interface.signals},
        "properties": {p.name: (p.signature, p.access.value) for p in interface.properties},
    }


def from_file(name: str) -> intr.Interface:
    node = intr.Node.parse((DBUS_DIR / f"{name}.xml").read_text())
    (interface,) = node.interfaces
    assert interface.name == name
    return interface


async def introspect(client: BusClient, path: str) -> intr.Node:
    (xml,) = await client.call_ok(BUS_NAME, path, "org.freedesktop.DBus.Introspectable", "Introspect")
    return intr.Node.parse(xml)


def interface_of(node: intr.Node, name: str) -> intr.Interface:
    (found,) = [i for i in node.interfaces if i.name == name]
    return found


async def test_live_objects_match_the_xml_files(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1)):
        path = await client.migrate("/vms/a.vmx")
        manager = await introspect(client, MANAGER_PATH)
        jobs = await introspect(client, JOBS_PATH)
        job = await introspect(client, path)

    assert describe(interface_of(manager, MANAGER_IFACE)) == describe(from_file(MANAGER_IFACE))
    assert describe(interface_of(job, JOB_IFACE)) == describe(from_file(JOB_IFACE))
    # The manager is also the ObjectManager of the jobs, which are its children.
    assert interface_of(manager, OBJECT_MANAGER_IFACE)
    assert [n.name for n in manager.nodes] == ["jobs"]
    assert [n.name for n in jobs.nodes] == [path.rsplit("/", 1)[1]]


def test_xml_files_document_every_member() -> None:
    for name in (MANAGER_IFACE, JOB_IFACE):
        text = (DBUS_DIR / f"{name}.xml").read_text()
        interface = from_file(name)
        names = [m.name for m in interface.methods] + [s.name for s in interface.signals]
        for member in names:
            # Each method and signal is preceded by a comment naming it.
            assert f"{member}:" in text, member
