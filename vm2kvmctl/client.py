"""The D-Bus side of vm2kvmctl: calls to vm2kvmd and its job signals.

Two failure kinds leave this module: ``Unreachable`` (no bus, no daemon,
the daemon went away: exit status 2) and ``DaemonError`` (vm2kvmd answered
with an error: its name and its one-line message).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dbus_fast import BusType, Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from vm2kvmd.constants import (
    BUS_NAME,
    JOB_IFACE,
    JOBS_PATH,
    MANAGER_IFACE,
    MANAGER_PATH,
    PROPERTIES_IFACE,
)

DBUS_NAME: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"

# Errors from the bus itself that mean "vm2kvmd is not there".
_NOT_RUNNING: Final = (
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
)
_GONE: Final = (
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.TimedOut",
)


class Unreachable(Exception):
    """The bus or vm2kvmd cannot be reached; the message is one line for the user."""


class DaemonError(Exception):
    """vm2kvmd answered a call with an error."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def unwrap(value: Any) -> Any:
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, (list, tuple)):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# --- job signals ---------------------------------------------------------------


@dataclass(frozen=True)
class Changed:
    properties: dict[str, Any]


@dataclass(frozen=True)
class Completed:
    success: bool
    message: str


@dataclass(frozen=True)
class DaemonGone:
    pass


@dataclass(frozen=True)
class Interrupted:
    """Ctrl-C while following a job (put into the queue by the SIGINT handler)."""


@dataclass(frozen=True)
class Answer:
    """A line typed at the Ctrl-C question (``None``: end of input)."""

    text: str | None


JobEvent = Changed | Completed | DaemonGone | Interrupted | Answer


class JobSignals:
    """Job signals from the moment of subscription, so none is lost to a race.

    Until ``follow`` names the job of interest, signals of every job are kept
    (``Migrate`` has not told us its path yet); afterwards only that job's.
    """

    def __init__(self) -> None:
        self._backlog: dict[str, list[JobEvent]] = {}
        self._followed: dict[str, asyncio.Queue[JobEvent]] = {}
        self._early_interrupt = False

    def follow(self, path: str) -> asyncio.Queue[JobEvent]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        for event in self._backlog.pop(path, []):
            queue.put_nowait(event)
        if self._early_interrupt:
            queue.put_nowait(Interrupted())
            self._early_interrupt = False
        self._backlog.clear()
        self._followed[path] = queue
        return queue

    def interrupt(self) -> bool:
        """Ctrl-C: an ``Interrupted`` for the job followed, or the next one.

        False when nothing is followed yet and an interrupt is already pending
        (a second Ctrl-C before ``Migrate`` returned).
        """
        if self._followed:
            for queue in self._followed.values():
                queue.put_nowait(Interrupted())
            return True
        if self._early_interrupt:
            return False
        self._early_interrupt = True
        return True

    def on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.sender == DBUS_NAME:
            name, _old, new = msg.body
            if name == BUS_NAME and not new:
                for queue in self._followed.values():
                    queue.put_nowait(DaemonGone())
            return
        path = msg.path or ""
        if not path.startswith(JOBS_PATH + "/"):
            return
        event: JobEvent
        if (
            msg.interface == PROPERTIES_IFACE
            and msg.member == "PropertiesChanged"
            and msg.body[0] == JOB_IFACE
        ):
            event = Changed(unwrap(msg.body[1]))
        elif msg.interface == JOB_IFACE and msg.member == "Completed":
            event = Completed(bool(msg.body[0]), str(msg.body[1]))
        else:
            return
        if path in self._followed:
            self._followed[path].put_nowait(event)
        elif not self._followed:
            self._backlog.setdefault(path, []).append(event)


# --- the client ------------------------------------------------------------------


class Client:
    """A connection to the bus with vm2kvmd's methods."""

    def __init__(self, bus: MessageBus, kind: str, *, interactive_auth: bool = False) -> None:
        self.bus = bus
        self.kind = kind
        # Calls to vm2kvmd say whether polkit may ask our user for a password (through the
        # session's polkit agent); vm2kvmd lets polkit ask only when the call allows it.
        self.interactive_auth = interactive_auth
        self.signals: JobSignals | None = None

    @classmethod
    async def connect(cls, kind: str, *, interactive_auth: bool = False) -> Client:
        bus_type = BusType.SYSTEM if kind == "system" else BusType.SESSION
        try:
            # fd passing: list-vms hands vm2kvmd the password as a file descriptor.
            bus = MessageBus(bus_type=bus_type, negotiate_unix_fd=True)
            await bus.connect()
        except Exception as exc:
            raise Unreachable(f"cannot connect to the {kind} bus: {_reason(exc)}") from None
        return cls(bus, kind, interactive_auth=interactive_auth)

    async def close(self) -> None:
        if self.bus.connected:
            self.bus.disconnect()
        with contextlib.suppress(Exception):
            await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        destination: str = BUS_NAME,
        unix_fds: Sequence[int] = (),
    ) -> list[Any]:
        interactive = self.interactive_auth and destination == BUS_NAME
        message = Message(
            unix_fds=list(unix_fds),
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
            flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag(0),
        )
        try:
            reply = await self.bus.call(message)
        except Exception as exc:
            raise Unreachable(f"lost the connection to the {self.kind} bus: {_reason(exc)}") from None
        if reply is None:
            raise Unreachable(f"lost the connection to the {self.kind} bus")
        if reply.message_type is MessageType.ERROR:
            raise self._error(reply)
        return list(reply.body)

    def _error(self, reply: Message) -> Exception:
        name = reply.error_name or ""
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else name
        if name in _NOT_RUNNING:
            return Unreachable(f"vm2kvmd is not running (nothing owns {BUS_NAME} on the {self.kind} bus)")
        if name.startswith("org.freedesktop.DBus.Error.Spawn."):
            return Unreachable(f"vm2kvmd could not be started on the {self.kind} bus: {text}")
        if name in _GONE:
            return Unreachable(f"vm2kvmd did not answer: {text}")
        return DaemonError(name, text)

    # --- Manager1 --------------------------------------------------------------

    async def inspect(self, source: str, options: Mapping[str, Variant]) -> str:
        (result,) = await self.call(MANAGER_PATH, MANAGER_IFACE, "Inspect", "sa{sv}", [source, dict(options)])
        return str(result)

    async def migrate(self, source: str, options: Mapping[str, Variant], key_fd: int | None = None) -> str:
        """``Migrate``; ``key_fd`` (a BitLocker key) travels as the ``bitlocker-key`` option (``h``)."""
        opts, fds = _with_key(options, key_fd, index=0)
        (path,) = await self.call(
            MANAGER_PATH, MANAGER_IFACE, "Migrate", "sa{sv}", [source, opts], unix_fds=fds
        )
        return str(path)

    async def list_vms(self, uri: str, options: Mapping[str, Variant], password_fd: int) -> str:
        """The VMs of a vSphere host, JSON text; ``password_fd`` travels with the call (``h``:
        the body holds its index in the message's fds) and stays ours to close."""
        (text,) = await self.call(
            MANAGER_PATH, MANAGER_IFACE, "ListVms", "sa{sv}h", [uri, dict(options), 0], unix_fds=[password_fd]
        )
        return str(text)

    async def inspect_remote(
        self, uri: str, vm: str, options: Mapping[str, Variant], password_fd: int
    ) -> str:
        (result,) = await self.call(
            MANAGER_PATH,
            MANAGER_IFACE,
            "InspectRemote",
            "ssa{sv}h",
            [uri, vm, dict(options), 0],
            unix_fds=[password_fd],
        )
        return str(result)

    async def migrate_remote(
        self, uri: str, vm: str, options: Mapping[str, Variant], password_fd: int, key_fd: int | None = None
    ) -> str:
        opts, fds = _with_key(options, key_fd, index=1)
        (path,) = await self.call(
            MANAGER_PATH,
            MANAGER_IFACE,
            "MigrateRemote",
            "ssa{sv}h",
            [uri, vm, opts, 0],
            unix_fds=[password_fd, *fds],
        )
        return str(path)

    async def jobs(self) -> dict[str, dict[str, Any]]:
        """Every job's properties by path, oldest first (one ``ListJobs``)."""
        (text,) = await self.call(MANAGER_PATH, MANAGER_IFACE, "ListJobs")
        # Thousands of small dicts: without the cyclic GC running over them as they are made
        # (they hold no cycles), decoding takes a third of the time.
        gc.disable()
        try:
            entries = json.loads(text)
        finally:
            gc.enable()
        jobs = {str(entry["job"]): dict(entry["properties"]) for entry in entries}
        return dict(sorted(jobs.items(), key=lambda item: job_number(item[0])))

    # --- Job1 --------------------------------------------------------------------

    async def job(self, path: str) -> dict[str, Any]:
        (props,) = await self.call(path, PROPERTIES_IFACE, "GetAll", "s", [JOB_IFACE])
        return dict(unwrap(props))

    async def report(self, path: str) -> str:
        """The job's migration report, JSON text (``Job1.GetReport``)."""
        (text,) = await self.call(path, JOB_IFACE, "GetReport")
        return str(text)

    async def cancel(self, path: str) -> None:
        await self.call(path, JOB_IFACE, "Cancel")

    async def dismiss(self, path: str) -> None:
        await self.call(path, JOB_IFACE, "Dismiss")

    async def retry(self, path: str) -> str:
        """A new job with the same source and options (``Job1.Retry``): its path."""
        (new_path,) = await self.call(path, JOB_IFACE, "Retry")
        return str(new_path)

    async def retry_remote(self, path: str, options: Mapping[str, Variant], password_fd: int) -> str:
        """``Job1.RetryRemote``: a vSphere job again, the password as an fd."""
        (new_path,) = await self.call(
            path, JOB_IFACE, "RetryRemote", "a{sv}h", [dict(options), 0], unix_fds=[password_fd]
        )
        return str(new_path)

    async def log(self, path: str) -> list[tuple[int, str, str]]:
        """The job's log from the daemon's store: (time µs, phase, message), oldest first."""
        (lines,) = await self.call(path, JOB_IFACE, "GetLog")
        return [(int(t), str(phase), str(message)) for t, phase, message in lines]

    async def subscribe(self) -> JobSignals:
        """Receive job signals (and vm2kvmd's disappearance) from now on."""
        if self.signals is not None:
            return self.signals
        signals = JobSignals()
        self.bus.add_message_handler(signals.on_message)
        rules = (
            f"type='signal',sender='{BUS_NAME}',interface='{PROPERTIES_IFACE}',"
            f"member='PropertiesChanged',path_namespace='{JOBS_PATH}'",
            f"type='signal',sender='{BUS_NAME}',interface='{JOB_IFACE}',member='Completed',"
            f"path_namespace='{JOBS_PATH}'",
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',member='NameOwnerChanged',"
            f"arg0='{BUS_NAME}'",
        )
        for rule in rules:
            await self.call(DBUS_PATH, DBUS_NAME, "AddMatch", "s", [rule], destination=DBUS_NAME)
        self.signals = signals
        return signals


def _with_key(
    options: Mapping[str, Variant], key_fd: int | None, *, index: int
) -> tuple[dict[str, Variant], list[int]]:
    """The options with ``bitlocker-key`` naming fd number ``index`` of the call, and the fds."""
    if key_fd is None:
        return dict(options), []
    return {**options, "bitlocker-key": Variant("h", index)}, [key_fd]


def job_number(path: str) -> int:
    tail = path.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0
