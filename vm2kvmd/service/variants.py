"""``a{sv}`` in and out: plain Python values on our side of the bus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dbus_fast.signature import Variant

from vm2kvmd.errors import ErrorCode, Vm2kvmError


def unwrap(value: Any) -> Any:
    """Strip ``Variant`` wrappers, recursively (``av`` and ``a{sv}`` inside ``v``)."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def unwrap_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {key: unwrap(value) for key, value in raw.items()}


def wrap(value: Any) -> Variant:
    """A ``Variant`` for the option values ``MigrateOptions.to_mapping`` produces."""
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, str):
        return Variant("s", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return Variant("as", list(value))
    raise Vm2kvmError(ErrorCode.INTERNAL, f"cannot send option value {value!r} over D-Bus")


def wrap_mapping(values: Mapping[str, Any]) -> dict[str, Variant]:
    return {key: wrap(value) for key, value in values.items()}
