"""``BusInterface``: the base of our exported interfaces.

When a subclass is defined, each of its ``@dbus_method`` callables is wrapped
so any exception leaves through ``to_dbus_error`` -- no method can forget
it -- and the reply and signal arguments get the names listed in
``ARG_NAMES`` (dbus-fast derives them from return annotations, which carry
no names), so introspection reads like ``dbus/*.xml``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final, cast

from dbus_fast.service import ServiceInterface

from vm2kvmd.service.errors import to_dbus_error

# Where dbus-fast's decorators leave their descriptions (dbus_fast/service.py).
_DBUS_METHOD_ATTR: Final = "__DBUS_METHOD"
_DBUS_SIGNAL_ATTR: Final = "__DBUS_SIGNAL"
_TRANSLATED_ATTR: Final = "__vm2kvm_translated"


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


def _name_args(args: list[Any], names: tuple[str, ...], member: str) -> None:
    if len(args) != len(names):
        raise TypeError(f"ARG_NAMES[{member!r}] names {len(names)} arguments, the member has {len(args)}")
    for arg, name in zip(args, names, strict=True):
        arg.name = name


class BusInterface(ServiceInterface):
    """A ``ServiceInterface`` whose methods translate errors and whose out arguments have names."""

    # member name -> names of its out arguments (methods) or arguments (signals)
    ARG_NAMES: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in vars(cls).values():
            members = getattr(attr, "__dict__", {})
            if (method := members.get(_DBUS_METHOD_ATTR)) is not None:
                if not is_translated(method.fn):
                    method.fn = _translated(method.fn, f"{cls.__name__}.{method.name}")
                if method.name in cls.ARG_NAMES:
                    _name_args(method.introspection.out_args, cls.ARG_NAMES[method.name], method.name)
            elif (signal := members.get(_DBUS_SIGNAL_ATTR)) is not None and signal.name in cls.ARG_NAMES:
                _name_args(signal.introspection.args, cls.ARG_NAMES[signal.name], signal.name)


def dbus_methods(interface: ServiceInterface) -> list[tuple[str, Callable[..., Any]]]:
    """``(name, callable)`` of every D-Bus method of ``interface`` (for tests)."""
    out = []
    for _, member in inspect.getmembers(type(interface)):
        method = getattr(member, "__dict__", {}).get(_DBUS_METHOD_ATTR)
        if method is not None:
            out.append((method.name, method.fn))
    return out
