"""The daemon's bus connection.

dbus-fast answers ``org.freedesktop.DBus.ObjectManager.GetManagedObjects`` on
every exported path, and emits ``InterfacesAdded``/``InterfacesRemoved`` when
objects are exported or removed -- but from the *new object's* path.  The
D-Bus specification (and GDBus/sd-bus clients, see systemd#2986) expect them
from the ObjectManager's own path, with the object's path as the first
argument.  ``ServiceBus`` sends them from ``/org/vm2kvm/Daemon1`` for objects
below it.

It also guards every exported method: ``_make_method_handler`` (dbus-fast's
hook that builds the handler of each method of an exported interface) wraps
the handler so the call is authorized first (``service/auth.py``: the
sender's credentials, the method's rule, polkit), then runs with
``caller.CURRENT`` set to the sender.  Properties, ``Introspect``, ``Peer``
and ``GetManagedObjects`` are dbus-fast's own handlers and stay readable by
anyone; ``Properties.Set`` on our objects is refused to everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from dbus_fast import BusType, Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.send_reply import SendReply
from dbus_fast.service import ServiceInterface, _Method
from dbus_fast.signature import Variant

from vm2kvmd.constants import MANAGER_PATH, OBJECT_MANAGER_IFACE, PROPERTIES_IFACE
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.auth import Authorizer, OwnerOf, is_exempt
from vm2kvmd.service.caller import CURRENT, Caller
from vm2kvmd.service.errors import to_dbus_error

log = logging.getLogger(__name__)

BUS_TYPES = {"system": BusType.SYSTEM, "session": BusType.SESSION}

# dbus-fast's method handler: (call, reply sender) -> None.
Handler = Callable[[Message, Any], None]


@runtime_checkable
class PropertySource(Protocol):
    """An interface that can list its property values (``Job.properties``)."""

    name: str

    def properties(self) -> dict[str, Any]: ...
    def variants(self) -> dict[str, Variant]: ...  # properties() wrapped as the bus sends them


def _managed(path: str) -> bool:
    return path.startswith(MANAGER_PATH + "/")


def _run_as(caller: Caller, handler: Handler, msg: Message, send_reply: Any) -> None:
    """Run dbus-fast's handler with ``CURRENT`` = ``caller``.

    A coroutine method becomes a task inside ``handler``; the task copies the
    context then, so it sees ``caller`` too.
    """
    token = CURRENT.set(caller)
    try:
        if isinstance(send_reply, SendReply):
            with send_reply:  # a synchronous method's exception becomes its error reply
                handler(msg, send_reply)
        else:
            handler(msg, send_reply)
    finally:
        CURRENT.reset(token)


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
        self._auth_tasks: set[asyncio.Task[None]] = set()
        self.add_message_handler(self.authorizer.on_message)
        self.add_message_handler(self._refuse_property_writes)

    @property
    def owner_of(self) -> OwnerOf | None:
        return self.authorizer.owner_of

    @owner_of.setter
    def owner_of(self, owner_of: OwnerOf | None) -> None:
        self.authorizer.owner_of = owner_of

    def _refuse_property_writes(self, msg: Message) -> Message | bool | None:
        """``Properties.Set`` on our objects is refused: all our properties are read-only, and a
        writable one must not slip past the method rules (default deny)."""
        if (
            msg.message_type is not MessageType.METHOD_CALL
            or msg.interface != PROPERTIES_IFACE
            or msg.member != "Set"
            or not (msg.path == MANAGER_PATH or _managed(msg.path or ""))
        ):
            return None
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        err = to_dbus_error(
            Vm2kvmError(ErrorCode.NOT_AUTHORIZED, "vm2kvmd properties are read-only; nobody may set them")
        )
        return Message.new_error(msg, err.type, err.text)

    def _make_method_handler(self, interface: ServiceInterface, method: _Method) -> Handler:
        inner: Handler = super()._make_method_handler(interface, method)
        iface, member = interface.name, method.name
        if is_exempt(iface, member):
            return inner

        def guarded(msg: Message, send_reply: Any) -> None:
            caller = self.authorizer.decide_cached(msg, iface, member)
            if caller is not None:
                # Known root: no round trip, and calls keep their order.
                _run_as(caller, inner, msg, send_reply)
                return
            task = asyncio.get_running_loop().create_task(
                self._authorized(inner, iface, member, msg, send_reply),
                name=f"vm2kvmd authorize {member}",
            )
            self._auth_tasks.add(task)
            task.add_done_callback(self._auth_tasks.discard)

        return guarded

    async def _authorized(
        self, inner: Handler, iface: str, member: str, msg: Message, send_reply: Any
    ) -> None:
        try:
            caller = await self.authorizer.authorize(msg, iface, member)
        except Exception as exc:
            err = to_dbus_error(exc, member=f"authorization of {iface}.{member}")
            known = self.authorizer.cached(msg.sender)
            log.info(
                "refused %s.%s to %s%s: %s",
                iface,
                member,
                msg.sender,
                f" (uid {known.uid}, pid {known.pid})" if known else "",
                err.text,
            )
            wanted = isinstance(send_reply, SendReply) and not msg.flags & MessageFlag.NO_REPLY_EXPECTED
            if wanted and self.connected:
                self.send(Message.new_error(msg, err.type, err.text))
            return
        _run_as(caller, inner, msg, send_reply)

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if not (_managed(path) and isinstance(interface, PropertySource)):
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

    def _default_get_managed_objects_handler(self, msg: Message, send_reply: SendReply) -> None:
        """The jobs' values straight from ``variants()``.

        dbus-fast's own handler asks every property getter of every object, one
        call (and one coroutine check) each: 200 ms for 1,000 finished jobs.
        Anything that is not a ``PropertySource`` below the path keeps that handler.
        """
        base = msg.path or "/"
        result: dict[str, dict[str, dict[str, Variant]]] = {}
        for node, interfaces in self._path_exports.items():
            if base != "/" and not node.startswith(base + "/"):
                continue
            values: dict[str, dict[str, Variant]] = {}
            for interface in interfaces.values():
                if not isinstance(interface, PropertySource):
                    super()._default_get_managed_objects_handler(msg, send_reply)
                    return
                values[interface.name] = interface.variants()
            result[node] = values
        send_reply(Message.new_method_return(msg, "a{oa{sa{sv}}}", [result]))

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
    service_bus.add_message_handler(_drop_unexpected_fds)
    await service_bus.connect()
    return service_bus


def _drop_unexpected_fds(msg: Message) -> None:
    """Close the fds a peer attaches to a call or signal: no exported method takes one, and
    dbus-fast never closes what it receives, so any caller could exhaust our fd table.
    Replies to our own calls (logind's inhibitor) are not affected.  Never handles the message."""
    if msg.unix_fds and msg.message_type in (MessageType.METHOD_CALL, MessageType.SIGNAL):
        for fd in msg.unix_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        msg.unix_fds.clear()
