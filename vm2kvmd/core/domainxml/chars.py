"""Serial and parallel ports, the console and the guest-agent channel."""

from __future__ import annotations

from lxml import etree

from vm2kvmd.core.domainxml._xml import sub
from vm2kvmd.core.planning.plan import DomainPlan, PlannedCharPort


def _source(el: etree._Element, port: PlannedCharPort) -> None:
    if port.kind in ("file", "dev"):
        sub(el, "source", path=port.path)
    elif port.kind == "unix":
        sub(el, "source", mode=port.mode, path=port.path)
    elif port.kind == "tcp":
        sub(el, "source", mode=port.mode, host=port.host, service=port.port)
        sub(el, "protocol", type=port.protocol or "raw")


def _port(parent: etree._Element, port: PlannedCharPort) -> None:
    el = sub(parent, port.device, type=port.kind)
    _source(el, port)
    sub(el, "target", port=port.source.index)


def render_chars(devices: etree._Element, plan: DomainPlan) -> None:
    for port in plan.serials:
        _port(devices, port)
    for port in plan.parallels:
        _port(devices, port)
    if plan.serials:
        # libvirt makes the first <console> of target type serial a copy of the
        # first serial port whatever we write; write that copy ourselves.
        first = plan.serials[0]
        console = sub(devices, "console", type=first.kind)
        _source(console, first)
        sub(console, "target", type="serial", port=first.source.index)
    else:
        # Every migrated VM gets a text console (virsh console) on a pty serial0.
        serial = sub(devices, "serial", type="pty")
        sub(serial, "target", port=0)
        console = sub(devices, "console", type="pty")
        sub(console, "target", type="serial", port=0)
    if plan.guest_agent:
        channel = sub(devices, "channel", type="unix")
        sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
