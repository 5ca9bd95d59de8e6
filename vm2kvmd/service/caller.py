"""Who is calling: the peer of the D-Bus method being handled.

The bus dispatcher (``service/bus.py``) asks the bus daemon for the
sender's credentials, authorizes the call (``service/auth.py``) and sets
``CURRENT`` for the method it then runs; methods read it with
``current_caller()``.  Code not reached through the bus (in-process tests,
recovery at start-up) sees ``DAEMON``: the daemon itself, which is root.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Caller:
    bus_name: str  # the sender's unique name (":1.42"); "" for the daemon itself
    uid: int
    gids: tuple[int, ...]  # primary group first, then supplementary groups
    pid: int = 0  # 0 when the bus did not tell

    @property
    def is_root(self) -> bool:
        return self.uid == 0


DAEMON: Final = Caller(bus_name="", uid=0, gids=(0,), pid=0)

CURRENT: ContextVar[Caller | None] = ContextVar("vm2kvm_caller", default=None)


def current_caller() -> Caller:
    """The caller of the method being handled; ``DAEMON`` outside a bus call."""
    return CURRENT.get() or DAEMON
