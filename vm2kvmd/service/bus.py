"""The daemon's bus connection.

dbus-fast answers ``org.freedesktop.DBus.ObjectManager.GetManagedObjects`` on
every exported path, and emits ``InterfacesAdded``/``InterfacesRemoved`` when
objects are exported or removed -- but from the *new object's* path.  The
D-Bus specification (and GDBus/sd-bus clients, see systemd#2986) expect them
from the ObjectManager's own path, with the object's path as the first
argument.  ``ServiceBus`` sends them from ``/org/vm2kvm/Daemon1`` for objects
below it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface
from dbus_fast.signature import Variant

from vm2kvmd.constants import MANAGER_PATH, OBJECT_MANAGER_IFACE

BUS_TYPES = {"system": BusType.SYSTEM, "session": BusType.SESSION}


@runtime_checkable
class PropertySource(Protocol):
    """An interface that can list its property values (``Job.properties``)."""

    name: str

    def properties(self) -> dict[str, Any]: ...


def _managed(path: str) -> bool:
    return path.startswith(MANAGER_PATH + "/")


class ServiceBus(MessageBus):
    """A ``MessageBus`` whose ObjectManager signals come from the manager object."""

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if not (_managed(path) and isinstance(interface, PropertySource)):
            super()._emit_interface_added(path, interface)
            return
        if not self.connected:
            return
        signatures = {prop.name: prop.signature for prop in interface.introspect().properties}
        values = {
            name: Variant(signatures[name], value)
            for name, value in interface.properties().items()
            if name in signatures
        }
        self.send(
            Message.new_signal(
                MANAGER_PATH,
                OBJECT_MANAGER_IFACE,
                "InterfacesAdded",
                "oa{sa{sv}}",
                [path, {interface.name: values}],
            )
        )

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        if not _managed(path):
            super()._emit_interface_removed(path, removed_interfaces)
            return
        if not self.connected:
            return
        self.send(
            Message.new_signal(
                MANAGER_PATH, OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas", [path, removed_interfaces]
            )
        )


async def connect(bus: str = "system", address: str | None = None) -> ServiceBus:
    """Connect to the ``system`` or ``session`` bus (address from the environment unless given).

    Raises ``OSError`` or dbus-fast's ``InvalidAddressError``/``AuthError``.
    """
    service_bus = ServiceBus(bus_address=address, bus_type=BUS_TYPES[bus])
    await service_bus.connect()
    return service_bus
