"""A VM on ESXi/vCenter read for a migration: its config, its power state, its disks' descriptors.

Blocking (pyvmomi and HTTPS): call it in a worker thread.  Descriptors are small files fetched
from the datastore's ``/folder`` service with the session's cookie and TLS context, the same
service nbdkit reads the disks' data from (``adapters.remote_disk``); never more than
``HEAD_BYTES`` of a file.
"""

from __future__ import annotations

import http.client
import logging
import time
from dataclasses import replace
from urllib.parse import quote, urlencode

from vm2kvmd.adapters.vsphere import CONNECT_TIMEOUT, Session
from vm2kvmd.core.hardware.model import SourceDisk, SourceVM
from vm2kvmd.core.vmware.vmsd import SnapshotTree
from vm2kvmd.core.vsphere.backoff import BUSY_RETRIES, retry_delay
from vm2kvmd.core.vsphere.disk_chain import (
    HEAD_BYTES,
    RemoteChain,
    remote_chain,
    remote_layer,
    split_datastore_path,
)
from vm2kvmd.core.vsphere.hardware import build_source_vm
from vm2kvmd.core.vsphere.snapshots import snapshot_states, snapshot_tree
from vm2kvmd.errors import ErrorCode, Vm2kvmError
from vm2kvmd.sources.vsphere.vm import read_snapshots, read_vm

log = logging.getLogger(__name__)

__all__ = ["datastore_url", "load_for_migration", "load_snapshots", "read_chain", "read_head"]


def datastore_url(session: Session, path: str) -> str:
    """``https://HOST:PORT/folder/PATH?dcPath=DC&dsName=DS`` of a datastore path."""
    datastore, rest = split_datastore_path(path)
    query = urlencode({"dcPath": session.datacenter, "dsName": datastore})
    return f"https://{session.uri.host}:{session.uri.port}/folder/{quote(rest)}?{query}"


def read_head(session: Session, path: str, limit: int = HEAD_BYTES) -> bytes:
    """The first ``limit`` bytes (fewer when the file is shorter) of a datastore file.

    A busy host (503) is asked again after its ``Retry-After`` (bounded) or with exponential
    backoff, ``BUSY_RETRIES`` times (``core.vsphere.backoff``).
    """
    for attempt in range(BUSY_RETRIES + 1):
        response, body = _get_head(session, path, limit)
        if response.status != http.client.SERVICE_UNAVAILABLE or attempt == BUSY_RETRIES:
            break
        delay = retry_delay(response.getheader("Retry-After"), attempt, time.time())
        log.info("%s is busy (503) for %s; asking again in %.0f s", session.uri.address, path, delay)
        time.sleep(delay)
    if response.status == http.client.NOT_FOUND:
        raise Vm2kvmError(
            ErrorCode.DISK_MISSING,
            f"the datastore has no file {path}",
            file=path,
            hint="the VM's configuration names a disk file that is gone; check the VM in vSphere",
        )
    if response.status == http.client.SERVICE_UNAVAILABLE:
        raise Vm2kvmError(
            ErrorCode.VSPHERE_ERROR,
            f"{session.uri.address} answered 503 {response.reason} for {path} "
            f"{BUSY_RETRIES + 1} times: it is busy",
            file=path,
            hint="too many transfers run against the host; try again when fewer do",
        )
    if response.status not in (http.client.OK, http.client.PARTIAL_CONTENT):
        raise Vm2kvmError(
            ErrorCode.VSPHERE_ERROR,
            f"{session.uri.address} answered {response.status} {response.reason} for {path}",
            file=path,
        )
    return body


def _get_head(session: Session, path: str, limit: int) -> tuple[http.client.HTTPResponse, bytes]:
    url = datastore_url(session, path)
    target = url.split("/", 3)[3]
    conn = http.client.HTTPSConnection(
        session.uri.host, session.uri.port, context=session.context, timeout=CONNECT_TIMEOUT
    )
    try:
        conn.request("GET", "/" + target, headers={"Cookie": session.cookie, "Range": f"bytes=0-{limit - 1}"})
        response = conn.getresponse()
        body = response.read(limit)
    except (OSError, http.client.HTTPException) as exc:
        raise Vm2kvmError(
            ErrorCode.HOST_UNREACHABLE,
            f"lost the connection to {session.uri.address} while reading {path}: "
            f"{getattr(exc, 'strerror', None) or exc or type(exc).__name__}",
            hint="check that the host is up and reachable, then try again",
        ) from None
    finally:
        conn.close()
    return response, body


def read_chain(session: Session, disk: SourceDisk) -> RemoteChain:
    """The layers of a vSphere disk as their descriptors say (top first), checked together."""
    assert disk.remote is not None
    layers = [remote_layer(path, read_head(session, path)) for path in disk.remote.layers]
    return remote_chain(layers, key=disk.address.key)


def load_for_migration(
    session: Session, vm: str, label: str, *, refuse_running: bool = True
) -> tuple[SourceVM, dict[str, RemoteChain]]:
    """The VM named ``vm`` (name or managed object id) as a ``SourceVM`` whose remote disks have the
    sizes their descriptors give, and each remote disk's chain by device key.

    Refuses a powered-on VM (``refuse_running``): its disks change while they are read.  (A
    suspended one migrates with the note ``build_source_vm`` gives: its memory state is lost.)
    """
    ref = session.find_vm(vm)
    config = read_vm(ref, session.content.propertyCollector)
    if refuse_running and config.power_state == "poweredOn":
        raise Vm2kvmError(
            ErrorCode.SOURCE_POWERED_ON,
            f"VM {config.name!r} on {session.where} is {config.power_state}: its disks change while "
            "they are read",
            value=config.power_state,
            hint="shut the VM down in vSphere (a clean guest shutdown), then migrate it; or migrate "
            "with --shutdown-source (and --force to power it off when its guest cannot be shut down)",
        )
    source = build_source_vm(config, source_path=label)
    chains: dict[str, RemoteChain] = {}
    disks = []
    for disk in source.disks:
        if disk.remote is not None and disk.problem_code is None:
            chain = read_chain(session, disk)
            chains[disk.address.key] = chain
            disk = replace(disk, remote=replace(disk.remote, capacity=chain.size))
        disks.append(disk)
    return replace(source, disks=tuple(disks)), chains


def load_snapshots(
    session: Session, vm: str, source: SourceVM, chains: dict[str, RemoteChain]
) -> tuple[SnapshotTree, dict[str, RemoteChain]]:
    """The snapshot tree of VM ``vm`` (loaded as ``source``, its disks' ``chains``) and the chain
    of every disk state a snapshot names, by the state's head (datastore path).

    Each descriptor is fetched once: the layers the current chains share are not read again.
    """
    ref = session.find_vm(vm)
    collector = session.content.propertyCollector
    snapshots = read_snapshots(ref, collector)
    tree = snapshot_tree(read_vm(ref, collector), source, snapshots)
    known = {layer.descriptor: layer for chain in chains.values() for layer in chain.layers}
    states: dict[str, RemoteChain] = {}
    for head, paths in snapshot_states(snapshots).items():
        layers = []
        for path in paths:
            if path not in known:
                known[path] = remote_layer(path, read_head(session, path))
            layers.append(known[path])
        states[head] = remote_chain(layers, key=head)
    return tree, states
