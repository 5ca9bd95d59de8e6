"""A VM on ESXi/vCenter as a migration's source: the login, the VM, its disks as QEMU nodes.

``VsphereSource`` is what the job knows: the URI (never with a password), the VM, how TLS is
trusted, and the password, which lives in the daemon's memory only (never in a repr, the job
store or a message) because the job logs in itself.  ``RemoteSources`` owns the session and every
reader of one run: per data file an nbdkit curl reader (``adapters.remote_disk``); a flat disk
is a raw node over its reader, a snapshot chain is read by QEMU's vmdk driver through descriptor
views whose extents are the readers shown as files (``adapters.nbd_file``).  No staging copy:
the job's overlay sits on these nodes as on local VMDKs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pyVmomi import vmodl

from vm2kvmd.adapters import qemu_img
from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.adapters.nbd_file import NbdFile
from vm2kvmd.adapters.remote_disk import HostLimiter, Limits, RemoteDisk
from vm2kvmd.adapters.vsphere import Session, connect, pinned_certificate
from vm2kvmd.adapters.vsphere_keepalive import SessionKeeper
from vm2kvmd.adapters.vsphere_power import shut_down
from vm2kvmd.aio import in_thread, settle
from vm2kvmd.core.hardware.model import Note, SourceVM
from vm2kvmd.core.options import MigrateOptions
from vm2kvmd.core.planning.blockdev import Node, stack
from vm2kvmd.core.planning.snapshots import tree_notes
from vm2kvmd.core.vmware.vmsd import SnapshotTree
from vm2kvmd.core.vsphere.disk_chain import RemoteChain, RemoteLayer, flat_node, remote_view
from vm2kvmd.core.vsphere.source import VsphereSource
from vm2kvmd.core.vsphere.uri import parse_uri
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.pipeline.planning import InspectResult, inspect_with_host
from vm2kvmd.sources.vsphere.datastore import datastore_url, load_for_migration, load_snapshots

__all__ = ["RemoteSource", "RemoteSources", "inspect_vsphere", "keep_notes", "login", "no_verify_warning"]


def login(source: VsphereSource) -> Session:
    """Log in to the source's host (blocking)."""
    return connect(parse_uri(source.uri), source.password, source.tls)


@dataclass(frozen=True)
class RemoteSource:
    """One remote disk as QEMU opens it (what ``create_overlays`` needs)."""

    node: Node
    label: str


def no_verify_warning(source: VsphereSource) -> str | None:
    if parse_uri(source.uri).no_verify or source.tls.no_verify:
        return (
            f"warning: the TLS certificate of {parse_uri(source.uri).address} is not verified (no_verify); "
            "anyone in between could read the disks and the session"
        )
    return None


def keep_notes(notes: tuple[Note, ...], tree: SnapshotTree) -> tuple[Note, ...]:
    """The notes of a VM whose snapshots are kept: what happens to them, not that they are lost."""
    return tuple(n for n in notes if n.key != "snapshot") + tree_notes(tree, "keep")


def load_vm(session: Session, source: VsphereSource) -> tuple[Any, dict[str, RemoteChain]]:
    return load_for_migration(session, source.vm, source.label)


def inspect_vsphere(
    source: VsphereSource, options: MigrateOptions, host: LibvirtHost | None, *, strict: bool
) -> InspectResult:
    """Log in, read the VM and its disks' descriptors, plan it (blocking).

    With ``strict`` (a migration's preflight) a powered-on VM is refused unless the job is to shut
    it down (``shutdown-source``); an inspection shows it with a note.
    """
    refuse = strict and not options.shutdown_source
    with login(source) as session:
        try:
            vm, chains = load_for_migration(session, source.vm, source.label)
            running = False
        except Vm2kvmError as err:
            if refuse or err.code is not ErrorCode.SOURCE_POWERED_ON:
                raise
            vm, chains = load_for_migration(session, source.vm, source.label, refuse_running=False)
            running = True
        tree = load_snapshots(session, source.vm, vm, chains)[0] if options.snapshots == "keep" else None
    result = inspect_with_host(source.label, options, host, strict=strict, loaded=vm)
    if tree is not None:
        result = replace(result, notes=keep_notes(result.notes, tree))
    if running and not strict:
        note = Note("the VM is powered on: shut it down in vSphere before migrating it", "runtime.powerState")
        result = replace(result, notes=(*result.notes, note), host_notes=(*result.host_notes, note))
    return result


class RemoteSources:
    """The session and the readers of one run; ``aclose`` stops them all (also on failure)."""

    def __init__(
        self, source: VsphereSource, on_log: Callable[[str], None], limiter: HostLimiter | None = None
    ) -> None:
        self.source = source
        self.on_log = on_log
        self.limiter = limiter  # the daemon's: connections per host over all jobs
        self.limits = Limits()
        self._reserved = False
        self.session: Session | None = None
        self.keeper: SessionKeeper | None = None
        self.chains: dict[str, RemoteChain] = {}
        self._state: tuple[str, str, str] | None = None  # _vm_state when loaded
        self._stack = contextlib.AsyncExitStack()
        self._readers: dict[str, RemoteDisk] = {}  # by data file
        self._files: dict[str, str] = {}  # data file -> its nbdfuse file
        self._views: dict[str, Node] = {}  # by descriptor
        self._trusted: tuple[str | None, bool] | None = None

    async def load(self, options: MigrateOptions) -> Any:
        """Log in and read the VM and its disks' descriptors; a powered-on VM is shut down first
        with ``shutdown-source``, else refused."""
        logging_in = asyncio.ensure_future(asyncio.to_thread(login, self.source))
        try:
            session = await settle(logging_in)
        except asyncio.CancelledError:
            # Cancelled meanwhile: settle waited for the login, whose session must not stay open.
            if not logging_in.cancelled() and logging_in.exception() is None:
                await in_thread(logging_in.result().close)
            raise
        self.session = session
        self._stack.push_async_callback(in_thread, session.close)
        if options.shutdown_source:
            loop = asyncio.get_running_loop()

            def on_log(line: str) -> None:  # called from the worker thread
                loop.call_soon_threadsafe(self.on_log, line)

            ref = await in_thread(session.find_vm, self.source.vm)
            await in_thread(shut_down, session, ref, force=options.force, on_log=on_log)
        vm, self.chains = await in_thread(load_vm, session, self.source)
        self._state = await in_thread(_vm_state, session, self.source.vm)
        # Kept alive (and logged in again when it ends) while the disks are read; the readers
        # get each new cookie.
        self.keeper = await self._stack.enter_async_context(SessionKeeper(session, on_log=self.on_log))
        return vm

    async def check_unchanged(self) -> None:
        """After the copy: the VM was neither started nor reconfigured while its disks were read
        (nothing on the host stops that; the copy would be of disks in flux)."""
        if self.session is None or self._state is None:
            return
        try:
            power, boot, version = await in_thread(_vm_state, self.session, self.source.vm)
        except Vm2kvmError:
            # The SOAP connection may have been cut while the disks were read (the readers resume;
            # pyvmomi drops a failed connection from its pool): once more, on a new one.
            power, boot, version = await in_thread(_vm_state, self.session, self.source.vm)
        where = f"VM {self.source.vm!r} on {self.session.where}"
        if power == "poweredOn" or boot != self._state[1]:
            raise Vm2kvmError(
                ErrorCode.SOURCE_POWERED_ON,
                f"{where} was powered on while its disks were copied: the copy may be inconsistent",
                value=power,
                hint="shut the VM down in vSphere and migrate it again; leave it off until the job ends",
            )
        if version != self._state[2]:
            raise Vm2kvmError(
                ErrorCode.SOURCE_CHANGED,
                f"{where} was reconfigured while its disks were copied",
                key="config.changeVersion",
                hint="migrate it again, and leave it unchanged until the job ends",
            )

    async def load_snapshots(self, vm: SourceVM) -> tuple[SnapshotTree, dict[str, RemoteChain]]:
        """The snapshot tree of the loaded VM ``vm`` and every snapshot's disk state (``load``
        first)."""
        assert self.session is not None
        return await in_thread(load_snapshots, self.session, self.source.vm, vm, self.chains)

    async def open(self, key: str, directory: str) -> RemoteSource:
        """Disk ``key`` as one read-only node; its readers' files go into ``directory``."""
        chain = self.chains[key]
        node = stack(await self.layer_nodes(chain, directory))
        await self._check_size(node, chain, key)
        return RemoteSource(node, chain.top.descriptor)

    async def layer_nodes(self, chain: RemoteChain, directory: str, *, views: bool = False) -> list[Node]:
        """Each layer of ``chain`` as a read-only node without its parents, top first.

        One reader per data file and one descriptor view per layer for the whole run, whichever
        chains share them; new files go into ``directory``.  ``views``: a flat layer too is read
        through its view, for a run that opens a file both alone and under deltas
        (``--snapshots keep``): a reader serves one NBD connection, which the view's nbdfuse holds.
        """
        await in_thread(os.makedirs, directory, 0o700, True)
        top = chain.top
        if top.kind == "flat" and not views:
            reader = await self._reader(top.data, directory)
            return [flat_node(top, reader.node["file"])]
        return [await self._view(layer, directory) for layer in chain.layers]

    async def _reader(self, path: str, directory: str) -> RemoteDisk:
        if path in self._readers:
            return self._readers[path]
        session = self.session
        assert session is not None
        await self._reserve(session)
        ca_file, verify = await self._trust(directory)
        cookie = session.cookie
        reader = RemoteDisk(
            datastore_url(session, path),
            cookie,
            work_dir=directory,
            ca_file=ca_file,
            verify=verify,
            pinned=bool(self.source.tls.thumbprint) and verify,
            limits=self.limits,
            label=path,
        )
        self._readers[path] = await self._stack.enter_async_context(reader)
        if self.keeper is not None:
            self.keeper.watch(reader)
            if session.cookie != cookie:  # renewed while the reader started: it missed the new one
                await reader.renew_cookie(session.cookie)
        return reader

    async def _view(self, layer: RemoteLayer, directory: str) -> Node:
        """A layer through QEMU's vmdk driver: a descriptor view over its data file shown as a file."""
        if layer.descriptor not in self._views:
            if layer.data not in self._files:
                reader = await self._reader(layer.data, directory)
                assert reader.socket is not None
                mount = os.path.join(directory, f"file{len(self._files)}")
                self._files[layer.data] = await self._stack.enter_async_context(
                    NbdFile(reader.socket, mount, label=layer.data)
                )
            view = os.path.join(directory, f"layer{len(self._views)}.vmdk")
            await in_thread(_write, view, remote_view(layer, self._files[layer.data]))
            self._views[layer.descriptor] = {
                "driver": "vmdk",
                "read-only": True,
                "file": {"driver": "file", "filename": view},
            }
        return self._views[layer.descriptor]

    async def _trust(self, directory: str) -> tuple[str | None, bool]:
        """The readers' CA file and whether they verify, decided once per run."""
        if self._trusted is None:
            tls = self.source.tls
            verify = not (parse_uri(self.source.uri).no_verify or tls.no_verify)
            self._trusted = (tls.ca_file, verify)
            if verify and tls.thumbprint:
                self._trusted = await self._pin_readers(directory, tls.thumbprint)
        return self._trusted

    async def _reserve(self, session: Session) -> None:
        """Before the first reader: the connections of all the job's readers, from the limiter."""
        if self._reserved or self.limiter is None:
            return
        self._reserved = True
        host = f"{session.uri.host}:{session.uri.port}"
        files = {path for chain in self.chains.values() for path in chain.files}  # one reader each
        need = len(files) * self.limits.connections
        limiter = self.limiter
        if need > limiter.per_host:
            self.on_log(
                f"the disks need {need} connections to {host}, more than the {limiter.per_host} allowed "
                "per host (vsphere_connections_per_host): the job waits until it has the host to itself"
            )
        if limiter.busy(host, need):
            self.on_log(f"waiting for connections to {host} ({limiter.in_use(host)} in use by other jobs)")
        await self._stack.enter_async_context(limiter.hold(host, need))

    async def _pin_readers(self, directory: str, pin: str) -> tuple[str | None, bool]:
        """The readers' CA file: the host's certificate, checked against the pin just now."""
        uri = parse_uri(self.source.uri)
        pem, names_host = await in_thread(pinned_certificate, uri, pin)
        if not names_host:
            # curl checks the host name whenever it verifies; a pin is often given for a
            # certificate that does not name the host, so its readers cannot check it.
            self.on_log(
                f"warning: the pinned certificate of {uri.address} does not name {uri.host}; "
                "the disk readers (nbdkit curl) cannot check it and read unverified"
            )
            return None, False
        path = os.path.join(directory, "pinned-certificate.pem")
        await in_thread(_write, path, pem)
        return path, True

    async def _check_size(self, node: Node, chain: RemoteChain, key: str) -> None:
        await self.check_layer_size(node, chain.top, key)

    async def check_layer_size(self, node: Node, layer: RemoteLayer, key: str) -> None:
        """QEMU must read ``layer`` (``node``, parents ignored) at the size its descriptor gives."""
        top = {k: v for k, v in node.items() if k != "backing"}
        info = await qemu_img.info(top, label=layer.descriptor)
        if info.get("virtual-size") != layer.size:
            raise Vm2kvmError(
                ErrorCode.UNSUPPORTED_DISK,
                f"QEMU reads it as {info.get('virtual-size')} bytes, its descriptor describes {layer.size}",
                file=layer.descriptor,
                key=key,
                hint="report the descriptor to the vm2kvm developers",
            )

    async def aclose(self, exc: BaseException | None = None) -> None:
        """Stop the readers and log out.  With the run's failure ``exc``, a reader that knows
        why the copy failed (its host stopped answering) raises that as a named error."""
        if exc is None:
            await self._stack.aclose()
        else:
            await self._stack.__aexit__(type(exc), exc, exc.__traceback__)


def _vm_state(session: Session, vm: str) -> tuple[str, str, str]:
    """What must not change while the VM's disks are read (blocking): its power state, last boot
    time and configuration version (``changeVersion``; ``modified`` too, which is all the
    simulator keeps)."""
    ref: Any = session.find_vm(vm)
    try:
        runtime, config = ref.runtime, ref.config
        return str(runtime.powerState), str(runtime.bootTime), f"{config.changeVersion} {config.modified}"
    except (vmodl.MethodFault, OSError, http.client.HTTPException) as err:
        raise Vm2kvmError(
            ErrorCode.VSPHERE_ERROR, f"reading VM {vm!r} on {session.where} failed: {err}", value=vm
        ) from err


def _write(path: str, text: str) -> None:
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)
