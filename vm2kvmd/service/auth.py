"""Who may call which method: the sender's credentials, a rule per method, polkit.

Every method of our interfaces goes through ``Authorizer.authorize`` before it
runs (``ServiceBus``'s dispatcher, ``service/bus.py``):

1. ``RULES`` maps ``(interface, member)`` to a ``Rule``.  A method without a
   rule is refused to everyone, root included: a method added without
   deciding who may call it fails its first test instead of being open.
   Read-only methods are exempt explicitly (``EXEMPT``) and run without any
   look-up.
2. The sender's uid and groups come from the bus daemon
   (``GetConnectionCredentials``), cached per unique name until the name
   goes away (``forget``, on ``NameOwnerChanged``).  Unique names are never
   reused on a bus, so a stale entry can only waste memory, never describe
   another process.
3. Root (uid 0) is allowed without polkit: it could do everything we do
   without us.
4. Everyone else needs every action ``Rule.actions_for`` lists, each asked
   of polkit (``CheckAuthorization``) for the subject ``system-bus-name``:
   polkit looks the process up itself, so nothing the caller says about
   itself counts.  Interactive authentication is allowed only when the call
   carries ``ALLOW_INTERACTIVE_AUTHORIZATION``; no polkit, or a polkit that
   fails or hangs, is a refusal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from vm2kvmd.constants import JOB_IFACE, JOBS_PATH, MANAGER_IFACE
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.service.caller import Caller

log = logging.getLogger(__name__)

ACTION_INSPECT: Final = "org.vm2kvm.inspect"
ACTION_MIGRATE: Final = "org.vm2kvm.migrate"
ACTION_CANCEL_OWN_JOB: Final = "org.vm2kvm.cancel-own-job"
ACTION_MANAGE_ALL_JOBS: Final = "org.vm2kvm.manage-all-jobs"

POLKIT_NAME: Final = "org.freedesktop.PolicyKit1"
POLKIT_PATH: Final = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE: Final = "org.freedesktop.PolicyKit1.Authority"
POLKIT_ALLOW_USER_INTERACTION: Final = 1  # CheckAuthorizationFlags
# A non-interactive check is a table look-up for polkitd; interactive ones wait for a person.
POLKIT_TIMEOUT: Final = 25.0
POLKIT_INTERACTIVE_TIMEOUT: Final = 600.0

DBUS_NAME: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"
# Only disappearing names matter to the cache.
NAME_LOST_RULE: Final = (
    f"type='signal',sender='{DBUS_NAME}',path='{DBUS_PATH}',interface='{DBUS_NAME}',"
    "member='NameOwnerChanged',arg2=''"
)
CACHE_LIMIT: Final = 4096  # callers remembered at most (oldest dropped first)
NOBODY_GID: Final = 65534

# polkit's answers when it is simply not there.
_POLKIT_ABSENT: Final = (
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.TimedOut",
    "org.freedesktop.DBus.Error.Disconnected",
)

OwnerOf = Callable[[str], "int | None"]


@dataclass(frozen=True)
class Rule:
    """Who may call one method.

    ``actions``: polkit actions every non-root caller needs.  ``job``: the
    method acts on the job at the call's object path: its owner needs
    ``own_action`` as well (if any), anyone else ``manage-all-jobs``.
    ``exempt``: read-only, callable by anyone without a check.
    """

    verb: str  # "migrate a virtual machine", "cancel" (+ " job N" for job methods)
    actions: tuple[str, ...] = ()
    job: bool = False
    own_action: str | None = None
    exempt: bool = False

    def actions_for(self, uid: int, owner: int | None) -> tuple[str, ...]:
        if not self.job:
            return self.actions
        if owner is not None and owner == uid:
            return self.actions + ((self.own_action,) if self.own_action else ())
        return (*self.actions, ACTION_MANAGE_ALL_JOBS)

    def describe(self, path: str, uid: int, owner: int | None) -> str:
        """What the caller tried, for the refusal: "cancel job 3, which uid 1000 started"."""
        if not self.job:
            return self.verb
        number = path.rsplit("/", 1)[-1] if path.startswith(JOBS_PATH + "/") else path
        text = f"{self.verb} job {number}"
        if owner is not None and owner != uid:
            text += f", which uid {owner} started"
        return text


EXEMPT: Final = Rule("read", exempt=True)

RULES: Final[Mapping[tuple[str, str], Rule]] = {
    (MANAGER_IFACE, "Inspect"): Rule("inspect a virtual machine", (ACTION_INSPECT,)),
    (MANAGER_IFACE, "Migrate"): Rule("migrate a virtual machine", (ACTION_MIGRATE,)),
    # It logs in to a vSphere host with the caller's password and reads its inventory: as
    # much as inspecting a VM, nothing more.
    (MANAGER_IFACE, "ListVms"): Rule("list the virtual machines of a vSphere host", (ACTION_INSPECT,)),
    (MANAGER_IFACE, "ListPoolsAndNetworks"): Rule(
        "list libvirt's storage pools and networks", (ACTION_INSPECT,)
    ),
    # The same actions as the local forms: where the VM lives changes nothing about what is done.
    (MANAGER_IFACE, "InspectRemote"): Rule("inspect a virtual machine on vSphere", (ACTION_INSPECT,)),
    (MANAGER_IFACE, "MigrateRemote"): Rule("migrate a virtual machine from vSphere", (ACTION_MIGRATE,)),
    (MANAGER_IFACE, "GetJobs"): EXEMPT,
    (MANAGER_IFACE, "ListJobs"): EXEMPT,
    (JOB_IFACE, "Cancel"): Rule("cancel", job=True, own_action=ACTION_CANCEL_OWN_JOB),
    (JOB_IFACE, "Dismiss"): Rule("dismiss", job=True, own_action=ACTION_CANCEL_OWN_JOB),
    # A retry is a new migration, owned by the caller: migrate, and another user's job needs more.
    (JOB_IFACE, "Retry"): Rule("retry", (ACTION_MIGRATE,), job=True),
    (JOB_IFACE, "RetryRemote"): Rule("retry", (ACTION_MIGRATE,), job=True),
    (JOB_IFACE, "GetReport"): EXEMPT,
    (JOB_IFACE, "GetLog"): EXEMPT,
}


def rule_for(interface: str, member: str) -> Rule | None:
    return RULES.get((interface, member))


def interactive(msg: Message) -> bool:
    """Whether the caller lets polkit ask its user for a password (the message flag)."""
    return bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)


def polkit_flags(msg: Message) -> int:
    return POLKIT_ALLOW_USER_INTERACTION if interactive(msg) else 0


def not_authorized(what: str, action: str, *, challenge: bool, dismissed: bool) -> Vm2kvmError:
    if dismissed:
        hint = "the authentication dialog was dismissed"
    elif challenge:
        hint = (
            "polkit would allow it after authentication: call again allowing interactive "
            "authorization, from a session with a polkit agent (or as root)"
        )
    else:
        hint = f"an administrator can grant {action} with a polkit rule (docs/security.md)"
    return Vm2kvmError(
        ErrorCode.NOT_AUTHORIZED, f"not authorized to {what} (polkit action {action})", hint=hint
    )


def unknown_method(interface: str, member: str) -> Vm2kvmError:
    # Default deny: a method nobody wrote a rule for is a bug, refused to everyone.
    return Vm2kvmError(
        ErrorCode.NOT_AUTHORIZED,
        f"{interface}.{member} has no authorization rule, so vm2kvmd refuses it",
        hint="this is a bug in vm2kvmd: every method needs an entry in service/auth.py RULES",
    )


def polkit_unavailable(reason: str) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.NOT_AUTHORIZED,
        f"cannot check authorization: {reason}",
        hint="start polkit (systemctl start polkit), or call as root",
    )


def caller_from_credentials(sender: str, creds: Mapping[str, Any]) -> Caller:
    """A ``Caller`` from ``GetConnectionCredentials``' answer (values already unwrapped).

    ``UnixGroupIDs`` (the process's groups, when the bus can tell) are the
    truth; the account's primary group only decides which of them comes
    first.  Without it the account's configured groups stand in -- what the
    user gets by logging in, so nothing it could not read anyway.
    """
    if "UnixUserID" not in creds:
        raise Vm2kvmError(ErrorCode.NOT_AUTHORIZED, "the bus did not say which user is calling")
    uid = int(creds["UnixUserID"])
    pid = int(creds.get("ProcessID", 0))
    try:
        entry: pwd.struct_passwd | None = pwd.getpwuid(uid)
    except KeyError:
        entry = None
    if "UnixGroupIDs" in creds:
        groups = [int(g) for g in creds["UnixGroupIDs"]]
    elif entry is not None:
        groups = _account_groups(entry)
    else:
        groups = []
    if entry is not None and entry.pw_gid in groups:
        primary = entry.pw_gid
    else:
        primary = groups[0] if groups else NOBODY_GID
    gids = tuple(dict.fromkeys([primary, *groups]))
    return Caller(bus_name=sender, uid=uid, gids=gids, pid=pid)


def _account_groups(entry: pwd.struct_passwd) -> list[int]:
    try:
        return os.getgrouplist(entry.pw_name, entry.pw_gid)
    except OSError:
        return [entry.pw_gid]


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


class Authorizer:
    """Decides each call on ``bus``; ``owner_of(path)`` gives a job's owner uid (None: no job)."""

    def __init__(self, bus: MessageBus, owner_of: OwnerOf | None = None) -> None:
        self._bus = bus
        self.owner_of = owner_of
        self._callers: dict[str, Caller] = {}
        self._watching: asyncio.Future[None] | None = None

    # --- credentials -------------------------------------------------------------

    def cached(self, sender: str | None) -> Caller | None:
        return self._callers.get(sender) if sender else None

    def forget(self, name: str) -> None:
        self._callers.pop(name, None)

    def on_message(self, msg: Message) -> None:
        """A bus message handler: drops the credentials of names that went away (never handles)."""
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.member == "NameOwnerChanged"
            and msg.sender == DBUS_NAME
            and msg.interface == DBUS_NAME
            and len(msg.body) == 3
            and not msg.body[2]
        ):
            self.forget(str(msg.body[0]))

    async def _watch(self) -> None:
        """Subscribe once to names going away (before the first credentials are cached)."""
        if self._watching is None:
            self._watching = asyncio.ensure_future(self._add_match())
        await asyncio.shield(self._watching)

    async def _bus_daemon(self, member: str, argument: str) -> Message:
        """Call ``member(s)`` of the bus daemon itself; its reply, maybe an error."""
        call = Message(
            destination=DBUS_NAME,
            path=DBUS_PATH,
            interface=DBUS_NAME,
            member=member,
            signature="s",
            body=[argument],
        )
        return await self._bus.call(call)

    async def _add_match(self) -> None:
        try:
            reply = await self._bus_daemon("AddMatch", NAME_LOST_RULE)
        except Exception as exc:
            reply = None
            log.warning("cannot watch bus names (%s); caller cache trimmed by size only", exc)
        if reply is not None and reply.message_type is MessageType.ERROR:
            # Still correct (unique names are not reused); only the cache is not trimmed.
            log.warning("cannot watch bus names (%s); caller cache trimmed by size only", reply.error_name)

    async def caller(self, sender: str) -> Caller:
        """The credentials of ``sender`` (cached); NOT_AUTHORIZED when the bus cannot tell."""
        if (known := self._callers.get(sender)) is not None:
            return known
        await self._watch()
        reply = await self._bus_daemon("GetConnectionCredentials", sender)
        if reply.message_type is MessageType.ERROR:
            raise Vm2kvmError(
                ErrorCode.NOT_AUTHORIZED,
                f"cannot find out who is calling: {reply.error_name}: {_text(reply)}",
            )
        creds = {key: _unwrap(value) for key, value in reply.body[0].items()}
        # The user database may be remote (LDAP, sssd): not on the event loop.
        caller = await asyncio.to_thread(caller_from_credentials, sender, creds)
        if len(self._callers) >= CACHE_LIMIT:
            self._callers.pop(next(iter(self._callers)))
        self._callers[sender] = caller
        return caller

    # --- decisions -----------------------------------------------------------------

    def owner(self, path: str) -> int | None:
        if self.owner_of is None:
            return None
        return self.owner_of(path)

    def decide_cached(self, msg: Message, interface: str, member: str) -> Caller | None:
        """The caller when the call is allowed without any bus round trip (cached root), else None."""
        rule = rule_for(interface, member)
        caller = self.cached(msg.sender)
        if rule is None or rule.exempt or caller is None or not caller.is_root:
            return None
        return caller

    async def authorize(self, msg: Message, interface: str, member: str) -> Caller:
        """The caller, if it may call ``interface.member``; raises NOT_AUTHORIZED otherwise."""
        rule = rule_for(interface, member)
        if rule is None:
            raise unknown_method(interface, member)
        if not msg.sender:
            raise Vm2kvmError(ErrorCode.NOT_AUTHORIZED, "the call has no sender")
        caller = await self.caller(msg.sender)
        if rule.exempt or caller.is_root:
            return caller
        path = msg.path or ""
        owner = self.owner(path) if rule.job else None
        what = rule.describe(path, caller.uid, owner)
        flags = polkit_flags(msg)
        for action in rule.actions_for(caller.uid, owner):
            await self.check_polkit(msg.sender, action, what, flags)
        return caller

    async def check_polkit(self, sender: str, action: str, what: str, flags: int) -> None:
        """polkit's ``CheckAuthorization`` for ``sender``; raises NOT_AUTHORIZED unless it says yes."""
        call = Message(
            destination=POLKIT_NAME,
            path=POLKIT_PATH,
            interface=POLKIT_IFACE,
            member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us",
            body=[("system-bus-name", {"name": Variant("s", sender)}), action, {}, flags, ""],
        )
        timeout = POLKIT_INTERACTIVE_TIMEOUT if flags & POLKIT_ALLOW_USER_INTERACTION else POLKIT_TIMEOUT
        try:
            async with asyncio.timeout(timeout):
                reply = await self._bus.call(call)
        except TimeoutError:
            log.error("polkit did not answer within %.0f s (%s for %s)", timeout, action, sender)
            raise polkit_unavailable("polkit did not answer") from None
        except Exception as exc:
            log.error("cannot ask polkit (%s for %s): %s", action, sender, exc)
            raise polkit_unavailable("polkit is not running") from None
        if reply.message_type is MessageType.ERROR:
            if reply.error_name in _POLKIT_ABSENT:
                log.warning("polkit is not running: %s refused to %s", action, sender)
                raise polkit_unavailable("polkit is not running")
            log.error("polkit failed on %s for %s: %s: %s", action, sender, reply.error_name, _text(reply))
            raise polkit_unavailable(f"polkit failed ({reply.error_name})")
        allowed, challenge, details = reply.body[0]
        if not allowed:
            log.info("polkit refused %s to %s", action, sender)
            dismissed = str(details.get("polkit.dismissed", "")).lower() == "true"
            raise not_authorized(what, action, challenge=bool(challenge), dismissed=dismissed)


def _text(reply: Message) -> str:
    return str(reply.body[0]) if reply.body else ""
