"""dbus/*.xml describe exactly what the running daemon exports, and every exported method has an
authorization rule."""

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
from vm2kvmd.service.auth import RULES, rule_for

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


async def walk(client: BusClient, path: str = "/") -> list[tuple[str, intr.Node]]:
    """Every object the daemon exports at or below ``path``, as its introspection describes it."""
    node = await introspect(client, path)
    found = [(path, node)]
    for child in node.nodes:
        assert child.name is not None
        found += await walk(client, f"{path.rstrip('/')}/{child.name}")
    return found


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


async def test_every_exported_method_has_an_authorization_rule(private_bus: str, client: BusClient) -> None:
    """Default deny made visible: a method (or a writable property) nobody wrote a rule for fails here,
    found on the live objects as clients see them, not on our own declarations."""
    async with serve_daemon(private_bus, runner=ScriptedRunner(steps=1)):
        await client.migrate("/vms/a.vmx")  # a job object to walk too
        objects = await walk(client)

    methods: set[tuple[str, str]] = set()
    writable: list[str] = []
    for path, node in objects:
        for interface in node.interfaces:
            if interface.name.startswith("org.freedesktop.DBus."):
                continue  # dbus-fast's own: Properties.Set is refused, the rest is read-only
            methods |= {(interface.name, m.name) for m in interface.methods}
            where = f"{path} {interface.name}"
            writable += [f"{where}.{p.name}" for p in interface.properties if p.access.writable()]
    assert {iface for iface, _ in methods} == {MANAGER_IFACE, JOB_IFACE}
    missing = sorted(f"{iface}.{member}" for iface, member in methods if rule_for(iface, member) is None)
    assert not missing, f"no authorization rule in service/auth.py RULES (refused to everyone): {missing}"
    # Properties.Set is refused to everyone: a writable property needs a rule for its setter first.
    assert not writable, f"writable properties, which nobody could set: {writable}"
    # And no rule outlives its method.
    assert set(RULES) == methods
