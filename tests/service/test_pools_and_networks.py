"""Manager1.ListPoolsAndNetworks over a real private bus, against libvirt's own test driver.

``test:///default`` is libvirt's built-in test hypervisor (in libvirt itself, no daemon): one
active dir pool ``default-pool`` and one active network ``default`` on ``virbr0``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import libvirt
from dbus_fast import MessageType
from dbus_fast.signature import Variant

from tests.service.support import BusClient, serve_daemon
from tests.service.test_manager import assert_error
from vm2kvmd.adapters.libvirt_targets import host_bridges
from vm2kvmd.constants import MANAGER_IFACE
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.service.auth import ACTION_INSPECT, rule_for

TEST_URI = "test:///default"


async def test_lists_pools_networks_and_the_daemon_defaults(private_bus: str, client: BusClient) -> None:
    defaults = MigrateOptions(default_pool="vmstore", default_network="lan")
    async with serve_daemon(private_bus, defaults=defaults):
        reply = await client.manager("ListPoolsAndNetworks", "a{sv}", [{"connect": Variant("s", TEST_URI)}])
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    data = json.loads(reply.body[0])
    bridges = await asyncio.to_thread(host_bridges)  # sysfs: not on the event loop
    conn = libvirt.open(TEST_URI)
    try:
        (pool,) = conn.listAllStoragePools(0)
        _state, capacity, _alloc, available = pool.info()
    finally:
        conn.close()
    assert data == {
        "connect": TEST_URI,
        "default_pool": "vmstore",
        "default_network": "lan",
        "pools": [
            {
                "name": "default-pool",
                "type": "dir",
                "active": True,
                "path": "/default-pool",
                "capacity": capacity,
                "available": available,
                "usable": True,
            }
        ],
        "networks": [{"name": "default", "active": True, "bridge": "virbr0"}],
        "bridges": bridges,
    }


async def test_unknown_option_and_unreachable_libvirt_are_named(private_bus: str, client: BusClient) -> None:
    async with serve_daemon(private_bus):
        unknown = await client.manager("ListPoolsAndNetworks", "a{sv}", [{"pool": Variant("s", "x")}])
        gone = await client.manager(
            "ListPoolsAndNetworks",
            "a{sv}",
            [{"connect": Variant("s", "qemu+unix:///system?socket=/nonexistent")}],
        )
    assert_error(unknown, "org.vm2kvm.Error.InvalidOption", "'pool'", "connect")
    assert_error(gone, "org.vm2kvm.Error.LibvirtUnavailable", "qemu+unix:///system?socket=/nonexistent")


def test_host_bridges_are_the_interfaces_with_a_bridge_directory(tmp_path: Path) -> None:
    # sysfs as the kernel lays it out: every interface a directory, a bridge with bridge/ in it.
    for name, bridge in [("eth0", False), ("br0", True), ("virbr0", True), ("bond0", False)]:
        (tmp_path / name).mkdir()
        if bridge:
            (tmp_path / name / "bridge").mkdir()
    assert host_bridges(tmp_path) == ["br0", "virbr0"]
    assert host_bridges(tmp_path / "missing") == []


def test_needs_the_inspect_action() -> None:
    # Listing the host's storage is preparing a migration: what Inspect needs, not open to all.
    rule = rule_for(MANAGER_IFACE, "ListPoolsAndNetworks")
    assert rule is not None
    assert rule.actions_for(1000, None) == (ACTION_INSPECT,)
