"""Every method call on an exported object, authorized before it runs.

``Dispatcher.on_message`` is a message handler (dbus-fast's public
``add_message_handler``: handlers see each message before dbus-fast's own
dispatch) that takes every method call on an object exported through
``ServiceBus``:

* a method of our interfaces is looked up in our own table
  (``service/interface.py``, ``exported_methods``), authorized
  (``service/auth.py``: the method's rule, the sender's credentials, polkit)
  and run with ``caller.CURRENT`` set to the sender; its reply or error
  (``to_dbus_error``, never a traceback) is sent from here.  A method without
  a rule, or not declared with ``@bus_method``, is refused to everyone, root
  included (default deny);
* ``Properties.Set`` on our objects is refused to everyone: all our
  properties are read-only, and a writable one must not slip past the rules;
* file descriptors: a method whose arguments include an ``h`` (``ListVms``: the
  password) gets the fd itself (the message's ``unix_fds`` at the index the
  body holds) and owns it from then on; an ``h`` option of an ``a{sv}``
  argument (``Migrate``'s ``bitlocker-key``) reaches the method as a
  ``PassedFd`` that it ``take()``s, and is closed here after the call if it
  did not; every other fd of the call, and all of them when the call is
  refused, are closed here (``takes_fds``: the bus's first handler leaves
  these calls' fds to us and closes everyone else's);
* ``Properties.Get``/``GetAll``, ``Introspect`` and ``Peer`` stay dbus-fast's
  and readable by anyone, and so does ``GetManagedObjects``, answered here
  from the jobs' own values when every object below the path can give them.

dbus-fast never runs one of our methods itself: what it holds is a stand-in
that refuses (``@bus_method``).  Only public dbus-fast API is used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import Coroutine
from typing import Any, Final, Protocol, runtime_checkable

from dbus_fast import Message, MessageFlag, MessageType, SignatureTree
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface
from dbus_fast.signature import Variant

from vm2kvmd.constants import MANAGER_PATH, OBJECT_MANAGER_IFACE, PROPERTIES_IFACE
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.auth import Authorizer, rule_for, unknown_method
from vm2kvmd.service.caller import CURRENT, Caller
from vm2kvmd.service.errors import to_dbus_error
from vm2kvmd.service.interface import ExportedMethod, exported_methods

log = logging.getLogger(__name__)

# dbus-fast's own interfaces on every object (its handlers, readable by anyone).
_STANDARD_PREFIX: Final = "org.freedesktop.DBus."


@runtime_checkable
class PropertySource(Protocol):
    """An interface that can list its property values (``JobObject.properties``)."""

    name: str

    def properties(self) -> dict[str, Any]: ...
    def variants(self) -> dict[str, Variant]: ...  # properties() wrapped as the bus sends them


def managed(path: str) -> bool:
    """Whether ``path`` is below the manager (a job, or the jobs' parent)."""
    return path.startswith(MANAGER_PATH + "/")


# The object a call goes to, and its method.
Target = tuple[ServiceInterface, ExportedMethod]


def _wants_reply(msg: Message) -> bool:
    return not msg.flags & MessageFlag.NO_REPLY_EXPECTED


def close_fds(msg: Message) -> None:
    """Close the fds a call carries (dbus-fast never closes what it receives)."""
    for fd in msg.unix_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    msg.unix_fds.clear()


class PassedFd:
    """An fd a caller sent as an ``h`` option inside ``a{sv}``: the method that wants it
    ``take``s it (and must close it); otherwise the dispatcher closes it after the call."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def __repr__(self) -> str:
        return "PassedFd()"

    def take(self) -> int:
        fd, self._fd = self._fd, None
        if fd is None:
            raise Vm2kvmError(ErrorCode.INTERNAL, "a passed file descriptor was taken twice")
        return fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _takes_fd(method: ExportedMethod) -> bool:
    return "h" in method.in_signature or "a{sv}" in method.in_signature


def _fd_index(msg: Message, method: ExportedMethod, index: object, handed: set[int], what: str) -> int:
    if not isinstance(index, int) or not 0 <= index < len(msg.unix_fds) or index in handed:
        close_fds(msg)
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"{what} of {method.name} names no file descriptor the call carries",
            hint="attach the file descriptor to the call (D-Bus type h)",
        )
    handed.add(index)
    return index


def _fd_arguments(msg: Message, method: ExportedMethod) -> tuple[list[Any], list[PassedFd]]:
    """The call's arguments with each top-level ``h`` (an index into ``unix_fds``, as the body
    carries it) replaced by the fd itself, and each ``h`` option of an ``a{sv}`` by a
    ``PassedFd`` (also returned, to be closed after the call); every other fd is closed."""
    args = list(msg.body)
    handed: set[int] = set()
    passed: list[PassedFd] = []
    for position, kind in enumerate(SignatureTree(method.in_signature).types):
        if kind.token == "h":
            what = f"argument {position + 1}"
            args[position] = msg.unix_fds[_fd_index(msg, method, args[position], handed, what)]
        elif kind.signature == "a{sv}":
            options = dict(args[position])
            for key, value in options.items():
                if isinstance(value, Variant) and value.signature == "h":
                    index = _fd_index(msg, method, value.value, handed, f"option {key!r}")
                    options[key] = PassedFd(msg.unix_fds[index])
                    passed.append(options[key])
            args[position] = options
    for index, fd in enumerate(msg.unix_fds):
        if index not in handed:
            with contextlib.suppress(OSError):
                os.close(fd)
    msg.unix_fds.clear()  # the method owns the handed ones now
    return args, passed


def _close_all(passed: list[PassedFd]) -> None:
    for fd in passed:
        fd.close()


class Dispatcher:
    """Runs the calls of the objects exported on ``bus`` once ``authorizer`` allows them."""

    def __init__(self, bus: MessageBus, authorizer: Authorizer) -> None:
        self._bus = bus
        self._authorizer = authorizer
        # path -> interface name -> interface: what ServiceBus exported.
        self._objects: dict[str, dict[str, ServiceInterface]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def exported(self, path: str, interface: ServiceInterface) -> None:
        self._objects.setdefault(path, {})[interface.name] = interface

    def unexported(self, path: str, interface: ServiceInterface | str | None) -> None:
        interfaces = self._objects.get(path, {})
        if interface is None:
            interfaces.clear()
        else:
            interfaces.pop(interface if isinstance(interface, str) else interface.name, None)
        if not interfaces:
            self._objects.pop(path, None)

    def takes_fds(self, msg: Message) -> bool:
        """Whether ``msg`` calls one of our methods with an ``h`` argument: its fds are ours."""
        if msg.message_type is not MessageType.METHOD_CALL or not msg.unix_fds:
            return False
        interfaces = self._objects.get(msg.path or "", {})
        if msg.interface is not None and msg.interface not in interfaces:
            return False
        target = self._find(msg, interfaces)
        return target is not None and _takes_fd(target[1])

    def on_message(self, msg: Message) -> Message | bool | None:
        """The message handler: takes every call of an exported method (see the module doc)."""
        if msg.message_type is not MessageType.METHOD_CALL:
            return None
        path = msg.path or ""
        interfaces = self._objects.get(path, {})
        if msg.interface is not None and msg.interface not in interfaces:
            if msg.interface.startswith(_STANDARD_PREFIX):
                return self._standard(msg, path, bool(interfaces))
            return None  # dbus-fast's UnknownMethod/UnknownObject
        target = self._find(msg, interfaces)
        if target is None:
            return None  # no such member or signature: dbus-fast's UnknownMethod
        return self._call(msg, target)

    def _find(self, msg: Message, interfaces: dict[str, ServiceInterface]) -> Target | None:
        """The exported method a call means (any interface when it names none, as dbus-fast does)."""
        candidates = [interfaces[msg.interface]] if msg.interface is not None else interfaces.values()
        for interface in candidates:
            method = exported_methods(interface).get(msg.member or "")
            if method is not None and method.in_signature == msg.signature:
                return interface, method
        return None

    def _call(self, msg: Message, target: Target) -> Message | bool:
        method = target[1]
        iface, member = method.interface, method.name
        rule = rule_for(iface, member)
        if rule is None or method.method is None:
            # Default deny: a method nobody wrote a rule for is refused to everyone, root too.
            close_fds(msg)
            self._refused(msg, iface, member, unknown_method(iface, member))
            return True
        if rule.exempt:
            self._run(msg, target, None)
            return True
        caller = self._authorizer.decide_cached(msg, iface, member)
        if caller is not None:
            # Known root: no round trip, and calls keep their order.
            self._run(msg, target, caller)
            return True
        self._spawn(self._authorize_and_run(msg, target), f"vm2kvmd authorize {member}")
        return True

    async def _authorize_and_run(self, msg: Message, target: Target) -> None:
        method = target[1]
        try:
            caller = await self._authorizer.authorize(msg, method.interface, method.name)
        except Exception as exc:
            close_fds(msg)
            self._refused(msg, method.interface, method.name, exc)
            return
        except BaseException:  # cancelled (the daemon stops): the fds are still ours to close
            close_fds(msg)
            raise
        self._run(msg, target, caller)

    def _run(self, msg: Message, target: Target, caller: Caller | None) -> None:
        """Run the method as ``caller`` (None: an exempt method, run for anyone) and reply.

        A coroutine method becomes a task while ``CURRENT`` is set: the task copies
        the context then, so it sees ``caller`` too.
        """
        interface, method = target
        assert method.method is not None
        token = CURRENT.set(caller)
        passed: list[PassedFd] = []
        try:
            args = msg.body
            if _takes_fd(method):
                args, passed = _fd_arguments(msg, method)
            try:
                result = method.method.fn(interface, *args)
            except BaseException:
                _close_all(passed)
                raise
            if not inspect.isawaitable(result):
                # Passed fds the method did not take are closed before the caller hears back.
                _close_all(passed)
            else:
                self._spawn(self._reply_later(msg, method, result, passed), f"vm2kvmd {method.name}")
                return
        except Exception as exc:
            self._reply_error(msg, method, exc)
            return
        finally:
            CURRENT.reset(token)
        self._reply(msg, method, result)

    async def _reply_later(
        self, msg: Message, method: ExportedMethod, result: Any, passed: list[PassedFd]
    ) -> None:
        try:
            try:
                value = await result
            finally:
                _close_all(passed)
        except asyncio.CancelledError:
            # The daemon is stopping: the caller gets an answer rather than a timeout.
            self._reply_error(msg, method, Vm2kvmError(ErrorCode.CANCELLED, "vm2kvmd is shutting down"))
            raise
        except Exception as exc:
            self._reply_error(msg, method, exc)
            return
        self._reply(msg, method, value)

    def _reply(self, msg: Message, method: ExportedMethod, result: Any) -> None:
        if not _wants_reply(msg) or not self._bus.connected:
            return
        try:
            body = method.reply_body(result)
        except Exception as exc:  # a method returned what its signature does not allow
            self._reply_error(msg, method, exc)
            return
        self._bus.send(Message.new_method_return(msg, method.out_signature, body))

    def _reply_error(self, msg: Message, method: ExportedMethod, exc: Exception) -> None:
        member = f"{method.interface}.{method.name}"
        err = exc if isinstance(exc, DBusError) else to_dbus_error(exc, member=member)
        if _wants_reply(msg) and self._bus.connected:
            self._bus.send(Message.new_error(msg, err.type, err.text))

    def _refused(self, msg: Message, iface: str, member: str, exc: Exception) -> None:
        err = to_dbus_error(exc, member=f"authorization of {iface}.{member}")
        known = self._authorizer.cached(msg.sender)
        log.info(
            "refused %s.%s to %s%s: %s",
            iface,
            member,
            msg.sender,
            f" (uid {known.uid}, pid {known.pid})" if known else "",
            err.text,
        )
        if _wants_reply(msg) and self._bus.connected:
            self._bus.send(Message.new_error(msg, err.type, err.text))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- dbus-fast's standard interfaces -------------------------------------------------------

    def _standard(self, msg: Message, path: str, exported: bool) -> Message | bool | None:
        ours = exported or path == MANAGER_PATH or managed(path)
        if msg.interface == PROPERTIES_IFACE and msg.member == "Set" and ours:
            if not _wants_reply(msg):
                return True
            err = to_dbus_error(
                Vm2kvmError(ErrorCode.NOT_AUTHORIZED, "vm2kvmd properties are read-only; nobody may set them")
            )
            return Message.new_error(msg, err.type, err.text)
        if msg.interface == OBJECT_MANAGER_IFACE and msg.member == "GetManagedObjects" and not msg.signature:
            return self._managed_objects(msg, path)
        return None

    def _managed_objects(self, msg: Message, base: str) -> Message | bool | None:
        """The jobs' values straight from ``variants()``.

        dbus-fast's own answer asks every property getter of every object, one
        call (and one coroutine check) each: 200 ms for 1,000 finished jobs.
        Anything that is not a ``PropertySource`` below the path keeps that answer.
        """
        result: dict[str, dict[str, dict[str, Variant]]] = {}
        for node, interfaces in self._objects.items():
            if base != "/" and not node.startswith(base + "/"):
                continue
            values: dict[str, dict[str, Variant]] = {}
            for interface in interfaces.values():
                if not isinstance(interface, PropertySource):
                    return None
                values[interface.name] = interface.variants()
            result[node] = values
        if not _wants_reply(msg):
            return True
        return Message.new_method_return(msg, "a{oa{sa{sv}}}", [result])
