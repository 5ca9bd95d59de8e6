"""The daemon's bus connection.

Every method call on an exported object is authorized before it runs: a
``Dispatcher`` (``service/dispatch.py``), added as a message handler, takes
each call before dbus-fast's own dispatch.  ``ServiceBus`` tells it what is
exported (it overrides the public ``export``/``unexport``).

dbus-fast emits ``InterfacesAdded``/``InterfacesRemoved`` when objects are
exported or removed -- but from the *new object's* path.  The D-Bus
specification (and GDBus/sd-bus clients, see systemd#2986) expect them from
the ObjectManager's own path, with the object's path as the first argument.
``ServiceBus`` sends them from ``/org/vm2kvm/Daemon1`` for objects below it.
This overrides two private methods of dbus-fast, the only ones we still use:
there is no public way to keep it from sending its own.  Authorization does
not depend on them; if they were renamed, clients would get the signals from
the jobs' paths instead (tests/service/test_manager.py notices).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from vm2kvmd.constants import MANAGER_PATH, OBJECT_MANAGER_IFACE
from vm2kvmd.service.auth import Authorizer, OwnerOf
from vm2kvmd.service.dispatch import Dispatcher, PropertySource, close_fds, managed

log = logging.getLogger(__name__)

BUS_TYPES = {"system": BusType.SYSTEM, "session": BusType.SESSION}


class ServiceBus(MessageBus):
    """A ``MessageBus`` that authorizes every method call and sends ObjectManager
    signals from the manager object.

    ``owner_of(path)``: the uid that started the job at ``path`` (None when
    there is none), for the job methods' rules; settable after creation.
    Without it every job counts as someone else's (more is asked of polkit).
    """

    def __init__(self, *args: Any, owner_of: OwnerOf | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.authorizer = Authorizer(self, owner_of)
        self.dispatcher = Dispatcher(self, self.authorizer)
        # First: the fds of every call are closed, whoever handles it, except those of a call
        # to a method that takes one (the dispatcher hands them over).  The dispatcher stays last.
        self.add_message_handler(self._drop_unexpected_fds)
        self.add_message_handler(self.authorizer.on_message)

    def add_message_handler(self, handler: Callable[[Message], Message | bool | None]) -> None:
        """Add ``handler`` ahead of the dispatcher, which takes every call of an exported method:
        handlers added later see those calls too (and one that answers a call keeps our method
        from running, never runs it unauthorized)."""
        dispatch = getattr(self, "dispatcher", None)
        if dispatch is not None:
            super().remove_message_handler(dispatch.on_message)
        super().add_message_handler(handler)
        if dispatch is not None:
            super().add_message_handler(dispatch.on_message)

    @property
    def owner_of(self) -> OwnerOf | None:
        return self.authorizer.owner_of

    @owner_of.setter
    def owner_of(self, owner_of: OwnerOf | None) -> None:
        self.authorizer.owner_of = owner_of

    def export(self, path: str, interface: ServiceInterface) -> None:
        super().export(path, interface)
        self.dispatcher.exported(path, interface)

    def unexport(self, path: str, interface: ServiceInterface | str | None = None) -> None:
        super().unexport(path, interface)
        self.dispatcher.unexported(path, interface)

    def _drop_unexpected_fds(self, msg: Message) -> None:
        """Close the fds a peer attaches to a call or signal unless the call goes to one of our
        methods with an ``h`` argument (the dispatcher hands those to the method and closes the
        rest): dbus-fast never closes what it receives, so any caller could exhaust our fd table.
        Replies to our own calls (logind's inhibitor) are not affected.  Never handles the message."""
        if not msg.unix_fds or msg.message_type not in (MessageType.METHOD_CALL, MessageType.SIGNAL):
            return
        if not self.dispatcher.takes_fds(msg):
            close_fds(msg)

    # --- ObjectManager signals (private dbus-fast hooks, see the module doc) -------------------

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if not (managed(path) and isinstance(interface, PropertySource)):
            super()._emit_interface_added(path, interface)
            return
        if not self.connected:
            return
        values = interface.variants()
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
        if not managed(path):
            super()._emit_interface_removed(path, removed_interfaces)
            return
        if not self.connected:
            return
        self.send(
            Message.new_signal(
                MANAGER_PATH, OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas", [path, removed_interfaces]
            )
        )


async def connect(
    bus: str = "system", address: str | None = None, *, owner_of: OwnerOf | None = None
) -> ServiceBus:
    """Connect to the ``system`` or ``session`` bus (address from the environment unless given).

    ``owner_of``: ``Manager.job_owner`` (see ``ServiceBus``).  Raises
    ``OSError`` or dbus-fast's ``InvalidAddressError``/``AuthError``.
    """
    # File descriptors: logind's Inhibit answers with one (service.inhibit).
    service_bus = ServiceBus(
        bus_address=address, bus_type=BUS_TYPES[bus], owner_of=owner_of, negotiate_unix_fd=True
    )
    await service_bus.connect()
    return service_bus
