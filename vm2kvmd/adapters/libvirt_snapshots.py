"""libvirt for kept snapshot chains: backed qcow2 volumes and redefined snapshot metadata.

Blocking and thin like ``LibvirtHost`` (through whose ``call`` every libvirt
call goes, so a restarted libvirtd is waited for): callers in the event loop
run these in a thread.  Every ``libvirtError`` leaves as a
``Vm2kvmError``.

Facts of libvirt 9.0 these rely on (tried on Debian 12):
- a ``<volume>`` with ``<backingStore>`` in a ``dir`` pool is created by
  ``qemu-img create -b <path> -F <format>``;
- an inactive domain with snapshot metadata cannot be undefined without
  ``VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA`` ("cannot delete inactive domain
  with N snapshots"), so a rollback removes the metadata first;
- redefining (``VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE``) only records metadata:
  it neither reads nor creates the files the snapshot names.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import libvirt

from vm2kvmd.adapters.libvirt_host import LibvirtHost
from vm2kvmd.errors import ErrorCode, Vm2kvmError

__all__ = [
    "create_layer_volume",
    "delete_snapshot_metadata",
    "domain_xml",
    "redefine_snapshot",
]


def _message(err: libvirt.libvirtError) -> str:
    return str(err.get_error_message() or err)


def _failed(what: str, err: libvirt.libvirtError) -> Vm2kvmError:
    return Vm2kvmError(ErrorCode.LIBVIRT_ERROR, f"{what}: {_message(err)}")


def create_layer_volume(host: LibvirtHost, pool: str, name: str, capacity: int, backing: str | None) -> str:
    """Create an empty qcow2 volume (on ``backing``, a qcow2, when given); returns its path.

    qcow2 version 3 (``compat 1.1``): a delta's explicit zero grains over
    its parent's data become zero clusters instead of written zeroes.
    """
    if host.volume_exists(pool, name):
        raise Vm2kvmError(
            ErrorCode.VOLUME_EXISTS,
            f"volume {name!r} already exists in pool {pool!r}",
            value=name,
            hint="choose another domain name with --name, or delete the volume",
        )
    backing_xml = (
        f"<backingStore><path>{escape(backing)}</path><format type='qcow2'/></backingStore>"
        if backing
        else ""
    )
    xml = (
        "<volume>"
        f"<name>{escape(name)}</name>"
        f"<capacity unit='bytes'>{int(capacity)}</capacity>"
        "<allocation unit='bytes'>0</allocation>"
        "<target><format type='qcow2'/><compat>1.1</compat></target>"
        f"{backing_xml}"
        "</volume>"
    )
    try:
        return host.call(
            lambda c: str(c.storagePoolLookupByName(pool).createXML(xml, 0).path()), creates=True
        )
    except libvirt.libvirtError as err:
        raise _failed(f"cannot create volume {name!r} in pool {pool!r}", err) from err


def domain_xml(host: LibvirtHost, name: str) -> str:
    """The persistent definition of ``name`` as libvirt completed it (what a snapshot records)."""
    try:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
        return host.call(lambda c: str(c.lookupByName(name).XMLDesc(flags)))
    except libvirt.libvirtError as err:
        raise _failed(f"cannot read the definition of domain {name!r}", err) from err


def redefine_snapshot(host: LibvirtHost, domain: str, xml: str, *, current: bool) -> str:
    """Record the snapshot ``xml`` for ``domain`` (metadata only); returns its name."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    if current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    try:
        return host.call(
            lambda c: str(c.lookupByName(domain).snapshotCreateXML(xml, flags).getName()), creates=True
        )
    except libvirt.libvirtError as err:
        raise _failed(f"libvirt refused a snapshot of domain {domain!r}", err) from err


def delete_snapshot_metadata(host: LibvirtHost, domain: str, name: str) -> None:
    """Forget snapshot ``name`` of ``domain``; its files are left alone."""
    try:
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY
        host.call(lambda c: c.lookupByName(domain).snapshotLookupByName(name).delete(flags))
    except libvirt.libvirtError as err:
        raise _failed(f"cannot remove snapshot {name!r} of domain {domain!r}", err) from err
