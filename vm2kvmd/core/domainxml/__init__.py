"""DomainPlan -> libvirt domain XML.

Pure and deterministic: the same plan gives the same bytes.  Elements come in
the order libvirt itself writes them (``virsh dumpxml``), so a golden file
reads like what the user will see after ``virsh define``.  One module per
device family; this one only orders them.
"""

from __future__ import annotations

from lxml import etree

from vm2kvmd.core.domainxml import chars, disks, general, interfaces, misc
from vm2kvmd.core.domainxml._xml import sub
from vm2kvmd.core.planning.plan import DomainPlan

__all__ = ["render_domain_xml"]


def render_domain_xml(plan: DomainPlan) -> str:
    nsmap = {"qemu": general.QEMU_NS} if plan.smbios_uuid else None
    root = etree.Element("domain", nsmap=nsmap)
    root.set("type", plan.domain_type)
    general.identity(root, plan)
    general.memory_and_cpu(root, plan)
    general.os_and_features(root, plan)
    devices = sub(root, "devices")
    disks.render_disks(devices, plan)
    disks.render_storage_controllers(devices, plan)
    misc.render_usb_controllers(devices, plan)
    interfaces.render_interfaces(devices, plan)
    chars.render_chars(devices, plan)
    misc.render_input_and_graphics(devices, plan)
    misc.render_sound_and_video(devices, plan)
    misc.render_balloon_and_rng(devices, plan)
    general.qemu_commandline(root, plan)
    return etree.tostring(root, pretty_print=True, encoding="unicode")
