"""``BusInterface`` and ``@bus_method``: how our exported interfaces declare their methods.

dbus-fast runs a ``@dbus_method`` for any caller without asking anyone.  Our
methods are declared with ``@bus_method`` instead: dbus-fast is given (through
its public ``dbus_method``) a stand-in with the method's signature -- so
introspection is unchanged -- that refuses every call, and the method itself
is kept in our own table (``exported_methods``).  Only ``ServiceBus``'s
dispatcher (``service/bus.py``) uses that table, after authorizing the call:
if dbus-fast ever dispatched one of our methods itself, the caller would get
``NotAuthorized``, never the method.

The methods in the table translate any exception through ``to_dbus_error``,
and ``BusInterface.introspect`` (dbus-fast's public hook for introspection
data) names the reply and signal arguments listed in ``ARG_NAMES``: dbus-fast
derives them from return annotations, which carry no names, and introspection
should read like ``dbus/*.xml``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar, cast

from dbus_fast import SignatureTree
from dbus_fast import introspection as intr
from dbus_fast.service import ServiceInterface, dbus_method

from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.errors import to_dbus_error

_BUS_METHOD_ATTR: Final = "__vm2kvm_bus_method"
_TRANSLATED_ATTR: Final = "__vm2kvm_translated"

F = TypeVar("F", bound=Callable[..., Any])


def _translated(fn: Callable[..., Any], member: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        async_fn = cast(Callable[..., Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def async_wrapper(*args: Any) -> Any:
            try:
                return await async_fn(*args)
            except Exception as exc:
                raise to_dbus_error(exc, member=member) from None

        setattr(async_wrapper, _TRANSLATED_ATTR, True)
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            raise to_dbus_error(exc, member=member) from None

    setattr(wrapper, _TRANSLATED_ATTR, True)
    return wrapper


def is_translated(fn: object) -> bool:
    return bool(getattr(fn, _TRANSLATED_ATTR, False))


@dataclass(frozen=True)
class BusMethod:
    """One ``@bus_method``: its D-Bus name and its implementation (errors translated)."""

    name: str
    fn: Callable[..., Any]


def bypassed(member: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.NOT_AUTHORIZED,
        f"{member} was called without authorization, so vm2kvmd refuses it",
        hint="this is a bug in vm2kvmd: every method call must go through ServiceBus's dispatcher",
    )


def bus_method(name: str | None = None) -> Callable[[F], F]:
    """``@dbus_method`` for a ``BusInterface``: runs only when ``ServiceBus`` dispatches it."""

    def decorator(fn: F) -> F:
        member = name or fn.__name__

        # What dbus-fast would run: never the method.  ``wraps`` gives dbus-fast the
        # method's signature and annotations (through ``__wrapped__``) to build the
        # introspection from.
        @functools.wraps(fn)
        def refuse(*_args: Any) -> None:
            raise to_dbus_error(bypassed(member))

        refuse.__dict__[_BUS_METHOD_ATTR] = BusMethod(member, _translated(fn, fn.__qualname__))
        return cast(F, dbus_method(member)(refuse))

    return decorator


def _declared(cls: type) -> dict[str, BusMethod]:
    found: dict[str, BusMethod] = {}
    for klass in reversed(cls.__mro__):
        for attr in vars(klass).values():
            method = getattr(attr, "__dict__", {}).get(_BUS_METHOD_ATTR)
            if isinstance(method, BusMethod):
                found[method.name] = method
    return found


@dataclass(frozen=True)
class ExportedMethod:
    """A method as clients see it, and what runs it (None: nothing may)."""

    interface: str
    name: str
    in_signature: str
    out_signature: str
    method: BusMethod | None  # None: not declared with @bus_method, refused to everyone
    out_tree: SignatureTree

    def reply_body(self, result: Any) -> list[Any]:
        """The method's return value as a message body (dbus-fast's convention: a tuple for
        several out arguments); raises ``SignatureBodyMismatchError`` when it does not fit."""
        count = len(self.out_tree.types)
        if count == 0:
            body: list[Any] = []
        elif count == 1:
            body = [result]
        else:
            body = list(result)
        self.out_tree.verify(body)
        return body


_TABLES: dict[tuple[type, str], Mapping[str, ExportedMethod]] = {}


def exported_methods(interface: ServiceInterface) -> Mapping[str, ExportedMethod]:
    """Every method clients can call on ``interface`` (its public introspection), by name."""
    cls = type(interface)
    if (table := _TABLES.get((cls, interface.name))) is None:
        declared = _declared(cls)
        table = {
            m.name: ExportedMethod(
                interface.name,
                m.name,
                m.in_signature,
                m.out_signature,
                declared.get(m.name),
                SignatureTree(m.out_signature),
            )
            for m in interface.introspect().methods
        }
        # A class's instances all export the same methods.
        _TABLES[(cls, interface.name)] = table
    return table


def _named(args: list[intr.Arg], names: tuple[str, ...], member: str) -> list[intr.Arg]:
    if len(args) != len(names):
        raise TypeError(f"ARG_NAMES[{member!r}] names {len(names)} arguments, the member has {len(args)}")
    return [intr.Arg(arg.signature, arg.direction, name) for arg, name in zip(args, names, strict=True)]


class BusInterface(ServiceInterface):
    """A ``ServiceInterface`` whose methods are ``@bus_method``s and whose out arguments have names."""

    # member name -> names of its out arguments (methods) or arguments (signals)
    ARG_NAMES: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        undeclared = [m.name for m in exported_methods(self).values() if m.method is None]
        if undeclared:
            # It would be refused to everyone; say so when the class is first used.
            raise TypeError(f"{type(self).__name__}: declare {undeclared} with @bus_method, not @dbus_method")

    def introspect(self) -> intr.Interface:
        base = super().introspect()
        if not self.ARG_NAMES:
            return base
        methods = [
            intr.Method(m.name, m.in_args, _named(m.out_args, self.ARG_NAMES[m.name], m.name), m.annotations)
            if m.name in self.ARG_NAMES
            else m
            for m in base.methods
        ]
        signals = [
            intr.Signal(s.name, _named(s.args, self.ARG_NAMES[s.name], s.name), s.annotations)
            if s.name in self.ARG_NAMES
            else s
            for s in base.signals
        ]
        return intr.Interface(base.name, methods, signals, base.properties, base.annotations)


def dbus_methods(interface: ServiceInterface) -> list[tuple[str, Callable[..., Any]]]:
    """``(name, implementation)`` of every ``@bus_method`` of ``interface`` (for tests)."""
    return [(m.name, m.method.fn) for m in exported_methods(interface).values() if m.method is not None]
