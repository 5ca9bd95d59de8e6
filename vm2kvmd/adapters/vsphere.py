"""The one vSphere session: a source URI, a password and a TLS policy become a logged-in session.

As govc's ``flags/client.go``: one place decides how the server's certificate is trusted, logs in,
and turns what goes wrong into named errors.  Blocking (pyvmomi); async callers use
``asyncio.to_thread``.

TLS: the system CA store by default, or ``TlsPolicy.ca_file``, or a pinned SHA-256 thumbprint
(checked on *every* connection the session opens, by ``_PinnedContext``: pyvmomi's own
``thumbprint=`` check runs only after a failed verification and then switches verification off
in the shared context), or nothing at all for ``no_verify=1``, with a warning.  Before logging in
we open one TLS connection of our own, unverified, only to read the server's certificate: its
thumbprint goes into every certificate error so the user can pin it, and an unreachable host is
found with a timeout (pyvmomi's version probe has none).

The password is sent in the login call and kept only in the ``Session`` (a private attribute,
never in its repr, a message or a log line), to log in again when the session ends mid-migration:
``keep_alive`` makes one cheap call and, when the host says the session is gone (expired,
terminated by an administrator, host restarted), logs in again; ``cookie`` is then the new one,
for the disk readers (``adapters/vsphere_keepalive.py`` hands it to them).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import logging
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pyVim.connect import SmartStubAdapter
from pyVmomi import vim, vmodl

from vm2kvmd.core.vsphere.summary import DiskSummary, NicSummary, VmSummary
from vm2kvmd.core.vsphere.uri import TlsPolicy, VsphereUri, format_thumbprint
from vm2kvmd.errors import ErrorCode, Vm2kvmError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0  # seconds for TCP + TLS and for each SOAP call
# pyVmomi's data object constructors take keyword properties and carry no annotations.
_PC: Any = vmodl.query.PropertyCollector
_SERVICE_INSTANCE: Any = vim.ServiceInstance
# What list-vms reads of each VM: one property collector call for all of them (plus their
# networks and datastores, by traversal), not one round trip per property per VM.
VM_PROPERTIES = (
    "name",
    "runtime.powerState",
    "config.guestId",
    "config.guestFullName",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.changeTrackingEnabled",
    "snapshot",
    "guest.toolsRunningStatus",
)


class _PinMismatch(ssl.SSLError):
    """The server's certificate is not the pinned one (raised inside pyvmomi's connection)."""

    def __init__(self, actual: str, pinned: str) -> None:
        super().__init__(f"certificate thumbprint {actual} is not the pinned one")
        self.actual = actual
        self.pinned = pinned


class _PinnedContext(ssl.SSLContext):
    """Accepts exactly the certificate whose SHA-256 digest is ``pin``, on every connection."""

    pin: str = ""

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        tls = super().wrap_socket(*args, **kwargs)
        actual = _thumbprint_of(tls)
        if actual != self.pin:
            tls.close()
            raise _PinMismatch(actual, self.pin)
        return tls


def _thumbprint_of(tls: ssl.SSLSocket) -> str:
    der = tls.getpeercert(binary_form=True)
    if der is None:  # only before the handshake; wrap_socket completes it
        raise ssl.SSLError("the server sent no certificate")
    return format_thumbprint(hashlib.sha256(der).digest())


def ssl_context(uri: VsphereUri, tls: TlsPolicy) -> ssl.SSLContext:
    """The context every connection of a session uses, as the URI and the policy say."""
    if uri.no_verify or tls.no_verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if tls.thumbprint is not None:
        pinned = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        pinned.check_hostname = False
        pinned.verify_mode = ssl.CERT_NONE  # the pin replaces the chain: wrap_socket checks it
        pinned.pin = tls.thumbprint
        return pinned
    try:
        return ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise Vm2kvmError(
            ErrorCode.INVALID_OPTION,
            f"cannot use it as CA certificates: {exc.strerror or exc}",
            file=tls.ca_file,
            hint="give a PEM file with the CA certificate(s) that signed the server's certificate",
        ) from None


def peer_thumbprint(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> str:
    """The SHA-256 thumbprint of the certificate ``host:port`` presents (nothing verified)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return _thumbprint_of(tls)


def pinned_certificate(uri: VsphereUri, pin: str, timeout: float = CONNECT_TIMEOUT) -> tuple[str, bool]:
    """The certificate ``uri``'s host presents now as PEM, if its SHA-256 is ``pin``, and whether it
    names the host.

    nbdkit's curl plugin cannot pin a digest, but curl trusts a leaf given as its CA file (OpenSSL
    partial chains) -- and always checks the host name then: ``sslverify`` is its only switch.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((uri.host, uri.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=uri.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise _unreachable(uri, exc) from None
    actual = format_thumbprint(hashlib.sha256(der or b"").digest())
    if der is None or actual != pin:
        raise _mismatch(uri, _PinMismatch(actual, pin))
    pem = ssl.DER_cert_to_PEM_cert(der)
    check = ssl.create_default_context(cadata=pem)
    check.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        with (
            socket.create_connection((uri.host, uri.port), timeout=timeout) as raw,
            check.wrap_socket(raw, server_hostname=uri.host),
        ):
            return pem, True
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in _NAME_MISMATCH:
            return pem, False
        raise _mismatch(uri, _PinMismatch(f"(changed: {exc.verify_message})", pin)) from None
    except OSError as exc:
        raise _unreachable(uri, exc) from None


_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def _unreachable(uri: VsphereUri, exc: OSError | http.client.HTTPException) -> Vm2kvmError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError | socket.timeout):
        reason = f"no answer within {CONNECT_TIMEOUT:.0f} s"
    return Vm2kvmError(
        ErrorCode.HOST_UNREACHABLE,
        f"cannot reach {uri.address}: {reason}",
        hint="check the host name and port in the source URI and that the host is up",
    )


def _pin_hint(thumbprint: str) -> str:
    return f"if you trust it, pin it with --thumbprint {thumbprint} (or give its CA with --ca-file)"


def _mismatch(uri: VsphereUri, exc: _PinMismatch) -> Vm2kvmError:
    return Vm2kvmError(
        ErrorCode.CERTIFICATE_MISMATCH,
        f"the certificate of {uri.address} has SHA-256 thumbprint {exc.actual}, not the pinned {exc.pinned}",
        hint="the certificate changed or someone is in between; " + _pin_hint(exc.actual),
    )


def connect(
    uri: VsphereUri, password: str, tls: TlsPolicy | None = None, *, timeout: float = CONNECT_TIMEOUT
) -> Session:
    """Log in to the ESXi host or vCenter of ``uri``; the ``Session`` logs out when closed."""
    tls = tls or TlsPolicy()
    context = ssl_context(uri, tls)
    try:
        server_thumbprint = peer_thumbprint(uri.host, uri.port, timeout)
    except ssl.SSLError as exc:
        raise Vm2kvmError(
            ErrorCode.HOST_UNREACHABLE, f"{uri.address} does not speak TLS: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise _unreachable(uri, exc) from None
    if uri.no_verify or tls.no_verify:
        log.warning(
            "the certificate of %s is not verified (no_verify=1); its SHA-256 thumbprint is %s",
            uri.address,
            server_thumbprint,
        )
    try:
        stub = SmartStubAdapter(
            host=uri.host, port=uri.port, sslContext=context, httpConnectionTimeout=timeout
        )
        instance = _SERVICE_INSTANCE("ServiceInstance", stub)
        content: Any = instance.RetrieveContent()
        content.sessionManager.Login(uri.login, password, None)
    except _PinMismatch as exc:
        raise _mismatch(uri, exc) from None
    except ssl.SSLCertVerificationError as exc:
        trusted_by = f"the CA certificates in {tls.ca_file}" if tls.ca_file else "the system CA store"
        raise Vm2kvmError(
            ErrorCode.CERTIFICATE_NOT_TRUSTED,
            f"the certificate of {uri.address} is not trusted by {trusted_by} "
            f"({exc.verify_message}); its SHA-256 thumbprint is {server_thumbprint}",
            hint=_pin_hint(server_thumbprint),
        ) from None
    except vim.fault.InvalidLogin:
        raise Vm2kvmError(
            ErrorCode.LOGIN_FAILED,
            f"{uri.address} refused the login of user {uri.login!r}: wrong user name or password",
            hint="check the password in ~/.netrc or the --password-file, and the user in the URI",
        ) from None
    except vmodl.MethodFault as fault:
        raise _fault(f"logging in to {uri.address}", fault) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _unreachable(uri, exc) from None
    except Exception as exc:
        # SmartStubAdapter's only own failure is a bare Exception: no vimServiceVersions.xml.
        if type(exc) is not Exception:
            raise
        raise Vm2kvmError(
            ErrorCode.VSPHERE_ERROR,
            f"{uri.address} answers HTTPS but is not an ESXi host or vCenter (no /sdk service)",
            hint="check the host name and port in the source URI",
        ) from None
    session = Session(uri, stub, content, context)
    session._password = password
    try:
        session.resolve_scope()
    except BaseException:
        session.close()
        raise
    return session


def _fault(doing: str, fault: vmodl.MethodFault) -> Vm2kvmError:
    words = getattr(fault, "msg", None) or type(fault).__name__
    if isinstance(fault, vim.fault.NotAuthenticated):
        # A call that fails so is not repeated here (it may not be idempotent); Session.keep_alive
        # logs in again, and long jobs call it on an interval.
        words = "the session is no longer valid (it expired or was logged out)"
    return Vm2kvmError(ErrorCode.VSPHERE_ERROR, f"{doing}: {words}")


@dataclass(frozen=True)
class _Found:
    ref: vim.VirtualMachine
    name: str


class Session:
    """A logged-in session; a context manager that logs out on exit.

    ``find_vm`` and ``list_vms`` see the VMs of the URI's scope: the whole ESXi host, or for
    vCenter the one host the ``vpx://`` path names (as virt-v2v and libvirt's esx driver do).
    """

    def __init__(
        self, uri: VsphereUri, stub: Any, content: Any, context: ssl.SSLContext | None = None
    ) -> None:
        self.uri = uri
        self._stub = stub
        self.content = content
        self.scope: vim.ManagedEntity = content.rootFolder
        self._password = ""  # set by connect; for logging in again (never shown)
        self._login_lock = threading.Lock()
        self.logins = 1  # how many times this session logged in (renewals + 1)
        # The TLS context of the SOAP connections, for the datastore's /folder downloads too.
        self.context = context

    @property
    def datacenter(self) -> str:
        """The ``dcPath`` of datastore URLs: ESXi's one datacenter, or the vpx:// path's."""
        return self.uri.datacenter or "ha-datacenter"

    def __repr__(self) -> str:
        return f"<vSphere session {self.uri}>"

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Log out (best effort: the session may already have expired) and drop connections."""
        try:
            self.content.sessionManager.Logout()
        except Exception as err:  # any failure (http.client.HTTPException too): best effort
            log.warning("logging out of %s failed (%s)", self.uri.address, type(err).__name__)
        self._stub.DropConnections()

    @property
    def cookie(self) -> str:
        """The session cookie as the host set it (``vmware_soap_session=...``): a secret."""
        return str(self._stub.cookie)

    @property
    def session_key(self) -> str:
        """The host's key of the current login (what ``SessionManager.sessionList`` shows)."""
        with self._calling("reading the current session"):
            return str(self.content.sessionManager.currentSession.key)

    def keep_alive(self) -> bool:
        """One cheap call (``CurrentTime``) so an idle session does not expire; when the host says
        the session is gone, log in again with the held password.  True when it logged in again
        (then ``cookie`` is new).  Safe to call from several threads."""
        instance: Any = _SERVICE_INSTANCE("ServiceInstance", self._stub)
        with self._login_lock, self._calling("keeping the session alive"):
            try:
                instance.CurrentTime()
                return False
            except vim.fault.NotAuthenticated:
                pass
            try:
                self.content.sessionManager.Login(self.uri.login, self._password, None)
            except vim.fault.InvalidLogin:
                raise Vm2kvmError(
                    ErrorCode.LOGIN_FAILED,
                    f"the session on {self.uri.address} ended and logging in again as "
                    f"{self.uri.login!r} was refused (was the password changed?)",
                    hint="retry the job with the current password",
                ) from None
            self.logins += 1
            log.info("the session on %s had ended; logged in again", self.uri.address)
            return True

    @contextlib.contextmanager
    def _calling(self, doing: str) -> Iterator[None]:
        """vSphere faults and lost connections during a call, as named errors."""
        try:
            yield
        except _PinMismatch as exc:
            raise _mismatch(self.uri, exc) from None
        except vmodl.MethodFault as fault:
            raise _fault(f"{doing} on {self.uri.address}", fault) from None
        except (OSError, http.client.HTTPException) as exc:
            raise Vm2kvmError(
                ErrorCode.HOST_UNREACHABLE,
                f"lost the connection to {self.uri.address} while {doing}: "
                f"{getattr(exc, 'strerror', None) or exc or type(exc).__name__}",
                hint="check that the host is up and reachable, then try again",
            ) from None

    # For the adapters beside this one (power control): the same named errors.
    calling = _calling

    def resolve_scope(self) -> None:
        """For ``vpx://``: find the datacenter, cluster and host the path names."""
        if self.uri.scheme != "vpx":
            return
        with self._calling("looking up the path of the source URI"):
            self._resolve_vpx_scope()

    def _resolve_vpx_scope(self) -> None:
        index = self.content.searchIndex
        datacenter = self.uri.datacenter
        assert datacenter is not None and self.uri.host_system is not None
        dc = index.FindByInventoryPath(datacenter)
        if not isinstance(dc, vim.Datacenter):
            names = self._names(self.content.rootFolder, vim.Datacenter)
            raise _not_found("datacenter", datacenter, names, f"on {self.uri.address}")
        parent_path = f"{datacenter}/host/{self.uri.cluster or self.uri.host_system}"
        compute = index.FindByInventoryPath(parent_path)
        if not isinstance(compute, vim.ComputeResource):
            what = "cluster" if self.uri.cluster else "host"
            names = self._names(dc.hostFolder, vim.ComputeResource)
            in_dc = f"in datacenter {datacenter} of {self.uri.address}"
            raise _not_found(what, self.uri.cluster or self.uri.host_system, names, in_dc)
        hosts = {h.name: h for h in compute.host}
        host = hosts.get(self.uri.host_system)
        if host is None:
            in_compute = f"in {'cluster' if self.uri.cluster else 'compute resource'} {compute.name}"
            raise _not_found("host", self.uri.host_system, sorted(hosts), in_compute)
        self.scope = host

    def _names(self, container: vim.ManagedEntity, kind: type) -> list[str]:
        return sorted(str(props["name"]) for _, props in self._retrieve(container, [kind], {kind: ["name"]}))

    def _retrieve(
        self,
        container: vim.ManagedEntity,
        kinds: Sequence[type],
        properties: dict[type, Sequence[str]],
        follow: Iterable[tuple[type, str]] = (),
    ) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Objects of ``kinds`` under ``container`` (and those reached by ``follow``: type, property)
        with the given properties, read through one container view and the property collector."""
        with self._calling("reading the inventory"):
            yield from self._read(container, kinds, properties, follow)

    def _read(
        self,
        container: vim.ManagedEntity,
        kinds: Sequence[type],
        properties: dict[type, Sequence[str]],
        follow: Iterable[tuple[type, str]],
    ) -> Iterator[tuple[Any, dict[str, Any]]]:
        views = self.content.viewManager
        view = views.CreateContainerView(container, list(kinds), True)
        try:
            hops = [_PC.TraversalSpec(type=t, path=p, skip=False) for t, p in follow]
            spec = _PC.FilterSpec(
                objectSet=[
                    _PC.ObjectSpec(
                        obj=view,
                        skip=True,
                        selectSet=[
                            _PC.TraversalSpec(
                                type=vim.view.ContainerView, path="view", skip=False, selectSet=hops
                            )
                        ],
                    )
                ],
                propSet=[_PC.PropertySpec(type=t, pathSet=list(p)) for t, p in properties.items()],
            )
            collector = self.content.propertyCollector
            result = collector.RetrievePropertiesEx([spec], _PC.RetrieveOptions())
            while result is not None:
                for item in result.objects:
                    yield item.obj, {p.name: p.val for p in item.propSet}
                token = result.token
                result = collector.ContinueRetrievePropertiesEx(token) if token else None
        finally:
            view.DestroyView()

    def find_vm(self, name_or_moid: str) -> vim.VirtualMachine:
        """The VM with this name or managed object id in the session's scope."""
        found = [
            _Found(obj, str(props["name"]))
            for obj, props in self._retrieve(self.scope, [vim.VirtualMachine], {vim.VirtualMachine: ["name"]})
        ]
        by_moid = [f for f in found if _moid(f.ref) == name_or_moid]
        by_name = [f for f in found if f.name == name_or_moid]
        matches = by_moid or by_name
        if len(matches) == 1:
            return matches[0].ref
        if matches:
            ids = ", ".join(f"{_moid(f.ref)}" for f in matches)
            raise Vm2kvmError(
                ErrorCode.INVALID_OPTION,
                f"{len(matches)} VMs are named {name_or_moid!r} on {self.where}: {ids}",
                hint="choose one by its managed object id",
            )
        raise _not_found("VM", name_or_moid, sorted(f.name for f in found), f"on {self.where}")

    @property
    def where(self) -> str:
        if self.uri.scheme == "vpx":
            return f"host {self.uri.host_system} of {self.uri.address}"
        return self.uri.address

    def list_vms(self) -> list[VmSummary]:
        """Every VM in scope, with what ``list-vms`` shows, sorted by name."""
        vms: list[tuple[Any, dict[str, Any]]] = []
        networks: dict[str, str] = {}  # moid -> name
        portgroups: dict[str, str] = {}  # distributed port group key -> name
        segments: dict[str, str] = {}  # NSX opaqueNetworkId -> the segment's name
        datastores: dict[str, tuple[str, bool]] = {}  # moid -> (name, accessible)
        rows = self._retrieve(
            self.scope,
            [vim.VirtualMachine],
            {
                vim.VirtualMachine: VM_PROPERTIES,
                vim.Network: ["name"],
                vim.dvs.DistributedVirtualPortgroup: ["name", "key"],
                vim.OpaqueNetwork: ["name", "summary"],
                vim.Datastore: ["name", "summary.accessible"],
            },
            follow=[(vim.VirtualMachine, "network"), (vim.VirtualMachine, "datastore")],
        )
        for obj, props in rows:
            moid = _moid(obj)
            if isinstance(obj, vim.VirtualMachine):
                vms.append((obj, props))
            elif isinstance(obj, vim.Datastore):
                datastores[moid] = (str(props["name"]), bool(props.get("summary.accessible", True)))
            elif isinstance(obj, vim.Network):
                networks[moid] = str(props["name"])
                if "key" in props:
                    portgroups[str(props["key"])] = str(props["name"])
                summary = props.get("summary")
                if isinstance(obj, vim.OpaqueNetwork) and summary is not None:
                    segments[str(summary.opaqueNetworkId)] = str(props["name"])
        names = _NetworkNames(networks, portgroups, segments)
        summaries = [_summary(obj, props, names, datastores) for obj, props in vms]
        return sorted(summaries, key=lambda s: (s.name, s.moid))


def _moid(obj: Any) -> str:
    # The managed object id ("vm-42"); pyVmomi exposes it only as ``_moId`` (its samples use it).
    return str(obj._moId)


def _not_found(what: str, name: str, known: list[str], where: str) -> Vm2kvmError:
    """``where`` starts with its preposition: "on 10.0.0.5:443", "in cluster C1"."""
    code = ErrorCode.VM_NOT_FOUND if what == "VM" else ErrorCode.INVENTORY_NOT_FOUND
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
    if hint is None and known and len(known) <= 10:
        hint = f"there are: {', '.join(known)}"
    return Vm2kvmError(code, f"no {what} named {name!r} {where}", hint=hint)


@dataclass(frozen=True)
class _NetworkNames:
    """The names of the networks the VMs' NICs use, as the inventory read found them."""

    networks: dict[str, str]  # moid -> name
    portgroups: dict[str, str]  # distributed port group key -> name
    segments: dict[str, str]  # NSX opaqueNetworkId -> name


def _summary(
    obj: vim.VirtualMachine,
    props: dict[str, Any],
    names: _NetworkNames,
    datastores: dict[str, tuple[str, bool]],
) -> VmSummary:
    devices = props.get("config.hardware.device") or []
    disks = tuple(_disk(d, datastores) for d in devices if isinstance(d, vim.vm.device.VirtualDisk))
    nics = tuple(_nic(d, names) for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard))
    snapshot = props.get("snapshot")
    return VmSummary(
        name=str(props["name"]),
        moid=_moid(obj),
        power_state=str(props.get("runtime.powerState", "unknown")),
        guest_os=props.get("config.guestId"),
        guest_os_name=props.get("config.guestFullName"),
        cpus=int(props.get("config.hardware.numCPU") or 0),
        memory_mib=int(props.get("config.hardware.memoryMB") or 0),
        disks=disks,
        nics=nics,
        snapshot_count=_count_snapshots(snapshot.rootSnapshotList if snapshot else []),
        cbt=bool(props.get("config.changeTrackingEnabled")),
        tools_state=props.get("guest.toolsRunningStatus"),
    )


def _count_snapshots(trees: Iterable[Any]) -> int:
    return sum(1 + _count_snapshots(t.childSnapshotList or []) for t in trees)


def _disk(disk: vim.vm.device.VirtualDisk, datastores: dict[str, tuple[str, bool]]) -> DiskSummary:
    backing = disk.backing
    ref = getattr(backing, "datastore", None)
    name, accessible = datastores.get(_moid(ref), (None, True)) if ref is not None else (None, True)
    thin = getattr(backing, "thinProvisioned", None)
    capacity = disk.capacityInBytes or (disk.capacityInKB or 0) * 1024
    return DiskSummary(
        label=disk.deviceInfo.label if disk.deviceInfo else f"disk {disk.key}",
        capacity_bytes=int(capacity),
        datastore=name,
        file=str(getattr(backing, "fileName", "") or ""),
        thin=None if thin is None else bool(thin),
        datastore_accessible=accessible,
    )


def _nic(nic: vim.vm.device.VirtualEthernetCard, names: _NetworkNames) -> NicSummary:
    backing = nic.backing
    network: str | None = None
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
        ref = backing.network
        network = names.networks.get(_moid(ref)) if ref is not None else None
        network = network or backing.deviceName
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        key = backing.port.portgroupKey if backing.port else None
        network = names.portgroups.get(key) if key else None
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        # The segment's name when the VM's network list shows it to this user, else its id
        # (what --network ID=NAME then names).
        ident = str(backing.opaqueNetworkId)
        network = names.segments.get(ident, ident)
    return NicSummary(
        label=nic.deviceInfo.label if nic.deviceInfo else f"nic {nic.key}",
        mac=nic.macAddress or None,
        network=network,
    )
