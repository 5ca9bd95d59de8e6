"""File descriptors callers attach: a method with an ``h`` argument gets its fd (and owns it);
a refused call's fds, and fds no argument names, are closed by the bus at once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusStr, DBusUnixFd

from vm2kvmd.service.bus import ServiceBus, connect
from vm2kvmd.service.interface import BusInterface, bus_method

PATH = "/org/vm2kvm/Test"
IFACE = "org.vm2kvm.Test"


class NoRules(BusInterface):
    """A method that takes an fd but has no rule in ``RULES``: refused to everyone."""

    def __init__(self) -> None:
        super().__init__(IFACE)

    @bus_method()
    def Take(self, fd: DBusUnixFd) -> DBusStr:
        raise AssertionError("a method without a rule ran")


@pytest.fixture
async def service(private_bus: str) -> AsyncIterator[ServiceBus]:
    bus = await connect("session", private_bus)
    bus.export(PATH, NoRules())
    yield bus
    bus.disconnect()
    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


def everyone_else_closed(write_end: int) -> bool:
    """Whether every read end of the pipe is closed (ours was): a write then fails with EPIPE."""
    try:
        os.write(write_end, b"x")
    except BrokenPipeError:
        return True
    return False


async def test_a_refused_call_has_its_fds_closed(private_bus: str, service: ServiceBus) -> None:
    sender = await MessageBus(bus_address=private_bus, negotiate_unix_fd=True).connect()
    read_end, write_end = os.pipe()
    try:
        reply = await sender.call(
            Message(
                destination=service.unique_name,
                path=PATH,
                interface=IFACE,
                member="Take",
                signature="h",
                body=[0],
                unix_fds=[read_end],
            )
        )
        os.close(read_end)
        assert reply is not None and reply.message_type is MessageType.ERROR
        assert reply.error_name == "org.vm2kvm.Error.NotAuthorized"
        assert everyone_else_closed(write_end)
    finally:
        os.close(write_end)
        sender.disconnect()
        await sender.wait_for_disconnect()  # type: ignore[no-untyped-call]
