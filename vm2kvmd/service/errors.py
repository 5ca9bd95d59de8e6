"""The one place where failures become D-Bus errors.

``to_dbus_error`` is applied to every exported method by ``BusInterface``
(``service/interface.py``) and to job failures:

* ``Vm2kvmError`` → ``org.vm2kvm.Error.<Code>`` with ``describe()`` as text;
* anything else → logged with its traceback in the daemon log and sent as
  ``org.vm2kvm.Error.Internal`` with a short text (never the traceback: it
  discloses paths, versions and locals to any peer that can call us).
"""

from __future__ import annotations

import logging
from typing import Final

from dbus_fast.errors import DBusError

from vm2kvmd.constants import error_name
from vm2kvmd.errors import ErrorCode, Vm2kvmError

log = logging.getLogger(__name__)

INTERNAL_MESSAGE: Final = "internal error in vm2kvmd; details are in the daemon log"


def to_dbus_error(exc: BaseException, *, member: str = "") -> DBusError:
    """The D-Bus error a caller sees for ``exc``; internal errors are logged here."""
    if isinstance(exc, Vm2kvmError) and exc.code is not ErrorCode.INTERNAL:
        return DBusError(error_name(exc.code), exc.describe())
    log.error("internal error in %s", member or "a D-Bus method", exc_info=exc)
    return DBusError(error_name(ErrorCode.INTERNAL), INTERNAL_MESSAGE)


def error_pair(exc: BaseException, *, what: str = "") -> tuple[str, str]:
    """``(D-Bus error name, message)`` for a job's ``Error`` property."""
    err = to_dbus_error(exc, member=what)
    return err.type, err.text
