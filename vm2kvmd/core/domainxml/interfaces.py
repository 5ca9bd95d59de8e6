"""``<interface>`` elements: one per VMware NIC, MAC kept."""

from __future__ import annotations

from lxml import etree

from vm2kvmd.core.domainxml._xml import sub
from vm2kvmd.core.planning.plan import DomainPlan, PlannedNic


def _interface(parent: etree._Element, nic: PlannedNic) -> None:
    el = sub(parent, "interface", type=nic.kind)
    if nic.mac:
        sub(el, "mac", address=nic.mac)
    if nic.kind == "bridge":
        sub(el, "source", bridge=nic.target)
    else:
        sub(el, "source", network=nic.target)
    sub(el, "model", type=nic.model)
    if not nic.link_up:
        sub(el, "link", state="down")


def render_interfaces(devices: etree._Element, plan: DomainPlan) -> None:
    for nic in plan.nics:
        _interface(devices, nic)
