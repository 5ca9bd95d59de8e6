"""A secret the daemon holds in memory for one job (a BitLocker key), never shown.

Pure.  It travels from the caller's file descriptor to the appliance call
that needs it; ``repr`` and ``str`` never show it, so a log line, an error
message or a ``functools.partial`` in a traceback cannot leak it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Secret:
    text: str = field(repr=False)

    def __str__(self) -> str:
        return "***"

    def scrub(self, message: str) -> str:
        """``message`` with the secret, should a tool have echoed it, replaced by ``***``."""
        return message.replace(self.text, "***") if self.text else message
