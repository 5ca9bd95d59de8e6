"""A kept VMware snapshot as libvirt ``<domainsnapshot>`` XML, for ``VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE``.

Pure and deterministic.  The XML has the shape libvirt 9.0 itself writes for
a disk-only external snapshot of a shut-off domain (``virsh snapshot-create
--disk-only`` on an inactive domain, checked by hand): ``state`` shutoff,
``memory snapshot='no'``, one ``<disk snapshot='external'>`` per covered disk
naming the overlay that took the writes after the snapshot, and the domain
definition of that moment, whose disk sources are the snapshot's states.
Disks the snapshot does not cover (added later, or independent in VMware)
are ``snapshot='no'`` and keep their current source in that definition.
"""

from __future__ import annotations

from lxml import etree

from vm2kvmd.core.domainxml._xml import sub
from vm2kvmd.core.planning.plan import PlannedDisk
from vm2kvmd.core.planning.snapshots import SnapshotPoint

__all__ = ["render_snapshot_xml"]


def render_snapshot_xml(point: SnapshotPoint, domain_xml: str, disks: tuple[PlannedDisk, ...]) -> str:
    """``<domainsnapshot>`` for ``point`` of the domain ``domain_xml`` (the one defined) with ``disks``."""
    root = etree.Element("domainsnapshot")
    sub(root, "name", point.name)
    if point.snapshot.description:
        sub(root, "description", point.snapshot.description)
    sub(root, "state", "shutoff")
    if point.parent_name is not None:
        parent = sub(root, "parent")
        sub(parent, "name", point.parent_name)
    if point.snapshot.created_us is not None:
        sub(root, "creationTime", str(point.snapshot.created_us // 1_000_000))
    sub(root, "memory", snapshot="no")
    covered = {d.disk.target_dev: d for d in point.disks}
    element = sub(root, "disks")
    for disk in disks:
        kept = covered.get(disk.target_dev)
        if kept is None:
            sub(element, "disk", name=disk.target_dev, snapshot="no")
            continue
        item = sub(element, "disk", name=disk.target_dev, snapshot="external", type="file")
        sub(item, "driver", type="qcow2")
        sub(item, "source", file=kept.overlay)
    root.append(_domain_at(domain_xml, point))
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def _domain_at(domain_xml: str, point: SnapshotPoint) -> etree._Element:
    """The domain definition with each covered disk on its state at the snapshot."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    domain = etree.fromstring(domain_xml.encode(), parser)
    states = {d.disk.target_dev: d.state for d in point.disks}
    for disk in domain.iterfind("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        dev = target.get("dev") if target is not None else None
        if dev in states and source is not None:
            source.set("file", states[dev])
            for backing in disk.findall("backingStore"):
                disk.remove(backing)
    return domain
